"""The action space and the one text format the policy reads and writes.

Grammar (case-insensitive, first match in the text wins, surrounding words are ignored)::

    MOVE <dθ> <dϕ>             e.g.  MOVE +30 -30     (degrees; + turns right / tilts up)
    STOP [x1, y1, x2, y2]      e.g.  STOP [412, 380, 590, 720]   (box on the current view, 0–1000)
    STOP                       give up: no target found

Δθ ∈ {0, ±30, ±60, ±120, 180} (−180 is read as 180), Δϕ ∈ {0, ±30, ±60, ±90}; MOVE 0 0 is not an action.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

DTHETA_VALUES = (0, 30, -30, 60, -60, 120, -120, 180)
DPHI_VALUES = (0, 30, -30, 60, -60, 90, -90)
BOX_SCALE = 1000  # Qwen-VL style normalised box coordinates


@dataclass(frozen=True)
class Action:
    """A relative move in degrees, or STOP with an optional box (x1, y1, x2, y2) in 0–1000 view units."""

    dtheta: float = 0.0
    dphi: float = 0.0
    stop: bool = False
    box: tuple[int, int, int, int] | None = None

    @classmethod
    def move(cls, dtheta: float, dphi: float) -> "Action":
        return cls(float(dtheta), float(dphi))

    @classmethod
    def stop_at(cls, box=None) -> "Action":
        return cls(stop=True, box=None if box is None else tuple(int(round(b)) for b in box))

    def to_text(self) -> str:
        return format_action(self)

    def as_dict(self) -> dict:
        return {"dtheta": self.dtheta, "dphi": self.dphi, "stop": self.stop,
                "box": list(self.box) if self.box else None}


def lattice_moves() -> list[Action]:
    """Every legal MOVE (the closed action set without STOP), in a fixed order."""
    return [Action.move(dt, dp) for dt in DTHETA_VALUES for dp in DPHI_VALUES if (dt, dp) != (0, 0)]


def _signed(v: float) -> str:
    return f"{int(v):+d}" if v else "0"


def format_action(action: Action) -> str:
    if action.stop:
        return "STOP" if action.box is None else "STOP [" + ", ".join(str(int(b)) for b in action.box) + "]"
    return f"MOVE {_signed(action.dtheta)} {_signed(action.dphi)}"


@dataclass(frozen=True)
class ParseResult:
    """Outcome of :func:`parse_action`: exactly one of ``action`` and ``error`` is set."""

    action: Action | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.action is not None


_NUM = r"([+-]?\d+(?:\.\d+)?)"
_MOVE = re.compile(r"\bMOVE\s*\(?\s*" + _NUM + r"\s*[, ]\s*" + _NUM, re.IGNORECASE)
_STOP = re.compile(r"\bSTOP\b(?:\s*[\[(]\s*" + r"\s*,\s*".join([_NUM] * 4) + r"\s*[\])])?", re.IGNORECASE)


def parse_action(text) -> ParseResult:
    """Turn any string into an action, or a ParseResult with a one-line error. Never raises."""
    if not isinstance(text, str):
        return ParseResult(None, f"expected text, got {type(text).__name__}")
    move, stop = _MOVE.search(text), _STOP.search(text)
    if move and (not stop or move.start() < stop.start()):
        dt, dp = float(move.group(1)), float(move.group(2))
        if dt == -180:
            dt = 180.0
        if dt not in DTHETA_VALUES:
            return ParseResult(None, f"dθ={move.group(1)} is not one of {sorted(set(DTHETA_VALUES))}")
        if dp not in DPHI_VALUES:
            return ParseResult(None, f"dϕ={move.group(2)} is not one of {sorted(DPHI_VALUES)}")
        if dt == 0 and dp == 0:
            return ParseResult(None, "MOVE 0 0 does not move; answer another move or STOP")
        return ParseResult(Action.move(dt, dp))
    if stop:
        if stop.group(1) is None:
            return ParseResult(Action.stop_at(None))
        box = [float(stop.group(i)) for i in range(1, 5)]
        x1, y1, x2, y2 = box
        if not all(0 <= b <= BOX_SCALE for b in box):
            return ParseResult(None, f"box {box} must lie within 0..{BOX_SCALE}")
        if x2 <= x1 or y2 <= y1:
            return ParseResult(None, f"box {box} is empty: need x1 < x2 and y1 < y2")
        return ParseResult(Action.stop_at(box))
    shown = text.strip().replace("\n", " ")
    shown = shown[:60] + ("…" if len(shown) > 60 else "")
    return ParseResult(None, f"no action in {shown!r}: expected 'MOVE <dθ> <dϕ>' or 'STOP [x1, y1, x2, y2]'")


def box_to_pixels(box, width: int, height: int) -> tuple[float, float, float, float]:
    """0–1000 normalised box → pixel box (x1, y1, x2, y2) on a width×height view."""
    x1, y1, x2, y2 = box
    return (x1 * width / BOX_SCALE, y1 * height / BOX_SCALE, x2 * width / BOX_SCALE, y2 * height / BOX_SCALE)


def pixels_to_box(box_px, width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel box → 0–1000 normalised integer box, clipped to the view."""
    x1, y1, x2, y2 = box_px
    f = lambda v, size: int(min(BOX_SCALE, max(0, round(v * BOX_SCALE / size))))  # noqa: E731
    return f(x1, width), f(y1, height), f(x2, width), f(y2, height)
