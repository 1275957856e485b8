"""Refinement over turns, measured: how many wrong first masks a review recovers, and what it costs.

    python bench/refinement.py [--dataset sim/bedroom] [--seeds 0 1 2] [--rate 0.5] [--out out/refinement]
    python bench/refinement.py --ladder [--seeds 0 1 2] [--sft-steps 3000] [--train-noise 0.75] [--out out/refinement-ladder]

A searcher whose STOP boxes are made wrong with probability ``--rate`` (models.baselines.PerturbedStops:
shifted, too large, a neighbour; the draw is seeded per seed, episode and step) runs every episode three
times with the same draws: refinement off (``segmentation.max_refinements: 0``), on (2, the default),
and on with the control reviewer, which ignores what it is shown and accepts every mask. The searcher
and the reviewer are the oracle expert (it refines to the target's box of the STOP view), so the
numbers measure the stepper's refinement turns with a reviewer that is right, i.e. what a policy that
learned the review turns could recover, not a learned policy.

Printed per seed and as mean ± std: wrong first masks (IoU < 0.5 on the STOP view), the share of them
that end successful with refinement (and with the control), SR on the episodes whose first mask was
right (on and off: refinement must not lower it), SR / mIoU / steps / refinements overall. Goal:
recovered ≥ 0.5 of the wrong first masks, no loss on the right ones, and the control recovers fewer.
Writes ``OUT/refinement.json`` and ``OUT/overlay-first.png`` / ``OUT/overlay-refined.png`` (one
episode's first and refined mask on its STOP view).

``--ladder``: the same measurement with a trained policy on the learning ladder's direction task
(``training/ladder.py``: its held-out scenes, every object annotated, the box-prompted oracle). Per
training seed the tiny model is fine-tuned (SFT) on the expert's demonstrations with a share
``--train-noise`` of the STOP boxes made wrong first (``expert_demonstrations(box_noise=...)``: the review
turns show ACCEPT on right masks and REFINE to the right box on wrong ones); then that model searches and reviews the held-out
episodes itself, its own STOP boxes made wrong with probability ``--rate``, with refinement on, off,
and with the control reviewer; and without noise, on and off (SR / mIoU / steps of the trained policy
with and without refinement).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from panoseeker_ros.core.config import SeekConfig
from panoseeker_ros.core.dataset import load_dataset
from panoseeker_ros.core.environment import SimScene, run_lockstep
from panoseeker_ros.core.episode import Decision
from panoseeker_ros.core.actions import Action
from panoseeker_ros.core.visualize import review_picture, save_rgb
from panoseeker_ros.models.baselines import PerturbedStops
from panoseeker_ros.models.registry import make_policy, make_segmenter
from panoseeker_ros.paths import sample_dataset

IOU_RIGHT = 0.5  # a first mask at least this good (IoU on the STOP view) is right


class AcceptEverything:
    """The control reviewer: searches like its inner policy, accepts every mask without looking."""

    def __init__(self, inner):
        self.inner, self.name = inner, f"{inner.name}+accept-all"

    def act(self, obs):
        if obs.review is not None:
            return Decision(Action.accept_mask(), "ACCEPT")
        return self.inner.act(obs)


def run(specs, config: SeekConfig, refinements: int, rate: float, seed: int, control: bool = False,
        policy=None) -> list:
    """Every episode of ``specs`` with its STOP boxes made wrong with probability ``rate``; the searcher
    and reviewer is ``policy`` (one object for all) or, without one, each scene's oracle expert."""
    cfg = dataclasses.replace(config, segmentation=dataclasses.replace(config.segmentation,
                                                                       max_refinements=refinements))
    scenes = [SimScene(spec, cfg) for spec in specs]
    policies = []
    for s in scenes:
        searcher = policy if policy is not None else make_policy("expert", cfg, s.truth)
        policies.append(PerturbedStops(AcceptEverything(searcher) if control else searcher, rate, seed=seed))
    return run_lockstep(scenes, policies, [make_segmenter("oracle", cfg, s.truth) for s in scenes])


