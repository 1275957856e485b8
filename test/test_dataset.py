"""The dataset format: loading, polygons across the seam, one-line errors naming the field."""
import json

import cv2
import numpy as np
import pytest

from panoseeker_ros.core.dataset import DatasetError, load_dataset, rasterize_polygons
from panoseeker_ros.core.geometry import pose_distance, spherical_centroid


def test_loads_the_cube_dataset(cube_dataset):
    ds = load_dataset(cube_dataset.parent)  # a directory works too
    assert len(ds) == 4 and ds.episodes[0].category == "UNIQ"
    mask = ds.episodes[0].load_mask(1024, 512)
    assert mask.dtype == bool and mask.sum() > 2000
    assert ds.by_id("cube-2").initial_pose.theta == -150


def test_polygon_across_the_seam_wraps():
    mask = rasterize_polygons([[[1000, 100], [1060, 100], [1060, 200], [1000, 200]]], 1024, 512)
    assert mask[150, 1010] and mask[150, 20] and not mask[150, 60] and not mask[150, 990]


def _write(tmp_path, doc):
    path = tmp_path / "dataset.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def _doc(cube_dataset, **changes):
    doc = json.loads(cube_dataset.read_text())
    ep = doc["episodes"][0]
    for dotted, value in changes.items():
        obj, keys = ep, dotted.split("__")
        for k in keys[:-1]:
            obj = obj[k]
        if value is KeyError:
            del obj[keys[-1]]
        else:
            obj[keys[-1]] = value
    doc["episodes"] = [ep]
    return doc


@pytest.mark.parametrize("changes, fragment", [
    ({"instruction": KeyError}, "episodes[0] (id 'cube-0').instruction is missing"),
    ({"instruction": "   "}, "instruction is empty"),
    ({"category": "SPATIAL"}, "category = 'SPATIAL'; use one of EGO, UNIQ, ALLO, MULTIHOP"),
    ({"initial_pose__phi": 120}, "initial_pose.phi = 120.0 is out of range"),
    ({"initial_pose__theta": "left"}, "initial_pose.theta must be a number"),
    ({"initial_pose__theta": 359}, "initial_pose.theta = 359.0 is out of range; use degrees in [-180, 180]"),
    ({"target__centroid__theta": 10.0}, "from the centroid of its mask"),
    ({"target__mask": {"rle": []}}, "target.mask needs 'png'"),
    ({"target__mask": {"polygons": [[[1, 2], [3, 4]]]}}, "polygons must be a list of polygons"),
    ({"target__mask": {"polygons": [[[10, 10], [5000, 10], [20, 40]]]}},
     "target.mask.polygons[0][1] = [5000, 10] is outside the 1024x512 scene"),
    ({"target__mask": {"polygons": [[[10, 10], [20, 10], [20, 700]]]}}, "polygons[0][2] = [20, 700] is outside"),
    ({"target__mask": {"polygons": [[[10, 10], [float("nan"), 10], [20, 40]]]}},
     "polygons[0][1] = [nan, 10] must be a pair of finite numbers"),
    ({"target__mask": {"polygons": [[[10, 10], [20, 20], [30, 30]]]}}, "polygons[0] has zero area"),
    ({"target__mask": {"polygons": [[[-400, 10], [1400, 10], [1400, 40]]]}}, "polygons[0] spans 1800 px in u"),
    ({"scene": "nowhere.png"}, "nowhere.png does not exist"),
    ({"scene": "notes.txt"}, "notes.txt cannot be decoded"),
    ({"scene": "wide.png"}, "wide.png is 300x100; an ERP scene must be exactly twice as wide"),
])
def test_bad_fields_get_one_line_naming_them(tmp_path, cube_dataset, changes, fragment):
    doc = _doc(cube_dataset, **changes)
    doc_path = _write(tmp_path, doc)
    (tmp_path / "notes.txt").write_text("not an image")
    cv2.imwrite(str(tmp_path / "wide.png"), np.zeros((100, 300, 3), np.uint8))
    for ep in doc["episodes"]:  # keep the scene and mask reachable from tmp_path
        ep["scene"] = ep["scene"] if ep["scene"] in ("nowhere.png", "notes.txt", "wide.png") \
            else str(cube_dataset.parent / ep["scene"])
        mask = ep["target"].get("mask", {})
        if "png" in mask:
            mask["png"] = str(cube_dataset.parent / mask["png"])
    doc_path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError) as err:
        load_dataset(doc_path)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_file_level_errors(tmp_path, cube_dataset):
    with pytest.raises(DatasetError, match="does not exist; make one with 'panoseeker make-scenes"):
        load_dataset(tmp_path / "missing.json")
    with pytest.raises(DatasetError, match=r"not valid JSON \(line 1, column 2"):
        load_dataset(_write(tmp_path, "{oops"))
    with pytest.raises(DatasetError, match="'format' must be 'panoseeker-aprs'"):
        load_dataset(_write(tmp_path, {"episodes": []}))
    doc = json.loads(cube_dataset.read_text())
    doc["episodes"][1]["id"] = doc["episodes"][0]["id"]
    for ep in doc["episodes"]:
        ep["scene"] = str(cube_dataset.parent / ep["scene"])
        ep["target"]["mask"]["png"] = str(cube_dataset.parent / ep["target"]["mask"]["png"])
    with pytest.raises(DatasetError, match="is used twice"):
        load_dataset(_write(tmp_path, doc))


