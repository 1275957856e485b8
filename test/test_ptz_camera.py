"""PtzCamera (the core Camera interface on a real head) against the fake VISCA camera and its MJPEG stream of
the bedroom panorama rendered at the fake's current pose."""
from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest

from panoseeker_ros.core.config import CameraConfig, ConfigError
from panoseeker_ros.core.geometry import Intrinsics, PanoramaRenderer, Pose
from panoseeker_ros.drivers.fakes import FakePtzRig
from panoseeker_ros.drivers import visca as v
from panoseeker_ros.drivers.head import PtzError, PtzNotSettled, PtzStopped, PtzTimeout
from panoseeker_ros.drivers.profile import PtzConnection, PtzProfile
from panoseeker_ros.drivers.ptz_camera import PtzCamera, check_lens, open_ptz_camera
from panoseeker_ros.drivers.video import FrameGrabber, VideoError

FOV = (60.0, 45.0)
PROFILE = PtzProfile(name="fake", units_per_deg=(14.4, 14.4), pan_limits_deg=(-170.0, 170.0),
                     tilt_limits_deg=(-30.0, 90.0), fov_deg=FOV, image_size=(640, 480), settle_tolerance_deg=0.2,
                     settle_timeout_s=5.0, poll_period_s=0.02, frame_delay_s=0.15)
GRAPH = CameraConfig(fov_deg=FOV, width=320, height=240, tilt_min_deg=-60.0, tilt_max_deg=60.0)


class Events:
    def __init__(self):
        self.seen: list[tuple[str, str]] = []
        self.cond = threading.Condition()

    def __call__(self, kind, text):
        with self.cond:
            self.seen.append((kind, text))
            self.cond.notify_all()

    def wait_for(self, kind: str, count: int = 1, timeout: float = 10.0) -> str:
        with self.cond:
            ok = self.cond.wait_for(lambda: sum(k == kind for k, _ in self.seen) >= count, timeout)
        assert ok, f"no '{kind}' event #{count} in {timeout} s; got {self.seen}"
        return [t for k, t in self.seen if k == kind][count - 1]


@pytest.fixture()
def rig(bedroom_erp):
    r = FakePtzRig.start(bedroom_erp, FOV, (640, 480), fps=20.0, full_speed_deg_s=(120.0, 90.0))
    yield r
    r.close()


@pytest.fixture()
def camera(rig):
    events = Events()
    conn = PtzConnection(host="127.0.0.1", port=rig.udp_port, transport="udp", video_source=rig.stream.url,
                         timeout_s=2.0)
    cam = open_ptz_camera("visca", conn, PROFILE, GRAPH, on_event=events)
    cam.events = events
    yield cam
    cam.close()


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_the_view_is_taken_after_the_head_settled_and_the_pose_is_the_read_back(camera, rig, bedroom_erp):
    renderer, intr = PanoramaRenderer(bedroom_erp), Intrinsics.from_fov(FOV, (320, 240))
    view = camera.look(90.0, 10.0)
    assert view.shape == (240, 320, 3) and view.dtype == np.uint8
    report = camera.last
    assert report.settled and report.settle_s >= 0.7  # 90° at 120°/s
    assert report.frame_wait_s >= PROFILE.frame_delay_s
    assert camera.pose().theta == pytest.approx(90.0, abs=0.1) and camera.pose().phi == pytest.approx(10.0, abs=0.1)
    there = _diff(view, renderer.render(Pose(90.0, 10.0), intr))
    on_the_way = _diff(view, renderer.render(Pose(80.0, 10.0), intr))
    assert there < 4 and there < on_the_way / 4, (there, on_the_way)  # not a frame from mid-move


def test_looks_are_clamped_to_the_limits_and_never_commanded_beyond(camera, rig):
    camera.look(175.0, 80.0)  # beyond the profile's pan limit and the graph's tilt limit
    assert camera.pose().theta == pytest.approx(170.0, abs=0.1)
    assert camera.pose().phi == pytest.approx(60.0, abs=0.1)
    camera.look(-200.0, -80.0)  # wraps to 160°, tilt to the profile's -30°
    assert camera.pose().theta == pytest.approx(160.0, abs=0.1)
    assert camera.pose().phi == pytest.approx(-30.0, abs=0.1)
    assert rig.camera.refused == []


