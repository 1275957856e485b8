"""The whole graph with the expert policy finds the wardrobe of the bedroom sample through a real PTZ driver:
camera_node talks VISCA (or ONVIF) to the fake camera, whose video is the bedroom panorama rendered at the
fake's current pose; the expert and the oracle segmenter read the sample's ground truth."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from std_msgs.msg import String  # noqa: E402

from panoseeker_ros.core.dataset import load_dataset  # noqa: E402
from panoseeker_ros.core.geometry import pan_tilt_to_pose, pose_distance  # noqa: E402
from panoseeker_ros.drivers.fakes import FakePtzRig  # noqa: E402
from panoseeker_ros.nodes import interface as api  # noqa: E402
from panoseeker_ros.nodes.launcher import Graph  # noqa: E402
from panoseeker_ros.paths import sample_dataset  # noqa: E402
from test_ros_graph import NS, Client, _env, _free_domain  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FOV, SIZE = (120.0, 90.0), (1024, 768)  # the graph's defaults: the fake's lens is the simulator's
FAKES = {  # a head that reaches everywhere, fast, so the search takes seconds
    "visca": {"true_units_per_deg": (14.4, 14.4), "pan_limits": (-2592, 2592), "tilt_limits": (-1296, 1296),
              "full_speed_deg_s": (300.0, 200.0)},
    "onvif": {"pan_deg": (-180.0, 180.0), "tilt_deg": (-90.0, 90.0), "speed_deg_s": (300.0, 200.0)},
}


def _profile(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "fake_wide_head", "units_per_deg": [14.4, 14.4], "pan_limits_deg": [-180.0, 180.0],
        "tilt_limits_deg": [-90.0, 90.0], "onvif_pan_deg": [-180.0, 180.0], "onvif_tilt_deg": [-90.0, 90.0],
        "fov_deg": list(FOV), "image_size": list(SIZE), "settle_tolerance_deg": 0.2, "settle_timeout_s": 5.0,
        "poll_period_s": 0.02, "frame_delay_s": 0.15, "source": "the tests' fake camera"}))
    return path


@pytest.mark.parametrize("driver", ["visca", "onvif"])
def test_the_expert_finds_the_wardrobe_through_a_ptz_driver(driver, bedroom_erp, tmp_path):
    if driver == "onvif":
        pytest.importorskip("onvif")
    spec = load_dataset(sample_dataset()).by_id("bedroom-001")
    assert spec.instruction == "the wardrobe"
    rig = FakePtzRig.start(bedroom_erp, FOV, SIZE, fps=10.0, driver=driver, **FAKES[driver])
    domain = _free_domain()
    log = tmp_path / "nodes.log"
    camera = {**rig.params("udp"), "profile": str(_profile(tmp_path / "head.yaml")), "timeout_s": 1.0}
    client = None
    try:
        with open(log, "w") as out, Graph(ROOT / "config" / "seek.yaml", NS,
                                          shared={"dataset": str(sample_dataset()), "episode_id": spec.id},
                                          per_node={"camera_node": camera}, env=_env(domain), stdout=out,
                                          stderr=subprocess.STDOUT) as g:
            client = Client(domain)
            op = client.op
            camera_states = []
            client.node.create_subscription(String, api.CAMERA_STATUS, lambda m: camera_states.append(api.loads(m.data)),
                                     api.LATCHED_QOS)

            def dead():
                gone = g.exited()
                return "; ".join(f"{n} exited with code {c}" for n, c in gone.items()) or None
            # the head connects after the nodes start; the search needs it ready
            client.spin_until(lambda: dead() or (camera_states and camera_states[-1]["state"] == "ready"), 60,
                              f"camera/status ready\n{log.read_text()}")
            assert dead() is None, log.read_text()
            outcome = op.seek(spec.instruction, timeout=120, on_line=lambda line: None, ready_timeout=60, abort=dead)
            assert outcome.state == "success", f"{outcome.message}\n{log.read_text()}"
            res = outcome.result
            final = pan_tilt_to_pose(res["pan"], res["tilt"])
            assert pose_distance(final, spec.target_centroid) < 30.0 and res["iou"] >= 0.5 and res["aligned"]
            steps = outcome.feedback
            assert len(steps) >= 2 and steps[-1]["action"].startswith("STOP [")
            start = pan_tilt_to_pose(steps[0]["pan"], steps[0]["tilt"])
            assert pose_distance(start, spec.initial_pose) < 0.3  # the read-back of the start pose
            theta, phi = rig.camera.pose_deg()  # the hardware is where the result says
            assert abs(((theta - final.theta + 180) % 360) - 180) < 0.3 and abs(phi - final.phi) < 0.3
            assert g.exited() == {}, log.read_text()
    finally:
        if client is not None:
            client.close()
        rig.close()
    if driver == "visca":
        assert rig.camera.refused == []
