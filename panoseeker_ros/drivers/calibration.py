"""Measure a head's real rotation and its lens from images: turn by a known command, match features between
the two frames (OpenCV SIFT), and fit the pure-rotation model (angle and focal length) to the matches.

For a camera that pans towards +x by α, a point at centred image coordinates (x, y) moves to
``x' = f (x/f − tan α) / (1 + x tan α / f)``, ``y' = y / (cos α + (x/f) sin α)`` (f: focal length in pixels
along x); tilting up is the same with the roles of x and −y swapped. Both α and f are fitted, so the
measured angle does not lean on the configured field of view.

Each frame is taken once the video is still (:func:`still_view`), not the first one after the profile's
``frame_delay_s``: a stream whose latency is longer than that (a busy computer, a buffering encoder) would
otherwise hand over a frame from mid-turn and bias the measurement.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

MIN_MATCHES = 12
STILL_GREY = 3.0  # mean |difference| [grey levels] below which two successive frames show a head at rest
VIDEO_SETTLE_S = 1.0  # frames received this long after the head settled, at the earliest [s]


class CalibrationError(RuntimeError):
    """Too little texture or overlap to measure a rotation; the message says what to change."""


@dataclass(frozen=True)
class Rotation:
    angle_deg: float  # measured turn: pan towards +x (right) or tilt up [deg]
    focal_px: float  # measured focal length along the turn's image axis [px]
    matches: int  # inlier feature matches the fit used
    rms_px: float  # fit residual [px]

    def fov_deg(self, size_px: int) -> float:
        """The field of view along that axis for an image ``size_px`` wide (or high) [deg]."""
        return float(np.degrees(2 * np.arctan(size_px / 2 / self.focal_px)))


def _model(x: np.ndarray, y: np.ndarray, alpha: float, f: float) -> tuple[np.ndarray, np.ndarray]:
    s, c = np.sin(alpha), np.cos(alpha)
    z = c + (x / f) * s
    return f * ((x / f) * c - s) / z, y / z


def matched_points(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Corresponding pixel positions (N, 2) in RGB frames ``a`` and ``b`` (ratio test, then a RANSAC homography)."""
    sift = cv2.SIFT_create(nfeatures=4000)
    ga, gb = (cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in (a, b))
    ka, da = sift.detectAndCompute(ga, None)
    kb, db = sift.detectAndCompute(gb, None)
    if da is None or db is None or len(ka) < MIN_MATCHES or len(kb) < MIN_MATCHES:
        raise CalibrationError("too few image features; point the camera at a textured, well-lit scene")
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(da, db, k=2)
    good = [m for m, n in (p for p in pairs if len(p) == 2) if m.distance < 0.75 * n.distance]
    if len(good) < MIN_MATCHES:
        raise CalibrationError(f"only {len(good)} feature matches between the two views; use a smaller turn "
                               f"(--step) or a scene with more texture")
    pa = np.float32([ka[m.queryIdx].pt for m in good])
    pb = np.float32([kb[m.trainIdx].pt for m in good])
    _, inliers = cv2.findHomography(pa, pb, cv2.RANSAC, 3.0)
    keep = inliers.ravel().astype(bool) if inliers is not None else np.zeros(len(good), bool)
    if keep.sum() < MIN_MATCHES:
        raise CalibrationError(f"only {int(keep.sum())} consistent matches; keep people and moving things out "
                               f"of view and try again")
    return pa[keep].astype(np.float64), pb[keep].astype(np.float64)


