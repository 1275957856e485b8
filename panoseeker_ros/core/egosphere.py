"""EgoSphere: a fixed-size equirectangular canvas of everything the camera has seen so far."""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from .geometry import Intrinsics, Pose, backproject_band, dir_to_erp_pixel

CANVAS_SIZE = (1024, 512)  # (width, height)
GRID_STEP_DEG = 30.0
GRID_COLOR = (96, 96, 96)
PATH_COLOR = (0, 200, 255)
CROSSHAIR_COLOR = (255, 40, 40)


@lru_cache(maxsize=4)
def _grid_mask(width: int, height: int, step_deg: float) -> np.ndarray:
    """Pixels of a latitude/longitude grid every ``step_deg`` degrees, 1 px wide."""
    mask = np.zeros((height, width), dtype=bool)
    for lon in np.arange(-180.0, 180.0, step_deg):
        mask[:, int(round((lon + 180.0) * width / 360.0)) % width] = True
    for lat in np.arange(-90.0 + step_deg, 90.0, step_deg):
        mask[int(round((90.0 - lat) * height / 180.0)), :] = True
    return mask


class EgoSphere:
    """A uint8 RGB canvas (H, W, 3), zeros meaning unexplored, plus the visited view centres.

    Memory is constant: a new view overwrites the canvas pixels it covers (pixel-wise update).
    """

    def __init__(self, intrinsics: Intrinsics, size=CANVAS_SIZE):
        self.intrinsics = intrinsics
        self.width, self.height = int(size[0]), int(size[1])
        self.canvas = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        self.explored = np.zeros((self.height, self.width), dtype=bool)
        self.trajectory: list[Pose] = []

    def reset(self) -> None:
        self.canvas[:] = 0
        self.explored[:] = False
        self.trajectory.clear()

    def integrate(self, view: np.ndarray, pose: Pose) -> None:
        """Back-project one RGB view (H, W, 3) uint8 taken at ``pose`` into the canvas."""
        if view.shape[:2] != (self.intrinsics.height, self.intrinsics.width) or view.ndim != 3:
            raise ValueError(f"view shape {view.shape} does not match the camera "
                             f"({self.intrinsics.height}, {self.intrinsics.width}, 3)")
        pose = pose.normalized()
        r0, band, valid = backproject_band(view, pose, self.intrinsics, self.width, self.height)
        rows = slice(r0, r0 + band.shape[0])
        np.copyto(self.canvas[rows], band, where=valid[..., None])
        self.explored[rows] |= valid
        self.trajectory.append(pose)

    @property
    def coverage(self) -> float:
        """Fraction of the sphere's area explored (rows weighted by cos latitude)."""
        lat = np.radians(90.0 - (np.arange(self.height) + 0.5) * 180.0 / self.height)
        w = np.cos(lat)
        return float((self.explored.sum(axis=1) * w).sum() / (w.sum() * self.width))

    def render(self, grid: bool = True, path: bool = True, crosshair: bool = True) -> np.ndarray:
        """A copy of the canvas with the spatial prompts the policy reads: (H, W, 3) uint8."""
        out = self.canvas.copy()
        if grid:
            out[_grid_mask(self.width, self.height, GRID_STEP_DEG)] = GRID_COLOR
        if path:
            for a, b in zip(self.trajectory, self.trajectory[1:]):
                self._draw_arrow(out, a, b)
        if crosshair and self.trajectory:
            self._draw_crosshair(out, self.trajectory[-1])
        return out

    def _px(self, pose: Pose) -> tuple[float, float]:
        u, v = dir_to_erp_pixel(pose.theta, pose.phi, self.width, self.height)
        return float(u), float(v)

    def _draw_arrow(self, img: np.ndarray, a: Pose, b: Pose) -> None:
        (ua, va), (ub, vb) = self._px(a), self._px(b)
        if abs(ub - ua) > self.width / 2:  # the short way round crosses the seam: draw it on both sides
            shift = self.width if ub < ua else -self.width
            self._segment(img, (ua, va), (ub + shift, vb))
            self._segment(img, (ua - shift, va), (ub, vb))
        else:
            self._segment(img, (ua, va), (ub, vb))

    @staticmethod
    def _segment(img, p, q) -> None:
        p = (int(round(p[0])), int(round(p[1])))
        q = (int(round(q[0])), int(round(q[1])))
        if p != q:
            cv2.arrowedLine(img, p, q, PATH_COLOR, 2, cv2.LINE_AA, tipLength=min(0.3, 14.0 / max(1.0, np.hypot(q[0] - p[0], q[1] - p[1]))))
        cv2.circle(img, p, 4, PATH_COLOR, -1, cv2.LINE_AA)

    def _draw_crosshair(self, img: np.ndarray, pose: Pose) -> None:
        u, v = (int(round(c)) for c in self._px(pose))
        r = max(6, self.width // 64)
        for du in (-self.width, 0, self.width):  # repeat across the seam
            cv2.line(img, (u + du - r, v), (u + du + r, v), CROSSHAIR_COLOR, 2, cv2.LINE_AA)
            cv2.line(img, (u + du, v - r), (u + du, v + r), CROSSHAIR_COLOR, 2, cv2.LINE_AA)
            cv2.circle(img, (u + du, v), r // 2, CROSSHAIR_COLOR, 1, cv2.LINE_AA)
