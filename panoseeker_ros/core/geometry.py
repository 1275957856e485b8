"""Spherical geometry of a pan-tilt camera looking at an equirectangular (ERP) world.

Conventions (degrees everywhere in ``core``):

* θ (theta) is azimuth, positive to the right; ϕ (phi) is elevation, positive up.
* ERP pixel centres: column ``u`` sits at θ = (u + 0.5) · 360 / W − 180, row ``v`` at
  ϕ = 90 − (v + 0.5) · 180 / H. So column 0 starts at θ = −180° and row 0 at ϕ = +90°.
* View pixels: ``x`` to the right, ``y`` down, optical centre at ((W − 1) / 2, (H − 1) / 2),
  focal lengths fx = (W / 2) / tan(ψh / 2), fy = (H / 2) / tan(ψv / 2) (pixels need not be square).
* Internal 3-D frame: x right, y up, z forward (θ = ϕ = 0 looks along +z).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

DEFAULT_FOV_DEG = (120.0, 90.0)
DEFAULT_VIEW_SIZE = (1024, 768)  # (width, height)


@dataclass(frozen=True)
class Pose:
    """Camera direction in degrees: θ azimuth in [-180, 180), ϕ elevation in [-90, 90]."""

    theta: float
    phi: float

    def normalized(self) -> "Pose":
        return Pose(wrap_deg(self.theta), float(np.clip(self.phi, -90.0, 90.0)))

    def moved(self, dtheta: float, dphi: float) -> "Pose":
        """The pose after a relative move; elevation saturates at ±90°."""
        return Pose(self.theta + dtheta, self.phi + dphi).normalized()

    def as_dict(self) -> dict:
        return {"theta": float(self.theta), "phi": float(self.phi)}


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of a view, in pixels, derived from a field of view and a size."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_fov(cls, fov_deg=DEFAULT_FOV_DEG, size=DEFAULT_VIEW_SIZE) -> "Intrinsics":
        w, h = int(size[0]), int(size[1])
        fh, fv = float(fov_deg[0]), float(fov_deg[1])
        if not (0 < fh < 180 and 0 < fv < 180):
            raise ValueError(f"field of view {fov_deg} must lie strictly between 0 and 180 degrees")
        return cls(w, h, (w / 2) / np.tan(np.radians(fh / 2)), (h / 2) / np.tan(np.radians(fv / 2)),
                   (w - 1) / 2, (h - 1) / 2)

    @property
    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)


def wrap_deg(angle):
    """Wrap degrees to [-180, 180)."""
    return (np.asarray(angle, dtype=np.float64) + 180.0) % 360.0 - 180.0 if np.ndim(angle) else \
        float((float(angle) + 180.0) % 360.0 - 180.0)


def great_circle_deg(theta_a, phi_a, theta_b, phi_b):
    """Great-circle distance in degrees, d = arccos(sinϕa sinϕb + cosϕa cosϕb cos(θa − θb))."""
    ta, pa, tb, pb = (np.radians(np.asarray(x, dtype=np.float64)) for x in (theta_a, phi_a, theta_b, phi_b))
    c = np.sin(pa) * np.sin(pb) + np.cos(pa) * np.cos(pb) * np.cos(ta - tb)
    d = np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))
    return float(d) if d.ndim == 0 else d


def pose_distance(a: Pose, b: Pose) -> float:
    return great_circle_deg(a.theta, a.phi, b.theta, b.phi)


def dir_to_vec(theta, phi) -> np.ndarray:
    """Unit vectors (..., 3) in the x-right, y-up, z-forward frame."""
    t, p = np.radians(theta), np.radians(phi)
    return np.stack([np.cos(p) * np.sin(t), np.sin(p), np.cos(p) * np.cos(t)], axis=-1)


def vec_to_dir(vec: np.ndarray):
    """(theta, phi) in degrees of vectors (..., 3); they need not be unit length."""
    x, y, z = vec[..., 0], vec[..., 1], vec[..., 2]
    return np.degrees(np.arctan2(x, z)), np.degrees(np.arctan2(y, np.hypot(x, z)))


def erp_pixel_to_dir(u, v, width: int, height: int):
    """ERP pixel coordinates (float, pixel centres) → (θ, ϕ) degrees."""
    return (np.asarray(u) + 0.5) * 360.0 / width - 180.0, 90.0 - (np.asarray(v) + 0.5) * 180.0 / height


def dir_to_erp_pixel(theta, phi, width: int, height: int):
    """(θ, ϕ) degrees → ERP pixel coordinates (float); u is wrapped into [-0.5, W - 0.5)."""
    u = (wrap_deg(theta) + 180.0) * width / 360.0 - 0.5
    v = (90.0 - np.asarray(phi)) * height / 180.0 - 0.5
    return u, v


def camera_rotation(pose: Pose) -> np.ndarray:
    """3×3 rotation taking camera-frame rays (x right, y up, z forward) to world rays."""
    t, p = np.radians(pose.theta), np.radians(pose.phi)
    pitch = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    yaw = np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])
    return yaw @ pitch


def view_pixel_to_dir(x, y, pose: Pose, intr: Intrinsics):
    """View pixel coordinates → world (θ, ϕ) degrees."""
    rays = np.stack([(np.asarray(x, dtype=np.float64) - intr.cx) / intr.fx,
                     -(np.asarray(y, dtype=np.float64) - intr.cy) / intr.fy,
                     np.ones(np.broadcast(x, y).shape)], axis=-1)
    return vec_to_dir(rays @ camera_rotation(pose).T)


def dir_to_view_pixel(theta, phi, pose: Pose, intr: Intrinsics):
    """World (θ, ϕ) → view pixel (x, y, in_front). Points behind the camera get in_front=False."""
    cam = dir_to_vec(theta, phi) @ camera_rotation(pose)  # world → camera is R^T, applied on the right
    z = cam[..., 2]
    safe = np.where(z > 1e-9, z, 1.0)
    return intr.cx + intr.fx * cam[..., 0] / safe, intr.cy - intr.fy * cam[..., 1] / safe, z > 1e-9


# ---------------------------------------------------------------------------------------------
# Forward projection: ERP → perspective view.


@lru_cache(maxsize=64)
def _view_sampling_base(phi: float, intr: Intrinsics, erp_w: int, erp_h: int):
    """ERP sampling map of a view at (θ=0, ϕ): (map_u, map_v) float32 of shape (H, W).

    The map for any θ is this one shifted by θ·W/360 columns, which is why it is cached per ϕ.
    map_u lies in (-0.5, W - 0.5] relative to column 0; map_v in ERP rows.
    """
    ys, xs = np.mgrid[0:intr.height, 0:intr.width]
    theta, phi_px = view_pixel_to_dir(xs, ys, Pose(0.0, phi), intr)
    u = (theta + 180.0) * erp_w / 360.0 - 0.5
    v = (90.0 - phi_px) * erp_h / 180.0 - 0.5
    return u.astype(np.float32), v.astype(np.float32)


class PanoramaRenderer:
    """Renders perspective views of one ERP image by gnomonic projection (bilinear).

    The ERP is padded once (a second copy to the right so a θ shift never needs a modulo, and one
    pole-crossing row above and below), then every view is a single ``cv2.remap``.
    """

    def __init__(self, erp: np.ndarray):
        if erp.ndim not in (2, 3) or erp.shape[1] != 2 * erp.shape[0]:
            raise ValueError(f"an ERP image must be H×2H (got shape {erp.shape}); resize it to a 2:1 aspect ratio")
        self.erp = erp
        self.height, self.width = erp.shape[:2]
        w = self.width
        tiled = np.concatenate([erp[:, -1:], erp, erp, erp[:, :1]], axis=1)  # columns -1 .. 2W
        # Crossing a pole continues on the opposite meridian: the pad row is the edge row rolled by W/2.
        top = np.roll(tiled[:1], w // 2, axis=1)
        bottom = np.roll(tiled[-1:], w // 2, axis=1)
        self._padded = np.ascontiguousarray(np.concatenate([top, tiled, bottom], axis=0))

    def render(self, pose: Pose, intr: Intrinsics, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """The view at ``pose``: (H, W[, C]) with the ERP's dtype."""
        pose = pose.normalized()
        base_u, base_v = _view_sampling_base(round(pose.phi, 9), intr, self.width, self.height)
        shift = (pose.theta % 360.0) * self.width / 360.0 + 1.0  # +1: the left pad column
        return cv2.remap(self._padded, base_u + np.float32(shift), base_v + np.float32(1.0),
                         interpolation, borderMode=cv2.BORDER_REPLICATE)


