"""SFT data: expert records that rebuild the policy's observation, view-graph augmentation, bags."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bag_fixtures import write_teleop_bag
from panoseeker_ros.cli import main
from panoseeker_ros.core.actions import Action
from panoseeker_ros.core.config import load_config
from panoseeker_ros.core.dataset import load_dataset
from panoseeker_ros.core.geometry import pose_distance
from panoseeker_ros.models.prompting import MEMORY_VARIANTS, build_prompt
from panoseeker_ros.training.bags import bag_demonstrations, snap_move
from panoseeker_ros.training.demonstrations import (DataError, RecordWriter, expert_demonstrations, load_records,
                                                    record_observation, view_graph_demonstrations)
from training_fixtures import simple_task, small_config


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    config = load_config(small_config(root / "small.yaml"))
    dataset = load_dataset(simple_task(root / "scenes", 2, seed=5))
    return root, config, dataset, expert_demonstrations(dataset, config)


def test_records_rebuild_the_observation_the_policy_saw(task, tmp_path):
    root, config, dataset, demos = task
    with RecordWriter(tmp_path) as writer:
        for result, scene in demos:
            writer.add(result, "expert", scene)
    records = load_records(tmp_path)
    originals = [rec for result, _ in demos for rec in result.records + result.reviews]
    assert len(records) == len(originals) == writer.count >= 2 * len(dataset)
    assert sum(r.get("turn") == "review" for r in records) == sum(len(r.reviews) for r, _ in demos) >= len(dataset)
    for rec, orig in zip(records, originals):
        assert rec["answer"] == orig.action.to_text()
        obs = record_observation(rec, tmp_path)
        for memory in MEMORY_VARIANTS:  # the same prompt text and the same pixels for every memory variant
            a, b = build_prompt(memory, obs), build_prompt(memory, orig.observation)
            assert a.messages == b.messages
            assert len(a.images) == len(b.images) and all(np.array_equal(x, y) for x, y in zip(a.images, b.images))
    line = json.loads((tmp_path / "records.jsonl").read_text().splitlines()[1])
    assert line["history"][0]["action"].startswith("MOVE")
    assert (tmp_path / line["view"]).is_file() and (tmp_path / line["canvas"]).is_file()


def test_view_graph_gives_new_starts_that_reach_the_goal(task):
    root, config, dataset, demos = task
    new = view_graph_demonstrations(demos, config)
    assert len(new) >= len(dataset)  # per scene at least: each target reached from the other target's view
    for result in new:
        goal = next(r for r, _ in demos if result.id.startswith(r.id + "-vg-"))
        assert goal.instruction == result.instruction
        assert pose_distance(goal.records[-1].pose, result.records[-1].pose) < 1
        assert pose_distance(goal.records[0].pose, result.records[0].pose) > 1  # a new start
        assert result.records[-1].action == goal.records[-1].action  # the goal's box, at the goal's view
        assert [rec.action.stop for rec in result.records] == [False] * (len(result.records) - 1) + [True]
        assert result.records[-1].observation.canvas.any()


def test_make_sft_data_writes_expert_and_view_graph_records(task, tmp_path, capsys):
    root, config, dataset, demos = task
    out = tmp_path / "data"
    assert main(["make-sft-data", "--dataset", str(dataset.path), "--view-graph", "--out", str(out),
                 "--config", str(root / "small.yaml")]) == 0
    sources = [r["source"] for r in load_records(out)]
    assert sources.count("expert") == sum(len(r.records) + len(r.reviews) for r, _ in demos)
    assert sources.count("view-graph") >= 2 * len(dataset)  # each new demonstration: a move, then STOP
    assert f"expert {sources.count('expert')}, view-graph {sources.count('view-graph')}" in capsys.readouterr().out
    assert main(["make-sft-data", "--dataset", str(dataset.path), "--out", str(out)]) == 2  # never overwritten


def test_box_noise_demonstrates_refining_to_the_right_box(task, tmp_path):
    from panoseeker_ros.core.environment import SimScene
    from panoseeker_ros.core.metrics import box_iou
    from panoseeker_ros.models.oracle import OracleDetector

    root, config, dataset, demos = task
    noisy = expert_demonstrations(dataset, config, box_noise=1.0, seed=2)
    with RecordWriter(tmp_path) as writer:
        for result, scene in noisy:
            writer.add(result, "expert", scene)
    records = load_records(tmp_path)
    refines = [r for r in records if r.get("turn") == "review" and r["answer"].startswith("REFINE")]
    assert len(refines) >= len(dataset) // 2  # most wrong first boxes are refined
    for (result, _), (clean, _) in zip(noisy, demos):
        stop = next(r for r in records if r["episode"] == result.id and r["answer"].startswith("STOP"))
        assert stop["answer"] == clean.records[-1].action.to_text()  # the search record teaches the right box
        scene = SimScene(dataset.by_id(result.id), config)
        truth = OracleDetector(scene.truth, config.camera.intrinsics()).detect(result.records[-1].pose)
        for rev in result.reviews:
            if rev.action.refine:
                assert box_iou(rev.action.box, truth) > 0.9  # refined to the target's box on the STOP view
    rec = refines[0]
    obs = record_observation(rec, tmp_path)
    assert obs.review is not None and obs.review.box == tuple(rec["review"]["box"]) and obs.review.turn == 1
    original = next(r for res, _ in noisy for r in res.reviews if f"{res.id}/r{r.step}" == rec["id"])
    assert np.array_equal(obs.review.mask, original.observation.review.mask)
    a, b = build_prompt("egosphere", obs), build_prompt("egosphere", original.observation)
    assert a.messages == b.messages and np.array_equal(a.images[0], b.images[0])


def test_snap_move_picks_the_nearest_lattice_move():
    assert snap_move(61.0, -2.0) == Action.move(60, 0)
    assert snap_move(-170.0, 44.0) == Action.move(180, 30)
    assert snap_move(8.0, -10.0) is None


def test_a_teleoperated_bag_becomes_records(task, tmp_path, capsys):
    root, config, dataset, _ = task
    spec = dataset.episodes[0]  # the red square, 120° to the right
    bag = write_teleop_bag(tmp_path / "teleop", spec, config, [(61.5, 1.0), (58.0, -0.5)])
    (result, _), = bag_demonstrations(bag, config)
    assert [r.action.to_text() for r in result.records[:2]] == ["MOVE +60 0", "MOVE +60 0"]
    stop = result.records[-1].action
    assert stop.stop and stop.box is not None and result.instruction == spec.instruction
    assert abs(result.records[-1].pose.theta - (spec.initial_pose.theta + 119.5)) < 1e-6  # the recorded pose
    out = tmp_path / "data"  # a recorded search has no score: left out, counted, unless the operator accepts it
    assert main(["make-sft-data", "--bag", str(bag), "--out", str(tmp_path / "unchecked"), "--config",
                 str(root / "small.yaml")]) == 2  # nothing to write
    assert main(["make-sft-data", "--bag", str(bag), "--dataset", str(dataset.path), "--out",
                 str(tmp_path / "mixed"), "--config", str(root / "small.yaml")]) == 0
    printed = capsys.readouterr().out
    assert "left out searches: bag unscored 1" in printed and "--accept-unscored" in printed
    assert "bag" not in {r["source"] for r in load_records(tmp_path / "mixed")}
    assert main(["make-sft-data", "--bag", str(bag), "--out", str(out), "--config", str(root / "small.yaml"),
                 "--accept-unscored"]) == 0
    assert "bag 3" in capsys.readouterr().out
    assert [r["source"] for r in load_records(out)] == ["bag"] * 3


def test_failed_searches_are_left_out_and_counted_and_ids_cannot_leave_out(task, tmp_path, capsys):
    root, config, dataset, _ = task
    doc = json.loads(dataset.path.read_text())
    tight = tmp_path / "tight.yaml"  # T = 1: the expert cannot reach the target, every search fails
    tight.write_text((root / "small.yaml").read_text().replace("max_steps: 4", "max_steps: 1"))
    assert main(["make-sft-data", "--dataset", str(dataset.path), "--out", str(tmp_path / "failed"),
                 "--config", str(tight)]) == 2
    assert f"left out searches: expert failed {len(dataset)}" in capsys.readouterr().out
    for bad in ("../escape", "/tmp/abs"):
        doc["episodes"][0]["id"] = bad
        path = dataset.path.parent / f"bad-{len(bad)}.json"
        path.write_text(json.dumps(doc))
        assert main(["make-sft-data", "--dataset", str(path), "--out", str(tmp_path / f"o{len(bad)}"),
                     "--config", str(root / "small.yaml")]) == 2
        err = capsys.readouterr().err
        assert f"episode id {bad!r} would write outside" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "escape").exists()


def test_a_bag_of_a_policy_search_follows_its_feedback(task, tmp_path):
    """A stale view and the look to the start before the search, an alignment look after STOP: only the
    decisions of the feedback lines count, on the views they name."""
    root, config, dataset, _ = task
    spec = dataset.episodes[0]
    teleop = bag_demonstrations(write_teleop_bag(tmp_path / "t", spec, config, [(60, 0), (60, 0)]), config)
    (result, _), = bag_demonstrations(write_teleop_bag(tmp_path / "p", spec, config, [(60, 0), (60, 0)],
                                                       policy=True), config)
    assert [r.action for r in result.records] == [r.action for r in teleop[0][0].records]
    assert [r.pose for r in result.records] == [r.pose for r in teleop[0][0].records]
    assert result.records[0].pose == spec.initial_pose and result.instruction == spec.instruction


def test_a_bag_without_target_takes_the_box_of_the_mask(task, tmp_path):
    root, config, dataset, _ = task
    spec = dataset.episodes[1]
    with_target = bag_demonstrations(write_teleop_bag(tmp_path / "a", spec, config, [(-120, 0)]), config)
    topics = ("camera/image", "camera/joint_states", "instruction", "camera/move", "segmentation/mask")
    from_mask = bag_demonstrations(write_teleop_bag(tmp_path / "b", spec, config, [(-120, 0)], topics), config)
    assert from_mask[0][0].records[-1].action == with_target[0][0].records[-1].action


def test_a_bag_missing_a_required_topic_is_one_line_naming_it(task, tmp_path, capsys):
    root, config, dataset, _ = task
    bag = write_teleop_bag(tmp_path / "nomove", dataset.episodes[0], config, [(120, 0)],
                           ("camera/image", "camera/joint_states", "instruction", "target"))
    with pytest.raises(DataError, match="no /panoseeker/camera/move topic"):
        bag_demonstrations(bag, config)
    assert main(["make-sft-data", "--bag", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not exist" in err


def test_a_bag_of_a_policy_search_keeps_its_review_turns(task, tmp_path):
    """A wrong first mask refined, then accepted: both review turns become records with the masks they judged."""
    from panoseeker_ros.core.geometry import project_erp_mask
    from panoseeker_ros.core.environment import SimScene
    from panoseeker_ros.training.demonstrations import RecordWriter, load_records, record_observation

    root, config, dataset, _ = task
    spec = dataset.episodes[0]
    plain, = bag_demonstrations(write_teleop_bag(tmp_path / "p", spec, config, [(60, 0), (60, 0)], policy=True),
                                config)
    (result, _), = bag_demonstrations(write_teleop_bag(tmp_path / "r", spec, config, [(60, 0), (60, 0)],
                                                       policy=True, review="refine"), config)
    assert plain[0].reviews == [] and [r.action for r in result.records][:-1] == [r.action for r in
                                                                                 plain[0].records][:-1]
    assert [r.action.to_text().split(" ")[0] for r in result.reviews] == ["REFINE", "ACCEPT"]
    truth = project_erp_mask(SimScene(spec, config).truth.mask, result.records[-1].pose, config.camera.intrinsics())
    first, second = (r.observation.review.mask for r in result.reviews)
    assert (second == truth).all() and (first != truth).any() and first.sum() == truth.sum()
    assert result.reviews[0].observation.review.box == result.records[-1].action.box  # the STOP box's mask
    assert result.reviews[0].action.box != result.records[-1].action.box  # refined to another box
    with RecordWriter(tmp_path / "data") as writer:
        assert writer.add(result, "bag", "scene") == len(result.records) + 2
    recs = [r for r in load_records(tmp_path / "data") if r.get("turn") == "review"]
    assert [r["answer"].split(" ")[0] for r in recs] == ["REFINE", "ACCEPT"]
    assert (record_observation(recs[1], tmp_path / "data").review.mask == truth).all()
    lines = []
    assert bag_demonstrations(write_teleop_bag(tmp_path / "m", spec, config, [(60, 0), (60, 0)], policy=True,
                                               review="move"), config, on_skip=lines.append) == []
    assert len(lines) == 1 and "a review turn moved the camera after STOP" in lines[0]
