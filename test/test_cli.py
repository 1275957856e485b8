"""The ``panoseeker`` command line: outputs a user reads and one-line errors."""
import json
import subprocess
import sys

import cv2
import pytest

from panoseeker_ros.cli import main


def test_eval_prints_the_table_and_writes_the_run(cube_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["eval", "--dataset", str(cube_dataset), "--policy", "expert", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "SR %" in printed and "overall" in printed and "100.0" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert {"sr", "as", "spl", "miou", "per_category"} <= set(summary)
    assert summary["sr"] == 1.0 and set(summary["per_category"]) == {"EGO", "UNIQ", "ALLO", "MULTIHOP"}
    lines = (out / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["trajectory"][-1]["action"].startswith("STOP")

    png = tmp_path / "ep.png"
    assert main(["show-episode", "--run", str(out), "--episode", "cube-1", "--out", str(png)]) == 0
    img = cv2.imread(str(png))
    assert img.shape[1] == 1024 and img.shape[0] > 512


def test_render_view(tmp_path, capsys):
    from conftest import CUBE

    out = tmp_path / "v.png"
    assert main(["render-view", "--erp", str(CUBE), "--theta", "90", "--phi", "0", "--out", str(out)]) == 0
    view = cv2.imread(str(out))
    assert view.shape == (768, 1024, 3)
    b, g, r = view[150, 500]
    assert g > 200 and b < 60 and r < 150  # the green +X face straight ahead (BGR on disk)


@pytest.mark.parametrize("argv, fragment", [
    (["eval", "--dataset", "/nonexistent/ds.json", "--out", "/tmp/x"], "does not exist"),
    (["eval", "--dataset", "{ds}", "--out", "{tmp}/r", "--policy", "oracle-ish"], "unknown policy"),
    (["render-view", "--erp", "{cube}", "--theta", "0", "--phi", "120", "--out", "{tmp}/v.png"], "--phi 120.0 is out of range"),
    (["render-view", "--erp", "/nope.png", "--theta", "0", "--phi", "0", "--out", "{tmp}/v.png"], "does not exist"),
    (["show-episode", "--run", "{tmp}", "--out", "{tmp}/e.png"], "has no summary.json"),
    (["eval", "--dataset", "{ds}", "--out", "{tmp}/r", "--config", "{tmp}/none.yaml"], "parameter file"),
])
def test_user_errors_are_one_line_with_exit_2(argv, fragment, cube_dataset, tmp_path, capsys):
    from conftest import CUBE

    argv = [a.format(ds=cube_dataset, tmp=tmp_path, cube=CUBE) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1 and err.startswith("panoseeker ")


def test_bad_yaml_names_the_line(tmp_path, cube_dataset, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("/**:\n  ros__parameters:\n    reward: {tau_deg: [1, 2}\n")
    assert main(["eval", "--dataset", str(cube_dataset), "--out", str(tmp_path / "r"), "--config", str(bad)]) == 2
    assert "is not valid YAML at line 3" in capsys.readouterr().err
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("/**:\n  ros__parameters:\n    reward: {tau: 10}\n")
    assert main(["eval", "--dataset", str(cube_dataset), "--out", str(tmp_path / "r"), "--config", str(unknown)]) == 2
    assert "unknown setting reward.tau" in capsys.readouterr().err


def test_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "panoseeker_ros.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "eval" in done.stdout and "render-view" in done.stdout


@pytest.mark.parametrize("field, value, fragment", [
    ("polygon", [[10, 10], [5000, 10], [20, 40]], "[5000, 10] is outside the 1024x512 scene"),
    ("polygon", [[10, 10], [float("nan"), 10], [20, 40]], "must be a pair of finite numbers"),
    ("theta", 359.0, "theta = 359.0 is out of range"),
    ("scene", "broken.png", "broken.png cannot be decoded"),
])
def test_a_malformed_episode_stops_eval_before_any_episode_runs(tmp_path, capsys, field, value, fragment):
    from conftest import CUBE

    (tmp_path / "broken.png").write_bytes(b"not a png")
    episodes = []
    for i in range(3):
        ep = {"id": f"ep-{i}", "scene": str(CUBE), "instruction": "the box", "category": "UNIQ",
              "initial_pose": {"theta": 0.0, "phi": 0.0},
              "target": {"name": "box", "mask": {"polygons": [[[100, 100], [200, 100], [200, 200]]]}}}
        if i == 2:  # the third episode is the bad one
            if field == "polygon":
                ep["target"]["mask"]["polygons"] = [value]
            elif field == "theta":
                ep["initial_pose"]["theta"] = value
            else:
                ep["scene"] = value
        episodes.append(ep)
    (tmp_path / "dataset.json").write_text(json.dumps({"format": "panoseeker-aprs", "version": 1,
                                                       "episodes": episodes}))
    out = tmp_path / "run"
    assert main(["eval", "--dataset", str(tmp_path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "episodes[2] (id 'ep-2')" in err and len(err.splitlines()) == 1
    assert not out.exists()  # nothing ran
