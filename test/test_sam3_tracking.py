"""The official alignment with SAM-3: Sam3Segmenter.track follows the STOP object through a streaming
Sam3TrackerVideoModel session (tiny random-weight model: the plumbing, not the quality)."""
from __future__ import annotations

import pytest

from models_fixtures import tiny_model_dirs
from panoseeker_ros.core.actions import Action
from panoseeker_ros.core.config import SeekConfig
from panoseeker_ros.core.dataset import load_dataset
from panoseeker_ros.core.environment import SimScene, answer
from panoseeker_ros.core.episode import Decision, Done
from panoseeker_ros.core.geometry import Pose
from panoseeker_ros.models.sam3_segmenter import Sam3Segmenter


@pytest.fixture(scope="module")
def scene(cube_dataset):
    return SimScene(load_dataset(cube_dataset).episodes[0])


def test_track_follows_the_last_segmented_object_frame_by_frame(scene):
    seg = Sam3Segmenter.from_pretrained(model=tiny_model_dirs()["sam3"])
    views = [scene.camera.look(t, 0.0) for t in (60.0, 80.0, 90.0)]
    with pytest.raises(ValueError, match="call segment"):
        seg.track(views[0])
    seg.segment(views[0], (300, 200, 700, 600))
    assert seg.tracker is None  # the video model loads on the first track() only
    for k, view in enumerate(views[1:], start=2):
        mask = seg.track(view)
        assert mask.shape == view.shape[:2] and mask.dtype == bool
        assert seg._session.num_frames == k  # the STOP view, then one frame per tracked view
    seg.segment(views[2], (100, 100, 300, 300))  # a new object: a new session on the next track()
    seg.track(views[0])
    assert seg._session.num_frames == 2


def test_an_episode_aligns_by_tracking_with_sam3(scene):
    """Every mask of a segmenter with a very low threshold covers the view, so its centroid is at the centre:
    one move to the centroid, one tracked view, aligned."""
    config = SeekConfig()
    config.segmentation.max_refinements = 0  # the STOP mask goes to the alignment without a review turn
    seg = Sam3Segmenter.from_pretrained(model=tiny_model_dirs()["sam3"], mask_threshold=-1e9)
    ep = SimScene(scene.spec, config).episode()
    req = ep.start("the label", Pose(60.0, 0.0))
    kinds = []
    while not isinstance(req, Done):
        kinds.append(type(req).__name__)
        got = (Decision(Action.stop_at((300, 300, 700, 700))) if kinds[-1] == "Decide"
               else answer(req, scene.camera, None, seg))
        req = ep.observe(got)
    r = req.result
    assert kinds == ["Look", "Decide", "Segment", "Look", "Track"] and r.looks == 1
    assert r.message == "aligned in 1 move" and r.mask.all()
