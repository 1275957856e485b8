"""The whole graph with the expert policy finds the wardrobe of the bedroom sample through a real PTZ driver:
camera_node talks VISCA (or ONVIF) to the fake camera, whose video is the bedroom panorama rendered at the
fake's current pose; the expert and the oracle segmenter read the sample's ground truth."""
from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from std_msgs.msg import String  # noqa: E402

from panoseeker_ros.core.dataset import load_dataset  # noqa: E402
from panoseeker_ros.core.geometry import pan_tilt_to_pose, pose_distance  # noqa: E402
from panoseeker_ros.drivers import visca  # noqa: E402
from panoseeker_ros.drivers.fakes import FakePtzRig  # noqa: E402
from panoseeker_ros.nodes import interface as api  # noqa: E402
from panoseeker_ros.nodes.launcher import Graph  # noqa: E402
from panoseeker_ros.paths import sample_dataset  # noqa: E402
from test_ros_graph import NS, Client, _env, _free_domain, _log_count  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EPISODE, INSTRUCTION = "bedroom-001", "the wardrobe"
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


@contextlib.contextmanager
def ptz_graph(driver: str, erp, tmp_path: Path, policy: dict | None = None, fake: dict | None = None):
    """The graph on the bedroom sample with camera_node on the fake ``driver`` camera (``fake``: its settings
    instead of FAKES'); yields (graph, client, rig, log, dead) once camera/status says ready. ``dead()`` names
    node processes that exited."""
    rig = FakePtzRig.start(erp, FOV, SIZE, fps=10.0, driver=driver, **(fake or FAKES[driver]))
    domain = _free_domain()
    log = tmp_path / "nodes.log"
    camera = {**rig.params("udp"), "profile": str(_profile(tmp_path / "head.yaml")), "timeout_s": 1.0,
              "retry_s": 0.2, "retry_max_s": 0.8}
    client = None
    try:
        with open(log, "w") as out, Graph(ROOT / "config" / "seek.yaml", NS,
                                          shared={"dataset": str(sample_dataset()), "episode_id": EPISODE},
                                          per_node={"camera_node": camera, "policy_node": policy or {}},
                                          env=_env(domain), stdout=out, stderr=subprocess.STDOUT) as g:
            client = Client(domain)
            camera_states = []
            client.node.create_subscription(String, api.CAMERA_STATUS,
                                            lambda m: camera_states.append(api.loads(m.data)), api.LATCHED_QOS)

            def dead():
                gone = g.exited()
                return "; ".join(f"{n} exited with code {c}" for n, c in gone.items()) or None
            # the head connects after the nodes start; the search needs it ready
            client.spin_until(lambda: dead() or (camera_states and camera_states[-1]["state"] == "ready"), 60,
                              f"camera/status ready\n{log.read_text()}")
            assert dead() is None, log.read_text()
            yield g, client, rig, log, dead
            assert g.exited() == {}, log.read_text()
    finally:
        if client is not None:
            client.close()
        rig.close()
    if driver == "visca":
        assert rig.camera.refused == []  # never commanded beyond the limits


def _check_found(outcome, rig, log: Path) -> None:
    spec = load_dataset(sample_dataset()).by_id(EPISODE)
    assert outcome.state == "success", f"{outcome.message}\n{log.read_text()}"
    res = outcome.result
    final = pan_tilt_to_pose(res["pan"], res["tilt"])
    assert pose_distance(final, spec.target_centroid) < 30.0 and res["iou"] >= 0.5 and res["aligned"]
    steps = [fb for fb in outcome.feedback if "review" not in fb]
    assert len(steps) >= 2 and steps[-1]["action"].startswith("STOP [")
    start = pan_tilt_to_pose(steps[0]["pan"], steps[0]["tilt"])
    assert pose_distance(start, spec.initial_pose) < 0.3  # the read-back of the start pose
    theta, phi = rig.camera.pose_deg()  # the hardware is where the result says
    assert abs(((theta - final.theta + 180) % 360) - 180) < 0.3 and abs(phi - final.phi) < 0.3


@pytest.mark.parametrize("driver", ["visca", "onvif"])
def test_the_expert_finds_the_wardrobe_through_a_ptz_driver(driver, bedroom_erp, tmp_path):
    if driver == "onvif":
        pytest.importorskip("onvif")
    with ptz_graph(driver, bedroom_erp, tmp_path) as (g, client, rig, log, dead):
        outcome = client.op.seek(INSTRUCTION, timeout=120, on_line=lambda line: None, ready_timeout=60, abort=dead)
        _check_found(outcome, rig, log)


def test_a_camera_that_goes_silent_mid_search_pauses_it_and_the_search_resumes(bedroom_erp, tmp_path):
    with ptz_graph("visca", bedroom_erp, tmp_path, policy={"min_step_period_s": 1.0}) as (g, client, rig, log, dead):
        fake = rig.camera
        phase = {"silent_at": None, "restored": False}

        def fault_script():
            """Polled by seek: silence the head after the first decision, give it back once the search paused
            and camera_node tried to reconnect twice."""
            events = client.op.events
            if phase["silent_at"] is None and any(kind == "feedback" for kind, _, _ in events):
                fake.faults.silent = True
                phase["silent_at"] = fake.control_requests
            elif phase["silent_at"] is not None and not phase["restored"] and fake.control_requests - phase[
                    "silent_at"] >= 2 and any(p.get("state") == "paused" for kind, _, p in events if kind == "status"):
                fake.faults.silent = False
                phase["restored"] = True
            return dead()
        outcome = client.op.seek(INSTRUCTION, timeout=120, on_line=lambda line: None, ready_timeout=60,
                                 abort=fault_script)
        assert phase["restored"], f"the fault never happened: {phase}\n{log.read_text()}"
        _check_found(outcome, rig, log)
        first, second = outcome.feedback[0], outcome.feedback[1]  # MOVE +180 0, then a decision where it led
        assert first["action"] == "MOVE +180 0", first
        moved = pan_tilt_to_pose(second["pan"], second["tilt"])
        assert abs(moved.theta - 120.0) < 0.3 and abs(moved.phi) < 0.3  # not a view from before the fault
        states = [p.get("state") for kind, _, p in client.op.events if kind == "status" and p.get("id")]
        assert "paused" in states and "resumed" in states[states.index("paused"):], states
        assert _log_count(log, r"camera_node\]: camera fault:") == 1
        assert _log_count(log, r"camera_node\]: visca camera answers again") == 1


def test_cancel_stops_the_head_mid_move(bedroom_erp, tmp_path):
    slow = {**FAKES["visca"], "full_speed_deg_s": (45.0, 30.0)}  # the first move, 180°, takes 4 s
    with ptz_graph("visca", bedroom_erp, tmp_path, fake=slow) as (g, client, rig, log, dead):
        t0 = client.now_ns()
        client.send(INSTRUCTION, "to-stop")
        client.spin_until(lambda: [fb for _, fb in client.feedback_since(t0) if fb["id"] == "to-stop"]
                          and rig.camera.moving(), 30, f"the head moving for the search\n{log.read_text()}")
        assert client.call(f"{NS}/{api.CANCEL}").success
        client.spin_until(lambda: not rig.camera.moving(), 1.5, "the head to stop after cancel")
        assert visca.stop(1) in rig.camera.commands  # told to stop, not left to finish its 4 s move
        client.spin_until(lambda: "cancelled" in client.statuses_of("to-stop"), 5, "the cancelled status")