# ---------------------------------------------------------------------------------------------
# Inverse projection: perspective view → ERP.


def erp_band_rows(phi: float, erp_h: int, half_vfov: float) -> tuple[int, int]:
    """Rows [r0, r1) of an ERP that a view centred at elevation ϕ can touch."""
    top, bottom = min(90.0, phi + half_vfov + 1.0), max(-90.0, phi - half_vfov - 1.0)
    if phi + half_vfov >= 90.0:
        top = 90.0
    if phi - half_vfov <= -90.0:
        bottom = -90.0
    r0 = int(np.floor((90.0 - top) * erp_h / 180.0))
    r1 = int(np.ceil((90.0 - bottom) * erp_h / 180.0))
    return max(0, r0), min(erp_h, r1)


def view_to_erp_map(pose: Pose, intr: Intrinsics, erp_w: int, erp_h: int):
    """Where each ERP pixel of the touched band falls in the view.

    Returns (r0, map_x, map_y, valid): float32 maps of shape (r1 - r0, erp_w) into view pixels and a
    bool mask of ERP pixels the view covers. Separable in rows and columns, so it is cheap.
    """
    pose = pose.normalized()
    half_v = np.degrees(np.arctan((intr.height / 2) / intr.fy))
    r0, r1 = erp_band_rows(pose.phi, erp_h, half_v)
    lat = np.radians(90.0 - (np.arange(r0, r1) + 0.5) * 180.0 / erp_h)[:, None]
    dlon = np.radians((np.arange(erp_w) + 0.5) * 360.0 / erp_w - 180.0 - pose.theta)[None, :]
    p = np.radians(pose.phi)
    cl, sl = np.cos(lat), np.sin(lat)
    x = cl * np.sin(dlon)
    cos_d = cl * np.cos(dlon)
    y = sl * np.cos(p) - cos_d * np.sin(p)
    z = sl * np.sin(p) + cos_d * np.cos(p)
    front = z > 1e-6
    inv_z = np.where(front, 1.0 / np.where(front, z, 1.0), 0.0)
    map_x = (intr.cx + intr.fx * x * inv_z).astype(np.float32)
    map_y = (intr.cy - intr.fy * y * inv_z).astype(np.float32)
    valid = front & (map_x >= -0.5) & (map_x <= intr.width - 0.5) & (map_y >= -0.5) & (map_y <= intr.height - 0.5)
    return r0, map_x, map_y, valid


