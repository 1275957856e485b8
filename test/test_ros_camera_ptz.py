"""camera_node with the visca driver, as a process on real rclpy/FastDDS, against the fake VISCA camera and its
video of the bedroom panorama: read-back poses, limits, camera/status, timeout, back-off and recovery,
a lost and reconnected stream."""
from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from panoseeker_ros.core.geometry import Intrinsics, PanoramaRenderer, Pose  # noqa: E402
from panoseeker_ros.drivers.fakes import FakePtzRig  # noqa: E402
from panoseeker_ros.nodes import interface as api  # noqa: E402
from panoseeker_ros.nodes.conversions import image_to_rgb, stamp_ns  # noqa: E402
from panoseeker_ros.nodes.launcher import Graph  # noqa: E402
from test_ros_graph import NS, Client, _env, _free_domain, _log_count  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FOV, SIZE = (60.0, 45.0), (320, 240)
RETRY_S, RETRY_MAX_S = 0.2, 0.8
SECRET = "s3cret-video-pw"  # in video_source: never in a status, a log line or a diagnostic


def attempt_starts(times: list[float]) -> list[float]:
    """The first control datagram of each reconnect attempt (an attempt re-sends its reset within timeout_s)."""
    return [t for i, t in enumerate(times) if i == 0 or t - times[i - 1] > 0.35]


def profile_yaml(path: Path, fov=FOV, size=(640, 480)) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "fake_head", "units_per_deg": [14.4, 14.4], "pan_limits_deg": [-170.0, 170.0],
        "tilt_limits_deg": [-30.0, 90.0], "fov_deg": list(fov), "image_size": list(size),
        "settle_tolerance_deg": 0.2, "settle_timeout_s": 5.0, "poll_period_s": 0.02, "frame_delay_s": 0.15,
        "source": "the tests' fake camera"}))
    return path


class Watcher(Client):
    """The graph tests' client (camera poses, moves), plus camera/status, the views and looks."""

    def __init__(self, domain: int):
        super().__init__(domain)
        self.statuses: list[dict] = []
        self.images: dict[int, Image] = {}
        n = self.node
        n.create_subscription(String, api.CAMERA_STATUS, lambda m: self.statuses.append(json.loads(m.data)),
                              api.LATCHED_QOS)
        n.create_subscription(Image, api.IMAGE, lambda m: self.images.__setitem__(stamp_ns(m.header.stamp), m),
                              api.IMAGE_QOS)
        self.pub_look = n.create_publisher(JointState, api.LOOK, api.COMMAND_QOS)
        self.diagnostics: list[DiagnosticArray] = []
        n.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)

    def stamped_pose_after(self, t_ns: int, timeout: float = 15.0) -> tuple[int, Pose]:
        self.pose_after(t_ns, timeout)
        return [(s, p) for s, p in self.poses if s > t_ns][-1]

    def state(self) -> str | None:
        return self.statuses[-1]["state"] if self.statuses else None


@pytest.fixture(scope="module")
def rig(bedroom_erp):
    r = FakePtzRig.start(bedroom_erp, FOV, (640, 480), fps=20.0, full_speed_deg_s=(120.0, 90.0))
    yield r
    r.close()


