"""The pan-tilt camera interface and its simulated driver (a panorama stands in for the world)."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from .geometry import Intrinsics, PanoramaRenderer, Pose, wrap_deg

PITCH_LIMIT_DEG = 89.9  # the simulator's elevation limit (the official environment's PITCH_LIMIT)


class Camera(Protocol):
    """A pan-tilt camera. ``look`` points it (absolute degrees, clamped to its limits) and returns the
    RGB view (H, W, 3) uint8 taken there; ``pose`` is where it points now."""

    intrinsics: Intrinsics

    def look(self, theta: float, phi: float) -> np.ndarray: ...

    def pose(self) -> Pose: ...


class PanoramaCamera:
    """Simulated pan-tilt camera: views are gnomonic projections of an ERP image. Elevation is clamped to
    the configured tilt limits and never beyond ±``PITCH_LIMIT_DEG`` (a view at the pole has no heading)."""

    def __init__(self, erp: np.ndarray, intrinsics: Intrinsics, tilt_limits=(-90.0, 90.0),
                 renderer: PanoramaRenderer | None = None):
        self.intrinsics = intrinsics
        self.tilt_limits = (max(float(tilt_limits[0]), -PITCH_LIMIT_DEG), min(float(tilt_limits[1]), PITCH_LIMIT_DEG))
        self.renderer = renderer or PanoramaRenderer(erp)
        self._pose = Pose(0.0, 0.0)

    def clamp(self, theta: float, phi: float) -> Pose:
        return Pose(wrap_deg(theta), float(np.clip(phi, *self.tilt_limits)))

    def look(self, theta: float, phi: float) -> np.ndarray:
        self._pose = self.clamp(theta, phi)
        return self.renderer.render(self._pose, self.intrinsics)

    def pose(self) -> Pose:
        return self._pose