def _cube_doc(cube_dataset):
    """The cube dataset with absolute paths, so it can be written anywhere."""
    doc = json.loads(cube_dataset.read_text())
    for ep in doc["episodes"]:
        ep["scene"] = str(cube_dataset.parent / ep["scene"])
        ep["target"]["mask"]["png"] = str(cube_dataset.parent / ep["target"]["mask"]["png"])
    return doc


def test_a_bad_scene_in_a_later_episode_is_found_at_load_naming_episode_and_file(tmp_path, cube_dataset):
    doc = _cube_doc(cube_dataset)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    doc["episodes"][2]["scene"] = str(broken)
    with pytest.raises(DatasetError) as err:
        load_dataset(_write(tmp_path, doc))
    assert "episodes[2] (id 'cube-2').scene" in str(err.value) and "broken.png cannot be decoded" in str(err.value)


def test_a_mask_png_of_another_size_is_found_at_load(tmp_path, cube_dataset):
    doc = _cube_doc(cube_dataset)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.full((10, 20), 255, np.uint8))
    doc["episodes"][3]["target"]["mask"]["png"] = str(small)
    with pytest.raises(DatasetError, match=r"episodes\[3\] \(id 'cube-3'\)\.target\.mask\.png: .*small.png is 20x10, "
                                           r"the scene is 1024x512"):
        load_dataset(_write(tmp_path, doc))
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), np.zeros((512, 1024), np.uint8))
    doc["episodes"][3]["target"]["mask"]["png"] = str(empty)
    with pytest.raises(DatasetError, match=r"\(id 'cube-3'\)\.target\.mask covers no pixel of the scene"):
        load_dataset(_write(tmp_path, doc))


def test_a_missing_centroid_is_computed_from_the_mask(tmp_path, cube_dataset):
    doc = _cube_doc(cube_dataset)
    del doc["episodes"][0]["target"]["centroid"]
    ep = load_dataset(_write(tmp_path, doc)).episodes[0]
    assert pose_distance(ep.target_centroid, spherical_centroid(ep.load_mask(1024, 512))) < 1e-3


def test_a_polygon_may_cross_the_seam_past_either_edge(tmp_path, cube_dataset):
    doc = _cube_doc(cube_dataset)
    for ep, poly in zip(doc["episodes"][:2], ([[1000, 100], [1060, 100], [1060, 200], [1000, 200]],
                                              [[-24, 100], [36, 100], [36, 200], [-24, 200]])):
        ep["target"] = {"name": "seam box", "mask": {"polygons": [poly]}}
    a, b = load_dataset(_write(tmp_path, doc)).episodes[:2]
    assert np.array_equal(a.load_mask(1024, 512), b.load_mask(1024, 512))
    assert abs(a.target_centroid.theta - (-180.0 + 6 * 360 / 1024)) < 0.5  # centred 6 px past the seam


def test_a_non_utf8_file_is_named(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('{"format": "panoseeker-aprs", "note": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin1.json is not UTF-8 text \(byte \d+\); save it as UTF-8"):
        load_dataset(path)
