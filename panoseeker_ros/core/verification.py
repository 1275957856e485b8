"""Verify by looking (VBR, as in ResAgent): which points inside the STOP box to give the segmenter.

Candidate points come from the uncertainty field of the first mask inside the box; each is drawn as a
marker on the view and the policy is asked, one yes/no question per marker, whether the marked point
lies on the referred object; its P(yes) is the point's confidence. Points asked in rounds (one batched
call per round) until two confident positives and one confident negative are known (the 2+1 early
stop); their best combination prompts the segmenter beside the box.

The field: a mask that crosses the ROS interface is binary (the segmenter's probabilities stay in the
segmentation node), so the probability of a pixel is taken as a logistic of its signed distance to the
mask's outline (inside positive), p = σ(d / s) with s a fiftieth of the box diagonal, and its
uncertainty as the Bernoulli entropy of p. The candidates are the most certain pixels on each side,
spread out (no two closer than a sixth of the box diagonal): for SAM's logits, which grow with the
distance from the outline, this ranks pixels as the entropy of SAM's own probabilities would. Where a
side has no pixel (an empty mask, a mask filling its box), a grid over the box stands in.

Pixels are (x, y) view pixels (x right, y down); confidences are probabilities in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

MARKER_COLOR = (255, 40, 40)  # red ring with a white centre: visible on dark and light scenes
GRID = 3  # the stand-in grid: GRID × GRID points over the box


def _box_pixels(box_px, shape) -> tuple[int, int, int, int]:
    h, w = shape
    x1, y1, x2, y2 = box_px
    return (int(np.clip(np.floor(x1), 0, w - 1)), int(np.clip(np.floor(y1), 0, h - 1)),
            int(np.clip(np.ceil(x2), 1, w)), int(np.clip(np.ceil(y2), 1, h)))


def certainty_field(mask: np.ndarray, box_px) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """(h, w) float32 signed certainty inside the box (positive: inside the mask; |value| grows as the
    Bernoulli entropy of p = σ(d / s) falls) and the box in integer pixels (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = _box_pixels(box_px, mask.shape)
    crop = np.ascontiguousarray(mask[y1:y2, x1:x2]).astype(np.uint8)
    scale = max(1.0, float(np.hypot(x2 - x1, y2 - y1)) / 50.0)
    inside = cv2.distanceTransform(crop, cv2.DIST_L2, 3) if crop.any() else np.zeros(crop.shape, np.float32)
    outside = cv2.distanceTransform(1 - crop, cv2.DIST_L2, 3) if (1 - crop).any() else np.zeros(crop.shape,
                                                                                               np.float32)
    p = 1.0 / (1.0 + np.exp(-np.clip((inside - outside) / scale, -30, 30)))
    q = np.clip(p, 1e-6, 1 - 1e-6)
    entropy = -(q * np.log(q) + (1 - q) * np.log(1 - q))
    certainty = (np.log(2.0) - entropy).astype(np.float32)
    return np.where(crop > 0, certainty, -certainty), (x1, y1, x2, y2)


def _spread(score: np.ndarray, valid: np.ndarray, most: int, gap: float) -> list[tuple[int, int]]:
    """Up to ``most`` (row, col) cells of ``valid`` with the highest ``score``, no two closer than ``gap``."""
    order = np.argsort(-np.where(valid, score, -np.inf), axis=None)
    chosen: list[tuple[int, int]] = []
    for flat in order[:valid.sum()]:
        r, c = divmod(int(flat), score.shape[1])
        if all((r - a) ** 2 + (c - b) ** 2 >= gap * gap for a, b in chosen):
            chosen.append((r, c))
            if len(chosen) == most:
                break
    return chosen


def candidate_points(mask: np.ndarray, box_px, most: int) -> list[tuple[float, float]]:
    """Up to ``most`` (x, y) view pixels inside the box: the most certain foreground and background
    points of the first mask, alternating (foreground first), spread out; the grid fills a missing side."""
    signed, (x1, y1, x2, y2) = certainty_field(mask, box_px)
    gap = float(np.hypot(x2 - x1, y2 - y1)) / 6.0
    half = (most + 1) // 2
    fg = _spread(signed, signed > 0, half, gap)
    bg = _spread(-signed, signed <= 0, most - min(len(fg), half), gap)
    if not fg or not bg:  # one side is empty: a grid over the box asks where the mask says nothing
        rows = np.linspace(0, y2 - y1 - 1, GRID + 2)[1:-1]
        cols = np.linspace(0, x2 - x1 - 1, GRID + 2)[1:-1]
        grid = [(int(r), int(c)) for r in rows for c in cols]
        fg, bg = (fg or [g for g in grid if g not in bg]), (bg or [g for g in grid if g not in fg])
    ordered = [p for pair in zip(fg, bg) for p in pair] + fg[len(bg):] + bg[len(fg):]
    return [(float(x1 + c + 0.5), float(y1 + r + 0.5)) for r, c in ordered[:most]]


def draw_marker(view: np.ndarray, point) -> np.ndarray:
    """A copy of ``view`` with a marker at ``point`` (x, y): a red ring, a white dot in its centre."""
    out = view.copy()
    h, w = view.shape[:2]
    radius = max(4, round(min(h, w) / 40))
    centre = (int(round(point[0])), int(round(point[1])))
    cv2.circle(out, centre, radius, MARKER_COLOR, max(2, radius // 3), cv2.LINE_AA)
    cv2.circle(out, centre, max(1, radius // 4), (255, 255, 255), -1, cv2.LINE_AA)
    return out


@dataclass
class PointVotes:
    """The points asked so far and their confidences P(yes); the choice of prompts from them."""

    threshold: float
    points: list[tuple[float, float]] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)

    def add(self, points, confidences) -> None:
        if len(points) != len(confidences):
            raise ValueError(f"{len(points)} points got {len(confidences)} confidences; answer one per point")
        for c in confidences:
            if not 0.0 <= float(c) <= 1.0:
                raise ValueError(f"confidence {c} is not a probability; answer P(yes) in [0, 1] per point")
        self.points += [tuple(map(float, p)) for p in points]
        self.confidences += [float(c) for c in confidences]

    def positives(self) -> list[int]:
        """Indices of the confident yes answers, most confident first."""
        idx = [i for i, c in enumerate(self.confidences) if c >= self.threshold]
        return sorted(idx, key=lambda i: -self.confidences[i])

    def negatives(self) -> list[int]:
        """Indices of the confident no answers, most confident (lowest P(yes)) first."""
        idx = [i for i, c in enumerate(self.confidences) if c <= 1.0 - self.threshold]
        return sorted(idx, key=lambda i: self.confidences[i])

    @property
    def enough(self) -> bool:
        """The 2+1 early stop: two positives and one negative are known."""
        return len(self.positives()) >= 2 and len(self.negatives()) >= 1

    def chosen(self) -> tuple[list[tuple[float, float]], list[int]]:
        """The best combination: the two most confident positives and the most confident negative, as
        (points, labels 1/0); nothing without a positive (a negative alone does not say where the object is)."""
        pos, neg = self.positives()[:2], self.negatives()[:1]
        if not pos:
            return [], []
        return [self.points[i] for i in pos + neg], [1] * len(pos) + [0] * len(neg)

    def agreement(self) -> float | None:
        """The aggregate confidence of the chosen prompts: the mean of P(yes) over the positives and of
        1 − P(yes) over the negatives (None: nothing chosen)."""
        pos, neg = self.positives()[:2], self.negatives()[:1]
        if not pos:
            return None
        values = [self.confidences[i] for i in pos] + [1.0 - self.confidences[i] for i in neg]
        return float(np.mean(values))

    def as_dict(self) -> dict:
        points, labels = self.chosen()
        agreement = self.agreement()
        return {"points": [[round(x, 2), round(y, 2)] for x, y in self.points],
                "confidences": [round(c, 6) for c in self.confidences],
                "chosen": [[round(x, 2), round(y, 2)] for x, y in points], "labels": labels,
                "agreement": None if agreement is None else round(agreement, 6)}