def first_iou(result) -> float | None:
    """IoU of the first mask of the STOP view (the first review turn records it); None: no STOP box."""
    return result.reviews[0].info["mask_iou"] if result.reviews else None


def measure(specs, config: SeekConfig, rate: float, seed: int, policy=None) -> tuple[dict, list, list]:
    on = run(specs, config, 2, rate, seed, policy=policy)
    off = run(specs, config, 0, rate, seed, policy=policy)
    blind = run(specs, config, 2, rate, seed, control=True, policy=policy)
    firsts = [first_iou(r) for r in on]
    wrong = [i for i, f in enumerate(firsts) if f is not None and f < IOU_RIGHT]
    right = [i for i, f in enumerate(firsts) if f is not None and f >= IOU_RIGHT]

    def share(results, idx):
        return float(np.mean([bool(results[i].success) for i in idx])) if idx else float("nan")

    row = {"seed": seed, "episodes": len(specs), "wrong_first": len(wrong),
           "recovered": share(on, wrong), "recovered_off": share(off, wrong), "recovered_control": share(blind, wrong),
           "sr_right_on": share(on, right), "sr_right_off": share(off, right),
           "sr_on": float(np.mean([bool(r.success) for r in on])), "sr_off": float(np.mean([bool(r.success) for r in off])),
           "miou_on": float(np.mean([r.outcome.iou for r in on])), "miou_off": float(np.mean([r.outcome.iou for r in off])),
           "steps_on": float(np.mean([r.steps for r in on])), "steps_off": float(np.mean([r.steps for r in off])),
           "refinements": float(np.mean([r.refinements for r in on]))}
    return row, on, wrong


