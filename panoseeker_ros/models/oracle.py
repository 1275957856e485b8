"""Simulator-only components that read the scene's ground truth. Named ``oracle`` wherever they appear."""
from __future__ import annotations

import numpy as np

from ..core.actions import pixels_to_box
from ..core.episode import GroundTruth
from ..core.geometry import Intrinsics, Pose, dir_to_view_pixel, mask_bbox, project_erp_mask, view_mask_to_erp
from ..core.metrics import box_iou
from .detection import Detection

MIN_BOX_IOU = 0.5  # the oracle segmenter's prompt box must frame an object at least this well


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
    """A box-prompted segmenter made of the scene's annotations (simulation only).

    Like SAM given a box, it answers with the annotated object the box frames best: for the target and
    every other annotated object of the scene (:attr:`GroundTruth.objects`) it takes the bounding box
    of the part the view sees and its IoU with the prompt box. When the best IoU reaches
    ``min_box_iou`` the answer is that object's visible mask inside the box; otherwise the box frames no
    object and the answer is the whole box (the framed region, as a segmenter returns for a box around
    nothing in particular). So a loose box (a whole view, a box around two objects) or a box on a
    distractor gets a poor mask, and a box fitted to the target its true mask. :meth:`track` (the
    official alignment) follows what the last segment answered, never the target by itself."""

    name = "oracle"

    def __init__(self, truth: GroundTruth, intrinsics: Intrinsics, min_box_iou: float = MIN_BOX_IOU):
        self.truth = truth
        self.intrinsics = intrinsics
        self.min_box_iou = float(min_box_iou)
        self._tracked: np.ndarray | None = None  # ERP mask of what the last segment answered (for track)

    def track(self, view: np.ndarray, pose: Pose) -> np.ndarray:
        """What the last :meth:`segment` answered, followed onto a later view: the object it chose (all of
        it that this view sees), or, when the box framed no object, the same patch of the scene; empty
        before any segment or when it left the view (lost)."""
        if self._tracked is None:
            return np.zeros((self.intrinsics.height, self.intrinsics.width), dtype=bool)
        return project_erp_mask(self._tracked, pose, self.intrinsics)

    def segment(self, view: np.ndarray, box_px, pose: Pose, points=None, labels=None) -> np.ndarray:
        """Point prompts (VBR) do not change the answer: the box alone decides what the oracle returns."""
        w, h = self.intrinsics.width, self.intrinsics.height
        x1, y1, x2, y2 = (int(round(v)) for v in box_px)
        x1, x2 = min(max(0, x1), w), min(max(0, x2), w)
        y1, y2 = min(max(0, y1), h), min(max(0, y2), h)
        inside = np.zeros((h, w), dtype=bool)
        inside[y1:y2, x1:x2] = True
        best, best_iou, best_erp = None, 0.0, None
        for erp in (self.truth.mask, *(mask for _, mask in self.truth.objects)):
            visible = project_erp_mask(erp, pose, self.intrinsics)
            iou = box_iou((x1, y1, x2, y2), mask_bbox(visible))
            if iou > best_iou:
                best, best_iou, best_erp = visible, iou, erp
        height, width = self.truth.mask.shape
        if best is not None and best_iou >= self.min_box_iou:
            self._tracked = best_erp
            return best & inside
        self._tracked = view_mask_to_erp(inside, pose, self.intrinsics, width, height)
        return inside
