"""The oracle segmenter is box-prompted: a box fitted to the target gets its mask, a loose box or a box
on another annotated object does not (so rewards, SR and mIoU judge the box)."""
from __future__ import annotations

import numpy as np
import pytest

from panoseeker_ros.core.actions import Action
from panoseeker_ros.core.config import SeekConfig
from panoseeker_ros.core.dataset import load_dataset
from panoseeker_ros.core.environment import SimScene, run_episode
from panoseeker_ros.core.episode import Decision
from panoseeker_ros.core.geometry import mask_bbox, project_erp_mask, spherical_centroid
from panoseeker_ros.core.metrics import box_iou
from panoseeker_ros.core.scenes import generate_benchmark
from panoseeker_ros.models.oracle import OracleSegmenter
from panoseeker_ros.models.registry import make_policy, make_segmenter
from panoseeker_ros.paths import sample_dataset

FULL_VIEW = (0, 0, 1000, 1000)


class _StopBox:
    """The expert's searches, with its STOP box replaced by ``box``."""

    name = "stop-box"

    def __init__(self, expert, box):
        self.expert, self.box = expert, box

    def act(self, obs):
        d = self.expert.act(obs)
        if d.action.stop and d.action.box is not None:
            a = Action.stop_at(self.box)
            return Decision(a, a.to_text())
        return d


def _ious(dataset, box=None):
    config = SeekConfig()
    config.segmentation.max_refinements = 0  # the STOP box's own mask: no review turn may refine it
    out = []
    for spec in load_dataset(dataset).episodes:
        scene = SimScene(spec, config)
        expert = make_policy("expert", config, scene.truth)
        r = run_episode(scene, expert if box is None else _StopBox(expert, box),
                        make_segmenter("oracle", config, scene.truth))
        out.append((r.outcome.iou, bool(r.success)))
    return out


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return generate_benchmark(tmp_path_factory.mktemp("gen"), n_scenes=2, episodes_per_scene=3, seed=3,
                              erp_width=1024)


@pytest.mark.parametrize("which", ["sample", "generated"])
def test_a_full_view_stop_box_fails_and_the_experts_boxes_keep_their_scores(which, generated):
    dataset = sample_dataset() if which == "sample" else generated
    expert, full = _ious(dataset), _ious(dataset, FULL_VIEW)
    assert all(ok for _, ok in expert) and np.mean([iou for iou, _ in expert]) > 0.99
    assert max(iou for iou, _ in full) < 0.5 and not any(ok for _, ok in full)


def test_generated_datasets_annotate_every_object_and_a_box_on_a_distractor_gets_the_distractor(generated):
    config = SeekConfig()
    intr = config.camera.intrinsics()
    spec = load_dataset(generated).episodes[0]
    scene = SimScene(spec, config)
    assert len(scene.truth.objects) >= 6  # 7-9 objects per scene, the target apart
    segmenter = OracleSegmenter(scene.truth, intr)
    _, other = scene.truth.objects[0]
    pose = spherical_centroid(other)  # look straight at the distractor
    view = np.zeros((intr.height, intr.width, 3), np.uint8)
    visible = project_erp_mask(other, pose, intr)
    box = mask_bbox(visible)
    mask = segmenter.segment(view, box, pose)
    assert np.array_equal(mask, visible)  # its own mask, not the target's
    assert not (mask & project_erp_mask(scene.truth.mask, pose, intr)).any()
    x1, y1, x2, y2 = box  # a box three times as wide and high frames nothing well: the framed region comes back
    w, h = x2 - x1, y2 - y1
    loose = (max(0, x1 - w), max(0, y1 - h), min(intr.width, x2 + w), min(intr.height, y2 + h))
    assert box_iou(loose, box) < 0.5
    got = segmenter.segment(view, loose, pose)
    assert got.sum() == (loose[2] - loose[0]) * (loose[3] - loose[1]) and got[loose[1], loose[0]]
