"""The ROS graph's step time against the in-process simulator, measured in the same run.

graph:  from the policy node publishing a move to the observation being ready in the policy node
        (the camera's view arrived, integrated into the episode's EgoSphere, canvas drawn), as the
        policy node reports it per decision (feedback ``observe_s``), over the moves of a few
        searches of the random policy on the bedroom sample (three node processes, FastDDS).
peer:   the same step in-process: ``shoot`` (render the view after the move) + ``Episode.observe``.

    python bench/graph_step.py [--moves 40]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from panoseeker_ros.core.actions import lattice_moves  # noqa: E402
from panoseeker_ros.core.dataset import load_dataset  # noqa: E402
from panoseeker_ros.core.environment import SimScene, shoot  # noqa: E402
from panoseeker_ros.core.episode import Decision, Done  # noqa: E402
from panoseeker_ros.paths import default_params, sample_dataset  # noqa: E402

GOAL_MS = 40.0
GOAL_RATIO = 2.0  # the graph's step at most twice the in-process one, measured in the same run


def in_process_ms(n: int) -> float:
    scene = SimScene(load_dataset(sample_dataset()).episodes[0])
    moves = [m for m in lattice_moves() if m.dphi == 0]
    times = []
    while len(times) < n:
        episode = scene.episode()
        req = episode.observe(shoot(scene.camera, scene.start(episode)))
        for i in range(scene.config.episode.max_steps - 1):
            move = moves[(5 * i + len(times)) % len(moves)]
            req = episode.observe(Decision(move, move.to_text()))
            t0 = time.perf_counter()
            req = episode.observe(shoot(scene.camera, req))
            times.append(time.perf_counter() - t0)
        if isinstance(req, Done):
            break
    return 1000 * statistics.median(times[:n])


def graph_ms(n: int) -> tuple[float, int]:
    from panoseeker_ros.nodes.launcher import Graph
    from panoseeker_ros.nodes.operator import run_seek

    from panoseeker_ros.nodes.launcher import default_transport

    domain = random.Random(os.getpid() ^ time.time_ns()).randint(1, 200)
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    default_transport(env)  # as `panoseeker launch` runs the graph
    os.environ.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    ns = f"/bench_graph_{os.getpid()}"
    steps = []
    with Graph(default_params(), ns, shared={"dataset": str(sample_dataset())},
               per_node={"policy_node": {"backend": "random"}}, log_level="warn", env=env):
        searches = 0
        while len(steps) < n and searches < 50:
            searches += 1
            outcome = run_seek("the wardrobe", ns, 120.0, ready_timeout=60.0, on_line=lambda line: None)
            steps += [fb["observe_s"] for fb in outcome.feedback[1:]]  # the first view answers a reset
    return 1000 * statistics.median(steps[:n]), len(steps[:n])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=40)
    args = parser.parse_args()
    peer = in_process_ms(args.moves)
    graph, n = graph_ms(args.moves)
    verdict = "meets" if graph <= GOAL_MS else "misses"
    ratio_verdict = "meets" if graph / peer <= GOAL_RATIO else "misses"
    print(f"graph_step: {n} moves of the random policy on the bedroom sample, 1024x768 views, the official EgoSphere picture")
    print(f"graph_step: ROS graph (move -> view + canvas at the policy) {graph:.1f} ms median, in-process "
          f"shoot + Episode.observe {peer:.1f} ms, ratio {graph / peer:.2f}x (goal <= {GOAL_RATIO:g}x: {ratio_verdict}); "
          f"goal <= {GOAL_MS:g} ms: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