@pytest.fixture(scope="module")
def camera_node(rig, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ptz_node")
    log = tmp / "camera_node.log"
    domain = _free_domain()
    params = rig.params("udp")
    params["video_source"] = params["video_source"].replace("http://", f"http://viewer:{SECRET}@")
    per_node = {"camera_node": {**params, "profile": str(profile_yaml(tmp / "fake_head.yaml")),
                                "timeout_s": 1.0, "retry_s": RETRY_S, "retry_max_s": RETRY_MAX_S,
                                "start_pan": math.radians(20.0)}}  # θ = -20°
    shared = {"camera": {"fov_deg": list(FOV), "width": SIZE[0], "height": SIZE[1],
                         "tilt_min_deg": -60.0, "tilt_max_deg": 60.0}}
    with open(log, "w") as out:
        g = Graph(ROOT / "config" / "seek.yaml", NS, shared=shared, per_node=per_node, env=_env(domain),
                  stdout=out, stderr=subprocess.STDOUT, nodes=("camera_node",))
        w = None
        try:
            g.start()
            w = Watcher(domain)
            w.spin_until(lambda: w.state() == "ready", 30, f"camera/status ready\n{log.read_text()}")
            yield g, w, log
        finally:
            if w is not None:
                w.close()
            g.stop()


def test_ready_at_the_start_pose_and_moves_publish_the_read_back_and_a_settled_view(camera_node, rig, bedroom_erp):
    g, w, log = camera_node
    assert w.statuses[-1]["state"] == "ready" and "at θ=-20.0°" in w.statuses[-1]["message"]
    assert rig.camera.pose_deg() == pytest.approx((-20.0, 0.0), abs=0.1)
    t = w.now_ns()
    w.pub_move.publish(JointState(name=["pan", "tilt"], position=[math.radians(-90.0), math.radians(-20.0)]))
    stamp, pose = w.stamped_pose_after(t)
    assert (pose.theta, pose.phi) == pytest.approx((70.0, 20.0), abs=0.1)  # pan = -θ, tilt = -ϕ
    assert rig.camera.pose_deg() == pytest.approx((70.0, 20.0), abs=0.1)
    w.spin_until(lambda: stamp in w.images, 5, "the view stamped like the pose")
    view = image_to_rgb(w.images[stamp])
    expected = PanoramaRenderer(bedroom_erp).render(Pose(70.0, 20.0), Intrinsics.from_fov(FOV, SIZE))
    assert np.abs(view.astype(int) - expected.astype(int)).mean() < 4  # the settled view, not one on the way
    assert any(s["state"] == "moving" for s in w.statuses)
    t = w.now_ns()
    w.pub_look.publish(JointState(name=["pan", "tilt"], position=[math.radians(-179.0), math.radians(-80.0)]))
    pose = w.pose_after(t, 15.0)
    assert (pose.theta, pose.phi) == pytest.approx((170.0, 60.0), abs=0.1)  # profile pan, graph tilt limits
    assert rig.camera.refused == []
    assert g.exited() == {}


def test_a_silent_camera_is_an_error_with_one_line_retried_with_back_off_and_recovers(camera_node, rig):
    g, w, log = camera_node
    rig.camera.faults.silent = True
    attempts_before = rig.camera.control_requests
    t = w.now_ns()
    w.pub_look.publish(JointState(name=["pan", "tilt"], position=[math.radians(-45.0), 0.0]))
    w.spin_until(lambda: w.state() == "error", 10, "camera/status error")
    assert "no answer" in w.statuses[-1]["message"] and "\n" not in w.statuses[-1]["message"]
    # each reconnect attempt is a sequence reset the camera ignores (1 s timeout), then the back-off
    # (0.2 s doubling to 0.8 s) before the next one
    w.spin_until(lambda: len(attempt_starts(rig.camera.control_times[attempts_before:])) >= 4, 30,
                 "four reconnect attempts")
    times = attempt_starts(rig.camera.control_times[attempts_before:])
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[0] >= 1.0 + 0.4 - 0.05 and gaps[1] >= 1.0 + 0.8 - 0.05 and gaps[2] >= 1.0 + 0.8 - 0.05, gaps
    assert _log_count(log, r"camera fault:") == 1  # one line per outage, not one per retry
    assert not any(s > t for s, _ in w.poses)  # nothing published while the camera is away
    w.pub_move.publish(JointState(name=["pan"], position=[math.radians(10.0)]))  # while away: dropped
    w.spin_until(lambda: _log_count(log, r"a request is dropped without a view") >= 1, 10, "the dropped-request log")
    rig.camera.faults.silent = False
    w.spin_until(lambda: w.state() == "ready", 10, "camera/status ready again")
    assert "answers again" in w.statuses[-1]["message"]
    assert not any(s > t for s, _ in w.poses)  # neither request got a view: the client asks again on ready
    t = w.now_ns()
    w.pub_look.publish(JointState(name=["pan", "tilt"], position=[math.radians(-45.0), 0.0]))
    assert w.pose_after(t, 15.0).theta == pytest.approx(45.0, abs=0.1)
    assert _log_count(log, r"a request is dropped without a view") == 1
    w.spin_until(lambda: _log_count(log, r"camera answers again") >= 1, 5, "the recovery log line")
    assert g.exited() == {}


def test_a_lost_stream_is_reported_and_reconnected(camera_node, rig):
    g, w, log = camera_node
    rig.stream.pause()
    w.spin_until(lambda: w.state() == "error", 15, "camera/status error for the stream")
    assert "stream lost" in w.statuses[-1]["message"] or "cannot open" in w.statuses[-1]["message"]
    rig.stream.resume()
    w.spin_until(lambda: w.state() == "ready", 20, "camera/status ready after the stream is back")
    t = w.now_ns()
    w.pub_move.publish(JointState(name=["pan"], position=[math.radians(10.0)]))
    w.pose_after(t)
    assert g.exited() == {}


def test_garbage_and_wrong_sequence_numbers_are_logged_once_and_survived(camera_node, rig):
    g, w, log = camera_node
    rig.camera.faults.garbage, rig.camera.faults.wrong_sequence = 6, 6
    for step in range(3):
        t = w.now_ns()
        w.pub_move.publish(JointState(name=["pan"], position=[math.radians(-10.0)]))
        w.pose_after(t, 15.0)
    assert rig.camera.faults.garbage == 0 and rig.camera.faults.wrong_sequence == 0  # all were sent
    w.spin_until(lambda: _log_count(log, r"ignored bytes that are not VISCA over IP") >= 1
                 and _log_count(log, r"ignored a reply with sequence number") >= 1, 10, "the stray-reply log lines")
    assert _log_count(log, r"ignored bytes that are not VISCA over IP") == 1
    assert _log_count(log, r"ignored a reply with sequence number") == 1
    w.spin_until(lambda: w.state() == "ready", 10, "camera/status ready")
    assert g.exited() == {}


def test_diagnostics_say_connection_faults_latency_settle_time_and_frame_age(camera_node):
    g, w, log = camera_node
    t = w.now_ns()
    w.pub_move.publish(JointState(name=["pan", "tilt"], position=[math.radians(5.0), math.radians(-7.3)]))
    w.pose_after(t, 15.0)  # ϕ = 7.3° is 105.12 counts: the read-back, 105 counts, differs by rounding only
    w.spin_until(lambda: w.state() == "ready" and [d for d in w.diagnostics if stamp_ns(d.header.stamp) > t], 10,
                 "a diagnostic after the move")
    assert _log_count(log, "clamped") == 0  # nothing was clamped: no line says so
    status = [d for d in w.diagnostics if stamp_ns(d.header.stamp) > t][-1].status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == DiagnosticStatus.OK and "camera_node" in status.name and "visca" in status.hardware_id
    assert values["connected"] == "true" and values["video"] == "true" and int(values["faults"]) >= 0
    assert 0 < float(values["reply_latency_s"]) < 1.0 and 0 < float(values["settle_s"]) < 5.0
    assert 0 <= float(values["frame_age_s"]) < 1.0  # a 20 fps stream
    assert SECRET not in status.message


def test_stop_ends_a_look_under_way_without_a_view(camera_node, rig):
    g, w, log = camera_node
    w.spin_until(lambda: w.state() == "ready", 10, "camera/status ready")
    t = w.now_ns()
    w.pub_look.publish(JointState(name=["pan", "tilt"], position=[math.radians(-160.0), 0.0]))  # θ = 160°: >1 s
    w.spin_until(lambda: rig.camera.moving(), 10, "the head moving")
    response = w.call(f"{NS}/{api.CAMERA_STOP}")
    assert response.success
    w.spin_until(lambda: w.state() == "ready" and "was stopped" in w.statuses[-1]["message"], 10, "the stopped status")
    assert not rig.camera.moving() and rig.camera.pose_deg()[0] < 150.0
    w.op.spin_for(0.3)
    assert not any(s > t for s, _ in w.poses)  # no view for the stopped look
    t = w.now_ns()
    w.pub_move.publish(JointState(name=["pan"], position=[0.0]))  # the next request is served as usual
    w.pose_after(t, 15.0)


def test_credentials_in_the_video_source_never_reach_statuses_or_logs(camera_node):
    g, w, log = camera_node
    w.spin_until(lambda: _log_count(log, r"video http://127\.0\.0\.1") >= 1, 10, "a video log line")
    assert SECRET not in log.read_text() and "viewer:" not in log.read_text()
    assert not [s for s in w.statuses if SECRET in s["message"]]


def test_shutdown_stops_the_head(camera_node, rig):
    g, w, log = camera_node  # the last test of this module: it stops the node
    w.spin_until(lambda: w.state() == "ready", 10, "camera/status ready")
    w.pub_look.publish(JointState(name=["pan", "tilt"], position=[math.radians(160.0), 0.0]))  # θ = -160°
    w.spin_until(lambda: rig.camera.moving(), 10, "the head moving")
    g.stop()
    assert not rig.camera.moving() and rig.camera.pose_deg()[0] > -150.0
