"""Training subcommands of ``panoseeker``: make-sft-data, train-sft, train-grpo (added through :func:`register`)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_make_sft_data(args) -> int:
    from ..core.config import load_config
    from ..core.dataset import load_dataset
    from .bags import bag_demonstrations
    from .demonstrations import DataError, RecordWriter, accepted, expert_demonstrations, view_graph_demonstrations

    if not args.dataset and not args.bag:
        raise DataError("give --dataset (expert demonstrations in the simulator) and/or --bag (recorded searches)")
    config = load_config(args.config)
    out = Path(args.out)
    if (out / "records.jsonl").exists():
        raise DataError(f"{out} holds SFT data already; choose another --out")
    demos = []
    if args.dataset:
        demos += [(r, s, "expert") for r, s in expert_demonstrations(load_dataset(args.dataset, args.split), config,
                                                                     args.box_noise, args.seed)]
    for bag in args.bag or []:
        demos += [(r, s, "bag") for r, s in bag_demonstrations(bag, config)]
    counts: dict[str, int] = {}
    left_out: dict[str, int] = {}
    with RecordWriter(out) as writer:
        for result, scene, source in demos:
            ok = accepted(result, args.accept_unscored)
            if ok or args.keep_failures:
                counts[source] = counts.get(source, 0) + writer.add(result, source, scene, ok)
            else:
                why = "failed" if result.success is not None else "unscored"
                left_out[f"{source} {why}"] = left_out.get(f"{source} {why}", 0) + 1
        if args.view_graph:
            for result in view_graph_demonstrations([(r, s) for r, s, _ in demos], config, args.view_graph_limit,
                                                    args.accept_unscored):
                counts["view-graph"] = counts.get("view-graph", 0) + writer.add(result, "view-graph")
    if left_out:
        print("left out searches: " + ", ".join(f"{k} {v}" for k, v in left_out.items()) +
              ("; a recorded search has no score: check that it ended on its target and pass --accept-unscored"
               if any(k.endswith("unscored") for k in left_out) else ""))
    if not writer.count:
        (out / "records.jsonl").unlink()
        raise DataError(f"no search was accepted, nothing written to {out}; see the searches left out above")
    print(f"wrote {writer.count} decisions to {out / 'records.jsonl'} (" +
          ", ".join(f"{k} {v}" for k, v in counts.items()) + ")")
    return 0


def cmd_train_sft(args) -> int:
    from ..core.config import load_config
    from .settings import load_training_settings
    from .sft import train_sft

    settings = load_training_settings(args.config)
    train_sft(args.data, args.model, args.out, settings, load_config(args.seek_config), max_steps=args.max_steps,
              resume=args.resume, progress=not args.quiet)
    lines = (Path(args.out) / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    print(f"trained {last.get('step', 0)} steps, last loss {last.get('loss', float('nan')):.4f}; "
          f"adapter in {Path(args.out) / 'adapter'}")
    return 0


def cmd_train_grpo(args) -> int:
    from ..core.config import load_config
    from ..core.dataset import load_dataset
    from .grpo import train_grpo
    from .settings import load_training_settings

    settings = load_training_settings(args.config)

    def show(m: dict) -> None:
        if not args.quiet:
            print(f"update {m['step']:5d}  reward {m['reward']:+.3f}  sr {m['sr']:.2f}  steps {m['steps']:.2f}  "
                  f"kl {m['kl']:.4f}  clip {m['clip']:.3f}", flush=True)

    train_grpo(load_dataset(args.dataset, args.split), args.model, args.out, settings, load_config(args.seek_config), adapter=args.adapter,
               max_steps=args.max_steps, segmenter=args.segmenter, sam_model=args.sam_model, on_update=show,
               resume=args.resume)
    print(f"adapter in {Path(args.out) / 'adapter'}; metrics in {Path(args.out) / 'metrics.jsonl'}")
    return 0


def register(subparsers) -> None:
    """Add ``make-sft-data``, ``train-sft`` and ``train-grpo`` to an argparse subparsers object."""
    from ..cli import add_dataset_options

    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = subparsers.add_parser("make-sft-data", formatter_class=fmt,
                              help="demonstrations (expert in simulation, recorded bags) as SFT records")
    add_dataset_options(p, what="the expert searches every episode")
    p.add_argument("--bag", action="append", help="a rosbag2 of the training topics (repeatable)")
    p.add_argument("--out", required=True, help="output directory (records.jsonl, images/)")
    p.add_argument("--view-graph", action="store_true",
                   help="add any-start-to-target demonstrations from each scene's graph of recorded views")
    p.add_argument("--view-graph-limit", type=int, default=None, help="at most this many per instruction")
    p.add_argument("--keep-failures", action="store_true", help="also write searches that did not succeed")
    p.add_argument("--box-noise", type=float, default=0.0,
                   help="share of the expert's STOP boxes made wrong first (shifted, too large, a neighbour), so "
                        "its review turns show a recovery (REFINE to the right box); 0: none; 0.75 taught the learning "
                        "ladder's reviewer best (README, Segmentation as an agent)")
    p.add_argument("--seed", type=int, default=0, help="seed of the box noise")
    p.add_argument("--accept-unscored", action="store_true",
                   help="recorded searches (bags) have no score: write those that end in STOP with a box, on "
                        "the operator's word that they ended on their target (without it they are left out)")
    p.add_argument("--config", help="parameter YAML (camera, episode, reward, segmentation; default: built-in "
                                    "defaults)")
    p.set_defaults(func=cmd_make_sft_data)

    p = subparsers.add_parser("train-sft", formatter_class=fmt, help="supervised LoRA fine-tuning on SFT records")
    p.add_argument("--data", required=True, help="a make-sft-data output directory")
    p.add_argument("--model", required=True, help="Qwen3-VL model directory or hub id")
    p.add_argument("--out", required=True, help="run directory (metrics.jsonl, checkpoints/, adapter/)")
    p.add_argument("--max-steps", type=int, help="optimizer steps (default: sft.epochs over the data)")
    p.add_argument("--config", help="training YAML (lora, sft, grpo sections; default config/training.yaml values)")
    p.add_argument("--seek-config", help="parameter YAML of the camera (its field of view is in the prompt)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train_sft)

    p = subparsers.add_parser("train-grpo", formatter_class=fmt,
                              help="multi-turn GRPO in the simulator (G rollouts per episode in lockstep)")
    add_dataset_options(p, required=True, what="the episodes to roll out on")
    p.add_argument("--model", required=True, help="Qwen3-VL model directory or hub id")
    p.add_argument("--adapter", help="SFT adapter, merged into the weights; also the KL reference")
    p.add_argument("--out", required=True, help="run directory (metrics.jsonl, checkpoints/, adapter/)")
    p.add_argument("--max-steps", type=int, help="updates (default grpo.max_steps)")
    p.add_argument("--config", help="training YAML (lora, sft, grpo sections)")
    p.add_argument("--seek-config", help="parameter YAML (camera, episode length, rewards)")
    p.add_argument("--segmenter", default="oracle", help="oracle | sam3: the masks R_term's IoU is judged on")
    p.add_argument("--sam-model", help="sam3: model directory or hub id")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--quiet", action="store_true", help="no line per update")
    p.set_defaults(func=cmd_train_grpo)
