"""Simulator-only components that read the scene's ground truth. Named ``oracle`` wherever they appear."""
from __future__ import annotations

import numpy as np

from ..core.actions import pixels_to_box
from ..core.episode import GroundTruth
from ..core.geometry import Intrinsics, Pose, dir_to_view_pixel, mask_bbox, project_erp_mask, view_mask_to_erp
from .detection import Detection


class OracleDetector:
    """Reports the target when its ground-truth centroid is inside the view and enough of its mask is
    visible; the box is the visible part's bounding box. Reads only the pose, never the pixels or the
    phrase (a :class:`~.detection.Detector` for simulation only)."""

    name = "oracle"

    def __init__(self, truth: GroundTruth, intrinsics: Intrinsics, min_visible_px: int = 64):
        self.truth = truth
        self.intrinsics = intrinsics
        self.min_visible_px = min_visible_px

    def detect(self, pose: Pose):
        """0–1000 box of the target in the view at ``pose``, or None when it is not (enough) visible."""
        x, y, front = dir_to_view_pixel(self.truth.centroid.theta, self.truth.centroid.phi, pose, self.intrinsics)
        if not (front and 0 <= x < self.intrinsics.width and 0 <= y < self.intrinsics.height):
            return None
        visible = project_erp_mask(self.truth.mask, pose, self.intrinsics)
        if visible.sum() < self.min_visible_px:
            return None
        return pixels_to_box(mask_bbox(visible), self.intrinsics.width, self.intrinsics.height)

    def find(self, view: np.ndarray, pose: Pose, phrase: str = "") -> Detection | None:
        """Detector interface: the target's box and visible ground-truth mask, or None; the score is the
        share of the target's ERP pixels that the view sees (1: the whole target)."""
        box = self.detect(pose)
        if box is None:
            return None
        visible = project_erp_mask(self.truth.mask, pose, self.intrinsics)
        height, width = self.truth.mask.shape
        seen = view_mask_to_erp(visible, pose, self.intrinsics, width, height) & self.truth.mask
        return Detection(box, float(seen.sum() / max(1, self.truth.mask.sum())), visible)


class OracleSegmenter:
    """The ground-truth mask as seen from the current pose, restricted to the given box."""

    name = "oracle"

    def __init__(self, truth: GroundTruth, intrinsics: Intrinsics):
        self.truth = truth
        self.intrinsics = intrinsics

    def track(self, view: np.ndarray, pose: Pose) -> np.ndarray:
        """The tracked object on a later view: all of the ground truth that view sees (empty: lost)."""
        return project_erp_mask(self.truth.mask, pose, self.intrinsics)

    def segment(self, view: np.ndarray, box_px, pose: Pose, points=None, labels=None) -> np.ndarray:
        """Point prompts (VBR) do not change the answer: the box alone decides what the oracle returns."""
        mask = project_erp_mask(self.truth.mask, pose, self.intrinsics)
        x1, y1, x2, y2 = (int(round(v)) for v in box_px)
        inside = np.zeros_like(mask)
        inside[max(0, y1):max(0, y2), max(0, x1):max(0, x2)] = True
        return mask & inside
