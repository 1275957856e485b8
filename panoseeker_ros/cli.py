"""``panoseeker``: the command line of the package (simulator, benchmark, models, ROS graph)."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from .core.config import ConfigError, load_config
from .core.dataset import DatasetError, load_dataset, load_rgb
from .core.geometry import Pose
from .core.visualize import save_rgb
from .paths import sample_dataset

# Modules that add their own subcommands with ``register(subparsers)``.
COMMAND_MODULES: tuple[str, ...] = ("panoseeker_ros.models.commands", "panoseeker_ros.nodes.commands",
                                     "panoseeker_ros.drivers.commands", "panoseeker_ros.training.commands",
                                     "panoseeker_ros.nodes.console")


class UsageError(Exception):
    """A mistake on the command line; printed as one line."""


def add_dataset_options(p: argparse.ArgumentParser, required: bool = False, what: str = "") -> None:
    """``--dataset`` (a dataset.json, its directory, or the official benchmark's folder) and ``--split``."""
    p.add_argument("--dataset", required=required,
                   help=(what or "the episodes") + ": dataset.json or its directory, or the folder of the official "
                                                   "APRS benchmark (with --split)")
    p.add_argument("--split", choices=("test", "train"),
                   help="the split of the official APRS benchmark given as --dataset")


def _add_policy_options(p: argparse.ArgumentParser) -> None:
    from .models.registry import DETECTORS, ONE_SHOT, POLICIES, SEGMENTERS

    p.add_argument("--policy", default="expert", help=" | ".join(POLICIES + ONE_SHOT) + " (default: expert)")
    p.add_argument("--detector", default="oracle",
                   help="scan and static: " + " | ".join(DETECTORS) + " (oracle reads the ground truth; sam3-text "
                        "segments the instruction's target phrase with SAM-3; default: oracle)")
    p.add_argument("--detector-model", help="sam3-text: Sam3Model directory or hub id (default facebook/sam3)")
    p.add_argument("--detector-threshold", type=float,
                   help="scan and static: the least score of a match (default 0.3 for sam3-text, 0 for oracle)")
    p.add_argument("--segmenter", default="oracle", help=" | ".join(SEGMENTERS) + " (default: oracle)")
    p.add_argument("--model", help="qwen: model directory or hub id (default Qwen/Qwen3-VL-8B-Instruct)")
    p.add_argument("--adapter", help="qwen: LoRA adapter directory")
    p.add_argument("--memory", default="egosphere", help="qwen: none | text | visual | hybrid | egosphere")
    p.add_argument("--decoding", default="constrained", help="qwen: constrained | greedy")
    p.add_argument("--sam-model", help="sam3: model directory or hub id (default facebook/sam3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random policy")
    p.add_argument("--config", help="parameter YAML (default: built-in defaults, same as config/seek.yaml)")


def _backends(args, config):
    """(policy for a scene's truth, segmenter for a scene's truth) as the options choose them."""
    from .models.registry import per_scene

    policy_opts = {"seed": args.seed}
    if args.policy == "qwen":
        policy_opts = {k: v for k, v in (("model", args.model), ("adapter", args.adapter), ("memory", args.memory),
                                          ("decoding", args.decoding)) if v is not None}
    if args.policy in ("scan", "static"):
        policy_opts.update(detector=args.detector, min_score=args.detector_threshold,
                           detector_options={"model": args.detector_model} if args.detector_model else {})
    seg_opts = {"model": args.sam_model} if args.segmenter == "sam3" and args.sam_model else {}
    return per_scene("policy", args.policy, config, **policy_opts), per_scene("segmenter", args.segmenter, config,
                                                                               **seg_opts)


def _check_detector_options(args) -> None:
    uses = args.detector != "oracle" or args.detector_model or args.detector_threshold is not None
    if uses and args.policy not in ("scan", "static"):
        raise UsageError(f"--detector options are for --policy scan or static, not {args.policy}; drop them")
    if getattr(args, "through_ros", False) and (uses or args.policy == "static"):
        raise UsageError("--through-ros runs the graph's step policies with their oracle detector; run --policy "
                         "static and --detector options in-process (drop --through-ros)")


def _run_options(args) -> dict:
    """The options that decide a run's numbers (stored in summary.json; --resume and merge-runs check them)."""
    keys = ("policy", "detector", "detector_model", "detector_threshold", "segmenter", "model", "adapter", "memory",
            "decoding", "sam_model", "seed", "config", "through_ros", "split")
    return {k: getattr(args, k) for k in keys}


def cmd_eval(args) -> int:
    from .evaluation import evaluate, format_table, parse_shard, simulate

    config = load_config(args.config)
    if args.batch < 1:
        raise UsageError(f"--batch {args.batch}: give 1 or more episodes to run in lockstep")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit {args.limit} must be at least 1")
    shard = parse_shard(args.shard) if args.shard else None
    _check_detector_options(args)
    dataset = load_dataset(args.dataset, args.split)
    if args.through_ros:
        from .nodes.ros_eval import through_ros

        run = through_ros(dataset, args)
    else:
        run = simulate(*_backends(args, config), config)
    out = Path(args.out)
    try:
        summary, _ = evaluate(dataset, run, config, out, progress=not args.quiet, limit=args.limit, resume=args.resume,
                              shard=shard, options=_run_options(args), batch=args.batch)
    except KeyboardInterrupt:
        done = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
        print(f"panoseeker eval: interrupted after {done.get('episodes_done', 0)} of {done.get('episodes_expected', '?')} "
              f"episodes; partial summary in {out / 'summary.json'}; rerun with --resume to continue", file=sys.stderr)
        return 130
    detector = f" detector={args.detector}" if args.policy in ("scan", "static") else ""
    segmenter = "" if args.policy == "static" else f" segmenter={args.segmenter}"  # static uses the detector's mask
    title = (f"policy={args.policy}{detector}{segmenter} dataset={dataset.path}"
             f"{f' split={dataset.split}' if dataset.split else ''}"
             f"{f' shard={args.shard}' if shard else ''} (tau={config.reward.tau_deg:g} deg)")
    print(format_table(summary, title))
    print(f"wrote {out / 'summary.json'} and {out / 'episodes.jsonl'}")
    return 0


def cmd_merge_runs(args) -> int:
    from .evaluation import format_table, merge_runs

    summary = merge_runs(args.runs, args.out)
    missing = summary["episodes_expected"] - summary["episodes_done"]
    title = f"merged {len(args.runs)} runs of {summary['dataset']}" + (f" (partial: {missing} episodes missing)"
                                                                       if summary["partial"] else "")
    print(format_table(summary, title))
    print(f"wrote {Path(args.out) / 'summary.json'} and {Path(args.out) / 'episodes.jsonl'}")
    return 0


def cmd_render_view(args) -> int:
    from .core.geometry import PanoramaRenderer

    config = load_config(args.config)
    erp = load_rgb(args.erp)
    try:
        renderer = PanoramaRenderer(erp)
    except ValueError as exc:
        raise UsageError(f"--erp {args.erp}: {exc}") from None
    if not -90.0 <= args.phi <= 90.0:
        raise UsageError(f"--phi {args.phi} is out of range; elevation is in degrees within [-90, 90]")
    save_rgb(args.out, renderer.render(Pose(args.theta, args.phi), config.camera.intrinsics()))
    print(f"wrote {args.out}")
    return 0


def cmd_make_scenes(args) -> int:
    from .core.scenes import generate_benchmark

    background = args.background
    if background != "plain" and not Path(background).is_file():
        raise UsageError(f"--background {background} is neither 'plain' nor an existing ERP image")
    path = generate_benchmark(args.out, n_scenes=args.scenes, episodes_per_scene=args.per_scene, seed=args.seed,
                              background=background, erp_width=args.width)
    print(f"wrote {path} ({len(load_dataset(path))} episodes)")
    return 0


def cmd_show_episode(args) -> int:
    from .evaluation import episode_png

    run = Path(args.run)
    summary_path, lines_path = run / "summary.json", run / "episodes.jsonl"
    if not lines_path.is_file() or not summary_path.is_file():
        raise UsageError(f"--run {run} has no summary.json/episodes.jsonl; pass the --out directory of 'panoseeker eval'")
    records = [json.loads(line) for line in lines_path.read_text().splitlines() if line.strip()]
    if not records:
        raise UsageError(f"{lines_path} holds no episodes")
    record = records[0] if args.episode is None else next((r for r in records if r["id"] == args.episode), None)
    if record is None:
        raise UsageError(f"episode {args.episode!r} is not in {lines_path}; ids there start with {records[0]['id']!r}")
    summary = json.loads(summary_path.read_text())
    dataset = (load_dataset(args.dataset, args.split) if args.dataset
               else load_dataset(summary["dataset"], summary.get("split")))
    save_rgb(args.out, episode_png(dataset, record, load_config(args.config)))
    print(f"wrote {args.out}")
    return 0


def cmd_demo(args) -> int:
    """One episode of the bedroom sample in the simulator, printed step by step, drawn to a PNG."""
    from .evaluation import episode_png, simulate

    config = load_config(args.config)
    _check_detector_options(args)
    dataset = load_dataset(args.dataset or sample_dataset(), args.split)
    spec = dataset.by_id(args.episode) if args.episode else dataset.episodes[0]
    result = simulate(*_backends(args, config), config)([spec])[0]
    print(f"instruction [{spec.category}]: {spec.instruction}")
    for rec in result.records:
        print(f"  step {rec.step:2d} at (θ={rec.pose.theta:7.1f}°, ϕ={rec.pose.phi:5.1f}°): {rec.action.to_text()}")
    r = result.outcome
    print(f"{'success' if result.success else 'failure'}: IoU {r.iou:.2f}, final distance {r.final_distance_deg:.1f}°, "
          f"path {r.path_deg:.0f}° (shortest {r.shortest_deg:.0f}°)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_rgb(out, episode_png(dataset, result.as_dict(), config))
    print(f"wrote {out}")
    return 0


def cmd_export_aprs(args) -> int:
    from .core.aprs import export_aprs

    dataset = load_dataset(args.dataset)
    path = export_aprs(dataset, args.out, args.format, args.split)
    print(f"wrote {len(dataset)} episodes to {path}; evaluate with: panoseeker eval --dataset {args.out} "
          f"--split {args.split} ...")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="panoseeker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("eval", help="run a policy over an APRS dataset and print SR / AS / SPL / mIoU")
    add_dataset_options(p, required=True)
    p.add_argument("--out", required=True, help="output directory (summary.json, episodes.jsonl)")
    p.add_argument("--limit", type=int, help="only the first N episodes")
    p.add_argument("--shard", help="I/N: only episodes I, I+N, I+2N, ... (0 <= I < N); combine with merge-runs")
    p.add_argument("--resume", action="store_true", help="keep the episodes already in --out and run the rest")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--batch", type=int, default=1,
                   help="episodes run in lockstep; a policy that batches decides them in one call (default 1)")
    p.add_argument("--through-ros", action="store_true",
                   help="run each episode through the launched ROS graph (same files as in-process)")
    p.add_argument("--timeout", type=float, default=120.0, help="--through-ros: seconds per episode")
    _add_policy_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("merge-runs", help="combine the --out directories of sharded eval runs into one summary")
    p.add_argument("runs", nargs="+", metavar="DIR", help="run directories (the --out of 'panoseeker eval --shard')")
    p.add_argument("--out", required=True, help="output directory (summary.json, episodes.jsonl)")
    p.set_defaults(func=cmd_merge_runs)

    p = sub.add_parser("render-view", help="render a perspective view of a panorama")
    p.add_argument("--erp", required=True, help="equirectangular image (2:1)")
    p.add_argument("--theta", type=float, required=True, help="azimuth in degrees, positive right")
    p.add_argument("--phi", type=float, required=True, help="elevation in degrees, positive up")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--config", help="parameter YAML for the camera's field of view and size")
    p.set_defaults(func=cmd_render_view)

    p = sub.add_parser("make-scenes", help="generate a seeded benchmark of synthetic scenes and instructions")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--scenes", type=int, default=8)
    p.add_argument("--per-scene", type=int, default=4, help="episodes per scene")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--background", default="plain", help="'plain' or an ERP image to insert objects into")
    p.add_argument("--width", type=int, default=2048, help="ERP width in pixels (height is half)")
    p.set_defaults(func=cmd_make_scenes)

    p = sub.add_parser("show-episode", help="draw an evaluated episode: EgoSphere, path, final mask")
    p.add_argument("--run", required=True, help="the --out directory of 'panoseeker eval'")
    p.add_argument("--episode", help="episode id (default: the first)")
    p.add_argument("--out", required=True, help="output PNG")
    add_dataset_options(p, what="the dataset (default: the one recorded in summary.json)")
    p.add_argument("--config", help="parameter YAML")
    p.set_defaults(func=cmd_show_episode)

    p = sub.add_parser("export-aprs", help="write a dataset.json's episodes in the official APRS benchmark layout")
    p.add_argument("--dataset", required=True, help="dataset.json or its directory (the sample, make-scenes output)")
    p.add_argument("--out", required=True, help="the benchmark folder to write")
    p.add_argument("--format", default="jsonl", choices=("jsonl", "csv", "parquet"),
                   help="SPLIT.jsonl, SPLIT.csv or data/SPLIT.parquet (default: jsonl)")
    p.add_argument("--split", default="test", choices=("test", "train"), help="the split written (default: test)")
    p.set_defaults(func=cmd_export_aprs)

    p = sub.add_parser("demo", help="one simulated episode on the bedroom sample, printed and drawn")
    p.add_argument("--out", default="out/demo_episode.png", help="output PNG")
    add_dataset_options(p, what="the dataset (default: the shipped bedroom sample)")
    p.add_argument("--episode", help="episode id (default: the first)")
    _add_policy_options(p)
    p.set_defaults(func=cmd_demo)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UsageError, ConfigError, DatasetError) as exc:
        print(f"panoseeker {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # unknown policy or segmenter names, bad option values
        print(f"panoseeker {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"panoseeker {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
