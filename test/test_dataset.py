"""The dataset format: loading, polygons across the seam, one-line errors naming the field."""
import json

import pytest

from panoseeker_ros.core.dataset import DatasetError, load_dataset, rasterize_polygons


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
    ({"instruction": KeyError}, "episodes[0].instruction is missing"),
    ({"instruction": "   "}, "instruction is empty"),
    ({"category": "SPATIAL"}, "category = 'SPATIAL'; use one of EGO, UNIQ, ALLO, MULTIHOP"),
    ({"initial_pose__phi": 120}, "initial_pose.phi = 120.0 is out of range"),
    ({"initial_pose__theta": "left"}, "initial_pose.theta must be a number"),
    ({"target__centroid": KeyError}, "target.centroid is missing"),
    ({"target__mask": {"rle": []}}, "target.mask needs 'png'"),
    ({"target__mask": {"polygons": [[[1, 2], [3, 4]]]}}, "polygons must be a list of polygons"),
    ({"scene": "nowhere.png"}, "nowhere.png does not exist"),
])
def test_bad_fields_get_one_line_naming_them(tmp_path, cube_dataset, changes, fragment):
    doc = _doc(cube_dataset, **changes)
    doc_path = _write(tmp_path, doc)
    for ep in doc["episodes"]:  # keep the scene and mask reachable from tmp_path
        ep["scene"] = ep["scene"] if ep["scene"] == "nowhere.png" else str(cube_dataset.parent / ep["scene"])
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