@lru_cache(maxsize=32)
def _erp_map_at(phi: float, theta_frac: float, intr: Intrinsics, erp_w: int, erp_h: int):
    return view_to_erp_map(Pose(theta_frac, phi), intr, erp_w, erp_h)


def backproject_band(view: np.ndarray, pose: Pose, intr: Intrinsics, erp_w: int, erp_h: int,
                     interpolation: int = cv2.INTER_LINEAR):
    """A view resampled onto the ERP rows it touches: (r0, band, valid), band (rows, erp_w[, C]).

    A turn by k ERP columns only rolls the band (the map is periodic in azimuth), so the map is built
    once per elevation and sub-column azimuth offset and reused for every heading of the 30° lattice.
    """
    pose = pose.normalized()
    step = 360.0 / erp_w
    k = int(np.floor(pose.theta / step))
    frac = round(pose.theta / step - k, 6)
    if frac >= 1.0:  # rounding reached the next column
        k, frac = k + 1, 0.0
    r0, map_x, map_y, valid = _erp_map_at(round(pose.phi, 9), frac * step, intr, erp_w, erp_h)
    band = cv2.remap(view, map_x, map_y, interpolation, borderMode=cv2.BORDER_REPLICATE)
    return r0, np.roll(band, k, axis=1), np.roll(valid, k, axis=1)


