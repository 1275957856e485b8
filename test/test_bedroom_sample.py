"""The hand-annotated bedroom sample: loads, covers every category, masks and centroids agree, solvable."""
from pathlib import Path

import pytest

from panoseeker_ros.core import scenes
from panoseeker_ros.core.dataset import CATEGORIES, load_dataset
from panoseeker_ros.core.environment import SimScene, run_episode
from panoseeker_ros.core.geometry import Intrinsics, Pose, pose_distance, project_erp_mask, spherical_centroid
from panoseeker_ros.core.metrics import summarize
from panoseeker_ros.models.registry import make_policy, make_segmenter

SAMPLE = Path(__file__).resolve().parents[1] / "sim" / "bedroom" / "dataset.json"


@pytest.fixture(scope="module")
def sample():
    return load_dataset(SAMPLE)


def _pose(d: dict) -> Pose:
    return Pose(d["theta"], d["phi"])


def test_sample_has_enough_episodes_in_every_category(sample):
    assert len(sample) >= 8
    assert {ep.category for ep in sample.episodes} == set(CATEGORIES)
    assert len({(ep.target_name, round(ep.target_centroid.theta)) for ep in sample.episodes}) >= 8
    assert sample.episodes[0].load_scene().shape == (512, 1024, 3)


def test_masks_are_nonempty_and_centroids_match_them(sample):
    for ep in sample.episodes:
        mask = ep.load_mask(1024, 512)
        assert mask.sum() > 500, ep.id
        assert pose_distance(spherical_centroid(mask), ep.target_centroid) < 1.0, ep.id


def test_start_poses_do_not_see_the_target(sample):
    intr = Intrinsics.from_fov()
    for ep in sample.episodes:
        assert ep.initial_pose.phi == 0.0
        assert pose_distance(ep.initial_pose, ep.target_centroid) > 75.0, ep.id
        assert not project_erp_mask(ep.load_mask(1024, 512), ep.initial_pose, intr).any(), ep.id


def test_spatial_words_hold_for_the_target_and_not_for_its_look_alikes(sample):
    for ep in sample.episodes:
        note = ep.extra["annotation"]
        if ep.category in ("EGO", "MULTIHOP"):
            assert note["ego"] in ("right", "left", "behind")
        if ep.category in ("ALLO", "MULTIHOP"):
            assert note["anchor"]["name"] and note["relation"] in scenes.RELATIONS

        def holds(c: Pose, slack: float, mask=None) -> bool:
            ok = True
            if "ego" in note:  # the target: some of it in the view after the turn; a look-alike: not near it
                turned = Pose(scenes.ego_view(ep.initial_pose.theta, note["ego"]), 0.0)
                point = scenes.SceneObject("", "", c.theta, c.phi, 0.0)
                ok &= bool(project_erp_mask(mask, turned, Intrinsics.from_fov()).any()) if mask is not None \
                    else bool(scenes.ego_holds(point, ep.initial_pose.theta, note["ego"], slack))
            if "relation" in note:
                a = _pose(note["anchor"]["centroid"])
                ok &= scenes.relation_holds(scenes.SceneObject("", "", c.theta, c.phi, 0.0),
                                            scenes.SceneObject("", "", a.theta, a.phi, 0.0), note["relation"], slack)
            return ok

        assert holds(ep.target_centroid, 0.0, ep.load_mask(1024, 512)), ep.instruction  # the rules hold exactly; look-alikes miss by a margin
        if ep.category == "UNIQ":
            continue  # its attribute words ("glass", "balcony") tell it from look-alikes, not a direction
        for other in note["same_kind"]:
            assert not holds(_pose(other["centroid"]), scenes.MARGIN_DEG), (ep.instruction, other["name"])


def test_expert_solves_every_episode(sample):
    outcomes = []
    for ep in sample.episodes:
        scene = SimScene(ep)
        outcomes.append(run_episode(scene, make_policy("expert", scene.config, scene.truth),
                                    make_segmenter("oracle", scene.config, scene.truth)).outcome)
    summary = summarize(outcomes, tau_deg=30.0)
    assert summary["sr"] == 1.0 and summary["miou"] > 0.95
