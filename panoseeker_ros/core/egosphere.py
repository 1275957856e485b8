"""EgoSphere: a fixed-size equirectangular canvas of everything the camera has seen so far, and the
picture of it a policy reads.

Two canvas styles (``episode.canvas_style``):

* ``official`` (default; what the official PanoSeeker agent reads): longitude relative to the first
  view's heading (the start direction at the canvas centre, "behind you" at the edges), unexplored
  pixels dark grey (28, 30, 35), a faint white 30° grid, each visited viewpoint a numbered white disc,
  a rose (#E11D48) crosshair with a ring on the current one, degree labels (latitude every 30°,
  longitude every 60°) in white margins; drawn at twice the size and resized to the canvas width, so the
  picture is W × about 0.51·W (1024 × 526).
* ``world``: the canvas itself in world longitude (θ = 0° at the centre column), black where
  unexplored, a grey 30° grid, the path as arrows and a red crosshair; W × H.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from .geometry import Intrinsics, Pose, backproject_band, dir_to_erp_pixel, wrap_deg

CANVAS_SIZE = (1024, 512)  # (width, height)
CANVAS_STYLES = ("official", "world")
GRID_STEP_DEG = 30.0
GRID_COLOR = (96, 96, 96)
PATH_COLOR = (0, 200, 255)
CROSSHAIR_COLOR = (255, 40, 40)
# the official style's colours (RGB)
UNEXPLORED = (28, 30, 35)
GRID_ALPHA = 35 / 255  # white grid lines over the map
NODE_FILL = (255, 255, 255)
INK = (17, 17, 17)
ROSE = (225, 29, 72)  # #E11D48
SCALE = 2  # drawn at twice the size, then resized to the canvas width
MARGINS = (120, 60, 40, 80)  # left, right, top, bottom at 2× for a 1024-wide canvas: the labels' room


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

    Memory is constant: a new view overwrites the canvas pixels it covers (pixel-wise update). In the
    ``official`` style the canvas's longitude is relative to the first integrated view's heading
    (:attr:`anchor_deg`); ``trajectory`` always holds world poses.
    """

    def __init__(self, intrinsics: Intrinsics, size=CANVAS_SIZE, style: str = "official"):
        if style not in CANVAS_STYLES:
            raise ValueError(f"canvas style {style!r}; use one of {', '.join(CANVAS_STYLES)}")
        self.intrinsics = intrinsics
        self.style = style
        self.width, self.height = int(size[0]), int(size[1])
        self.canvas = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        self.explored = np.zeros((self.height, self.width), dtype=bool)
        self.trajectory: list[Pose] = []
        self.anchor_deg: float | None = None if style == "official" else 0.0  # world θ at the canvas centre
        # the official picture's map: the canvas with unexplored pixels dark grey, kept up to date by
        # integrate so that drawing does not composite the whole canvas every step
        self.shown = np.empty_like(self.canvas) if style == "official" else None
        if self.shown is not None:
            self.shown[:] = UNEXPLORED

    def reset(self) -> None:
        self.canvas[:] = 0
        self.explored[:] = False
        self.trajectory.clear()
        if self.style == "official":
            self.anchor_deg = None
            self.shown[:] = UNEXPLORED

    def canvas_pose(self, pose: Pose) -> Pose:
        """A world pose in the canvas's longitude (relative to the anchor in the official style)."""
        return Pose(float(wrap_deg(pose.theta - (self.anchor_deg or 0.0))), pose.phi)

    def integrate(self, view: np.ndarray, pose: Pose) -> None:
        """Back-project one RGB view (H, W, 3) uint8 taken at ``pose`` into the canvas."""
        if view.shape[:2] != (self.intrinsics.height, self.intrinsics.width) or view.ndim != 3:
            raise ValueError(f"view shape {view.shape} does not match the camera "
                             f"({self.intrinsics.height}, {self.intrinsics.width}, 3)")
        pose = pose.normalized()
        if self.anchor_deg is None:
            self.anchor_deg = pose.theta  # the first view lands at the canvas centre
        r0, band, valid = backproject_band(view, self.canvas_pose(pose), self.intrinsics, self.width, self.height)
        rows = slice(r0, r0 + band.shape[0])
        np.copyto(self.canvas[rows], band, where=valid[..., None])
        if self.shown is not None:
            np.copyto(self.shown[rows], band, where=valid[..., None])
        self.explored[rows] |= valid
        self.trajectory.append(pose)

    @property
    def coverage(self) -> float:
        """Fraction of the sphere's area explored (rows weighted by cos latitude)."""
        lat = np.radians(90.0 - (np.arange(self.height) + 0.5) * 180.0 / self.height)
        w = np.cos(lat)
        return float((self.explored.sum(axis=1) * w).sum() / (w.sum() * self.width))

    def render(self, grid: bool = True, path: bool = True, crosshair: bool = True) -> np.ndarray:
        """A picture of the canvas with the spatial prompts the policy reads, in this sphere's style:
        (H', W, 3) uint8 (module docstring)."""
        if self.style == "official":
            return render_official(self, grid, path, crosshair)
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


