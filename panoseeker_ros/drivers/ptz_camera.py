"""A real pan-tilt camera behind the core :class:`~panoseeker_ros.core.camera.Camera` interface: a protocol
driver (VISCA, ONVIF) points the head, a :class:`~panoseeker_ros.drivers.video.FrameGrabber` supplies
frames, a :class:`~panoseeker_ros.drivers.profile.PtzProfile` says how far it may turn and when it has
arrived. The pose it reports is the head's read-back, never the command."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from ..core.config import CameraConfig, ConfigError
from ..core.geometry import Intrinsics, Pose, wrap_deg
from .head import PanTiltHead, PtzError, PtzNotSettled, PtzStopped, clamp_to_limits, wait_settled
from .profile import PtzConnection, PtzProfile, onvif_password
from .video import FrameGrabber

DRIVERS = ("visca", "onvif")
FOV_TOLERANCE_DEG = 0.5  # the graph's camera.fov_deg and the profile's lens must agree this well
FRAME_TIMEOUT_S = 3.0  # a settled head with no new frame within this is a video fault


@dataclass(frozen=True)
class LookReport:
    target: Pose  # the commanded pose after clamping [deg]
    reached: Pose  # the read-back [deg]
    settled: bool
    settle_s: float  # from the command to the settled read-back
    frame_wait_s: float  # from the settled read-back to the frame used


def check_lens(profile: PtzProfile, camera: CameraConfig) -> None:
    """The graph's field of view must be the lens's: every node back-projects views with camera.fov_deg."""
    if any(abs(a - b) > FOV_TOLERANCE_DEG for a, b in zip(profile.fov_deg, camera.fov_deg)):
        raise ConfigError(f"PTZ profile '{profile.name}' has a {profile.fov_deg[0]:g}°×{profile.fov_deg[1]:g}° lens "
                          f"but camera.fov_deg is {list(camera.fov_deg)}; set camera.fov_deg: "
                          f"[{profile.fov_deg[0]:g}, {profile.fov_deg[1]:g}] in the '/**' section of the params file")


def connect_head(driver: str, conn: PtzConnection, profile: PtzProfile,
                 on_stray: Callable[[str, str], None] | None = None) -> PanTiltHead:
    """Open the protocol driver ``driver`` and check that the camera answers."""
    if driver == "visca":
        from .visca import ViscaHead

        return ViscaHead.connect(conn, profile, on_stray)
    if driver == "onvif":
        from .onvif_ptz import OnvifHead

        return OnvifHead.connect(conn, profile)
    raise ConfigError(f"driver {driver!r} is not a PTZ driver; choose one of {', '.join(DRIVERS)}")


class PtzCamera:
    """``look(θ, ϕ)`` [deg] clamps to the profile's limits (and the graph's tilt limits), commands the head,
    waits until the read-back settles, then returns the first frame received ``frame_delay_s`` after that,
    resized to the graph's view size. A move that does not settle within the profile's timeout stops the
    head, tells ``on_event`` and raises :class:`PtzNotSettled` (no view from mid-move); ``stop()`` from
    another thread ends a look early with :class:`PtzStopped`. ``pose()`` is the read-back. Protocol faults
    (and a driver's ``ValueError``: a value the camera sent or a profile that cannot be sent) raise
    :class:`PtzError`; the head is reopened by the next call (``reconnect`` does it at once)."""

    def __init__(self, open_head: Callable[[], PanTiltHead], frames: FrameGrabber, profile: PtzProfile,
                 view_size: tuple[int, int], tilt_limits: tuple[float, float] = (-90.0, 90.0),
                 on_event: Callable[[str, str], None] | None = None, frame_timeout_s: float = FRAME_TIMEOUT_S):
        self.profile = profile
        self.intrinsics = Intrinsics.from_fov(profile.fov_deg, view_size)
        self.view_size = (int(view_size[0]), int(view_size[1]))
        lo, hi = max(profile.tilt_limits_deg[0], tilt_limits[0]), min(profile.tilt_limits_deg[1], tilt_limits[1])
        if lo > hi:
            raise ConfigError(f"PTZ profile '{profile.name}' tilt limits {list(profile.tilt_limits_deg)} and the "
                              f"graph's camera.tilt_min_deg/max_deg {list(tilt_limits)} do not overlap; widen one")
        self.tilt_limits = (lo, hi)
        self.frames = frames
        self.on_event = on_event or (lambda kind, text: None)
        self.frame_timeout_s = frame_timeout_s
        self._open_head = open_head
        self._head: PanTiltHead | None = None
        self._pose = Pose(0.0, 0.0)
        self._stop = threading.Event()
        self.last: LookReport | None = None
        self.faults = 0  # requests that raised PtzError (diagnostics)

    def head(self) -> PanTiltHead:
        if self._head is None:
            self._head = self._open_head()
        return self._head

    def reconnect(self) -> Pose:
        """Reopen the head, read its pose and wait for a frame newer than now; raises PtzError or VideoError
        while the camera or its video is still away."""
        self.drop_head()
        pose = self.read_pose()
        self.frames.frame_after(time.monotonic(), self.frame_timeout_s)
        return pose

    def drop_head(self) -> None:
        if self._head is not None:
            try:
                self._head.close()
            finally:
                self._head = None

    def _guard(self, call):
        try:
            return call(self.head())
        except PtzError:
            self.faults += 1
            self.drop_head()
            raise
        except (ValueError, ArithmeticError) as exc:  # garbage from the camera, or a value it cannot be sent
            self.faults += 1
            self.drop_head()
            raise PtzError(f"{self.profile.name} head: {type(exc).__name__}: {exc}") from None

    def clamp(self, theta: float, phi: float) -> Pose:
        t, p = clamp_to_limits(theta, phi, self.profile.pan_limits_deg, self.tilt_limits)
        return Pose(t, p)

    def read_pose(self) -> Pose:
        theta, phi = self._guard(lambda h: h.position())
        self._pose = Pose(wrap_deg(theta), phi)
        return self._pose

    def look(self, theta: float, phi: float) -> np.ndarray:
        target = self.clamp(theta, phi)
        p = self.profile
        self._stop.clear()
        self._guard(lambda h: h.move_to(target.theta, target.phi))
        s = self._guard(lambda h: wait_settled(h, (target.theta, target.phi), p.settle_tolerance_deg,
                                               p.settle_timeout_s, p.poll_period_s, stopped=self._stop.is_set))
        self._pose = Pose(wrap_deg(s.theta), s.phi)
        if not s.settled:
            self.last = LookReport(target, self._pose, False, s.elapsed_s, 0.0)
            if s.stopped:
                raise PtzStopped(f"the look at θ={target.theta:.1f}° ϕ={target.phi:.1f}° was stopped at "
                                 f"θ={s.theta:.1f}° ϕ={s.phi:.1f}°; no view")
            self._guard(lambda h: h.stop())
            text = (f"the head did not settle at θ={target.theta:.1f}° ϕ={target.phi:.1f}° within "
                    f"{p.settle_timeout_s:g} s (at θ={s.theta:.1f}° ϕ={s.phi:.1f}°); it was stopped and no view "
                    f"was taken. Raise settle_timeout_s or settle_tolerance_deg in profile '{p.name}', or check "
                    f"its limits")
            self.on_event("settle", text)
            raise PtzNotSettled(text)
        frame = self.frames.frame_after(s.at + p.frame_delay_s, p.frame_delay_s + self.frame_timeout_s)
        self.last = LookReport(target, self._pose, s.settled, s.elapsed_s, frame.received - s.at)
        return self.fit(frame.rgb)

    def stop(self) -> None:
        """Stop the head now (from any thread): a look in progress ends with :class:`PtzStopped`."""
        self._stop.set()
        if self._head is not None:
            self._guard(lambda h: h.stop())

    def health(self) -> dict:
        """What a robot monitor wants to know [s]: link up, faults so far, the last reply's round trip, the last
        look's settle time, the newest frame's age, and (VISCA over UDP) requests re-sent after a loss."""
        head, newest = self._head, self.frames.newest()
        return {"connected": head is not None, "video": self.frames.connected, "faults": self.faults,
                "reply_latency_s": getattr(head, "last_reply_s", None),
                "settle_s": self.last.settle_s if self.last is not None else None,
                "frame_age_s": time.monotonic() - newest.received if newest is not None else None,
                "resends": getattr(head, "resends", 0)}

    def snapshot(self) -> np.ndarray:
        """A frame received now or later, at the current pose, at the graph's view size."""
        return self.fit(self.frames.frame_after(time.monotonic(), self.frame_timeout_s).rgb)

    def fit(self, rgb: np.ndarray) -> np.ndarray:
        """A frame at the graph's view size (the profile's FoV spans the whole frame, so a plain resize)."""
        if (rgb.shape[1], rgb.shape[0]) == self.view_size:
            return rgb
        return cv2.resize(rgb, self.view_size, interpolation=cv2.INTER_AREA)

    def pose(self) -> Pose:
        return self._pose

    def home(self) -> Pose:
        self._guard(lambda h: h.home())
        s = self._guard(lambda h: wait_settled(h, (0.0, 0.0), self.profile.settle_tolerance_deg,
                                               self.profile.settle_timeout_s, self.profile.poll_period_s))
        self._pose = Pose(wrap_deg(s.theta), s.phi)
        return self._pose

    def close(self) -> None:
        """Stop the head (it must not keep turning after the node is gone), then close the link and the video."""
        try:
            if self._head is not None:
                self._head.stop()
        except (PtzError, ValueError):
            pass  # a camera that is away cannot be stopped; closing goes on
        finally:
            self.frames.close()
            self.drop_head()


def open_ptz_camera(driver: str, conn: PtzConnection, profile: PtzProfile, camera: CameraConfig,
                    on_event: Callable[[str, str], None] | None = None, connect_now: bool = True) -> PtzCamera:
    """A PtzCamera for the graph's camera settings; ``connect_now=False`` leaves the first connection (and its
    errors) to the first call."""
    check_lens(profile, camera)
    if driver == "onvif":
        onvif_password(conn)  # a password file that is missing or readable by others stops the start, once
    if not conn.video_source.strip():
        raise ConfigError(f"the {driver} driver needs the camera's video: set 'video_source' to its stream "
                          f"(rtsp://…, http://…), a device number or a file")
    events = on_event or (lambda kind, text: None)
    frames = FrameGrabber(conn.video_source, on_event=events)
    cam = PtzCamera(lambda: connect_head(driver, conn, profile, on_stray=events), frames, profile,
                    (camera.width, camera.height), (camera.tilt_min_deg, camera.tilt_max_deg), events)
    if connect_now:
        try:
            cam.read_pose()
        except PtzError:
            cam.close()
            raise
    return cam
