"""The benchmark runner: records an independent scorer can use, resuming a killed run, shards that merge."""
import json

import numpy as np
import pytest

from panoseeker_ros.cli import main
from panoseeker_ros.core.config import SeekConfig
from panoseeker_ros.core.dataset import load_dataset
from panoseeker_ros.core.geometry import Pose, great_circle_deg
from panoseeker_ros.evaluation import RunError, evaluate, merge_runs, parse_shard, read_records, simulate
from panoseeker_ros.models.registry import per_scene
from panoseeker_ros.paths import sample_dataset

METRICS = ("n", "sr", "as", "spl", "miou", "per_category")


@pytest.fixture(scope="module")
def bedroom():
    return load_dataset(sample_dataset())


def _policies(name="expert"):
    return per_scene("policy", name, SeekConfig(), seed=1)


def _oracle():
    return per_scene("segmenter", "oracle", SeekConfig())


def _run(dataset, out, policy="expert", **kwargs):
    return evaluate(dataset, simulate(_policies(policy), _oracle(), SeekConfig()), SeekConfig(), out, progress=False,
                    **kwargs)


def _interrupting(factory, after: int):
    """A policy factory that stops the run (as Ctrl-C would) when asked for episode ``after + 1``."""
    calls = []

    def make(truth):
        calls.append(truth.centroid)
        if len(calls) > after:
            raise KeyboardInterrupt
        return factory(truth)
    return make


def test_records_hold_what_an_independent_scorer_needs(bedroom, tmp_path):
    summary, records = _run(bedroom, tmp_path / "run", limit=6)
    tau = SeekConfig().reward.tau_deg
    assert [r["id"] for r in read_records(tmp_path / "run" / "episodes.jsonl")] == [r["id"] for r in records]
    ok, spl = [], []
    for r, spec in zip(records, bedroom.episodes):
        assert r["target_centroid"] == spec.target_centroid.as_dict() and r["initial_pose"] == spec.initial_pose.as_dict()
        assert r["looks"] == len(r["poses"]) - len(r["trajectory"]) >= 1  # the expert's STOP is aligned
        poses = [Pose(**p) for p in r["poses"]]
        path = sum(great_circle_deg(a.theta, a.phi, b.theta, b.phi) for a, b in zip(poses, poses[1:]))
        start, final, centroid = Pose(**r["initial_pose"]), Pose(**r["final_pose"]), Pose(**r["target_centroid"])
        shortest = great_circle_deg(start.theta, start.phi, centroid.theta, centroid.phi)
        assert r["path_deg"] == pytest.approx(path) and r["shortest_deg"] == pytest.approx(shortest)
        s = great_circle_deg(final.theta, final.phi, centroid.theta, centroid.phi) < tau and r["iou"] >= 0.5
        ok.append(s)
        spl.append(s * shortest / max(shortest, path))
    assert summary["sr"] == pytest.approx(np.mean(ok)) and summary["spl"] == pytest.approx(np.mean(spl))


def test_a_killed_run_resumes_to_the_summary_of_an_uninterrupted_one(bedroom, tmp_path):
    full, _ = _run(bedroom, tmp_path / "full", policy="random", limit=7)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        evaluate(bedroom, simulate(_interrupting(_policies("random"), 3), _oracle(), SeekConfig()), SeekConfig(), out,
                 progress=False, limit=7)
    partial = json.loads((out / "summary.json").read_text())
    assert partial["partial"] and partial["episodes_done"] == 3 and partial["n"] == 3
    with open(out / "episodes.jsonl", "a") as f:  # the line being written when the process died
        f.write('{"id": "bedroom-004", "categ')
    calls = []
    counting = lambda truth: calls.append(truth.centroid) or _policies("random")(truth)  # noqa: E731
    resumed, records = evaluate(bedroom, simulate(counting, _oracle(), SeekConfig()), SeekConfig(), out, progress=False,
                                limit=7, resume=True)
    assert calls == [ep.target_centroid for ep in bedroom.episodes[3:7]]  # only the missing episodes ran
    assert not resumed["partial"] and resumed == full
    assert json.loads((out / "summary.json").read_text()) == json.loads((tmp_path / "full" / "summary.json").read_text())
    assert [r["id"] for r in read_records(out / "episodes.jsonl")] == [ep.id for ep in bedroom.episodes[:7]]


