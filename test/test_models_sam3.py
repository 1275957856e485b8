"""Sam3Segmenter on the tiny random-weight SAM-3 tracker, the entropy point prompts, and whole episodes
with the tiny Qwen3-VL policy and SAM-3."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models_fixtures import observations, tiny_model_dirs
from panoseeker_ros.core.dataset import load_dataset
from panoseeker_ros.core.actions import Action
from panoseeker_ros.core.environment import SimScene, answer, run_episode
from panoseeker_ros.core.episode import Decision, Done, Episode, EpisodeResult, Frame, Segment
from panoseeker_ros.core.geometry import Pose
from panoseeker_ros.models.registry import make_policy, make_segmenter
from panoseeker_ros.models.sam3_segmenter import Sam3Segmenter, SegmenterLoadError, bernoulli_entropy


@pytest.fixture(scope="module")
def sam_dir():
    return tiny_model_dirs()["sam3"]


@pytest.fixture(scope="module")
def segmenter(sam_dir):
    return Sam3Segmenter.from_pretrained(model=sam_dir)


@pytest.fixture(scope="module")
def view(cube_dataset):
    return observations(cube_dataset, moves=())[0].view


def test_loads_on_cpu_in_fp32_with_the_directory_settings(segmenter):
    assert segmenter.device.type == "cpu" and segmenter.dtype == torch.float32
    assert segmenter.image_size == 224 and not segmenter.model.training


@pytest.mark.parametrize("make", ["missing", "no_config"])
def test_missing_directory_is_one_line_naming_path_and_fix(tmp_path, make):
    target = tmp_path / "sam-missing"
    if make == "no_config":
        target.mkdir()
    with pytest.raises(SegmenterLoadError) as err:
        Sam3Segmenter.from_pretrained(model=target)
    msg = str(err.value)
    assert "\n" not in msg and str(target) in msg and "make-tiny-models" in msg
    with pytest.raises(ValueError):
        make_segmenter("sam3", model=str(target))


def test_box_gives_a_view_sized_bool_mask(segmenter, view):
    mask = segmenter.segment(view, (300.0, 200.0, 700.0, 600.0), Pose(0.0, 0.0))
    assert mask.shape == view.shape[:2] and mask.dtype == bool
    assert segmenter.last["embedding_reused"] is False
    again = segmenter.segment(view, (300.0, 200.0, 700.0, 600.0), Pose(0.0, 0.0))
    assert segmenter.last["embedding_reused"] is True and np.array_equal(mask, again)
    small = np.ascontiguousarray(view[::2, ::2])
    assert segmenter.segment(small, (10, 10, 200, 150), Pose(0.0, 0.0)).shape == small.shape[:2]
    assert segmenter.last["embedding_reused"] is False  # another view, another embedding


def test_empty_box_is_rejected(segmenter, view):
    with pytest.raises(ValueError, match="empty"):
        segmenter.segment(view, (500, 200, 500, 600), Pose(0.0, 0.0))


def test_an_empty_mask_is_a_defined_result(sam_dir, view):
    strict = Sam3Segmenter.from_pretrained(model=sam_dir, mask_threshold=1e6)
    mask = strict.segment(view, (300, 200, 700, 600), Pose(0.0, 0.0))
    assert mask.shape == view.shape[:2] and mask.dtype == bool and not mask.any()
    ep = Episode()
    ep.start("the green face", Pose(0.0, 0.0))
    ep.observe(Frame(view, Pose(0.0, 0.0)))
    req = ep.observe(Decision(Action.stop_at((300, 300, 600, 700))))
    assert isinstance(req, Segment)
    review = ep.observe(answer(req, None, None, strict))
    assert not review.observation.review.mask.any()  # the empty mask is shown for review; accepted, it stands
    done = ep.observe(Decision(Action.accept_mask()))
    assert isinstance(done, Done) and done.result.looks == 0 and not done.result.found  # nothing to centre


def test_entropy_points_pick_confident_foreground_and_background():
    seg = Sam3Segmenter.__new__(Sam3Segmenter)
    seg.image_size = 256
    yy, xx = np.mgrid[0:64, 0:64]
    logits = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 12 ** 2, 8.0, -8.0)  # a confident disk
    logits[30:34, 20:24] = 0.3  # an uncertain patch inside it
    logits[:, 40:] = -0.2  # an uncertain band right of it
    points, labels = seg._entropy_points(torch.tensor(logits, dtype=torch.float32), (16, 16, 48, 48))
    assert labels == [1, 1, 0]
    for (x, y), label in zip(points, labels):
        gx, gy = int((x + 0.5) / 4), int((y + 0.5) / 4)  # model pixels → grid cells (scale 256 / 64)
        assert 16 <= gx < 48 and 16 <= gy < 48  # inside the box
        assert logits[gy, gx] == (8.0 if label == 1 else -8.0)  # confident cells only
    (xa, ya), (xb, yb) = points[0], points[1]
    assert np.hypot(xa - xb, ya - yb) / 4 >= 0.25 * np.hypot(32, 32) - 1  # spread apart
    assert seg._entropy_points(torch.full((64, 64), -5.0), (16, 16, 48, 48)) is None  # no foreground: no points
    assert float(bernoulli_entropy(torch.tensor(0.5))) == pytest.approx(np.log(2), rel=1e-5)


def test_point_prompts_rerun_with_box_and_points(sam_dir, view):
    pointed = Sam3Segmenter.from_pretrained(model=sam_dir, point_prompts=True)
    mask = pointed.segment(view, (300, 200, 700, 600), Pose(0.0, 0.0))
    assert mask.shape == view.shape[:2] and mask.dtype == bool
    last = pointed.last
    assert last["labels"][:2] == [1, 1] and len(last["points"]) == len(last["labels"])
    sx, sy = 224 / view.shape[1], 224 / view.shape[0]
    for x, y in last["points"]:
        assert 300 * sx <= x + 0.5 <= 700 * sx and 200 * sy <= y + 0.5 <= 600 * sy  # cell centres inside the box


def test_given_points_prompt_beside_the_box_instead_of_entropy_points(sam_dir, view):
    pointed = Sam3Segmenter.from_pretrained(model=sam_dir, point_prompts=True)
    points, labels = [(400.0, 300.0), (600.0, 500.0), (310.0, 590.0)], [1, 1, 0]
    mask = pointed.segment(view, (300, 200, 700, 600), Pose(0.0, 0.0), points=points, labels=labels)
    assert mask.shape == view.shape[:2] and pointed.last["labels"] == labels  # the given points, not entropy's
    sx, sy = 224 / view.shape[1], 224 / view.shape[0]
    assert np.allclose(pointed.last["points"], [[(x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5] for x, y in points])
    with pytest.raises(ValueError, match="one label"):
        pointed.segment(view, (300, 200, 700, 600), Pose(0.0, 0.0), points=points, labels=[1])


def test_run_episode_with_qwen_policy_and_sam3(cube_dataset):
    dirs = tiny_model_dirs()
    policy = make_policy("qwen", model=str(dirs["qwen"]), memory="egosphere")
    segmenter = make_segmenter("sam3", model=str(dirs["sam3"]))
    results = []
    for spec in load_dataset(cube_dataset).episodes[:2]:
        scene = SimScene(spec)
        results.append(run_episode(scene, policy, segmenter))
    for r in results:
        assert isinstance(r, EpisodeResult)
        assert 1 <= r.outcome.steps <= 20 and len(r.records) == r.outcome.steps
        assert r.score.erp_mask.shape == scene.truth.mask.shape and r.score.erp_mask.dtype == bool
        assert all(s.parse_failures == 0 for s in r.records)  # constrained answers always parse
        assert 0.0 <= r.outcome.iou <= 1.0
        assert r.truncated == (r.outcome.steps == 20 and r.box is None)
        assert isinstance(r.as_dict()["trajectory"], list)
