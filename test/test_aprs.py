"""The official APRS benchmark files: the five layouts, both field spellings, the three image sources,
every loading error, the lazy panoramas, box-level IoU and the export → eval round trip."""
from __future__ import annotations

import csv
import json
import math
import shutil

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from panoseeker_ros import cli
from panoseeker_ros.core import aprs
from panoseeker_ros.core.aprs import CSV_NAMES, LAYOUTS, erp_box, export_aprs, image_size
from panoseeker_ros.core.config import SeekConfig
from panoseeker_ros.core.dataset import DatasetError, load_dataset
from panoseeker_ros.core.environment import SimScene, run_episode
from panoseeker_ros.core.geometry import Pose
from panoseeker_ros.core.metrics import box_iou
from panoseeker_ros.models.oracle import OracleSegmenter
from panoseeker_ros.models.registry import make_policy
from panoseeker_ros.paths import sample_dataset

from conftest import BEDROOM

ROW = {"id": "test_0", "image": "room.png", "instruction": "the wardrobe", "instruction_zh": "衣柜",
       "category": "UNIQ", "width": 1024, "height": 512, "init_theta": -60.0, "init_phi": 0.0,
       "target_theta": 123.9, "target_phi": -4.0, "box_x": 0.8057, "box_y": 0.293, "box_w": 0.0703,
       "box_h": 0.4609}


def _csv_row(row: dict) -> dict:
    return {CSV_NAMES[k]: row["image" if k == "filename" else k] for k in CSV_NAMES}


def write_root(root, rows, layout="{split}.jsonl", split="test", images=("room.png",)):
    """A benchmark folder: ``rows`` in ``layout`` and the bedroom panorama under ROOT/SPLIT/ as ``images``."""
    (root / split).mkdir(parents=True, exist_ok=True)
    for name in images:
        shutil.copyfile(BEDROOM, root / split / name)
    path = root / layout.format(split=split)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_each_of_the_five_layouts_is_found_in_the_official_order(tmp_path):
    assert LAYOUTS == ("data/benchmark/{split}.parquet", "data/{split}.parquet", "{split}.jsonl",
                       "metadata/{split}.jsonl", "{split}.csv")
    for k, layout in enumerate(LAYOUTS):
        root = tmp_path / f"root{k}"
        rows = [_csv_row(ROW)] if layout.endswith(".csv") else [ROW]
        path = write_root(root, rows, layout)
        assert aprs.find_annotations(root, "test") == path
        ds = load_dataset(root, "test")
        assert ds.split == "test" and ds.path == root and len(ds) == 1
        ep = ds.episodes[0]
        assert (ep.instruction, ep.category, ep.initial_pose) == ("the wardrobe", "UNIQ", Pose(-60.0, 0.0))
        assert ep.target_centroid == Pose(123.9, -4.0) and ep.box_level
        assert ep.load_scene().shape == (512, 1024, 3)
    # with several layouts present the earlier one wins, as in the official loader
    root = tmp_path / "both"
    write_root(root, [dict(ROW, instruction="from the jsonl")], "{split}.jsonl")
    write_root(root, [dict(_csv_row(ROW), Description="from the csv")], "{split}.csv")
    assert load_dataset(root, "test").episodes[0].instruction == "from the jsonl"


def test_both_spellings_and_the_default_ids(tmp_path):
    csv_root = tmp_path / "csv"
    write_root(csv_root, [_csv_row(ROW), dict(_csv_row(ROW), Category="ALLO")], "{split}.csv")
    a, b = load_dataset(csv_root, "test").episodes
    assert (a.id, b.id) == ("test_0", "test_1") and b.category == "ALLO"  # CSV rows carry no id
    # parquet may use the CSV names too, and a JSONL row without id gets SPLIT_<line>
    pq_root = tmp_path / "pq"
    write_root(pq_root, [dict(_csv_row(ROW), id="scene-7")], "data/{split}.parquet")
    (ep,) = load_dataset(pq_root, "test").episodes
    assert ep.id == "scene-7" and ep.target_centroid == Pose(123.9, -4.0)
    js_root = tmp_path / "js"
    row = {k: v for k, v in ROW.items() if k != "id"}
    by_filename = {("filename" if k == "image" else k): v for k, v in row.items()}
    write_root(js_root, [row, by_filename], "{split}.jsonl")
    first, second = load_dataset(js_root, "test").episodes
    assert (first.id, second.id) == ("test_0", "test_1") and first.extra["instruction_zh"] == "衣柜"


