"""Baselines that read only pixels and the instruction: the target phrase, SAM-3 text detection on the tiny
Sam3Model, the scan and static baselines end to end, and policies that keep no per-episode state."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models_fixtures import observations, tiny_model_dirs
from panoseeker_ros.cli import main
from panoseeker_ros.core.config import SeekConfig
from panoseeker_ros.core.dataset import load_dataset
from panoseeker_ros.core.environment import SimScene, run_episode
from panoseeker_ros.core.geometry import Pose
from panoseeker_ros.evaluation import evaluate, run_one_shot, simulate
from panoseeker_ros.models.baselines import RandomPolicy, ScanPolicy, StaticSearch
from panoseeker_ros.models.detection import Detection, target_phrase
from panoseeker_ros.models.registry import make_segmenter, needs_truth, per_scene
from panoseeker_ros.models.sam3_text import DetectorLoadError, Sam3TextDetector
from panoseeker_ros.paths import sample_dataset


@pytest.fixture(scope="module")
def detector():
    return Sam3TextDetector.from_pretrained(model=tiny_model_dirs()["sam3_text"])


@pytest.mark.parametrize("instruction, phrase", [
    ("the wardrobe", "wardrobe"), ("the mirror on the wall", "mirror"),
    ("the glass door to the balcony", "glass door"), ("the wooden chair next to the TV", "wooden chair"),
    ("the door to the right of the mirror", "door"), ("turn left to find the door", "door"),
    ("the chair behind you", "chair"), ("turn around and find the rug next to the bed", "rug"),
    ("look to your right for the red square", "red square"), ("the blue circle on your left", "blue circle"),
    ("find the purple shape", "purple shape"), ("the white diamond below the red star", "white diamond"),
    ("Turn around to find the star.", "star"),
])
def test_target_phrase_keeps_the_target_noun_phrase(instruction, phrase):
    assert target_phrase(instruction) == phrase


def test_the_tiny_detector_loads_through_from_pretrained_and_answers_a_box_mask_and_score(detector, cube_dataset):
    assert detector.device.type == "cpu" and detector.dtype == torch.float32 and detector.image_size == 224
    assert type(detector.model).__name__ == "Sam3Model"
    view = observations(cube_dataset, moves=())[0].view
    found = detector.find(view, Pose(0.0, 0.0), "green face")
    assert isinstance(found, Detection) and 0.0 <= found.score <= 1.0
    x1, y1, x2, y2 = found.box
    assert 0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000
    assert found.mask.shape == view.shape[:2] and found.mask.dtype == bool
    assert len(detector.last["scores"]) == detector.model.config.detr_decoder_config.num_queries
    assert found.score == pytest.approx(max(detector.last["scores"]))
    scores = detector.last["scores"]
    detector.find(view, Pose(0.0, 0.0), "red star")  # the phrase reaches the model: other scores
    assert detector.last["scores"] != scores
    assert detector.find(view, Pose(0.0, 0.0), "  ") is None


@pytest.mark.parametrize("xyxy, box", [((0.1, 0.2, 0.3, 0.4), (100, 200, 300, 400)), ((0.3, 0.4, 0.1, 0.2), (100, 200, 300, 400)),
                                       ((-0.5, 0.5, 1.5, 0.5), (0, 500, 1000, 501)), ((1.0, 1.0, 1.0, 1.0), (999, 999, 1000, 1000))])
def test_detector_boxes_become_non_empty_grammar_boxes(xyxy, box):
    from panoseeker_ros.models.sam3_text import grammar_box

    assert grammar_box(xyxy) == box


def test_a_missing_detector_directory_is_one_line(tmp_path):
    with pytest.raises(DetectorLoadError) as err:
        Sam3TextDetector.from_pretrained(model=tmp_path / "nope")
    assert "\n" not in str(err.value) and "make-tiny-models" in str(err.value)


class _Fixed:
    """A detector that reports ``score`` at one pose only."""

    name = "fixed"

    def __init__(self, pose: Pose, score: float = 0.9):
        self.pose, self.score, self.phrases = pose, score, []

    def find(self, view, pose, phrase):
        self.phrases.append(phrase)
        if pose == self.pose:
            mask = np.zeros(view.shape[:2], bool)
            mask[300:400, 400:600] = True
            return Detection((400, 400, 600, 500), self.score, mask)
        return Detection((0, 0, 10, 10), 0.1, np.zeros(view.shape[:2], bool))


def test_scan_keeps_no_episode_state_and_stops_on_the_first_view_above_the_threshold(cube_dataset):
    spec = load_dataset(cube_dataset).episodes[0]
    sweep = ScanPolicy.sweep(spec.initial_pose)
    policy = ScanPolicy(_Fixed(sweep[4]), min_score=0.5)
    scene = SimScene(spec)
    result = run_episode(scene, policy, make_segmenter("oracle", scene.config, scene.truth))
    assert result.steps == 6 and result.stop_pose == sweep[4] and result.box == (400, 400, 600, 500)
    assert set(policy.detector.phrases) == {"label"}  # 'the label on the green face'
    # the same policy object answers an observation of another episode as a fresh one would
    other = observations(cube_dataset, moves=())[2]
    assert policy.act(other).action == ScanPolicy(_Fixed(sweep[4]), 0.5).act(other).action


def test_random_policy_answers_from_the_observation_alone(cube_dataset):
    a, b = observations(cube_dataset, moves=())[:2]
    policy = RandomPolicy(seed=4)
    first = policy.act(a).action
    policy.act(b)
    assert policy.act(a).action == first == RandomPolicy(seed=4).act(a).action


def test_static_search_picks_the_best_view_and_scores_its_mask(cube_dataset):
    spec = load_dataset(cube_dataset).episodes[0]
    best = StaticSearch.VIEWS[7]
    scene = SimScene(spec)
    pose, found = StaticSearch(_Fixed(best)).search(scene.camera, spec.instruction)
    assert pose == best and found.score == 0.9
    assert StaticSearch(_Fixed(best, score=0.2), min_score=0.5).search(scene.camera, spec.instruction) is None
    result = run_one_shot(SimScene(spec), StaticSearch(_Fixed(best)))
    assert result.steps == 1 and result.stop_pose == best and result.box == (400, 400, 600, 500)
    assert result.looks == 1 and len(result.path) == 2 and result.path[0] == spec.initial_pose
    # the camera turned to the mask's centre: the mask is centred in the final view
    ys, xs = np.nonzero(result.mask)
    assert abs(xs.mean() - 511.5) < 3 and abs(ys.mean() - 383.5) < 3
    assert result.score.erp_mask.any() and result.outcome.steps == 1
    missed = run_one_shot(SimScene(spec), StaticSearch(_Fixed(best, score=0.2), min_score=0.5))
    assert missed.box is None and not missed.found and not missed.success and missed.path == [spec.initial_pose]


def test_static_with_the_oracle_detector_solves_the_bedroom_in_one_step():
    dataset = load_dataset(sample_dataset())
    config = SeekConfig()
    run = simulate(per_scene("policy", "static", config), per_scene("segmenter", "oracle", config), config)
    summary, records = evaluate(dataset, run, config, progress=False, limit=5)
    assert summary["sr"] == 1.0 and summary["as"] == 1.0 and summary["miou"] > 0.9
    assert all(r["steps"] == 1 and r["looks"] == 1 for r in records)
    assert needs_truth("policy", "static") and not needs_truth("policy", "static", detector="sam3-text")


@pytest.mark.parametrize("policy", ["scan", "static"])
def test_sam3_text_baselines_run_end_to_end_on_the_tiny_models(policy, tmp_path, capsys):
    dirs = tiny_model_dirs()
    out = tmp_path / policy
    argv = ["eval", "--dataset", str(sample_dataset()), "--policy", policy, "--detector", "sam3-text",
            "--detector-model", str(dirs["sam3_text"]), "--segmenter", "sam3", "--sam-model", str(dirs["sam3"]),
            "--detector-threshold", "0", "--limit", "2", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    shown = f"policy={policy} detector=sam3-text" + (" segmenter=sam3" if policy == "scan" else "") + " dataset="
    assert shown in capsys.readouterr().out  # static uses the detector's own mask, no segmenter
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for r in records:  # threshold 0: the best match is always taken, so every episode stops with a box
        assert r["box"] is not None and r["trajectory"][-1]["action"].startswith("STOP [")
        assert r["steps"] == 1  # scan: the start view already has a match
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["detector"] == "sam3-text" and not summary["partial"]


def test_detector_options_need_a_searching_policy(capsys, tmp_path):
    assert main(["eval", "--dataset", str(sample_dataset()), "--policy", "expert", "--detector", "sam3-text",
                 "--out", str(tmp_path)]) == 2
    assert "--detector options are for --policy scan or static" in capsys.readouterr().err
    assert main(["eval", "--dataset", str(sample_dataset()), "--policy", "scan", "--detector", "yolo",
                 "--out", str(tmp_path)]) == 2
    assert "unknown detector 'yolo'" in capsys.readouterr().err
    assert main(["eval", "--dataset", str(sample_dataset()), "--policy", "static", "--through-ros",
                 "--out", str(tmp_path)]) == 2
    assert "run --policy static and --detector options in-process" in capsys.readouterr().err
