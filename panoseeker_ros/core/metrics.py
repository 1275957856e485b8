"""APRS benchmark metrics: SR, AS, SPL and mIoU, overall and per instruction category."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .dataset import CATEGORIES
from .geometry import Pose, pose_distance


@dataclass
class EpisodeOutcome:
    """The numbers the metrics need from one finished episode (distances in degrees)."""

    category: str
    steps: int  # policy decisions, the final STOP included
    shortest_deg: float  # L: great-circle distance from the start to the target centroid
    path_deg: float  # P: sum of great-circle distances between consecutive poses
    final_distance_deg: float  # from the final (aligned) pose to the target centroid
    iou: float  # mask IoU against the ground truth, in ERP pixels

    def success(self, tau_deg: float, iou_threshold: float = 0.5) -> bool:
        return self.final_distance_deg < tau_deg and self.iou >= iou_threshold

    def as_dict(self) -> dict:
        return asdict(self)


def path_length_deg(poses: list[Pose]) -> float:
    return float(sum(pose_distance(a, b) for a, b in zip(poses, poses[1:])))


def mask_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Pixel IoU of two bool masks; 0 when both are empty."""
    union = np.logical_or(pred, truth).sum()
    return float(np.logical_and(pred, truth).sum() / union) if union else 0.0


def box_iou(a, b) -> float:
    """IoU of two (x1, y1, x2, y2) pixel boxes (inclusive-exclusive); 0 when either is None or both are empty."""
    if a is None or b is None:
        return 0.0
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def summarize(outcomes: list[EpisodeOutcome], tau_deg: float, iou_threshold: float = 0.5) -> dict:
    """{'sr', 'as', 'spl', 'miou', 'n', 'per_category': {cat: {...}}}; AS is None without successes."""

    def block(items: list[EpisodeOutcome]) -> dict:
        if not items:
            return {"n": 0, "sr": None, "as": None, "spl": None, "miou": None}
        ok = [o.success(tau_deg, iou_threshold) for o in items]
        spl = [s * o.shortest_deg / max(o.shortest_deg, o.path_deg) if max(o.shortest_deg, o.path_deg) > 0
               else float(s) for s, o in zip(ok, items)]
        steps = [o.steps for s, o in zip(ok, items) if s]
        return {"n": len(items), "sr": float(np.mean(ok)), "as": float(np.mean(steps)) if steps else None,
                "spl": float(np.mean(spl)), "miou": float(np.mean([o.iou if s else 0.0 for s, o in zip(ok, items)]))}

    summary = block(outcomes)
    summary["per_category"] = {c: block([o for o in outcomes if o.category == c]) for c in CATEGORIES}
    return summary


def format_table(summary: dict, title: str = "") -> str:
    """The paper-style table: one row per category and one overall, SR and mIoU in percent."""

    def cell(v, pct=False, digits=2):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "—"
        return f"{100 * v:.1f}" if pct else f"{v:.{digits}f}"

    rows = [(c, summary["per_category"][c]) for c in CATEGORIES] + [("overall", summary)]
    lines = [title] if title else []
    lines.append(f"{'category':<10} {'n':>5} {'SR %':>7} {'AS':>6} {'SPL':>6} {'mIoU %':>7}"
                 + ("  (mIoU box-level: the benchmark files carry no masks)" if summary.get("iou_level") == "box"
                    else ""))
    for name, b in rows:
        lines.append(f"{name:<10} {b['n']:>5} {cell(b['sr'], True):>7} {cell(b['as'], digits=1):>6} "
                     f"{cell(b['spl']):>6} {cell(b['miou'], True):>7}")
    return "\n".join(lines)
