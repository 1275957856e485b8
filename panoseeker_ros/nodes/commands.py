"""CLI subcommands of the ROS graph: ``panoseeker launch``, ``panoseeker seek``, ``panoseeker record``.

``register(subparsers)`` adds them to the ``panoseeker`` parser; each returns an exit code.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from ..core.config import ConfigError, load_config, read_ros_parameters
from ..core.dataset import load_dataset
from ..paths import default_params, sample_dataset
from ..models.registry import POLICIES, SEGMENTERS
from . import interface as api
from .launcher import default_discovery, default_transport
from .recorder import DEFAULT_MAX_BYTES


def _graph_choices(args, params: Path) -> tuple[dict, dict[str, dict], Path | None]:
    """Overrides from the command line (shared, per node) and the dataset the simulation uses (None with a
    real camera and no dataset anywhere: nothing is simulated)."""
    in_file = read_ros_parameters(params).get("dataset") or ""
    real_camera = read_ros_parameters(params, "/**/camera_node").get("driver", "sim") != "sim"
    dataset = (Path(args.dataset) if args.dataset else Path(in_file) if in_file else
               None if real_camera else sample_dataset())
    shared = {"dataset": str(dataset)} if dataset is not None else {}
    if args.split:
        shared["split"] = args.split
    if args.episode:
        shared["episode_id"] = args.episode
    policy = {k: v for k, v in (("backend", args.policy), ("model", args.model), ("adapter", args.adapter),
                                ("memory", args.memory), ("decoding", args.decoding), ("device", args.device))
              if v is not None}
    segmentation = {k: v for k, v in (("backend", args.segmenter), ("model", args.sam_model),
                                      ("device", args.device)) if v is not None}
    if args.step_period is not None:
        policy["min_step_period_s"] = float(args.step_period)
    return shared, {"policy_node": policy, "segmentation_node": segmentation}, dataset


def cmd_launch(args) -> int:
    from .launcher import Graph, run_graph

    params = Path(args.params) if args.params else default_params()
    load_config(params)  # one clear line for a broken params file, before every node says it
    shared, per_node, dataset = _graph_choices(args, params)
    if dataset is None:  # a real camera: the graph searches the room
        if args.demo:
            raise ConfigError(f"--demo searches a simulated episode, but {params} has a real camera driver and no "
                              f"dataset; pass --dataset sim/bedroom/dataset.json or use a params file with driver: sim")
        graph = Graph(params, args.namespace, shared, per_node, log_level=args.log_level)
        return run_graph(graph, respawn=args.respawn)
    # one clear line for a bad dataset or episode, before the nodes say it
    ds = load_dataset(dataset, args.split or read_ros_parameters(params).get("split") or None)
    spec = ds.by_id(args.episode) if args.episode else ds.episodes[0]
    graph = Graph(params, args.namespace, shared, per_node, log_level=args.log_level or ("warn" if args.demo else None))
    if not args.demo:
        return run_graph(graph, respawn=args.respawn)

    def demo(g) -> int:
        from .operator import pose_text, run_seek
        from ..core.geometry import pose_to_pan_tilt

        instruction = args.instruction or spec.instruction
        print(f"episode {spec.id} [{spec.category}] of {dataset}: {instruction!r}, start at "
              f"{pose_text(*pose_to_pan_tilt(spec.initial_pose))}", flush=True)

        def dead() -> str | None:
            gone = g.exited()
            return None if not gone else "; ".join(f"{n} exited with code {c}" for n, c in gone.items())

        outcome = run_seek(instruction, args.namespace, args.timeout, args.overlay, args.ready_timeout,
                           on_line=lambda line: print(line, flush=True), abort=dead)
        if outcome.state not in ("success", "failure"):
            print(f"{outcome.state}: {outcome.message}", flush=True)
        steps = [fb for fb in outcome.feedback if "review" not in fb]  # review turns are not steps
        if steps:
            graph_s = [fb.get("observe_s", 0.0) for fb in steps]
            policy_s = [fb.get("latency_s", 0.0) for fb in steps]
            print(f"{len(steps)} steps; per step: graph (request → view) "
                  f"{sum(graph_s) / len(graph_s):.3f} s, policy {sum(policy_s) / len(policy_s):.3f} s on average",
                  flush=True)
        return outcome.exit_code

    return run_graph(graph, demo, on_line=lambda line: print(line, flush=True))


def cmd_seek(args) -> int:
    from .operator import run_seek

    outcome = run_seek(args.instruction, args.namespace, args.timeout, args.overlay, args.ready_timeout,
                       on_line=lambda line: print(line, flush=True))
    if outcome.state not in ("success", "failure"):
        print(f"{outcome.state}: {outcome.message}", flush=True)
    return outcome.exit_code


def cmd_record(args) -> int:
    from .recorder import record

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        counts = record(args.out, args.topics, args.duration, args.namespace, args.storage,
                        on_line=lambda line: print(line, flush=True), max_bytes=int(args.max_size * 1e6))
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0 if counts else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("launch", help="start the ROS graph (" + ", ".join(api.NODES) + ")",
                              description="Start the graph's nodes as processes from one params file; Ctrl-C stops "
                                          "them all. --demo also searches one simulated episode and exits.")
    p.add_argument("--params", help="ROS params YAML (default: the package's config/seek.yaml)")
    p.add_argument("--namespace", default=api.DEFAULT_NAMESPACE, help="namespace of every topic (default %(default)s)")
    p.add_argument("--dataset", help="simulated scene: dataset.json (default: the params file's, else the "
                                     "shipped bedroom sample)")
    p.add_argument("--split", choices=("test", "train"), help="the split when --dataset is the official APRS "
                                                             "benchmark's folder")
    p.add_argument("--episode", help="episode id in the dataset (default: the first)")
    p.add_argument("--policy", choices=POLICIES, help="policy backend (default: the params file's)")
    p.add_argument("--segmenter", choices=SEGMENTERS, help="segmenter backend (default: the params file's)")
    p.add_argument("--model", help="qwen: model directory")
    p.add_argument("--adapter", help="qwen: LoRA adapter directory")
    p.add_argument("--memory", help="qwen: memory kind")
    p.add_argument("--decoding", help="qwen: decoding")
    p.add_argument("--sam-model", help="sam3: model directory")
    p.add_argument("--device", help="torch device of the learned backends")
    p.add_argument("--step-period", type=float, help="least seconds between two decisions (pace the search)")
    p.add_argument("--respawn", action="store_true",
                   help="restart a node that exits (default: stop the graph); a failed status is published either way")
    p.add_argument("--log-level", choices=("debug", "info", "warn", "error"),
                   help="node log level (default info; warn with --demo)")
    p.add_argument("--demo", action="store_true",
                   help="send the episode's instruction, print each step, save the overlay, exit (0: success)")
    p.add_argument("--instruction", help="--demo: instruction to send (default: the episode's)")
    p.add_argument("--overlay", default="out/ros_demo_overlay.png", help="--demo: overlay PNG (default %(default)s)")
    p.add_argument("--timeout", type=float, default=120.0, help="--demo: seconds to wait for the result")
    p.add_argument("--ready-timeout", type=float, default=60.0, help="--demo: seconds to wait for the nodes")
    p.set_defaults(func=cmd_launch)

    p = subparsers.add_parser("seek", help="send an instruction to a running graph and print the search",
                              description="Publish an instruction, print feedback until the result. Exit code 0: "
                                          "success, 1: failure / timeout / cancelled, 2: rejected, 3: no graph.")
    p.add_argument("instruction", help='what to find, e.g. "the chair next to the TV"')
    p.add_argument("--namespace", default=api.DEFAULT_NAMESPACE, help="namespace of the graph (default %(default)s)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the result (default %(default)s)")
    p.add_argument("--ready-timeout", type=float, default=10.0,
                   help="seconds to wait for the graph (default %(default)s)")
    p.add_argument("--overlay", help="save the final overlay picture to this PNG")
    p.set_defaults(func=cmd_seek)

    p = subparsers.add_parser("record", help="record the graph's topics into a rosbag2 (mcap or sqlite3)",
                              description="Record the training topics (or --topics) of a running graph. Topics: "
                                          + ", ".join(api.TOPIC_BY_NAME))
    p.add_argument("--out", required=True, help="bag directory to create")
    p.add_argument("--topics", nargs="+", help="relative topic names (default: the training topics)")
    p.add_argument("--duration", type=float, help="seconds to record (default: until Ctrl-C)")
    p.add_argument("--namespace", default=api.DEFAULT_NAMESPACE, help="namespace of the graph (default %(default)s)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="bag storage (default %(default)s)")
    p.add_argument("--max-size", type=float, default=DEFAULT_MAX_BYTES / 1e6, metavar="MB",
                   help="stop once this many MB of messages are written (default %(default)g)")
    p.set_defaults(func=cmd_record)


def build_parser() -> argparse.ArgumentParser:
    """A parser with only these subcommands (for ``python -m panoseeker_ros.nodes.commands``)."""
    parser = argparse.ArgumentParser(prog="panoseeker")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def main(argv=None) -> int:
    from ..core.dataset import DatasetError

    args = build_parser().parse_args(argv)
    default_discovery(os.environ)  # this machine only, unless the environment says otherwise
    default_transport(os.environ)  # views through shared memory in one piece
    try:
        return int(args.func(args) or 0)
    except (ConfigError, DatasetError, ValueError) as exc:
        print(f"panoseeker {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
