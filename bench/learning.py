"""The learning ladder on the tiny model (CPU): instruction-blind ceiling, untrained, SFT, SFT+GRPO.

    python bench/learning.py [--out out/learning] [--seeds 0 1 2] [--sft-steps N] [--grpo-updates N]
                             [--hierarchical] [--no-control] [--lr-sweep 1e-4 1e-3 1e-2]

Prints the table (mean ± std over the training seeds), the goals (SFT ≥ 0.80 held-out SR, SFT+GRPO ≥
SFT + 0.05, ceiling ≤ 0.50, all within 15 minutes), and writes ``OUT/ladder.json`` and
``OUT/curves.png`` (SFT loss, GRPO mean group reward and SR per update, one line per seed). The task
and the rows are described in ``panoseeker_ros/training/ladder.py``. ``--lr-sweep`` instead runs GRPO
from one SFT adapter at each learning rate and prints held-out SR (the sweep behind the default).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from panoseeker_ros.models.tiny import build_tiny_qwen
from panoseeker_ros.training.ladder import LadderPlan, ladder_table, run_ladder, tiny_settings

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]  # BGR-ish, per seed


def _panel(series: list[list[tuple[float, float]]], title: str, size=(420, 300)) -> np.ndarray:
    """One line chart (white background): a polyline per seed, axes labelled with their ranges."""
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    pts = [p for s in series for p in s]
    cv2.putText(img, title, (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    if not pts:
        return img
    xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    x0, x1 = float(xs.min()), float(max(xs.max(), xs.min() + 1))
    y0, y1 = float(ys.min()), float(max(ys.max(), ys.min() + 1e-6))
    left, right, top, bottom = 50, w - 10, 28, h - 30
    cv2.rectangle(img, (left, top), (right, bottom), (0, 0, 0), 1)
    for k, s in enumerate(series):
        if len(s) < 2:
            continue
        poly = np.array([[left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)]
                         for x, y in s], np.int32)
        cv2.polylines(img, [poly], False, COLOURS[k % len(COLOURS)], 1, cv2.LINE_AA)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, f"{y1:.2f}", (2, top + 10), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"{y0:.2f}", (2, bottom), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"{x0:g}", (left, h - 12), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"{x1:g}", (right - 30, h - 12), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def _smooth(values: list[float], k: int = 5) -> list[float]:
    return [float(np.mean(values[max(0, i - k + 1):i + 1])) for i in range(len(values))]


def curves_png(result: dict, path: Path) -> None:
    """SFT loss, GRPO reward and GRPO SR per step (moving mean of 5), one line per seed."""
    sft = [[(m["step"], m["loss"]) for m in run] for run in result["curves"].get("SFT", [])]
    grpo = result["curves"].get("SFT+GRPO", [])
    reward = [list(zip([m["step"] for m in run], _smooth([m["reward"] for m in run]))) for run in grpo]
    sr = [list(zip([m["step"] for m in run], _smooth([m["sr"] for m in run]))) for run in grpo]
    img = np.hstack([_panel(sft, "SFT loss (nats per decision)"), _panel(reward, "GRPO mean group reward"),
                     _panel(sr, "GRPO rollout SR")])
    cv2.imwrite(str(path), img)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/learning")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train-scenes", type=int, default=LadderPlan.train_scenes)
    ap.add_argument("--heldout-scenes", type=int, default=LadderPlan.heldout_scenes)
    ap.add_argument("--sft-steps", type=int, default=LadderPlan.sft_steps)
    ap.add_argument("--grpo-updates", type=int, default=LadderPlan.grpo_updates)
    ap.add_argument("--grpo-lr", type=float, help="GRPO learning rate (default: tiny_settings())")
    ap.add_argument("--grpo-temperature", type=float, help="GRPO sampling temperature (default: tiny_settings())")
    ap.add_argument("--hierarchical", action="store_true", help="add a GRPO row with reward.kind hierarchical")
    ap.add_argument("--no-control", action="store_true", help="leave out the shuffled-answers SFT row")
    ap.add_argument("--lr-sweep", type=float, nargs="+", help="GRPO learning rates to compare (seed: the first)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    model = build_tiny_qwen(out / "qwen3vl-tiny")
    settings = tiny_settings()
    if args.grpo_lr:
        settings = dataclasses.replace(settings, grpo=dataclasses.replace(settings.grpo, learning_rate=args.grpo_lr))
    if args.grpo_temperature:
        settings = dataclasses.replace(settings, grpo=dataclasses.replace(settings.grpo,
                                                                          temperature=args.grpo_temperature))
    plan = LadderPlan(seeds=tuple(args.seeds), train_scenes=args.train_scenes, heldout_scenes=args.heldout_scenes,
                      sft_steps=args.sft_steps, grpo_updates=args.grpo_updates, hierarchical=args.hierarchical,
                      control=not args.no_control)
    if args.lr_sweep:
        return lr_sweep(out, model, settings, plan, args.lr_sweep)
    result = run_ladder(out / "work", model, settings, plan, log=lambda line: print(line, flush=True))
    minutes = (time.perf_counter() - t0) / 60
    print()
    print(f"learning ladder: tiny Qwen3-VL on CPU ({torch.get_num_threads()} thread), training scenes seed "
          f"{plan.task_seeds[0]} ({plan.train_scenes} scenes), held-out seed {plan.task_seeds[1]} "
          f"({plan.heldout_scenes} scenes, {3 * plan.heldout_scenes} episodes), training seeds {list(plan.seeds)}, "
          f"SFT {plan.sft_steps} steps, GRPO {plan.grpo_updates} updates")
    print(ladder_table(result, plan))
    rows = result["rows"]
    sft = float(np.mean([m["sr"] for m in rows["SFT"]]))
    rl = float(np.mean([m["sr"] for m in rows["SFT+GRPO"]]))
    ceiling = result["ceiling"]["sr"]
    print(f"goals: SFT SR {sft:.3f} >= 0.80: {'met' if sft >= 0.80 else 'MISSED'}; SFT+GRPO {rl:.3f} >= SFT + 0.05 "
          f"= {sft + 0.05:.3f}: {'met' if rl >= sft + 0.05 else 'MISSED'}; ceiling {ceiling:.3f} <= 0.50: "
          f"{'met' if ceiling <= 0.50 else 'MISSED'}; {minutes:.1f} min <= 15: {'met' if minutes <= 15 else 'MISSED'}")
    (out / "ladder.json").write_text(json.dumps({**result, "minutes": minutes, "plan": dataclasses.asdict(plan)},
                                                indent=1) + "\n")
    curves_png(result, out / "curves.png")
    print(f"curves: {out / 'curves.png'}; numbers: {out / 'ladder.json'}")
    return 0


def lr_sweep(out: Path, model, settings, plan: LadderPlan, rates) -> int:
    """GRPO from one SFT adapter at each learning rate: held-out SR before and after."""
    from panoseeker_ros.models.qwen_policy import QwenPolicy
    from panoseeker_ros.training.grpo import train_grpo
    from panoseeker_ros.training.ladder import direction_task, evaluate_policy, ladder_config, sft_data
    from panoseeker_ros.training.sft import train_sft

    config = ladder_config()
    train = direction_task(out / "train", plan.train_scenes, plan.task_seeds[0])
    held = direction_task(out / "heldout", plan.heldout_scenes, plan.task_seeds[1])
    data = sft_data(train, out / "train-data", config)
    train_sft(data, model, out / "sft", settings, config, max_steps=plan.sft_steps)
    sft = evaluate_policy(QwenPolicy.from_pretrained(model=model, adapter=out / "sft" / "adapter",
                                                     fov_deg=config.camera.fov_deg), held, config)
    print(f"SFT ({plan.sft_steps} steps): held-out SR {sft['sr']:.3f}")
    for lr in rates:
        s = dataclasses.replace(settings, grpo=dataclasses.replace(settings.grpo, learning_rate=lr))
        run = out / f"grpo-lr{lr:g}"
        history = train_grpo(train, model, run, s, config, adapter=out / "sft" / "adapter",
                             max_steps=plan.grpo_updates)
        m = evaluate_policy(QwenPolicy.from_pretrained(model=model, adapter=f"{out / 'sft' / 'adapter'},{run / 'adapter'}",
                                                       fov_deg=config.camera.fov_deg), held, config)
        last = history[-10:]
        print(f"GRPO lr {lr:g}: held-out SR {m['sr']:.3f} (SFT {sft['sr']:.3f}); last 10 updates: reward "
              f"{np.mean([h['reward'] for h in last]):+.3f}, rollout SR {np.mean([h['sr'] for h in last]):.2f}, "
              f"KL {np.mean([h['kl'] for h in last]):.4f}, clip {np.mean([h['clip'] for h in last]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