def test_image_sources_file_image_path_and_embedded_struct(tmp_path):
    png = BEDROOM.read_bytes()
    root = tmp_path / "sources"
    (root / "pano").mkdir(parents=True)
    shutil.copyfile(BEDROOM, root / "pano" / "elsewhere.png")
    rows = [dict(ROW, id="path", image_path="pano/elsewhere.png"), dict(ROW, id="file")]
    write_root(root, rows, "data/{split}.parquet")
    by_id = {ep.id: ep for ep in load_dataset(root, "test").episodes}
    assert by_id["path"].scene == root / "pano" / "elsewhere.png"
    assert by_id["file"].scene == root / "test" / "room.png"
    # the Hugging Face Image struct {bytes, path}, read lazily, one row group at a time
    emb = tmp_path / "embedded"
    (emb / "data").mkdir(parents=True)
    flipped = cv2.imencode(".png", cv2.flip(cv2.imread(str(BEDROOM)), 1))[1].tobytes()
    image = pa.array([{"bytes": png, "path": "a.png"}, {"bytes": flipped, "path": "b.png"}],
                     pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    meta = {k: [ROW[k]] * 2 for k in ROW if k != "image"}
    meta["id"] = ["a", "b"]
    pq.write_table(pa.table({"image": image, **meta}), emb / "data" / "test.parquet", row_group_size=1)
    a, b = load_dataset(emb, "test").episodes
    assert np.array_equal(a.load_scene(), cv2.cvtColor(cv2.imread(str(BEDROOM)), cv2.COLOR_BGR2RGB))
    assert np.array_equal(b.load_scene(), a.load_scene()[:, ::-1])
    assert a.scene != b.scene  # distinct scenes for the renderer cache


def test_loading_decodes_no_panorama(tmp_path, monkeypatch):
    """7,420 rows over a few panoramas: every row is checked, but only image headers are read."""
    root = tmp_path / "big"
    names = [f"p{k}.png" for k in range(20)]
    rows = [dict(ROW, id=f"r{k}", image=names[k % 20], init_theta=float(k % 360 - 180)) for k in range(7420)]
    write_root(root, rows, "{split}.jsonl", images=names)

    def no_decoding(*args, **kwargs):
        raise AssertionError("a panorama was decoded while loading")

    monkeypatch.setattr(cv2, "imread", no_decoding)
    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    ds = load_dataset(root, "test")
    assert len(ds) == 7420 and ds.episodes[-1].id == "r7419" and ds.episodes[-1].initial_pose.theta == 7419 % 360 - 180


def test_png_and_jpeg_headers_give_the_size():
    img = np.zeros((40, 80, 3), np.uint8)
    assert image_size(cv2.imencode(".png", img)[1].tobytes()) == (80, 40)
    assert image_size(cv2.imencode(".jpg", img)[1].tobytes()) == (80, 40)
    assert image_size(b"not an image") is None


BAD = [  # (change to the row, the words the one-line message must hold)
    ({"image": "missing.png"}, ["line 1 (id 'test_0'), field image", "missing.png does not exist"]),
    ({"image": "text.png"}, ["field image", "cannot be decoded"]),
    ({"image": "square.png"}, ["field image", "is 512x512", "twice as wide"]),
    ({"category": "COLOUR"}, ["field category", "'COLOUR' is not a category", "EGO, UNIQ, ALLO, MULTIHOP"]),
    ({"init_theta": "nan"}, ["field init_theta", "not a finite number"]),
    ({"init_phi": 95.0}, ["field init_phi", "95 is outside [-90, 90]"]),
    ({"target_theta": 270.0}, ["field target_theta", "270 is outside [-180, 180]"]),
    ({"box_x": 1.2}, ["field box_x", "1.2 is outside [0, 1]"]),
    ({"box_w": 0.0}, ["field box_w", "positive size"]),
    ({"box_y": 0.8, "box_h": 0.4}, ["field box_h", "passes the bottom"]),
    ({"instruction": " "}, ["field instruction", "missing or empty"]),
    ({"target_phi": None}, ["field target_phi", "is missing"]),
    ({"box_h": "tall"}, ["field box_h", "'tall' is not a number"]),
]


@pytest.mark.parametrize("change,words", BAD, ids=[next(iter(c)) + str(k) for k, (c, _) in enumerate(BAD)])
def test_every_row_error_is_one_line_naming_file_row_and_field(tmp_path, change, words):
    root = tmp_path / "bad"
    write_root(root, [dict(ROW, **change)], "{split}.jsonl")
    (root / "test" / "text.png").write_text("not an image")
    cv2.imwrite(str(root / "test" / "square.png"), np.zeros((512, 512, 3), np.uint8))
    with pytest.raises(DatasetError) as err:
        load_dataset(root, "test")
    message = str(err.value)
    assert "\n" not in message and str(root / "test.jsonl") in message
    for w in words:
        assert w in message, message


def test_file_level_errors(tmp_path):
    root = tmp_path / "r"
    write_root(root, [_csv_row(ROW), dict(_csv_row(ROW), Box_X_Norm="-0.1")], "{split}.csv")
    with pytest.raises(DatasetError, match=r"test.csv: row 2 \(line 3\) \(id 'test_1'\), field Box_X_Norm: "
                                           r"-0.1 is outside \[0, 1\]"):
        load_dataset(root, "test")
    with pytest.raises(DatasetError, match="has no train annotations; expected one of data/benchmark/train.parquet"):
        load_dataset(root, "train")
    with pytest.raises(DatasetError, match="splits test and train"):
        load_dataset(root, "val")
    with pytest.raises(DatasetError, match="choose its split with --split test or --split train"):
        load_dataset(root)
    dup = tmp_path / "dup"
    write_root(dup, [ROW, ROW], "{split}.jsonl")
    with pytest.raises(DatasetError, match=r"line 2 \(id 'test_0'\), field id: is used by line 1 too"):
        load_dataset(dup, "test")
    broken = tmp_path / "broken"
    write_root(broken, [ROW], "{split}.jsonl")
    (broken / "test.jsonl").write_text(json.dumps(ROW) + "\n{oops\n")
    with pytest.raises(DatasetError, match="line 2 is not a JSON object"):
        load_dataset(broken, "test")


def test_eval_refuses_a_bad_benchmark_before_any_episode(tmp_path, capsys):
    root = tmp_path / "bad"
    write_root(root, [ROW, dict(ROW, id="x", category="COLOUR")], "{split}.jsonl")
    assert cli.main(["eval", "--dataset", str(root), "--split", "test", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "line 2 (id 'x'), field category" in err
    assert not (tmp_path / "run").exists()


def test_box_iou_and_the_box_ground_truth():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), None) == 0.0 and box_iou((0, 0, 4, 4), (5, 5, 9, 9)) == 0.0
    mask = np.zeros((512, 1024), bool)
    mask[100:200, 1000:] = mask[100:200, :24] = True  # across the ±180° seam
    x, y, w, h = erp_box(mask)
    assert (x, y, w, h) == (1000 / 1024, 100 / 512, 48 / 1024, 100 / 512)


def test_a_box_level_episode_scores_the_boxes_on_the_final_view(tmp_path):
    root = tmp_path / "one"
    write_root(root, [ROW], "{split}.jsonl")
    config = SeekConfig()
    scene = SimScene(load_dataset(root, "test").episodes[0], config)
    assert scene.truth.box_level and scene.truth.mask[160:384, 830:896].all()  # the ERP box region
    result = run_episode(scene, make_policy("expert", config, scene.truth), OracleSegmenter(scene.truth,
                                                                                            config.camera.intrinsics()))
    record = result.as_dict()
    assert record["iou_level"] == "box" and record["iou"] > 0.95 and result.success


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_export_then_eval_gives_the_same_summary(tmp_path, fmt):
    out = tmp_path / "bench"
    path = export_aprs(load_dataset(sample_dataset()), out, fmt, "test")
    assert path == out / aprs.EXPORT_LAYOUT[fmt].format(split="test")
    runs = {}
    for name, args in (("ours", ["--dataset", str(sample_dataset())]),
                       ("export", ["--dataset", str(out), "--split", "test"])):
        assert cli.main(["eval", *args, "--out", str(tmp_path / name), "--quiet"]) == 0
        runs[name] = json.loads((tmp_path / name / "summary.json").read_text())
    ours, export = runs["ours"], runs["export"]
    assert (ours["iou_level"], export["iou_level"], export["split"]) == ("mask", "box", "test")
    assert export["n"] == ours["n"] == 17
    for cat in ("EGO", "UNIQ", "ALLO", "MULTIHOP"):
        a, b = ours["per_category"][cat], export["per_category"][cat]
        assert (a["n"], a["sr"], a["as"]) == (b["n"], b["sr"], b["as"]), cat
        # the oracle segments the target's box instead of its outline, so alignment ends a little elsewhere
        assert b["spl"] == pytest.approx(a["spl"], abs=0.02), cat
    assert (export["sr"], export["as"]) == (ours["sr"], ours["as"])
    assert export["spl"] == pytest.approx(ours["spl"], abs=0.01)
    assert math.isclose(export["miou"], ours["miou"], abs_tol=0.05)  # box-level IoU aside


def test_export_aprs_command_and_show_episode_of_a_benchmark_run(tmp_path, capsys):
    out = tmp_path / "bench"
    assert cli.main(["export-aprs", "--dataset", str(sample_dataset()), "--out", str(out), "--format", "csv",
                     "--split", "train"]) == 0
    assert (out / "train.csv").is_file() and (out / "train" / "bedroom_1024x512.png").is_file()
    assert cli.main(["eval", "--dataset", str(out), "--split", "train", "--out", str(tmp_path / "run"), "--quiet",
                     "--limit", "2"]) == 0
    assert "mIoU box-level" in capsys.readouterr().out
    assert cli.main(["show-episode", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "ep.png")]) == 0
    assert cv2.imread(str(tmp_path / "ep.png")) is not None


