"""The synthetic benchmark generator: files, exact masks, sphere-consistent objects, instruction rules."""
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from panoseeker_ros.core import scenes
from panoseeker_ros.core.dataset import CATEGORIES, load_dataset
from panoseeker_ros.core.environment import SimScene, run_episode
from panoseeker_ros.core.geometry import (Intrinsics, Pose, dir_to_view_pixel, erp_pixel_to_dir, mask_bbox,
                                          pose_distance, project_erp_mask, spherical_centroid)
from panoseeker_ros.core.metrics import summarize
from panoseeker_ros.models.registry import make_policy, make_segmenter

BEDROOM = Path(__file__).resolve().parents[1] / "sim" / "bedroom" / "bedroom_1024x512.png"
WIDTH = 1024


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A 12-episode benchmark at 1024×512: (dataset, objects per scene)."""
    out = tmp_path_factory.mktemp("bench")
    path = scenes.generate_benchmark(out, n_scenes=3, episodes_per_scene=4, seed=3, erp_width=WIDTH)
    doc = json.loads((out / "objects.json").read_text())
    objects = {s["scene"]: [scenes.SceneObject(**o) for o in s["objects"]] for s in doc["scenes"]}
    return load_dataset(path), objects


def _objects_of(ep, objects):
    return objects[ep.scene.relative_to(ep.scene.parents[1]).as_posix()]


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    a = scenes.generate_benchmark(tmp_path / "a", n_scenes=2, episodes_per_scene=2, seed=7, erp_width=512)
    b = scenes.generate_benchmark(tmp_path / "b", n_scenes=2, episodes_per_scene=2, seed=7, erp_width=512)
    c = scenes.generate_benchmark(tmp_path / "c", n_scenes=2, episodes_per_scene=2, seed=8, erp_width=512)
    files_a, files_b = _files(a.parent), _files(b.parent)
    objects = json.loads(files_a["objects.json"])["scenes"]
    object_masks = {f"masks/s{s:03d}-o{k:02d}.png" for s, doc in enumerate(objects) for k in range(len(doc["objects"]))}
    assert set(files_a) == {"dataset.json", "objects.json", "scenes/scene-000.png", "scenes/scene-001.png",
                            "masks/s000-e00.png", "masks/s000-e01.png", "masks/s001-e00.png",
                            "masks/s001-e01.png"} | object_masks
    assert files_a == files_b
    assert files_a["dataset.json"] != _files(c.parent)["dataset.json"]


def test_every_category_present_and_scenes_are_2_to_1(bench):
    dataset, _ = bench
    assert len(dataset) == 12
    assert {ep.category for ep in dataset.episodes} == set(CATEGORIES)
    erp = dataset.episodes[0].load_scene()
    assert erp.shape == (WIDTH // 2, WIDTH, 3) and erp.dtype == np.uint8


@pytest.mark.parametrize("total", [8, 9, 12, 20, 32, 33])
def test_category_schedule_covers_all_categories_in_method_proportions(total):
    schedule = scenes.category_schedule(total, np.random.default_rng(0))
    assert len(schedule) == total and set(schedule) == set(CATEGORIES)
    big = scenes.category_schedule(1000, np.random.default_rng(0))
    for cat, share in scenes.CATEGORY_SHARES.items():
        assert abs(big.count(cat) / 1000 - share) < 0.002


def _gnomonic(obj, width, height):
    """Independent textbook gnomonic projection of every ERP pixel centre about obj's centre: (x, y, cos c)."""
    vs, us = np.mgrid[0:height, 0:width]
    lam, phi = (np.radians(a) for a in erp_pixel_to_dir(us, vs, width, height))
    lam0, phi0 = math.radians(obj.theta), math.radians(obj.phi)
    cos_c = math.sin(phi0) * np.sin(phi) + math.cos(phi0) * np.cos(phi) * np.cos(lam - lam0)
    x = np.cos(phi) * np.sin(lam - lam0) / cos_c
    y = (math.cos(phi0) * np.sin(phi) - math.sin(phi0) * np.cos(phi) * np.cos(lam - lam0)) / cos_c
    return x, y, cos_c