def backproject_view(view: np.ndarray, pose: Pose, intr: Intrinsics, erp_w: int, erp_h: int,
                     interpolation: int = cv2.INTER_LINEAR):
    """A view resampled onto an ERP grid: (erp, valid) with erp (erp_h, erp_w[, C]) and valid bool."""
    r0, band, valid = backproject_band(view, pose, intr, erp_w, erp_h, interpolation)
    out = np.zeros((erp_h, erp_w) + view.shape[2:], dtype=view.dtype)
    full = np.zeros((erp_h, erp_w), dtype=bool)
    out[r0:r0 + band.shape[0]] = np.where(valid[..., None] if band.ndim == 3 else valid, band, 0)
    full[r0:r0 + band.shape[0]] = valid
    return out, full


def project_erp_mask(mask: np.ndarray, pose: Pose, intr: Intrinsics) -> np.ndarray:
    """An ERP boolean mask as seen in the view at ``pose`` (nearest neighbour): (H, W) bool."""
    renderer = PanoramaRenderer(mask.astype(np.uint8))
    return renderer.render(pose, intr, interpolation=cv2.INTER_NEAREST) > 0


def view_mask_to_erp(mask: np.ndarray, pose: Pose, intr: Intrinsics, erp_w: int, erp_h: int) -> np.ndarray:
    """A view boolean mask back-projected to an ERP grid (nearest neighbour): (erp_h, erp_w) bool."""
    erp, valid = backproject_view(mask.astype(np.uint8), pose, intr, erp_w, erp_h, cv2.INTER_NEAREST)
    return (erp > 0) & valid


def spherical_centroid(mask: np.ndarray) -> Pose | None:
    """Area-weighted centroid direction of an ERP mask (H, 2H) bool; None when the mask is empty."""
    vs, us = np.nonzero(mask)
    if vs.size == 0:
        return None
    theta, phi = erp_pixel_to_dir(us.astype(np.float64), vs.astype(np.float64), mask.shape[1], mask.shape[0])
    vec = dir_to_vec(theta, phi) * np.cos(np.radians(phi))[:, None]
    t, p = vec_to_dir(vec.sum(axis=0))
    return Pose(float(t), float(p)).normalized()


def view_mask_centroid_dir(mask: np.ndarray, pose: Pose, intr: Intrinsics) -> Pose | None:
    """Area-weighted centroid direction of a view mask; None when empty.

    Each pixel is weighted by the solid angle it covers (∝ cos³ of its angle to the optical axis), so
    the result agrees with :func:`spherical_centroid` of the same region in an ERP.
    """
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    rays = np.stack([(xs - intr.cx) / intr.fx, -(ys - intr.cy) / intr.fy, np.ones(xs.shape)], axis=-1)
    norm = np.linalg.norm(rays, axis=-1, keepdims=True)
    weighted = (rays / norm) / norm ** 3
    t, p = vec_to_dir(weighted.sum(axis=0) @ camera_rotation(pose).T)
    return Pose(float(t), float(p)).normalized()


def mask_bbox(mask: np.ndarray):
    """(x1, y1, x2, y2) pixel box of a bool mask, inclusive-exclusive; None when empty."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


# ---------------------------------------------------------------------------------------------
# ROS interface angles (REP-103: radians, z up, x forward, y left; positive rotations counter-clockwise).
# Pan is a rotation about +z, so turning right (θ > 0) is a negative pan; tilt is a rotation about +y
# (left), so looking up (ϕ > 0) is a negative tilt.


def pose_to_pan_tilt(pose: Pose) -> tuple[float, float]:
    """Core pose (degrees) → (pan, tilt) joint positions in radians with REP-103 signs."""
    return -float(np.radians(pose.theta)), -float(np.radians(pose.phi))


def pan_tilt_to_pose(pan: float, tilt: float) -> Pose:
    """(pan, tilt) joint positions in radians (REP-103) → core pose in degrees."""
    return Pose(-float(np.degrees(pan)), -float(np.degrees(tilt))).normalized()


def move_from_joint_delta(dpan: float, dtilt: float) -> tuple[float, float]:
    """A relative joint move in radians (REP-103) → (Δθ, Δϕ) in degrees."""
    return -float(np.degrees(dpan)), -float(np.degrees(dtilt))


def joint_delta_from_move(dtheta: float, dphi: float) -> tuple[float, float]:
    """(Δθ, Δϕ) in degrees → relative joint move (Δpan, Δtilt) in radians (REP-103)."""
    return -float(np.radians(dtheta)), -float(np.radians(dphi))