# ---------------------------------------------------------------------------------------------
# The official canvas style.


class _Frame:
    """What every official picture of one canvas size shares: the white margins with the map's outline,
    ticks and degree labels, the grid's pixels, and the sizes (all at 2×)."""

    def __init__(self, width: int, height: int):
        k = width / 1024.0  # margins, fonts and marks scale with the canvas
        s = SCALE
        self.map_w, self.map_h = s * width, s * height
        self.left, right, self.top, bottom = (int(round(m * k)) for m in MARGINS)
        self.size = (self.left + self.map_w + right, self.top + self.map_h + bottom)  # (w, h) at 2×
        self.out_size = (width, int(round(self.size[1] * width / self.size[0])))
        self.unit = s * k  # one pixel of the official drawing at 1024 wide
        img = np.full((self.size[1], self.size[0], 3), 255, np.uint8)
        font, scale, thick = cv2.FONT_HERSHEY_DUPLEX, 1.15 * k, max(1, int(round(2 * k)))
        ink = max(1, int(round(2 * self.unit)))
        for lat in range(-90, 91, 30):
            y = self.top + int((90 - lat) / 180 * self.map_h)
            cv2.line(img, (self.left - int(6 * self.unit), y), (self.left, y), INK, ink)
            _degree_label(img, str(lat), (self.left - int(10 * self.unit), y), "right", font, scale, thick)
        for lon in range(-180, 181, 60):
            x = self.left + int((lon + 180) / 360 * self.map_w)
            y = self.top + self.map_h
            cv2.line(img, (x, y), (x, y + int(6 * self.unit)), INK, ink)
            _degree_label(img, str(lon), (x, y + int(12 * self.unit)), "top", font, scale, thick)
        self.image = img
        grid = np.zeros((self.map_h, self.map_w), bool)
        half = max(1, int(round(self.unit))) // 2
        for lat in range(-60, 90, 30):
            y = int((90 - lat) / 180 * self.map_h)
            grid[max(0, y - half):y - half + max(1, int(round(self.unit))), :] = True
        for lon in range(-150, 180, 30):
            x = int((lon + 180) / 360 * self.map_w)
            grid[:, max(0, x - half):x - half + max(1, int(round(self.unit)))] = True
        self.grid = np.flatnonzero(grid)
        self.ink = ink