def test_masks_are_exact_nonempty_binary_and_match_the_painted_colour(bench):
    dataset, objects = bench
    palette = np.array(list(scenes.COLOURS.values()), dtype=float)
    for ep in dataset.episodes:
        raw = cv2.imread(str(ep.mask["png"]), cv2.IMREAD_GRAYSCALE)
        assert set(np.unique(raw)) == {0, 255}
        mask = ep.load_mask(WIDTH, WIDTH // 2)
        obj = _objects_of(ep, objects)[ep.extra["query"]["target"]]
        x, y, cos_c = _gnomonic(obj, WIDTH, WIDTH // 2)
        bound = math.tan(math.radians(obj.radius))
        # every mask pixel lies in the front hemisphere within the bounding circle of the shape
        assert mask.sum() > 200 and np.all(cos_c[mask] > 0) and np.all(np.hypot(x, y)[mask] <= bound * 1.001)
        if obj.shape == "circle":  # exact: inside iff the pixel centre's tangent point is inside the disc
            expected = (cos_c > 0) & (np.hypot(x, y) < bound * 0.92)
            assert np.array_equal(mask, expected)
        inner = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        median = np.median(ep.load_scene()[inner].astype(float), axis=0)
        assert list(scenes.COLOURS)[int(np.argmin(np.linalg.norm(palette - median, axis=1)))] == obj.colour


def test_centroid_field_is_the_spherical_centroid_of_the_mask(bench):
    dataset, objects = bench
    for ep in dataset.episodes:
        c = spherical_centroid(ep.load_mask(WIDTH, WIDTH // 2))
        assert pose_distance(c, ep.target_centroid) < 1e-3
        obj = _objects_of(ep, objects)[ep.extra["query"]["target"]]
        assert pose_distance(c, Pose(obj.theta, obj.phi)) < 0.5  # symmetric shapes: centroid ≈ centre
        assert ep.target_name == obj.name


@pytest.mark.parametrize("theta, phi", [(0.0, 0.0), (40.0, 30.0), (-100.0, -50.0), (179.5, 45.0)])
def test_a_circle_looks_round_in_the_view_centred_on_it(theta, phi):
    erp = np.zeros((512, 1024, 3), np.uint8)
    obj = scenes.SceneObject("circle", "red", theta, phi, 20.0)
    mask = scenes.place_object(erp, obj)
    intr = Intrinsics.from_fov()
    view_mask = project_erp_mask(mask, Pose(theta, phi), intr)
    x1, y1, x2, y2 = mask_bbox(view_mask)
    width_t, height_t = (x2 - x1) / intr.fx, (y2 - y1) / intr.fy  # tangent-plane extents
    assert width_t / height_t == pytest.approx(1.0, abs=0.03)
    assert width_t == pytest.approx(2 * 0.92 * math.tan(math.radians(10.0)), rel=0.03)
    assert abs((x1 + x2) / 2 - intr.cx) < 2 and abs((y1 + y2) / 2 - intr.cy) < 2
    # the same object is stretched by 1/cos(phi) across ERP columns, so the test above can tell
    ys, xs = np.nonzero(np.roll(mask, 512 - int((theta + 180) * 1024 / 360), axis=1))
    erp_aspect = (xs.max() - xs.min() + 1) / (ys.max() - ys.min() + 1)
    assert erp_aspect == pytest.approx(1 / math.cos(math.radians(phi)), rel=0.1)


def test_an_object_on_the_seam_is_painted_on_both_edges():
    erp = np.zeros((512, 1024, 3), np.uint8)
    mask = scenes.place_object(erp, scenes.SceneObject("square", "blue", -179.0, 10.0, 20.0))
    assert mask[:, 0].any() and mask[:, -1].any()
    assert np.array_equal(erp.any(axis=2)[mask], np.ones(mask.sum(), bool))


INTR = Intrinsics.from_fov()
TURN = {"right": 90.0, "left": -90.0, "behind": 180.0}


def _object_masks(objs, width):
    """Each object's exact ERP mask, painted alone on a blank panorama."""
    return [scenes.place_object(np.zeros((width // 2, width, 3), np.uint8), o) for o in objs]


def _rule_holds(i, query, objects, masks, theta0):
    """The instruction rules of the module docstring, written out again with no margin; EGO through the
    renderer: some pixel of object i's mask is in the view after the turn."""
    obj = objects[i]
    if query["shape"] and obj.shape != query["shape"]:
        return False
    if query["colour"] and obj.colour != query["colour"]:
        return False
    wrap = lambda a: (a + 180.0) % 360.0 - 180.0  # noqa: E731
    if query["ego"]:
        if not project_erp_mask(masks[i], Pose(wrap(theta0 + TURN[query["ego"]]), 0.0), INTR).any():
            return False
    if query["relation"]:
        a = objects[query["anchor"]]
        if a is obj:
            return False
        d, dphi = wrap(obj.theta - a.theta), obj.phi - a.phi
        dist = pose_distance(Pose(obj.theta, obj.phi), Pose(a.theta, a.phi))
        h = abs(d) * math.cos(math.radians((obj.phi + a.phi) / 2))
        if not {"next to": dist <= 45 and abs(dphi) <= h, "above": dist <= 60 and dphi >= h,
                "below": dist <= 60 and -dphi >= h, "opposite": abs(d) >= 150,
                "left of": -75 <= d <= -10 and abs(dphi) <= 35,
                "right of": 10 <= d <= 75 and abs(dphi) <= 35}[query["relation"]]:
            return False
    return True


def _check_rules(ep, objs, masks):
    """Every rule of the instruction generator on one episode; returns its query."""
    q, theta0 = ep.extra["query"], ep.initial_pose.theta
    hits = [i for i in range(len(objs)) if _rule_holds(i, q, objs, masks, theta0)]
    assert hits == [q["target"]], (ep.id, ep.instruction, hits)
    same_description = [i for i in range(len(objs)) if _rule_holds(i, {**q, "ego": None, "relation": None}, objs,
                                                                     masks, 0.0)]
    assert (len(same_description) == 1) == (ep.category == "UNIQ"), ep.instruction
    noun = " ".join(w for w in (q["colour"], q["shape"] or "shape") if w)
    assert f"the {noun}" in ep.instruction
    if q["ego"]:  # EGO: after turning as told, the target is in view and the only one of its kind there
        turned = Pose((theta0 + TURN[q["ego"]] + 180.0) % 360.0 - 180.0, 0.0)
        target = objs[q["target"]]
        x, y, front = dir_to_view_pixel(target.theta, target.phi, turned, INTR)
        assert front and 0 <= x < INTR.width and 0 <= y < INTR.height, (ep.id, ep.instruction)
        for i in same_description if ep.category == "EGO" else ():  # MULTIHOP: the relation tells them apart
            assert (i == q["target"]) == bool(project_erp_mask(masks[i], turned, INTR).any()), (ep.id, i)
        words = {"right": ("right",), "left": ("left",), "behind": ("behind", "around")}[q["ego"]]
        assert any(w in ep.instruction for w in words)
    if q["relation"]:
        anchor = objs[q["anchor"]]
        assert ep.instruction.endswith(f"the {anchor.name}")
        assert sum(o.name == anchor.name for o in objs) == 1  # the anchor itself is unique
        words = {"next to": ("next to", "beside"), "above": ("above",), "below": ("below", "under"),
                 "opposite": ("opposite", "across from"), "left of": ("left of",), "right of": ("right of",)}
        assert any(f" {w} the {anchor.name}" in ep.instruction for w in words[q["relation"]]), ep.instruction
    if ep.category == "MULTIHOP":  # the relation alone also fits another look-alike: the turn is needed
        alone = [i for i in range(len(objs)) if _rule_holds(i, {**q, "ego": None}, objs, masks, theta0)]
        assert len(alone) >= 2 and q["target"] in alone, (ep.id, ep.instruction)
    return q


def test_every_instruction_picks_exactly_one_object_and_needs_its_spatial_part(bench):
    dataset, objects = bench
    masks = {}
    for ep in dataset.episodes:
        objs = _objects_of(ep, objects)
        masks.setdefault(ep.scene, _object_masks(objs, WIDTH))
        _check_rules(ep, objs, masks[ep.scene])


def test_category_rules_hold_on_every_episode_of_seeds_0_to_4(tmp_path):
    relations, egos = set(), set()
    for seed in range(5):
        root = tmp_path / f"seed{seed}"
        dataset = load_dataset(scenes.generate_benchmark(root, seed=seed, erp_width=512))
        doc = json.loads((root / "objects.json").read_text())
        per_scene = {s["scene"]: [scenes.SceneObject(**o) for o in s["objects"]] for s in doc["scenes"]}
        masks = {name: _object_masks(objs, 512) for name, objs in per_scene.items()}
        assert len(dataset) == 32 and {ep.category for ep in dataset.episodes} == set(CATEGORIES)
        for ep in dataset.episodes:
            name = ep.scene.relative_to(root).as_posix()
            q = _check_rules(ep, per_scene[name], masks[name])
            relations.add(q["relation"])
            egos.add(q["ego"])
    assert {"next to", "opposite"} <= relations and egos == {None, "right", "left", "behind"}


def test_the_rules_reject_what_the_old_ones_let_through():
    """A look-alike in the view after the turn, a vertical neighbour called 'next to', a relation that
    alone picks the MULTIHOP target: each makes the instruction invalid."""
    objs = [scenes.SceneObject("star", "red", 90.0, 0.0, 16.0), scenes.SceneObject("star", "blue", 130.0, 10.0, 16.0),
            scenes.SceneObject("star", "green", -90.0, 0.0, 16.0), scenes.SceneObject("cross", "white", 90.0, 33.0, 16.0),
            scenes.SceneObject("circle", "yellow", 150.0, 0.0, 16.0)]
    ego = scenes.Query("EGO", 0, "star", None, ego="right")
    assert not scenes.unambiguous(ego, objs, 0.0)  # the blue star is also in the view at θ0 + 90
    assert scenes.unambiguous(ego, objs[:1] + objs[2:], 0.0)
    assert not scenes.relation_holds(objs[3], objs[0], "next to") and scenes.relation_holds(objs[3], objs[0], "above")
    multihop = scenes.Query("MULTIHOP", 1, "star", None, ego="right", relation="next to", anchor=4)
    assert not scenes.relation_ambiguous(multihop, objs)  # only the blue star is next to the yellow circle
    assert scenes.relation_ambiguous(multihop, objs + [scenes.SceneObject("star", "red", 175.0, 0.0, 16.0)])


def test_start_pose_does_not_see_the_target(bench):
    dataset, _ = bench
    intr = Intrinsics.from_fov()
    for ep in dataset.episodes:
        assert ep.initial_pose.phi == 0.0
        assert pose_distance(ep.initial_pose, ep.target_centroid) > 75.0
        assert not project_erp_mask(ep.load_mask(WIDTH, WIDTH // 2), ep.initial_pose, intr).any()


def _evaluate(dataset, policy: str, episodes):
    outcomes = []
    for ep in episodes:
        scene = SimScene(ep)
        result = run_episode(scene, make_policy(policy, scene.config, scene.truth, seed=0),
                             make_segmenter("oracle", scene.config, scene.truth))
        outcomes.append(result.outcome)
    return summarize(outcomes, tau_deg=30.0)


def test_expert_solves_the_benchmark_and_random_does_not(bench):
    dataset, _ = bench
    expert = _evaluate(dataset, "expert", dataset.episodes)
    assert expert["sr"] == 1.0 and expert["miou"] > 0.95
    assert expert["spl"] >= 0.95
    random = _evaluate(dataset, "random", dataset.episodes[:6])
    assert random["sr"] <= 0.34 and random["spl"] < expert["spl"] - 0.5


def test_an_image_background_is_kept_outside_the_objects(tmp_path):
    path = scenes.generate_benchmark(tmp_path, n_scenes=1, episodes_per_scene=2, seed=1, background=str(BEDROOM),
                                     erp_width=512)
    erp = load_dataset(path).episodes[0].load_scene()
    plain = scenes.load_background(BEDROOM, 512)
    changed = np.any(erp != plain, axis=2)
    doc = json.loads((tmp_path / "objects.json").read_text())
    objs = [scenes.SceneObject(**o) for o in doc["scenes"][0]["objects"]]
    covered = np.zeros_like(changed)
    for o in objs:
        r0, r1, cols = scenes.object_window(o, 512, 256)
        covered[r0:r1, cols] = True
    assert changed.any() and not (changed & ~covered).any()


def test_bad_arguments_get_one_line_messages(tmp_path):
    with pytest.raises(scenes.SceneError, match="neither 'plain' nor an existing ERP image"):
        scenes.generate_benchmark(tmp_path, background=str(tmp_path / "missing.png"))
    with pytest.raises(scenes.SceneError, match="erp_width=1001"):
        scenes.generate_benchmark(tmp_path, erp_width=1001)
    with pytest.raises(scenes.SceneError, match="at least 1"):
        scenes.generate_benchmark(tmp_path, n_scenes=0)
    wide = tmp_path / "wide.png"
    cv2.imwrite(str(wide), np.zeros((100, 300, 3), np.uint8))
    with pytest.raises(scenes.SceneError, match="2:1 aspect ratio"):
        scenes.generate_benchmark(tmp_path, background=str(wide))