def estimate_rotation(a: np.ndarray, b: np.ndarray, axis: str, guess_deg: float, guess_focal_px: float) -> Rotation:
    """The turn from frame ``a`` to frame ``b`` about ``axis`` ("pan": towards +x, "tilt": up), fitted by
    Gauss-Newton from the commanded angle and configured focal length."""
    pa, pb = matched_points(a, b)
    h, w = a.shape[:2]
    xa, ya = pa[:, 0] - (w - 1) / 2, pa[:, 1] - (h - 1) / 2
    xb, yb = pb[:, 0] - (w - 1) / 2, pb[:, 1] - (h - 1) / 2
    if axis == "tilt":  # tilting up is panning along −y
        xa, ya, xb, yb = -ya, xa, -yb, xb
    elif axis != "pan":
        raise ValueError(f"axis {axis!r} must be 'pan' or 'tilt'")
    params = np.array([np.radians(guess_deg), float(guess_focal_px)])

    def residual(p):
        u, v = _model(xa, ya, p[0], p[1])
        return np.concatenate([u - xb, v - yb])
    for _ in range(50):
        r = residual(params)
        steps = np.array([1e-5, 1e-3 * params[1]])
        jac = np.stack([(residual(params + np.eye(2)[i] * steps[i]) - r) / steps[i] for i in range(2)], axis=1)
        delta, *_ = np.linalg.lstsq(jac, -r, rcond=None)
        params = params + delta
        if abs(delta[0]) < 1e-9 and abs(delta[1]) < 1e-6 * params[1]:
            break
    rms = float(np.sqrt(np.mean(residual(params) ** 2)))
    if not np.isfinite(params).all() or params[1] <= 0:
        raise CalibrationError("the rotation fit diverged; use a smaller turn (--step) or check the profile's FoV")
    return Rotation(float(np.degrees(params[0])), float(params[1]), len(pa), rms)


@dataclass(frozen=True)
class AxisCalibration:
    axis: str  # "pan" | "tilt"
    commanded_deg: float  # the read-back turn in the profile's degrees
    units: float  # device counts that turn is
    rotation: Rotation  # what the images say
    image_px: int  # image size along the axis [px]

    @property
    def units_per_deg(self) -> float:
        return abs(self.units / self.rotation.angle_deg)

    @property
    def fov_deg(self) -> float:
        return self.rotation.fov_deg(self.image_px)


def still_view(camera, wait_s: float = VIDEO_SETTLE_S, timeout_s: float = 10.0) -> np.ndarray:
    """The view of a settled :class:`~panoseeker_ros.drivers.ptz_camera.PtzCamera` once its video is still:
    the first two successive frames received at least ``wait_s`` from now that agree (mean |difference| below
    STILL_GREY), the later one fitted to the camera's size."""
    t, deadline, previous = time.monotonic() + wait_s, time.monotonic() + wait_s + timeout_s, None
    while True:
        frame = camera.frames.frame_after(t, max(0.1, deadline - time.monotonic()))
        view = camera.fit(frame.rgb)
        if previous is not None and np.abs(view.astype(np.int16) - previous).mean() < STILL_GREY:
            return view
        if time.monotonic() > deadline:
            raise CalibrationError(f"the video did not come to rest within {timeout_s:g} s of the head settling; "
                                   f"calibrate with the camera and the scene still")
        previous, t = view.astype(np.int16), frame.received + 1e-6


def calibrate_head(camera, step_deg: tuple[float, float] | None = None) -> tuple[AxisCalibration, AxisCalibration]:
    """Turn a :class:`~panoseeker_ros.drivers.ptz_camera.PtzCamera` from straight ahead by ``step_deg`` [deg]
    (pan right, then tilt down; default a third of the profile's FoV), measure each turn from the frames,
    return to straight ahead."""
    p = camera.profile
    step = step_deg or (p.fov_deg[0] / 3, p.fov_deg[1] / 3)
    out = []
    try:
        # tilt down: rooms have more texture below the horizon than above
        for axis, (dt, dp) in (("pan", (step[0], 0.0)), ("tilt", (0.0, -step[1]))):
            camera.look(0.0, 0.0)
            a, start = still_view(camera), camera.pose()
            camera.look(dt, dp)
            b, end = still_view(camera), camera.pose()
            i = 0 if axis == "pan" else 1
            turned = (end.theta - start.theta) if axis == "pan" else (end.phi - start.phi)
            focal = camera.intrinsics.fx if axis == "pan" else camera.intrinsics.fy
            rot = estimate_rotation(a, b, axis, turned, focal)
            units = turned * p.units_per_deg[i]
            out.append(AxisCalibration(axis, turned, units, rot, a.shape[1 - i]))
    finally:
        camera.look(0.0, 0.0)
    return out[0], out[1]