def test_a_failing_episode_still_leaves_a_partial_summary(bedroom, tmp_path):
    def broken(truth):
        if truth.centroid == bedroom.by_id("bedroom-003").target_centroid:
            raise RuntimeError("model crashed")
        return _policies("expert")(truth)
    with pytest.raises(RuntimeError):
        evaluate(bedroom, simulate(broken, _oracle(), SeekConfig()), SeekConfig(), tmp_path, progress=False, limit=5)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["partial"] and summary["episodes_done"] == 2 and summary["sr"] == 1.0


def test_batched_runs_write_the_same_records(bedroom, tmp_path):
    one, _ = _run(bedroom, tmp_path / "one", policy="scan", limit=5)
    three, _ = _run(bedroom, tmp_path / "three", policy="scan", limit=5, batch=3)
    assert {k: one[k] for k in METRICS} == {k: three[k] for k in METRICS} and not three["partial"]


def test_shards_merge_to_the_unsharded_summary(bedroom, tmp_path):
    whole, _ = _run(bedroom, tmp_path / "whole", policy="scan")
    shards = [tmp_path / f"shard{i}" for i in range(3)]
    sizes = [len(_run(bedroom, d, policy="scan", shard=(i, 3))[1]) for i, d in enumerate(shards)]
    assert sizes == [6, 6, 5]
    half = merge_runs(shards[:2], tmp_path / "half")
    assert half["partial"] and half["episodes_done"] == 12
    merged = merge_runs(shards, tmp_path / "merged")
    assert not merged["partial"] and {k: merged[k] for k in METRICS} == {k: whole[k] for k in METRICS}
    strip = lambda r: {k: v for k, v in r.items() if k not in ("trajectory", "reviews")}  # noqa: E731 (latencies differ)
    assert [strip(r) for r in read_records(tmp_path / "merged" / "episodes.jsonl")] == \
        [strip(r) for r in read_records(tmp_path / "whole" / "episodes.jsonl")]
    with pytest.raises(RunError, match="is in both"):
        merge_runs([shards[0], shards[0]], tmp_path / "twice")
    _run(bedroom, tmp_path / "expert0", policy="expert", shard=(0, 3), options={"policy": "expert"})
    _run(bedroom, tmp_path / "scan1", policy="scan", shard=(1, 3), options={"policy": "scan"})
    with pytest.raises(RunError, match="was run with policy='scan'"):
        merge_runs([tmp_path / "expert0", tmp_path / "scan1"], tmp_path / "mixed")


@pytest.mark.parametrize("text, fragment", [("3/3", "0 <= I < N"), ("1of4", "must look like I/N"), ("0/0", "N >= 1")])
def test_bad_shards_are_one_line(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_shard(text)
    assert parse_shard("2/5") == (2, 5)


def test_cli_resume_shard_and_merge(tmp_path, capsys):
    ds = str(sample_dataset())
    base = ["eval", "--dataset", ds, "--policy", "scan", "--quiet", "--limit", "4"]
    for i in range(2):
        assert main(base + ["--out", str(tmp_path / f"s{i}"), "--shard", f"{i}/2"]) == 0
    assert "shard=1/2" in capsys.readouterr().out
    assert main(["merge-runs", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m")]) == 0
    assert "overall" in capsys.readouterr().out
    assert json.loads((tmp_path / "m" / "summary.json").read_text())["episodes_done"] == 4
    # the same --out again: refused without --resume, a no-op with it, refused with other options
    assert main(base + ["--out", str(tmp_path / "s0"), "--shard", "0/2"]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "s0"), "--shard", "0/2", "--resume"]) == 0
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "s0"), "--shard", "0/2", "--resume", "--policy", "expert"]) == 2
    err = capsys.readouterr().err.strip()
    assert "was run with policy='scan', now policy='expert'" in err and len(err.splitlines()) == 1
    assert main(base + ["--out", str(tmp_path / "x"), "--shard", "2/2"]) == 2
    assert "0 <= I < N" in capsys.readouterr().err
    assert main(["merge-runs", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m2")]) == 2
    assert "has no summary.json" in capsys.readouterr().err
