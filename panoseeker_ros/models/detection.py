"""Detectors: find the instruction's target in one view. The interface the baselines search with.

A detector takes the view's pixels, the pose it was taken at and the target phrase of the
instruction (:func:`target_phrase`), and answers the best :class:`Detection` or None. The ``oracle``
detector reads the simulator's ground truth (pose only); ``sam3-text`` reads only the pixels and the
phrase, so it runs on a robot too.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..core.geometry import Pose


@dataclass
class Detection:
    """The best match of a phrase in one view.

    box: (x1, y1, x2, y2) in 0–1000 view coordinates (the action grammar's box); score in [0, 1];
    mask: (H, W) bool view mask when the detector segments (None when it gives a box only).
    """

    box: tuple
    score: float
    mask: np.ndarray | None = None


class Detector(Protocol):
    name: str

    def find(self, view: np.ndarray, pose: Pose, phrase: str) -> Detection | None:
        """The best match of ``phrase`` in ``view`` (H, W, 3) uint8 RGB taken at ``pose``, or None."""
        ...


# Egocentric clauses and fillers around the target noun phrase, and the words that start a relation to
# an anchor object (what follows them names the anchor, not the target).
_LEADING = re.compile(r"^(?:(?:turn\s+(?:right|left|around)|look\s+to\s+your\s+(?:right|left)|look\s+behind\s+you)"
                      r"(?:\s*,)?(?:\s+(?:and|to|for))?\s+)?"
                      r"(?:(?:find|look\s+for|locate|show\s+me|search\s+for|segment)\s+)?")
_TRAILING = re.compile(r"\s+(?:on\s+your\s+(?:right|left)|behind\s+you)$")
_RELATION = re.compile(r"\s+(?:next\s+to|beside|opposite|across\s+from|to\s+the\s+(?:left|right)\s+of|"
                       r"(?:left|right)\s+of|above|below|under|beneath|near|behind|in\s+front\s+of|on|in|at|"
                       r"to|with|by|between)\s+.*$")
_ARTICLE = re.compile(r"^(?:the|a|an)\s+")


def target_phrase(instruction: str) -> str:
    """The noun phrase naming the target, for a text-prompted detector.

    'turn around and find the chair next to the TV' → 'chair'; 'the blue circle on your left' → 'blue
    circle'; 'the glass door to the balcony' → 'glass door'. Falls back to the whole instruction
    (lower case) when nothing is left.
    """
    text = " ".join(instruction.lower().strip().rstrip(".!?").split())
    core = _TRAILING.sub("", _LEADING.sub("", text, count=1))
    core = _ARTICLE.sub("", _RELATION.sub("", core)).strip()
    return core or text
