"""The pan-tilt head interface every protocol driver implements, its errors, and when a move is finished."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol


class PtzError(RuntimeError):
    """The head refused or failed a request; the message is one line naming the camera and what to check."""


class PtzTimeout(PtzError):
    """The head did not answer in time (unplugged, wrong address, powered off)."""


class PtzNotSettled(PtzError):
    """A move did not arrive within the profile's settle timeout; the head was told to stop."""


class PtzStopped(PtzError):
    """A look ended early because the head was told to stop (cancel, shutdown); it took no view."""


MISSED_POLLS = 2  # consecutive unanswered read-backs while settling before the camera counts as gone


class PanTiltHead(Protocol):
    """A protocol driver. Angles in degrees, core convention (θ right-positive, ϕ up-positive), already
    inside the profile's limits; every call may raise :class:`PtzError`."""

    def move_to(self, theta: float, phi: float) -> None:
        """Start an absolute move; returns once the head accepted it (not when it arrives)."""

    def position(self) -> tuple[float, float]:
        """Where the head points now, read back from it [deg]. A head that also reports whether it moves
        sets ``moving`` (True / False) on each read-back; the settle logic then also waits for False."""

    def home(self) -> None: ...

    def stop(self) -> None: ...

    def describe(self) -> str:
        """One line: protocol, address, what the head reported about itself."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class Settled:
    theta: float  # read-back pose [deg]
    phi: float
    settled: bool  # False: the timeout passed first (or the wait was stopped)
    elapsed_s: float
    at: float  # time.monotonic() of the read-back that ended the wait
    stopped: bool = False  # ``stopped()`` ended the wait


def angle_gap_deg(a: tuple[float, float], b: tuple[float, float]) -> float:
    """The larger of the pan and tilt differences [deg], pan wrapped to (-180, 180]."""
    dpan = (a[0] - b[0] + 180.0) % 360.0 - 180.0
    return max(abs(dpan), abs(a[1] - b[1]))


def wait_settled(head: PanTiltHead, target: tuple[float, float], tolerance_deg: float, timeout_s: float,
                 poll_period_s: float, clock=time.monotonic, sleep=time.sleep,
                 stopped: Callable[[], bool] = lambda: False) -> Settled:
    """Poll the head until two consecutive read-backs are within ``tolerance_deg`` of ``target`` and of each
    other (it arrived and stopped), or ``timeout_s`` passes, or ``stopped()`` says so. A head that stops short
    of the target (a clamp the profile does not know about) is caught by the timeout, never by hope. A
    read-back that times out is a missed poll, not a failure (on a lossy link many polls would multiply the
    loss); :data:`MISSED_POLLS` in a row raise the last :class:`PtzTimeout`."""
    start = clock()
    previous, missed, last = None, 0, None
    while True:
        try:
            now_pose = head.position()
        except PtzTimeout:
            missed += 1
            if missed >= MISSED_POLLS:
                raise
            previous = None  # the next two read-backs must agree again
            continue
        missed = 0
        now = clock()
        last = now_pose
        near = angle_gap_deg(now_pose, target) <= tolerance_deg
        still = (previous is not None and angle_gap_deg(now_pose, previous) <= tolerance_deg / 4
                 and getattr(head, "moving", None) is not True)
        if near and still:
            return Settled(now_pose[0], now_pose[1], True, now - start, now)
        if stopped():
            return Settled(last[0], last[1], False, now - start, now, stopped=True)
        if now - start >= timeout_s:
            return Settled(now_pose[0], now_pose[1], False, now - start, now)
        previous = now_pose
        sleep(poll_period_s)


def clamp_to_limits(theta: float, phi: float, pan_limits: tuple[float, float],
                    tilt_limits: tuple[float, float]) -> tuple[float, float]:
    """The pose the head may be commanded to: θ wrapped to [-180, 180) then clamped, ϕ clamped [deg]."""
    if not math.isfinite(theta) or not math.isfinite(phi):
        raise ValueError(f"pose θ={theta} ϕ={phi} is not finite")
    theta = (theta + 180.0) % 360.0 - 180.0
    return (min(max(theta, pan_limits[0]), pan_limits[1]) + 0.0,  # + 0.0: no "-0.0°" in messages
            min(max(phi, tilt_limits[0]), tilt_limits[1]) + 0.0)
