"""`panoseeker eval --through-ros` runs the same episodes as in-process evaluation: the one episode
stepper, driven once in-process and once over topics by the launched graph, gives the same records."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import pytest

pytest.importorskip("rclpy")

from panoseeker_ros.paths import sample_dataset  # noqa: E402

EPISODES = 3


def _eval(out, *extra, dataset=("--dataset", str(sample_dataset())), limit=EPISODES):
    env = dict(os.environ, ROS_DOMAIN_ID=str(random.Random(os.getpid() ^ time.time_ns()).randint(1, 200)),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    proc = subprocess.run([sys.executable, "-m", "panoseeker_ros.cli", "eval", *dataset,
                           "--out", str(out), "--limit", str(limit), "--quiet", *extra],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    return json.loads((out / "summary.json").read_text()), records


def _flat(poses):
    return [v for p in poses for v in (p["theta"], p["phi"])]


def test_eval_through_ros_matches_in_process_eval(tmp_path):
    summary, records = _eval(tmp_path / "in_process")
    ros_summary, ros_records = _eval(tmp_path / "ros", "--through-ros")
    assert len(records) == len(ros_records) == EPISODES
    for a, b in zip(records, ros_records):
        assert a["id"] == b["id"] and a["success"] == b["success"]
        assert [s["action"] for s in a["trajectory"]] == [s["action"] for s in b["trajectory"]], a["id"]
        assert _flat([s["pose"] for s in a["trajectory"]]) == pytest.approx(_flat([s["pose"] for s in b["trajectory"]]),
                                                                             abs=1e-6), a["id"]
        assert _flat(a["poses"]) == pytest.approx(_flat(b["poses"]), abs=1e-6) and a["looks"] == b["looks"]
        assert abs(a["mask_pixels"] - b["mask_pixels"]) <= 0.01 * max(a["mask_pixels"], 1), a["id"]
        assert a["iou"] == pytest.approx(b["iou"], abs=0.01) and a["reward"] == pytest.approx(b["reward"], abs=0.02)
    for key in ("sr", "as", "spl", "miou"):
        assert summary[key] == pytest.approx(ros_summary[key], abs=0.01), key
    assert set(summary) == set(ros_summary)


def test_the_graph_reads_the_official_benchmark_files_by_split(tmp_path):
    """The nodes' dataset / split parameters: one episode of an exported benchmark through the graph."""
    from panoseeker_ros.core.aprs import export_aprs
    from panoseeker_ros.core.dataset import load_dataset

    export_aprs(load_dataset(sample_dataset()), tmp_path / "bench", "csv", "train")
    bench = ("--dataset", str(tmp_path / "bench"), "--split", "train")
    summary, records = _eval(tmp_path / "in_process", dataset=bench, limit=1)
    ros_summary, ros_records = _eval(tmp_path / "ros", "--through-ros", dataset=bench, limit=1)
    assert ros_summary["split"] == "train" and ros_summary["iou_level"] == "box"
    a, b = records[0], ros_records[0]
    assert a["id"] == b["id"] == "train_0" and a["success"] and b["success"]
    assert _flat(a["poses"]) == pytest.approx(_flat(b["poses"]), abs=1e-6)
    assert a["iou"] == pytest.approx(b["iou"], abs=0.01)