def overlay_pair(result, out: Path) -> None:
    """The first mask and the refined one on the STOP view (the first two review turns' pictures, at half size)."""
    for name, rec in (("overlay-first.png", result.reviews[0]), ("overlay-refined.png", result.reviews[1])):
        obs = rec.observation
        picture = review_picture(obs.view, obs.review.mask, obs.review.box)
        half = cv2.resize(picture, (picture.shape[1] // 2, picture.shape[0] // 2), interpolation=cv2.INTER_AREA)
        save_rgb(out / name, half)
    (out / "overlay-episode.txt").write_text(f"{result.id}: {result.instruction}; reviews: " +
                                             " | ".join(r.action.to_text() for r in result.reviews) + "\n")


def trained_rows(args, out: Path) -> tuple[list, str]:
    """--ladder: per seed, SFT on noisy-box demonstrations, then the trained policy measured (module docstring)."""
    import torch

    from panoseeker_ros.models.qwen_policy import QwenPolicy
    from panoseeker_ros.models.tiny import build_tiny_qwen
    from panoseeker_ros.training.demonstrations import RecordWriter, expert_demonstrations
    try:
        from panoseeker_ros.training.ladder import direction_task, ladder_config, tiny_settings
    except ImportError:
        raise SystemExit("--ladder needs the learning ladder (panoseeker_ros/training/ladder.py); run without "
                         "--ladder, or on a tree that has it") from None
    from panoseeker_ros.training.sft import train_sft

    torch.set_num_threads(1)
    config = ladder_config(max_refinements=2)
    model = build_tiny_qwen(out / "qwen3vl-tiny")
    train = direction_task(out / "train", args.train_scenes, 1)
    held = load_dataset(direction_task(out / "heldout", args.heldout_scenes, 2)).episodes
    rows = []
    for seed in args.seeds:
        data = out / f"data-{seed}"
        with RecordWriter(data) as writer:
            for result, scene in expert_demonstrations(load_dataset(train), config, box_noise=args.train_noise,
                                                          seed=seed):
                if result.success:
                    writer.add(result, "expert", scene)
        settings = tiny_settings()
        settings = dataclasses.replace(settings, sft=dataclasses.replace(settings.sft, seed=seed))
        train_sft(data, model, out / f"sft-{seed}", settings, config, max_steps=args.sft_steps, progress=False)
        policy = QwenPolicy.from_pretrained(model=model, adapter=out / f"sft-{seed}" / "adapter",
                                            memory=settings.sft.memory, fov_deg=config.camera.fov_deg)
        row, _, _ = measure(held, config, args.rate, seed, policy)
        clean_on, clean_off = (run(held, config, n, 0.0, seed, policy=policy) for n in (2, 0))
        row.update({f"clean_{k}_{tag}": float(np.mean([f(r) for r in res])) for tag, res in (("on", clean_on),
                                                                                         ("off", clean_off))
                    for k, f in (("sr", lambda r: bool(r.success)), ("miou", lambda r: r.outcome.iou),
                                 ("steps", lambda r: r.steps))})
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in row.items()), flush=True)
        rows.append(row)
    return rows, f"the learning ladder's direction task ({len(held)} held-out episodes), tiny model after " \
                 f"{args.sft_steps} SFT steps on demonstrations with STOP boxes made wrong at p = {args.train_noise}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default=str(sample_dataset()))
    p.add_argument("--split")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rate", type=float, default=0.5, help="share of STOP boxes made wrong")
    p.add_argument("--out", default=None, help="default out/refinement (out/refinement-ladder with --ladder)")
    p.add_argument("--ladder", action="store_true", help="a trained tiny policy on the learning ladder's task")
    p.add_argument("--sft-steps", type=int, default=3000)
    p.add_argument("--train-noise", type=float, default=0.75,
                   help="--ladder: share of the demonstrations' STOP boxes made wrong first")
    p.add_argument("--train-scenes", type=int, default=24)
    p.add_argument("--heldout-scenes", type=int, default=16)
    args = p.parse_args(argv)
    out = Path(args.out or ("out/refinement-ladder" if args.ladder else "out/refinement"))
    out.mkdir(parents=True, exist_ok=True)
    if args.ladder:
        rows, what = trained_rows(args, out)
    else:
        specs = load_dataset(args.dataset, args.split).episodes
        what = f"{len(specs)} episodes of {args.dataset}, the oracle expert searching and reviewing"
        rows, drawn = [], False
        for seed in args.seeds:
            row, on, wrong = measure(specs, SeekConfig(), args.rate, seed)
            rows.append(row)
            if not drawn:
                pick = next((on[i] for i in wrong if on[i].success and len(on[i].reviews) >= 2), None)
                if pick is not None:
                    overlay_pair(pick, out)
                    drawn = True
    keys = ["wrong_first", "recovered", "recovered_control", "recovered_off", "sr_right_on", "sr_right_off",
            "sr_on", "sr_off", "miou_on", "miou_off", "steps_on", "steps_off", "refinements"]
    if args.ladder:
        keys += [f"clean_{k}_{tag}" for k in ("sr", "miou", "steps") for tag in ("on", "off")]
    print(f"{what}; STOP boxes made wrong with p = {args.rate}; seeds {args.seeds}")
    print("| seed | " + " | ".join(keys) + " |")
    print("|" + " --- |" * (len(keys) + 1))
    for row in rows:
        print(f"| {row['seed']} | " + " | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k])
                                                for k in keys) + " |")
    mean = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
    std = {k: float(np.nanstd([r[k] for r in rows])) for k in keys}
    print("| mean ± std | " + " | ".join(f"{mean[k]:.3f} ± {std[k]:.3f}" for k in keys) + " |")
    goals = {"recovers at least half of the wrong first masks": mean["recovered"] >= 0.5,
             "no lower SR where the first mask was right": mean["sr_right_on"] >= mean["sr_right_off"],
             "beats the control that accepts every mask": mean["recovered"] > mean["recovered_control"]}
    for goal, ok in goals.items():
        print(f"goal: {goal}: {'met' if ok else 'NOT met'}")
    (out / "refinement.json").write_text(json.dumps({"rows": rows, "mean": mean, "std": std, "rate": args.rate,
                                                     "what": what, "goals": goals}, indent=1))
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