def test_an_embedded_image_that_does_not_decode_is_named_by_row(tmp_path):
    root = tmp_path / "emb"
    (root / "data").mkdir(parents=True)
    image = pa.array([{"bytes": BEDROOM.read_bytes(), "path": "a.png"}, {"bytes": b"junk", "path": "b.png"}],
                     pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    meta = {k: [ROW[k]] * 2 for k in ROW if k != "image"}
    meta["id"] = ["a", "b"]
    pq.write_table(pa.table({"image": image, **meta}), root / "data" / "test.parquet")
    with pytest.raises(DatasetError, match=r"data/test.parquet: row 2 \(id 'b'\), field image: the embedded image "
                                           r"cannot be decoded"):
        load_dataset(root, "test")


def test_the_benchmark_wherever_a_dataset_is_taken(tmp_path, capsys):
    """make-sft-data and the nodes' dataset / split parameters read the official layout too."""
    from panoseeker_ros.core.config import ConfigError
    from panoseeker_ros.nodes.runtime import load_sim_env

    root = tmp_path / "bench"
    write_root(root, [ROW, dict(ROW, id="second", init_theta=60.0)], "{split}.jsonl", split="train")
    scene = load_sim_env(str(root), "second", SeekConfig(), "policy_node", "train")
    assert scene.spec.initial_pose == Pose(60.0, 0.0) and scene.truth.box_level
    with pytest.raises(ConfigError, match="policy_node: parameter 'dataset' / 'split' / 'episode_id': .*has no test "
                                          "annotations"):
        load_sim_env(str(root), "", SeekConfig(), "policy_node", "test")
    with pytest.raises(ConfigError, match="choose its split with --split test or --split train"):
        load_sim_env(str(root), "", SeekConfig(), "policy_node")
    assert cli.main(["make-sft-data", "--dataset", str(root), "--split", "train", "--out", str(tmp_path / "sft")]) == 0
    records = [json.loads(line) for line in (tmp_path / "sft" / "records.jsonl").read_text().splitlines()]
    search = [r for r in records if r.get("turn") != "review"]  # each search is followed by its review turn
    assert {r["episode"] for r in records} == {"test_0", "second"} and search[-1]["answer"].startswith("STOP [")
    from panoseeker_ros.training.demonstrations import record_observation

    assert records[0]["canvas_style"] == "official"  # training prompts describe the picture the record holds
    assert record_observation(records[0], tmp_path / "sft").canvas.shape == (526, 1024, 3)