def _degree_label(img, number: str, at, anchor: str, font, scale, thick) -> None:
    """``number`` followed by a degree sign (a small ring: the Hershey fonts have none), anchored at ``at``:
    its right edge and vertical middle (``right``) or its horizontal middle and top (``top``)."""
    (w, h), _ = cv2.getTextSize(number, font, scale, thick)
    ring = max(2, h // 6)
    total = w + 2 * ring + thick
    x, y = at
    x0, y0 = (x - total, y + h // 2) if anchor == "right" else (x - total // 2, y + h)
    cv2.putText(img, number, (x0, y0), font, scale, INK, thick, cv2.LINE_AA)
    cv2.circle(img, (x0 + w + ring + thick // 2, y0 - h + ring), ring, INK, max(1, thick // 2), cv2.LINE_AA)


@lru_cache(maxsize=4)
def _frame(width: int, height: int) -> _Frame:
    return _Frame(width, height)


@lru_cache(maxsize=256)
def _disc(number: int, unit: float, ink: int) -> tuple[np.ndarray, np.ndarray]:
    """A numbered white disc with an ink outline, drawn once per number: (RGB float32, alpha (h, w, 1)).
    The alpha comes from drawing it on black and on white (anti-aliased edges blend over the map)."""
    radius, font, scale = int(20 * unit), cv2.FONT_HERSHEY_DUPLEX, 1.1 * unit / SCALE
    thick = max(1, int(round(2 * unit / SCALE)))
    side = 2 * (radius + ink) + 3
    c = side // 2
    layers = []
    for bg in (0, 255):
        img = np.full((side, side, 3), bg, np.uint8)
        cv2.circle(img, (c, c), radius, NODE_FILL, -1, cv2.LINE_AA)
        cv2.circle(img, (c, c), radius, INK, ink, cv2.LINE_AA)
        (w, h), _ = cv2.getTextSize(str(number), font, scale, thick)
        cv2.putText(img, str(number), (c - w // 2, c + h // 2), font, scale, INK, thick, cv2.LINE_AA)
        layers.append(img.astype(np.float32))
    on_black, on_white = layers
    alpha = 1.0 - (on_white - on_black).mean(axis=2, keepdims=True) / 255.0
    colour = np.where(alpha > 1e-3, on_black / np.maximum(alpha, 1e-3), 0.0)
    return colour * alpha, alpha


def _blit(out: np.ndarray, sprite: tuple[np.ndarray, np.ndarray], centre: tuple[int, int]) -> None:
    """Composite a premultiplied sprite centred at ``centre`` (clipped at the picture's edges)."""
    premultiplied, alpha = sprite
    side = alpha.shape[0]
    x0, y0 = centre[0] - side // 2, centre[1] - side // 2
    a0, b0 = max(0, -x0), max(0, -y0)
    a1, b1 = min(side, out.shape[1] - x0), min(side, out.shape[0] - y0)
    if a1 <= a0 or b1 <= b0:
        return
    region = out[y0 + b0:y0 + b1, x0 + a0:x0 + a1]
    mixed = premultiplied[b0:b1, a0:a1] + region * (1.0 - alpha[b0:b1, a0:a1])
    region[:] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def render_official(sphere: EgoSphere, grid: bool = True, path: bool = True, crosshair: bool = True) -> np.ndarray:
    """The official EgoSphere picture of ``sphere`` (module docstring): (round(W·h/w), W, 3) uint8 RGB."""
    f = _frame(sphere.width, sphere.height)
    world = cv2.resize(sphere.shown, (f.map_w, f.map_h), interpolation=cv2.INTER_LINEAR)
    if grid:  # faint white lines: 35/255 of white over the map
        flat = world.reshape(-1, 3)
        lines = flat[f.grid].astype(np.uint16)
        flat[f.grid] = ((lines * (255 - 35) + 255 * 35 + 127) // 255).astype(np.uint8)
    out = f.image.copy()
    out[f.top:f.top + f.map_h, f.left:f.left + f.map_w] = world
    cv2.rectangle(out, (f.left, f.top), (f.left + f.map_w, f.top + f.map_h), INK, f.ink)
    u = f.unit

    def to_px(pose: Pose) -> tuple[int, int]:
        rel = sphere.canvas_pose(pose)
        return (f.left + int((rel.theta + 180.0) / 360.0 * f.map_w) % f.map_w,
                f.top + int((90.0 - rel.phi) / 180.0 * f.map_h))

    if path:
        for i, pose in enumerate(sphere.trajectory, 1):
            _blit(out, _disc(i, u, f.ink), to_px(pose))
    if crosshair and sphere.trajectory:
        x, y = to_px(sphere.trajectory[-1])
        arm, width = int(18 * u), max(1, int(round(2 * u)))
        cv2.line(out, (x - arm, y), (x + arm, y), ROSE, width, cv2.LINE_AA)
        cv2.line(out, (x, y - arm), (x, y + arm), ROSE, width, cv2.LINE_AA)
        cv2.circle(out, (x, y), arm + int(6 * u), ROSE, width, cv2.LINE_AA)
    # down by exactly 2 (averaging, cv2's fast path), then the small rest: as smooth as one area resize, faster
    half = cv2.resize(out, (f.size[0] // 2, f.size[1] // 2), interpolation=cv2.INTER_AREA)
    return cv2.resize(half, f.out_size, interpolation=cv2.INTER_LINEAR)
