"""Seeded synthetic APRS scenes: flat coloured shapes on a 360° room, with referring instructions.

A scene is an ERP image (H×2H RGB) holding 7–9 objects. Each object is a flat shape (circle,
square, triangle, diamond, star, cross) of one colour, drawn in the tangent plane at its centre
direction (θc, ϕc) and rasterised into the ERP through the gnomonic projection about that centre:
it looks undistorted in every perspective view (a flat poster on the sphere) and its mask is exact,
an ERP pixel being inside exactly when its centre direction falls inside the shape.

Instructions (one target per episode, exactly one object satisfies each) and the rules behind them,
all angles in degrees, Δθ = wrap(θ_object − θ_reference) in [−180, 180):

* description X: a shape ("the star"), a colour and a shape ("the blue circle") or, for UNIQ only,
  a colour ("the purple shape"). An object matches X when its shape (and colour) are equal.
* EGO, relative to the initial heading θ0 (the start pose has ϕ0 = 0): "turn right" (left, around)
  points the camera at the level view centred on θ0 + 90° (θ0 − 90°, θ0 + 180°), the view after that
  turn. The target's centre is inside that view (FoV 120°×90°) and no other object of the description
  shows any part of its bounding circle there: after turning as told, the target is the only one of
  its kind in sight.
* ALLO, relative to an anchor object A named by its colour and shape (unique in the scene), with
  Δϕ = ϕ − ϕ_A:
  with h = |Δθ| · cos((ϕ + ϕ_A) / 2) the horizontal part of the offset (degrees along the horizon):
  next to / beside: great-circle distance between the centres ≤ 45 and |Δϕ| ≤ h (a horizontal
  neighbour: the offset is nearer the horizontal than the vertical); above / below: distance ≤ 60
  and Δϕ ≥ h / −Δϕ ≥ h (a vertical neighbour);
  opposite: |Δθ| ≥ 150 (azimuth 180 ± 30 away);
  left of / right of (as seen by the camera, which looks outwards): Δθ ∈ [−75, −10] / [10, 75]
  and |Δϕ| ≤ 35.
* UNIQ: exactly one object in the scene matches X.
* MULTIHOP: an EGO clause and an ALLO relation, both holding ("turn around and find the triangle
  next to the yellow square"), and the EGO clause is needed: the relation alone (without the turn)
  holds for another object of the description too. (The EGO clause alone may or may not pick the
  target; requiring that it never does leaves too few layouts of 7–9 objects.)

A written instruction is unambiguous with a margin of ``MARGIN_DEG``: the target satisfies it with
every range shrunk by the margin, and every other object fails it with every range widened by the
margin (for EGO: the target's centre lies that far inside the view, and no look-alike comes within
that distance of its edge). For EGO, ALLO and MULTIHOP, X matches at least two objects, so the
spatial part matters.
The start pose is chosen so that no part of the target is in the initial view (and its centre is
more than 75° away), and so that the EGO clause is true.

``generate_benchmark`` writes a whole dataset (see its docstring); the smaller functions
(``make_scene``, ``render_scene``, ``place_object``, ``write_instructions``, ``satisfies``...) serve
tests and demos.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from .dataset import CATEGORIES, EpisodeSpec, save_dataset
from .geometry import (DEFAULT_FOV_DEG, Pose, camera_rotation, dir_to_vec, erp_pixel_to_dir, great_circle_deg,
                       spherical_centroid, vec_to_dir, wrap_deg)

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
COLOURS = {  # RGB
    "red": (214, 39, 40), "green": (44, 160, 44), "blue": (31, 90, 220), "yellow": (245, 205, 30),
    "purple": (148, 70, 189), "orange": (250, 128, 14), "white": (236, 236, 236),
}
CATEGORY_SHARES = {"EGO": 0.184, "UNIQ": 0.433, "ALLO": 0.322, "MULTIHOP": 0.061}  # METHOD.md

EGO_DIRECTIONS = ("right", "left", "behind")
EGO_TURN_DEG = {"right": 90.0, "left": -90.0, "behind": 180.0}  # the view an EGO clause points to: θ0 + turn, ϕ = 0
RELATIONS = ("next to", "above", "below", "opposite", "left of", "right of")
NEXT_TO_MAX_DEG = 45.0  # centre distance of "next to" / "beside" (a horizontal neighbour)
ABOVE_MAX_DEG = 60.0  # centre distance of "above" / "below" (a vertical neighbour)
OPPOSITE_MIN_DEG = 150.0
SIDE_AZIMUTH_DEG = (10.0, 75.0)  # |Δθ| range of "left of" / "right of"
SIDE_MAX_DPHI_DEG = 35.0
MARGIN_DEG = 10.0
MIN_START_DISTANCE_DEG = 75.0

SIZE_RANGE_DEG = (12.0, 25.0)  # angular diameter of an object's bounding circle
PHI_RANGE_DEG = (-50.0, 50.0)  # object centres
MIN_GAP_DEG = 8.0  # free angle between the bounding circles of two objects
OBJECTS_PER_SCENE = (7, 9)  # inclusive
SCENE_DRAWS = 200  # layouts tried per scene (a MULTIHOP one is found in about 1 of 8)

# Shape outlines in units of the bounding-circle radius, x right, y up, centre at the origin.
_STAR = [(np.cos(a), np.sin(a)) for a in np.radians(90.0 + 36.0 * np.arange(10))]
_POLYGONS = {
    "square": [(-0.7071, -0.7071), (0.7071, -0.7071), (0.7071, 0.7071), (-0.7071, 0.7071)],
    "triangle": [(0.0, 1.0), (-0.8660, -0.5), (0.8660, -0.5)],
    "diamond": [(0.0, 1.0), (-0.68, 0.0), (0.0, -1.0), (0.68, 0.0)],
    "star": [(x * (1.0 if i % 2 == 0 else 0.45), y * (1.0 if i % 2 == 0 else 0.45)) for i, (x, y) in enumerate(_STAR)],
    "cross": [(-0.3, 0.93), (0.3, 0.93), (0.3, 0.3), (0.93, 0.3), (0.93, -0.3), (0.3, -0.3), (0.3, -0.93),
              (-0.3, -0.93), (-0.3, -0.3), (-0.93, -0.3), (-0.93, 0.3), (-0.3, 0.3)],
}
_CIRCLE_RADIUS = 0.92
_RIM = 0.08  # dark outline width, in bounding radii
_SHADOW_OFFSET = (0.06, -0.09)  # drop shadow shift (x right, y up), in bounding radii
_RIM_SAMPLES = 36  # points on an object's bounding circle when testing whether any part of it is in a view


class SceneError(ValueError):
    """A generator argument a user must fix; the message is one line naming it and the fix."""


@dataclass(frozen=True)
class SceneObject:
    """One flat object: shape, colour, centre direction (degrees) and angular diameter (degrees)."""

    shape: str
    colour: str
    theta: float
    phi: float
    size: float

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def radius(self) -> float:
        """Angular radius of the bounding circle, degrees."""
        return self.size / 2.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Query:
    """The structure of one instruction. ``colour``/``shape`` None means not part of the description."""

    category: str
    target: int  # object index
    shape: str | None
    colour: str | None
    ego: str | None = None  # right | left | behind
    relation: str | None = None  # next to | opposite | left of | right of
    anchor: int | None = None  # object index

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Shapes and rasterisation.


def _polygon_signed_distance(poly, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance of points (x, y) to a closed polygon (negative inside), same shape as x."""
    pts = np.asarray(poly, dtype=np.float64)
    a, b = pts, np.roll(pts, -1, axis=0)
    best = np.full(x.shape, np.inf)
    inside = np.zeros(x.shape, dtype=bool)
    for (ax, ay), (bx, by) in zip(a, b):
        ex, ey = bx - ax, by - ay
        t = np.clip(((x - ax) * ex + (y - ay) * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        best = np.minimum(best, np.hypot(x - ax - t * ex, y - ay - t * ey))
        crosses = (ay > y) != (by > y)  # even-odd rule along +x
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = ax + (y - ay) * ex / np.where(ey == 0, 1.0, ey)
        inside ^= crosses & (x < xc)
    return np.where(inside, -best, best)


def shape_signed_distance(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance to ``shape`` (negative inside) at tangent-plane points in bounding radii."""
    if shape == "circle":
        return np.hypot(x, y) - _CIRCLE_RADIUS
    if shape not in _POLYGONS:
        raise SceneError(f"unknown shape {shape!r}; use one of {', '.join(SHAPES)}")
    return _polygon_signed_distance(_POLYGONS[shape], x, y)


def object_window(obj: SceneObject, width: int, height: int, pad_deg: float = 3.0):
    """ERP pixels an object (with its shadow) can touch: (r0, r1, cols), rows [r0, r1), cols int array."""
    reach = obj.radius * 1.15 + pad_deg  # shadow offset and anti-aliasing stay inside this
    top, bottom = min(90.0, obj.phi + reach), max(-90.0, obj.phi - reach)
    r0 = max(0, int(np.floor((90.0 - top) * height / 180.0)))
    r1 = min(height, int(np.ceil((90.0 - bottom) * height / 180.0)))
    if abs(obj.phi) + reach >= 89.0:  # a cap around a pole spans every column
        return r0, r1, np.arange(width)
    half = np.degrees(np.arcsin(min(1.0, np.sin(np.radians(reach)) / np.cos(np.radians(obj.phi)))))
    u0 = int(np.floor((obj.theta - half + 180.0) * width / 360.0)) - 1
    u1 = int(np.ceil((obj.theta + half + 180.0) * width / 360.0)) + 1
    cols = np.arange(u0, u1) % width
    return r0, r1, (cols if cols.size <= width else np.arange(width))


def tangent_coords(obj: SceneObject, theta: np.ndarray, phi: np.ndarray):
    """Gnomonic coordinates about the object's centre, in bounding radii: (x right, y up, in_front)."""
    cam = dir_to_vec(theta, phi) @ camera_rotation(Pose(obj.theta, obj.phi))  # world → object frame
    z = cam[..., 2]
    front = z > 1e-6
    scale = np.tan(np.radians(obj.radius))  # tangent-plane length of one bounding radius
    safe = np.where(front, z, 1.0) * scale
    return cam[..., 0] / safe, cam[..., 1] / safe, front


def place_object(erp: np.ndarray, obj: SceneObject) -> np.ndarray:
    """Paint ``obj`` (shading, outline, drop shadow) into ``erp`` (H, 2H, 3) uint8 in place.

    Returns its exact mask (H, 2H) bool: the pixels whose centre direction is inside the shape.
    """
    height, width = erp.shape[:2]
    r0, r1, cols = object_window(obj, width, height)
    theta, phi = erp_pixel_to_dir(cols[None, :].astype(np.float64), np.arange(r0, r1, dtype=np.float64)[:, None],
                                  width, height)
    theta, phi = np.broadcast_arrays(theta, phi)
    x, y, front = tangent_coords(obj, theta, phi)
    sd = np.where(front, shape_signed_distance(obj.shape, x, y), np.inf)
    sd_shadow = np.where(front, shape_signed_distance(obj.shape, x - _SHADOW_OFFSET[0], y - _SHADOW_OFFSET[1]), np.inf)
    pixel = np.radians(360.0 / width) / np.tan(np.radians(obj.radius))  # one ERP pixel in bounding radii
    patch = erp[r0:r1][:, cols].astype(np.float32)
    shadow = 0.45 * np.clip(0.5 - sd_shadow / 0.12, 0.0, 1.0)  # soft-edged darkening behind the poster
    patch *= (1.0 - shadow)[..., None]
    light = 0.82 + 0.18 * np.clip(0.6 * y - 0.45 * x, -1.0, 1.0)  # light from the upper left
    rim = np.clip((sd + _RIM) / (pixel + 1e-9) + 0.5, 0.0, 1.0)  # 1 on the outline, 0 inside it
    bevel = np.exp(-((sd + _RIM + 0.05) / 0.04) ** 2)  # thin highlight just inside the outline
    shade = (light * (1.0 - 0.5 * rim) + 0.25 * bevel * (1.0 - rim))[..., None]
    colour = np.clip(np.asarray(COLOURS[obj.colour], dtype=np.float32) * shade, 0, 255)
    alpha = np.clip(0.5 - sd / pixel, 0.0, 1.0)[..., None]  # anti-aliased edge; the mask is sd < 0
    patch = patch * (1.0 - alpha) + colour * alpha
    erp[r0:r1, cols] = np.clip(np.round(patch), 0, 255).astype(np.uint8)
    mask = np.zeros((height, width), dtype=bool)
    mask[r0:r1, cols] = sd < 0
    return mask


# ---------------------------------------------------------------------------------------------
# Backgrounds.


def plain_room(rng: np.random.Generator, width: int) -> np.ndarray:
    """A synthetic box room seen from inside: (width/2, width, 3) uint8 RGB.

    Walls, floor and ceiling follow the true geometry of a rectangular room around the camera, so
    wall corners and door frames are vertical lines and the floor tiles look right in every
    perspective view. Per-column and per-row terms are computed once and combined (fast at 2048 px).
    """
    height = width // 2
    half_x, half_z = rng.uniform(2.5, 4.5, size=2)  # room half extents, metres
    below, above = rng.uniform(1.2, 1.6), rng.uniform(1.0, 1.5)  # floor and ceiling from the camera, metres
    yaw = rng.uniform(0.0, 90.0)
    palette = np.array([[(222, 214, 196), (205, 218, 214), (226, 206, 190), (210, 210, 222)][rng.integers(4)],
                        [(150, 108, 72), (128, 128, 124), (170, 140, 100)][rng.integers(3)],
                        (240, 240, 236)], np.float32)  # wall, floor, ceiling
    theta, phi = erp_pixel_to_dir(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64),
                                  width, height)
    alpha = np.radians(theta - yaw)
    sin_a, cos_a = np.sin(alpha), np.cos(alpha)
    side = half_x * np.abs(cos_a) < half_z * np.abs(sin_a)  # (W,) the ray meets an x = ±half_x wall first
    dist = np.where(side, half_x / np.maximum(np.abs(sin_a), 1e-9), half_z / np.maximum(np.abs(cos_a), 1e-9))
    tan_phi = np.tan(np.radians(phi))  # (H,)
    wall_gain = np.array([0.92, 1.0, 0.86, 0.96])[side * 2 + (np.where(side, sin_a, cos_a) > 0)]
    corner = side != np.roll(side, 1)
    wall_gain[corner | np.roll(corner, -1)] *= 0.8
    doors = ((rng.uniform(-180.0, 180.0, size=int(rng.integers(3, 7))) + 180.0) * width / 360.0).astype(int) % width
    door_cols = np.zeros(width, dtype=bool)
    door_cols[doors] = True
    level = tan_phi[:, None].astype(np.float32) * dist[None, :].astype(np.float32)  # (H, W) metres on the wall
    gain = wall_gain[None, :].astype(np.float32) * (np.float32(0.9) + np.float32(0.1 / above) *
                                                    np.clip(level, -above, above))
    gain[(level >= -below) & (level < -below + 0.12)] *= 0.7  # skirting board
    door = (level >= -below) & (level <= -below + 2.05) & door_cols[None, :]  # frames 2 m high
    gain[door] *= np.float32(0.85)
    img = gain[..., None] * palette[0]
    f0 = int(np.searchsorted(-tan_phi, below / dist.max()))  # first row that can see the floor
    reach = (below / np.maximum(-tan_phi[f0:], 1e-9)).astype(np.float32)[:, None]  # floor distance, metres
    fx, fz = reach * (sin_a / 0.6).astype(np.float32), reach * (cos_a / 0.6).astype(np.float32)  # in 60 cm tiles
    tiles = (np.floor(fx) + np.floor(fz)) % 2
    seams = (np.abs(fx - np.round(fx)) < 0.02) | (np.abs(fz - np.round(fz)) < 0.02)
    floor_gain = (0.95 + 0.05 * tiles - 0.15 * seams) * (0.75 + 0.25 * np.exp(-reach / 4.0))
    is_floor = level[f0:] < -below
    img[f0:][is_floor] = floor_gain[is_floor][:, None] * palette[1]
    c1 = int(np.searchsorted(-tan_phi, -above / dist.max()))  # rows above this can see the ceiling
    is_ceiling = level[:c1] > above
    ceiling_gain = np.broadcast_to((0.93 + 0.07 * np.clip(tan_phi[:c1], 0, 3) / 3)[:, None], is_ceiling.shape)
    img[:c1][is_ceiling] = ceiling_gain[is_ceiling][:, None].astype(np.float32) * palette[2]
    return cv2.convertScaleAbs(img)  # rounds and saturates to uint8


def load_background(path, width: int) -> np.ndarray:
    """An ERP image file resized to (width/2, width, 3) uint8 RGB."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SceneError(f"background {path} cannot be read; pass 'plain' or the path of an ERP PNG/JPEG")
    h, w = img.shape[:2]
    if abs(w / h - 2.0) > 0.05:
        raise SceneError(f"background {path} is {w}x{h}; an ERP background must have a 2:1 aspect ratio")
    interp = cv2.INTER_AREA if w > width else cv2.INTER_LINEAR
    return cv2.cvtColor(cv2.resize(img, (width, width // 2), interpolation=interp), cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------------------------------------
# Scenes.


def sample_objects(rng: np.random.Generator, n: int) -> list[SceneObject]:
    """``n`` non-overlapping objects with repeated shapes and colours (so relations are needed).

    Shapes come from 4 of the 6 and colours from 4 of the 7, and one colour-shape pair is doubled.
    """
    shapes = [str(s) for s in rng.choice(SHAPES, size=4, replace=False)]
    colours = [str(c) for c in rng.choice(list(COLOURS), size=4, replace=False)]
    kinds = [(shapes[int(rng.integers(4))], colours[int(rng.integers(4))]) for _ in range(n - 1)]
    kinds.append(kinds[int(rng.integers(n - 1))])  # an identical twin somewhere else
    objects: list[SceneObject] = []
    for shape, colour in kinds:
        for _ in range(1000):
            size = float(np.round(rng.uniform(*SIZE_RANGE_DEG), 2))
            theta = float(np.round(rng.uniform(-180.0, 180.0), 2))
            phi = float(np.round(rng.uniform(*PHI_RANGE_DEG), 2))
            if all(great_circle_deg(theta, phi, o.theta, o.phi) > (size + o.size) / 2 + MIN_GAP_DEG for o in objects):
                objects.append(SceneObject(shape, colour, wrap_deg(theta), phi, size))
                break
        else:
            raise RuntimeError("could not place the objects without overlap; use fewer or smaller objects")
    return objects


def draw_objects(rng: np.random.Generator) -> list[SceneObject]:
    """The objects of one scene: ``OBJECTS_PER_SCENE`` of them, see :func:`sample_objects`."""
    return sample_objects(rng, int(rng.integers(OBJECTS_PER_SCENE[0], OBJECTS_PER_SCENE[1] + 1)))


def render_scene(rng: np.random.Generator, objects: list[SceneObject], background="plain", width: int = 2048,
                 base: np.ndarray | None = None):
    """The ERP image of ``objects`` on a background: (erp (width/2, width, 3) uint8, masks list of (H, W) bool).

    ``background`` is "plain" (a synthetic room drawn with ``rng``) or an ERP image path; ``base`` (an
    already loaded background at this width) skips reading it again.
    """
    if base is not None:
        erp = base.copy()
    elif background == "plain":
        erp = plain_room(rng, width)
    else:
        erp = load_background(background, width)
    return erp, [place_object(erp, obj) for obj in objects]


def make_scene(rng: np.random.Generator, background="plain", width: int = 2048, base: np.ndarray | None = None):
    """A scene: (erp (width/2, width, 3) uint8, objects list[SceneObject], masks list of (H, W) bool)."""
    objects = draw_objects(rng)
    erp, masks = render_scene(rng, objects, background, width, base)
    return erp, objects, masks


# ---------------------------------------------------------------------------------------------
# Relations. Every predicate takes ``slack`` (degrees): > 0 widens its range, < 0 shrinks it.


def _level_view_angles(theta, phi, heading):
    """Horizontal and vertical angles (degrees) of directions (θ, ϕ) in the level view centred on
    ``heading``, and whether they are in front of the camera; arrays broadcast."""
    d, p = np.radians(wrap_deg(np.asarray(theta, dtype=np.float64) - heading)), np.radians(phi)
    x, y, z = np.cos(p) * np.sin(d), np.sin(p), np.cos(p) * np.cos(d)
    return np.degrees(np.arctan2(x, z)), np.degrees(np.arctan2(y, z)), z > 0


def _rim(obj: SceneObject, radius: float):
    """(θ, ϕ) arrays of the object's centre and ``_RIM_SAMPLES`` points at ``radius`` degrees around it."""
    c = dir_to_vec(obj.theta, obj.phi)
    east = np.cross([0.0, 1.0, 0.0], c)
    east = east / np.linalg.norm(east) if np.linalg.norm(east) > 1e-9 else np.array([1.0, 0.0, 0.0])
    north = np.cross(c, east)
    beta = np.linspace(0.0, 2 * np.pi, _RIM_SAMPLES, endpoint=False)[:, None]
    rho = np.radians(max(0.0, radius))
    pts = np.cos(rho) * c + np.sin(rho) * (np.cos(beta) * east + np.sin(beta) * north)
    return vec_to_dir(np.vstack([c[None], pts]))


def ego_view(theta0, ego: str):
    """The heading (degrees) of the view after the EGO clause ``ego`` from initial heading(s) ``theta0``."""
    if ego not in EGO_TURN_DEG:
        raise ValueError(f"unknown EGO direction {ego!r}; use one of {', '.join(EGO_DIRECTIONS)}")
    return wrap_deg(np.asarray(theta0, dtype=np.float64) + EGO_TURN_DEG[ego])


def ego_holds(obj: SceneObject, theta0, ego: str, slack: float = 0.0, fov_deg=DEFAULT_FOV_DEG):
    """Whether ``obj`` is in the view after the EGO clause ``ego`` from initial heading(s) ``theta0``
    (array ok). With ``slack`` < 0 (the target's test): its centre lies at least −slack degrees inside the
    view. With ``slack`` >= 0 (a look-alike's test): some point of its bounding circle, widened by
    ``slack``, is inside the view."""
    heading = ego_view(theta0, ego)
    half_h, half_v = fov_deg[0] / 2.0, fov_deg[1] / 2.0
    if slack < 0:
        h, v, front = _level_view_angles(obj.theta, obj.phi, heading)
        return front & (np.abs(h) <= half_h + slack) & (np.abs(v) <= half_v + slack)
    theta, phi = _rim(obj, obj.radius + slack)
    h, v, front = _level_view_angles(theta[:, None], phi[:, None], np.atleast_1d(heading)[None, :])
    seen = (front & (np.abs(h) <= half_h) & (np.abs(v) <= half_v)).any(axis=0)
    return seen if np.ndim(theta0) else bool(seen[0])


def relation_holds(obj: SceneObject, anchor: SceneObject, relation: str, slack: float = 0.0) -> bool:
    """Whether ``obj`` stands in ``relation`` to ``anchor`` (rules in the module docstring)."""
    d_az = wrap_deg(obj.theta - anchor.theta)
    d_phi = obj.phi - anchor.phi
    across = abs(d_az) * np.cos(np.radians((obj.phi + anchor.phi) / 2.0))  # h: the horizontal part of the offset
    distance = great_circle_deg(obj.theta, obj.phi, anchor.theta, anchor.phi)
    if relation == "next to":
        return distance <= NEXT_TO_MAX_DEG + slack and abs(d_phi) <= across + slack
    if relation in ("above", "below"):
        rise = d_phi if relation == "above" else -d_phi
        return distance <= ABOVE_MAX_DEG + slack and rise >= across - slack
    if relation == "opposite":
        return abs(d_az) >= OPPOSITE_MIN_DEG - slack
    if relation in ("left of", "right of"):
        side = -d_az if relation == "left of" else d_az
        lo, hi = SIDE_AZIMUTH_DEG
        return lo - slack <= side <= hi + slack and abs(d_phi) <= SIDE_MAX_DPHI_DEG + slack
    raise ValueError(f"unknown relation {relation!r}; use one of {', '.join(RELATIONS)}")


def matches_description(obj: SceneObject, shape: str | None, colour: str | None) -> bool:
    return (shape is None or obj.shape == shape) and (colour is None or obj.colour == colour)


def satisfies(query: Query, index: int, objects: list[SceneObject], theta0, slack: float = 0.0,
              fov_deg=DEFAULT_FOV_DEG):
    """Whether object ``index`` satisfies ``query`` for initial heading(s) ``theta0`` (array ok)."""
    obj = objects[index]
    ok = np.ones(np.shape(theta0), dtype=bool)
    if not matches_description(obj, query.shape, query.colour) or index == query.anchor:
        return ok & False
    if query.ego is not None:
        ok &= ego_holds(obj, theta0, query.ego, slack, fov_deg)
    if query.relation is not None:
        ok &= relation_holds(obj, objects[query.anchor], query.relation, slack)
    return ok


def unambiguous(query: Query, objects: list[SceneObject], theta0, margin: float = MARGIN_DEG,
                fov_deg=DEFAULT_FOV_DEG):
    """True where the target satisfies ``query`` with ``margin`` to spare and no other object comes
    within ``margin`` of satisfying it (array over ``theta0`` ok)."""
    ok = satisfies(query, query.target, objects, theta0, -margin, fov_deg)
    for i in range(len(objects)):
        if i != query.target:
            ok = ok & ~satisfies(query, i, objects, theta0, margin, fov_deg)
    return ok


def relation_ambiguous(query: Query, objects: list[SceneObject]) -> bool:
    """Whether the ALLO part of ``query`` alone (its description and relation, without the EGO clause)
    holds for some object besides the target, so that a MULTIHOP instruction needs its EGO clause."""
    relation_only = replace(query, ego=None)
    return any(bool(satisfies(relation_only, i, objects, 0.0)) for i in range(len(objects)) if i != query.target)


def start_clear(obj: SceneObject, theta0, fov_deg=DEFAULT_FOV_DEG):
    """Whether a start at (θ0, ϕ=0) sees no part of ``obj`` (array over θ0 ok).

    The view's corner ray is the farthest it sees, so the object's bounding circle must lie beyond it.
    """
    corner = np.degrees(np.arctan(np.hypot(np.tan(np.radians(fov_deg[0] / 2)), np.tan(np.radians(fov_deg[1] / 2)))))
    need = max(MIN_START_DISTANCE_DEG, corner + obj.radius + 2.0)
    return great_circle_deg(np.asarray(theta0, dtype=np.float64), 0.0, obj.theta, obj.phi) > need


_THETA0_GRID = np.arange(-180.0, 180.0, 1.0)


def feasible_starts(query: Query, objects: list[SceneObject], fov_deg=DEFAULT_FOV_DEG) -> np.ndarray:
    """Initial headings θ0 (degrees, on a 1° grid) for which ``query`` is unambiguous and the target
    is out of the initial view."""
    ok = start_clear(objects[query.target], _THETA0_GRID, fov_deg)
    ok = ok & np.broadcast_to(unambiguous(query, objects, _THETA0_GRID, fov_deg=fov_deg), ok.shape)
    return _THETA0_GRID[ok]


def _count(objects, shape, colour) -> int:
    return sum(matches_description(o, shape, colour) for o in objects)


def _descriptions(objects: list[SceneObject], index: int, relational: bool):
    """(shape, colour) descriptions of object ``index``: matching >= 2 objects when ``relational``,
    exactly one otherwise."""
    obj = objects[index]
    options = [(obj.shape, obj.colour), (obj.shape, None)] + ([] if relational else [(None, obj.colour)])
    wanted = (lambda n: n >= 2) if relational else (lambda n: n == 1)
    return [d for d in options if wanted(_count(objects, *d))]


def _anchors(objects: list[SceneObject], target: int, shape: str | None, colour: str | None) -> list[int]:
    """Objects usable as anchors: unique by colour and shape, and not matching the target's description."""
    return [i for i, o in enumerate(objects) if i != target and _count(objects, o.shape, o.colour) == 1
            and not matches_description(o, shape, colour)]


def candidate_queries(objects: list[SceneObject], category: str, fov_deg=DEFAULT_FOV_DEG):
    """Every unambiguous query of ``category`` in the scene: list of (Query, feasible θ0 array)."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; use one of {', '.join(CATEGORIES)}")
    out = []
    for t in range(len(objects)):
        for shape, colour in _descriptions(objects, t, relational=category != "UNIQ"):
            egos = EGO_DIRECTIONS if category in ("EGO", "MULTIHOP") else (None,)
            rels = [(r, a) for r in RELATIONS for a in _anchors(objects, t, shape, colour)] \
                if category in ("ALLO", "MULTIHOP") else [(None, None)]
            for ego in egos:
                for relation, anchor in rels:
                    if relation and not relation_holds(objects[t], objects[anchor], relation, -MARGIN_DEG):
                        continue  # cheap early exit: the target itself does not fit
                    q = Query(category, t, shape, colour, ego, relation, anchor)
                    if category == "MULTIHOP" and not relation_ambiguous(q, objects):
                        continue  # the relation alone would do: the EGO clause must be needed
                    starts = feasible_starts(q, objects, fov_deg)
                    if starts.size:
                        out.append((q, starts))
    return out


# ---------------------------------------------------------------------------------------------
# Instructions.

_EGO_TEMPLATES = {
    "right": ("turn right to find the {x}", "the {x} on your right", "look to your right for the {x}"),
    "left": ("turn left to find the {x}", "the {x} on your left", "look to your left for the {x}"),
    "behind": ("the {x} behind you", "turn around to find the {x}", "turn around and find the {x}"),
}
_EGO_CLAUSE = {"right": "turn right", "left": "turn left", "behind": "turn around"}
_UNIQ_TEMPLATES = ("the {x}", "find the {x}", "look for the {x}")
_RELATION_WORDS = {"next to": ("next to", "beside"), "above": ("above",), "below": ("below", "under"),
                   "opposite": ("opposite", "across from"),
                   "left of": ("to the left of",), "right of": ("to the right of",)}
_ALLO_TEMPLATES = ("the {x} {rel} the {a}", "find the {x} {rel} the {a}")


def describe(shape: str | None, colour: str | None) -> str:
    """Noun phrase of a description: 'blue circle', 'circle' or 'blue shape'."""
    return " ".join(w for w in (colour, shape or "shape") if w)


def phrase(query: Query, objects: list[SceneObject], rng: np.random.Generator) -> str:
    """The instruction sentence of ``query`` (template chosen by ``rng``)."""
    x = describe(query.shape, query.colour)
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    if query.category == "UNIQ":
        return pick(_UNIQ_TEMPLATES).format(x=x)
    if query.category == "EGO":
        return pick(_EGO_TEMPLATES[query.ego]).format(x=x)
    rel = pick(_RELATION_WORDS[query.relation])
    a = objects[query.anchor].name
    if query.category == "ALLO":
        return pick(_ALLO_TEMPLATES).format(x=x, rel=rel, a=a)
    return f"{_EGO_CLAUSE[query.ego]} and find the {x} {rel} the {a}"


def write_instruction(objects: list[SceneObject], category: str, rng: np.random.Generator,
                      avoid_targets=(), fov_deg=DEFAULT_FOV_DEG):
    """One episode of ``category``: (query, instruction, initial Pose), or None when the scene allows none.

    The kind of instruction (EGO direction, relation) is drawn first so that all kinds appear;
    targets in ``avoid_targets`` are used only when no other target works.
    """
    candidates = candidate_queries(objects, category, fov_deg)
    fresh = [c for c in candidates if c[0].target not in avoid_targets]
    candidates = fresh or candidates
    if not candidates:
        return None
    kinds = sorted({(q.ego or "", q.relation or "") for q, _ in candidates})
    kind = kinds[int(rng.integers(len(kinds)))]
    pool = [c for c in candidates if (c[0].ego or "", c[0].relation or "") == kind]
    query, starts = pool[int(rng.integers(len(pool)))]
    theta0 = float(starts[int(rng.integers(starts.size))])
    return query, phrase(query, objects, rng), Pose(theta0, 0.0)


def write_instructions(objects: list[SceneObject], rng: np.random.Generator, categories=CATEGORIES,
                       fov_deg=DEFAULT_FOV_DEG):
    """One instruction per entry of ``categories``, different targets where possible:
    list of (query, instruction, initial Pose); raises RuntimeError if the scene cannot serve one."""
    out, used = [], set()
    for category in categories:
        item = write_instruction(objects, category, rng, used, fov_deg)
        if item is None:
            raise RuntimeError(f"this scene allows no {category} instruction")
        out.append(item)
        used.add(item[0].target)
    return out


def category_schedule(total: int, rng: np.random.Generator) -> list[str]:
    """``total`` categories in METHOD.md proportions (largest remainder), every category at least
    once when ``total`` >= 8, in a seeded random order."""
    shares = np.array([CATEGORY_SHARES[c] for c in CATEGORIES])
    counts = np.floor(shares * total).astype(int)
    order = np.argsort(-(shares * total - counts), kind="stable")
    counts[order[:total - counts.sum()]] += 1
    if total >= 8:
        for i in np.flatnonzero(counts == 0):
            counts[int(np.argmax(counts))] -= 1
            counts[i] += 1
    schedule = [c for c, n in zip(CATEGORIES, counts) for _ in range(n)]
    return [schedule[i] for i in rng.permutation(total)]


# ---------------------------------------------------------------------------------------------
# Benchmark files.


def _save_png(path: Path, image: np.ndarray) -> None:
    """RGB (H, W, 3) uint8, or a 0/255 mask (H, W) uint8 stored as a 1-bit PNG (small and fast)."""
    if image.ndim == 3:
        img, params = cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3]
    else:
        img, params = image, [cv2.IMWRITE_PNG_BILEVEL, 1]
    if not cv2.imwrite(str(path), img, params):
        raise SceneError(f"cannot write {path}; check that the output directory is writable")


def generate_benchmark(out_dir, n_scenes: int = 8, episodes_per_scene: int = 4, seed: int = 0,
                       background="plain", erp_width: int = 2048, fov_deg=DEFAULT_FOV_DEG) -> Path:
    """Write a seeded synthetic benchmark and return the path of its ``dataset.json``.

    Files: ``dataset.json`` (episodes, each with its structured ``query``, and every object's mask in
    its ``objects`` list), ``scenes/scene-NNN.png`` (ERP, erp_width × erp_width/2),
    ``masks/sNNN-eKK.png`` (target masks, 0/255), ``masks/sNNN-oKK.png`` (every object's mask) and
    ``objects.json`` (every scene's objects, for checking instructions). Same arguments → byte-identical files.
    """
    if int(n_scenes) < 1 or int(episodes_per_scene) < 1:
        raise SceneError(f"n_scenes={n_scenes} and episodes_per_scene={episodes_per_scene} must both be at least 1")
    if int(erp_width) < 256 or int(erp_width) % 2:
        raise SceneError(f"erp_width={erp_width} must be an even number of pixels, at least 256 (e.g. 2048)")
    if background != "plain" and not Path(background).is_file():
        raise SceneError(f"background {background} is neither 'plain' nor an existing ERP image file")
    out = Path(out_dir)
    (out / "scenes").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    width = int(erp_width)
    base = None if background == "plain" else load_background(background, width)
    schedule = category_schedule(int(n_scenes) * int(episodes_per_scene), np.random.default_rng([seed, 1]))
    episodes, scene_docs, annotated = [], [], []
    for s in range(int(n_scenes)):
        categories = schedule[s * episodes_per_scene:(s + 1) * episodes_per_scene]
        for attempt in range(SCENE_DRAWS):  # a layout that cannot serve its categories is drawn again
            rng = np.random.default_rng([seed, 2, s, attempt])
            objects = draw_objects(rng)
            try:
                items = write_instructions(objects, rng, categories, fov_deg)
                break
            except RuntimeError:
                continue
        else:
            raise RuntimeError(f"scene {s}: no layout served categories {categories} in {SCENE_DRAWS} draws")
        erp, masks = render_scene(rng, objects, background, width, base)  # painted only once it serves
        scene_path = out / "scenes" / f"scene-{s:03d}.png"
        _save_png(scene_path, erp)
        scene_docs.append({"scene": f"scenes/{scene_path.name}", "objects": [o.as_dict() for o in objects]})
        for k, (obj, mask) in enumerate(zip(objects, masks)):  # every object annotated: boxes can frame any
            object_mask = out / "masks" / f"s{s:03d}-o{k:02d}.png"
            _save_png(object_mask, mask.astype(np.uint8) * 255)
            annotated.append((scene_path, obj.name, {"png": object_mask}))
        for k, (query, text, start) in enumerate(items):
            ep_id = f"s{s:03d}-e{k:02d}"
            mask_path = out / "masks" / f"{ep_id}.png"
            _save_png(mask_path, masks[query.target].astype(np.uint8) * 255)
            c = spherical_centroid(masks[query.target])
            centroid = Pose(round(c.theta, 4), round(c.phi, 4))
            episodes.append(EpisodeSpec(ep_id, scene_path, text, query.category, start, objects[query.target].name,
                                        centroid, {"png": mask_path}, {"query": query.as_dict()}))
    (out / "objects.json").write_text(json.dumps({"seed": seed, "scenes": scene_docs}, indent=1) + "\n")
    return save_dataset(out / "dataset.json", episodes, annotated)
