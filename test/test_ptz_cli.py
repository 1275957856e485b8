"""``panoseeker ptz`` against the fake VISCA camera: status, look, home, snapshot, and calibrate measuring a
head whose real counts per degree and lens differ from its profile."""
from __future__ import annotations

import re

import cv2
import pytest
import yaml

from panoseeker_ros.cli import main
from panoseeker_ros.drivers.fakes import FakePtzRig

TRUE_UNITS_PER_DEG = 16.0  # what the fake really turns; the profile says 14.4
TRUE_FOV = (60.0, 45.0)  # what the fake's lens sees; the profile says 66° x 49.5°


@pytest.fixture()
def rig(bedroom_erp):
    r = FakePtzRig.start(bedroom_erp, TRUE_FOV, (640, 480), fps=20.0,
                         true_units_per_deg=(TRUE_UNITS_PER_DEG, TRUE_UNITS_PER_DEG))
    yield r
    r.close()


def _params(tmp_path, rig, transport="udp", fov=(66.0, 49.5)):
    profile = tmp_path / "head.yaml"
    profile.write_text(yaml.safe_dump({
        "name": "fake_head", "units_per_deg": [14.4, 14.4], "pan_limits_deg": [-150.0, 150.0],
        "tilt_limits_deg": [-25.0, 80.0], "fov_deg": list(fov), "image_size": [640, 480],
        "settle_tolerance_deg": 0.2, "poll_period_s": 0.02, "frame_delay_s": 0.15, "source": "test"}))
    params = tmp_path / "seek.yaml"
    port = rig.udp_port if transport == "udp" else rig.tcp_port
    params.write_text(yaml.safe_dump({"/**/camera_node": {"ros__parameters": {
        "driver": "visca", "profile": str(profile), "host": "127.0.0.1", "port": port, "transport": transport,
        "video_source": rig.stream.url, "timeout_s": 2.0}}}))
    return params, profile


def test_status_look_home_and_snapshot(tmp_path, rig, capsys):
    params, _ = _params(tmp_path, rig, "tcp")
    assert main(["ptz", "--params", str(params), "status"]) == 0
    out = capsys.readouterr().out
    assert "VISCA over TCP tcp://127.0.0.1" in out and "position (read back): pan +0.00° tilt +0.00°" in out
    assert "video http://127.0.0.1" in out and "640x480" in out
    assert main(["ptz", "--params", str(params), "look", "30", "-10"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"reached pan \+30\.0\d° tilt -10\.0\d°", out), out
    assert rig.camera.pose_deg() == pytest.approx((30 * 14.4 / 16, -10 * 14.4 / 16), abs=0.1)
    snap = tmp_path / "snap.png"
    assert main(["ptz", "--params", str(params), "snapshot", str(snap)]) == 0
    assert cv2.imread(str(snap)).shape == (480, 640, 3)
    assert main(["ptz", "--params", str(params), "home"]) == 0
    assert "home: pan +0.00° tilt +0.00°" in capsys.readouterr().out


def test_calibrate_measures_the_real_units_per_degree_and_fov(tmp_path, rig, capsys):
    params, _ = _params(tmp_path, rig)
    measured = tmp_path / "measured.yaml"
    assert main(["ptz", "--params", str(params), "calibrate", "--write", str(measured)]) == 0
    out = capsys.readouterr().out
    assert "pan :" in out and "tilt:" in out, out
    got = yaml.safe_load(measured.read_text())
    assert got["units_per_deg"] == pytest.approx([TRUE_UNITS_PER_DEG, TRUE_UNITS_PER_DEG], rel=0.03), out
    assert got["fov_deg"] == pytest.approx(list(TRUE_FOV), abs=1.5), out
    assert rig.camera.refused == []


def test_errors_are_one_line(tmp_path, rig, capsys):
    params, _ = _params(tmp_path, rig)
    assert main(["ptz", "--params", str(params), "-p", "driver=sim", "status"]) == 2
    assert "set driver to one of visca, onvif" in capsys.readouterr().err
    assert main(["ptz", "--params", str(params), "-p", "video_source=", "status"]) == 2
    assert "set 'video_source' to its stream" in capsys.readouterr().err
    rig.camera.faults.silent = True
    assert main(["ptz", "--params", str(params), "-p", "timeout_s=0.2", "status"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no answer to the sequence reset within 0.2 s" in err


def test_launch_with_a_real_camera_simulates_nothing(tmp_path, capsys):
    import argparse

    from panoseeker_ros.nodes.commands import _graph_choices
    from panoseeker_ros.paths import sample_dataset

    real = tmp_path / "robot.yaml"
    real.write_text(yaml.safe_dump({"/**/camera_node": {"ros__parameters": {"driver": "visca"}}}))
    sim = tmp_path / "sim.yaml"
    sim.write_text(yaml.safe_dump({"/**/camera_node": {"ros__parameters": {"driver": "sim"}}}))
    opts = argparse.Namespace(dataset=None, split=None, episode=None, policy=None, model=None, adapter=None,
                              memory=None, decoding=None, device=None, segmenter=None, sam_model=None, step_period=None)
    shared, _, dataset = _graph_choices(opts, real)
    assert dataset is None and "dataset" not in shared  # the start pose is the camera's, not the sample's
    assert _graph_choices(opts, sim)[2] == sample_dataset()
    assert main(["launch", "--params", str(real), "--demo"]) == 2
    assert "--demo searches a simulated episode" in capsys.readouterr().err


def test_calibrate_says_when_an_axis_turns_the_other_way(tmp_path, bedroom_erp, capsys):
    rig = FakePtzRig.start(bedroom_erp, (66.0, 49.5), (640, 480), fps=20.0, true_units_per_deg=(-14.4, 14.4))
    try:
        params, _ = _params(tmp_path, rig)
        assert main(["ptz", "--params", str(params), "calibrate"]) == 0
        out = capsys.readouterr().out
        assert "pan: the image turned the other way: set sign[0] to -1" in out, out
        assert "tilt: the image turned" not in out
    finally:
        rig.close()


def test_a_look_that_does_not_settle_stops_the_head_and_exits_non_zero(tmp_path, rig, capsys):
    params, profile = _params(tmp_path, rig)
    doc = yaml.safe_load(profile.read_text())
    profile.write_text(yaml.safe_dump({**doc, "settle_timeout_s": 0.2}))  # 90° takes ~0.8 s on the fake
    assert main(["ptz", "--params", str(params), "look", "90", "0"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "did not settle" in err and "no view" in err
    assert "reached" not in captured.out
    assert not rig.camera.moving() and rig.camera.pose_deg()[0] < 70.0  # stopped, not left turning
