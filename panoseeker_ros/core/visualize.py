"""Pictures for people: an episode on the EgoSphere, a mask overlay on a view."""
from __future__ import annotations

import cv2
import numpy as np

from .actions import box_to_pixels
from .egosphere import EgoSphere

MASK_COLOR = (255, 60, 200)
TRUTH_COLOR = (60, 255, 60)


def overlay_mask(image: np.ndarray, mask: np.ndarray, color=MASK_COLOR, alpha: float = 0.45,
                 outline=None) -> np.ndarray:
    """A copy of RGB ``image`` (H, W, 3) with bool ``mask`` tinted, optionally with another mask's outline."""
    out = image.copy()
    if mask.shape != image.shape[:2]:
        mask = cv2.resize(mask.astype(np.uint8), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    tint = (np.asarray(color, dtype=np.float32) * alpha + out[mask].astype(np.float32) * (1 - alpha))
    out[mask] = tint.astype(np.uint8)
    if outline is not None:
        if outline.shape != image.shape[:2]:
            outline = cv2.resize(outline.astype(np.uint8), (image.shape[1], image.shape[0]),
                                 interpolation=cv2.INTER_NEAREST) > 0
        contours, _ = cv2.findContours(outline.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, TRUTH_COLOR, 2, cv2.LINE_AA)
    return out


BOX_COLOR = (255, 220, 40)


def review_picture(view: np.ndarray, mask: np.ndarray, box) -> np.ndarray:
    """What a review turn shows: ``view`` with ``mask`` tinted and ``box`` (0–1000 view units) drawn."""
    out = overlay_mask(view, mask)
    h, w = view.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box_to_pixels(box, w, h))
    cv2.rectangle(out, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), BOX_COLOR, max(2, round(min(h, w) / 200)),
                  cv2.LINE_AA)
    return out


def episode_picture(egosphere: EgoSphere, erp_mask: np.ndarray, truth_mask: np.ndarray | None,
                    lines: list[str]) -> np.ndarray:
    """EgoSphere canvas with grid, path and crosshair, the final mask tinted, the ground truth outlined,
    and a caption band of text ``lines`` underneath: (H + band, W, 3) uint8 RGB."""
    canvas = overlay_mask(egosphere.render(), erp_mask, outline=truth_mask)
    band = np.full((22 * len(lines) + 10, canvas.shape[1], 3), 24, dtype=np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(band, text, (8, 22 * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (235, 235, 235), 1, cv2.LINE_AA)
    return np.concatenate([canvas, band], axis=0)


def save_rgb(path, image: np.ndarray) -> None:
    """Write an RGB uint8 image; the parent directory must exist."""
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}; check the directory exists and the extension is .png or .jpg")