def test_a_head_that_stops_short_times_out_with_one_event_and_no_view(camera, rig):
    rig.camera.tilt_limits = (-432, 144)  # the real head stops at +10° although the profile allows 60°
    rig.camera.clamp_beyond_limits = True
    camera.profile = dataclasses.replace(PROFILE, settle_timeout_s=1.0)
    with pytest.raises(PtzNotSettled, match="did not settle .* no view"):
        camera.look(0.0, 40.0)
    text = camera.events.wait_for("settle")
    assert "did not settle" in text and "settle_timeout_s" in text
    assert camera.last is not None and not camera.last.settled
    assert camera.pose().phi == pytest.approx(10.0, abs=0.1)  # read back, not the command


def test_a_move_still_under_way_at_the_settle_timeout_is_stopped(camera, rig):
    camera.profile = dataclasses.replace(PROFILE, settle_timeout_s=0.3)  # 150° at 120°/s takes 1.25 s
    with pytest.raises(PtzNotSettled):
        camera.look(150.0, 0.0)
    assert v.stop(1) in rig.camera.commands and not rig.camera.moving()
    assert rig.camera.pose_deg()[0] < 100.0


def test_stop_from_another_thread_ends_a_look_without_a_view(camera, rig):
    outcome = []

    def look():
        try:
            camera.look(-150.0, 0.0)
            outcome.append("view")
        except PtzStopped as exc:
            outcome.append(str(exc))
    worker = threading.Thread(target=look)
    worker.start()
    deadline = time.monotonic() + 10.0
    while not rig.camera.moving() and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    assert rig.camera.moving()
    camera.stop()
    worker.join(10.0)
    assert outcome and "was stopped" in outcome[0], outcome
    assert not rig.camera.moving() and rig.camera.pose_deg()[0] > -140.0


def test_looks_succeed_over_a_link_that_loses_a_tenth_of_its_datagrams(camera, rig):
    rig.camera.faults.loss = 0.1
    targets = [(30.0 * (i % 5) - 60.0, 10.0 * (i % 3) - 10.0) for i in range(10)]
    succeeded = 0
    for theta, phi in targets:
        try:
            camera.look(theta, phi)
        except PtzError:
            continue
        succeeded += camera.pose().theta == pytest.approx(theta, abs=0.3)
    assert rig.camera.lost >= 10  # the link really lost datagrams ...
    assert succeeded >= 9, f"{succeeded} of 10 looks succeeded at 10% datagram loss"  # ... and the looks survived


def test_a_camera_that_stops_answering_raises_and_is_reconnected(camera, rig):
    rig.camera.faults.silent = True
    with pytest.raises(PtzTimeout):
        camera.look(30.0, 0.0)
    with pytest.raises(PtzTimeout):
        camera.reconnect()
    rig.camera.faults.silent = False
    assert camera.reconnect() == Pose(0.0, 0.0)
    camera.look(30.0, 0.0)
    assert camera.pose().theta == pytest.approx(30.0, abs=0.1)


def test_a_lost_stream_is_reported_and_reconnected(rig):
    events = Events()
    grabber = FrameGrabber(rig.stream.url, on_event=events, retry_s=0.1, max_retry_s=0.2)
    try:
        events.wait_for("back")
        rig.stream.pause()
        assert "stream lost" in events.wait_for("lost") or "cannot open" in events.seen[-1][1]
        with pytest.raises(VideoError, match="no frame within 0.3 s"):
            grabber.frame_after(time.monotonic(), 0.3)
        rig.stream.resume()
        events.wait_for("back", 2)
        assert grabber.frame_after(time.monotonic(), 5.0).rgb.shape == (480, 640, 3)
    finally:
        grabber.close()


def test_the_graph_fov_must_be_the_lens_fov():
    with pytest.raises(ConfigError, match=r"set camera.fov_deg: \[60, 45\]"):
        check_lens(PROFILE, CameraConfig())
    with pytest.raises(ConfigError, match="do not overlap"):
        PtzCamera(lambda: None, None, PtzProfile(tilt_limits_deg=(-30.0, 10.0)), (320, 240), (20.0, 40.0))


def test_credentials_in_the_video_source_never_reach_a_message():
    from panoseeker_ros.drivers.video import redact_url

    assert redact_url("rtsp://admin:s3cret@10.0.0.5:554/1") == "rtsp://10.0.0.5:554/1"
    assert redact_url("video http://u:p@h/x and rtsp://h/y") == "video http://h/x and rtsp://h/y"
    events = Events()
    grabber = FrameGrabber("http://admin:s3cret@127.0.0.1:9/video.mjpg", on_event=events, retry_s=0.05)
    try:
        with pytest.raises(VideoError) as exc:
            grabber.frame_after(0.0, 0.3)
        text = events.wait_for("lost")
    finally:
        grabber.close()
    assert "127.0.0.1:9/video.mjpg" in str(exc.value) and "s3cret" not in str(exc.value) + text
    assert "admin" not in str(exc.value) + text
