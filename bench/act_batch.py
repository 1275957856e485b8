"""QwenPolicy.act_batch against act one by one on the tiny model (CPU): same decisions, time per step.

    python bench/act_batch.py [--batch 8] [--decoding constrained|sample]

act_batch left-pads the batch's prompts and prefills them in one forward pass, then decodes each answer
from its own cache rows; the peer is the same policy's act() on each observation in turn.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from panoseeker_ros.core.actions import Action
from panoseeker_ros.core.dataset import load_dataset
from panoseeker_ros.core.environment import SimScene, shoot
from panoseeker_ros.core.episode import Decision
from panoseeker_ros.models.qwen_policy import QwenPolicy
from panoseeker_ros.models.tiny import build_tiny_qwen
from panoseeker_ros.paths import sample_dataset


def observations(n: int) -> list:
    """Start views and views after one move of the bedroom sample's episodes (prompts of two lengths)."""
    out = []
    for spec in load_dataset(sample_dataset()).episodes:
        scene = SimScene(spec)
        episode = scene.episode()
        req = episode.observe(shoot(scene.camera, scene.start(episode)))
        out.append(req.observation)
        move = Action.move(60, 0)
        out.append(episode.observe(shoot(scene.camera, episode.observe(Decision(move, move.to_text())))).observation)
    return out[:n]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--decoding", default="constrained", choices=["constrained", "sample"])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = build_tiny_qwen(Path(tempfile.mkdtemp()) / "qwen3vl-tiny")
    obs = observations(args.batch)
    one, batch = (QwenPolicy.from_pretrained(model=model, decoding=args.decoding, prefix_cache=False, seed=1)
                  for _ in range(2))
    t_one, t_batch, same = [], [], True
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        singles = [one.act(o) for o in obs]
        t_one.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        batched = batch.act_batch(obs)
        t_batch.append(time.perf_counter() - t0)
        same &= [d.text for d in singles] == [d.text for d in batched]
    a, b = min(t_one) / len(obs) * 1000, min(t_batch) / len(obs) * 1000
    print(f"act_batch: tiny Qwen3-VL on CPU, {len(obs)} observations 1024x768 (view + canvas), {args.decoding} "
          f"decoding; same decisions as one by one: {same}")
    print(f"act_batch: one by one {a:.1f} ms/observation, batched {b:.1f} ms/observation, speed-up {a / b:.2f}x")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
