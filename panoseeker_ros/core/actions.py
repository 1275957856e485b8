"""The action space and the one text format the policy reads and writes.

Grammar (case-insensitive, first match in the text wins, surrounding words are ignored)::

    MOVE <dθ> <dϕ>             e.g.  MOVE +30 -30     (degrees; + turns right / tilts up)
    STOP [x1, y1, x2, y2]      e.g.  STOP [412, 380, 590, 720]   (box on the current view, 0–1000)
    STOP                       give up: no target found
    ACCEPT                     review turn: the mask shown is the target
    REFINE [x1, y1, x2, y2]    review turn: segment this box instead (same view, 0–1000)

A search turn answers MOVE or STOP; a review turn (after a mask, see core/episode.py) answers ACCEPT,
REFINE or MOVE (the target is elsewhere: the search goes on). Δθ ∈ {0, ±30, ±60, ±120, 180} (−180 is
read as 180), Δϕ ∈ {0, ±30, ±60, ±90}; MOVE 0 0 is not an action.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

DTHETA_VALUES = (0, 30, -30, 60, -60, 120, -120, 180)
DPHI_VALUES = (0, 30, -30, 60, -60, 90, -90)
BOX_SCALE = 1000  # Qwen-VL style normalised box coordinates
TURNS = ("search", "review")  # which answers a turn takes (module docstring)


@dataclass(frozen=True)
class Action:
    """A relative move in degrees, or STOP with an optional box (x1, y1, x2, y2) in 0–1000 view units; on a
    review turn also ACCEPT (``accept``) or REFINE with a box (``refine``)."""

    dtheta: float = 0.0
    dphi: float = 0.0
    stop: bool = False
    box: tuple[int, int, int, int] | None = None
    accept: bool = False
    refine: bool = False

    @classmethod
    def move(cls, dtheta: float, dphi: float) -> "Action":
        return cls(float(dtheta), float(dphi))

    @classmethod
    def stop_at(cls, box=None) -> "Action":
        return cls(stop=True, box=None if box is None else tuple(int(round(b)) for b in box))

    @classmethod
    def accept_mask(cls) -> "Action":
        return cls(accept=True)

    @classmethod
    def refine_to(cls, box) -> "Action":
        return cls(refine=True, box=tuple(int(round(b)) for b in box))

    @property
    def is_move(self) -> bool:
        return not (self.stop or self.accept or self.refine)

    def to_text(self) -> str:
        return format_action(self)

    def as_dict(self) -> dict:
        return {"dtheta": self.dtheta, "dphi": self.dphi, "stop": self.stop,
                "box": list(self.box) if self.box else None, "accept": self.accept, "refine": self.refine}


def lattice_moves() -> list[Action]:
    """Every legal MOVE (the closed action set without STOP), in a fixed order."""
    return [Action.move(dt, dp) for dt in DTHETA_VALUES for dp in DPHI_VALUES if (dt, dp) != (0, 0)]


def _signed(v: float) -> str:
    return f"{int(v):+d}" if v else "0"


def _box_text(box) -> str:
    return "[" + ", ".join(str(int(b)) for b in box) + "]"


def format_action(action: Action) -> str:
    if action.accept:
        return "ACCEPT"
    if action.refine:
        return "REFINE " + _box_text(action.box)
    if action.stop:
        return "STOP" if action.box is None else "STOP " + _box_text(action.box)
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
_BOX = r"(?:\s*[\[(]\s*" + r"\s*,\s*".join([_NUM] * 4) + r"\s*[\])])?"
_STOP = re.compile(r"\bSTOP\b" + _BOX, re.IGNORECASE)
_ACCEPT = re.compile(r"\bACCEPT\b", re.IGNORECASE)
_REFINE = re.compile(r"\bREFINE\b" + _BOX, re.IGNORECASE)
_EXPECTED = {"search": "'MOVE <dθ> <dϕ>' or 'STOP [x1, y1, x2, y2]'",
             "review": "'ACCEPT', 'REFINE [x1, y1, x2, y2]' or 'MOVE <dθ> <dϕ>'"}


def _parse_box(match, word: str):
    """The 0–1000 box of a STOP / REFINE match: (box, None), (None, None) without one, or (None, error)."""
    if match.group(1) is None:
        return None, None
    box = [float(match.group(i)) for i in range(1, 5)]
    x1, y1, x2, y2 = box
    if not all(0 <= b <= BOX_SCALE for b in box):
        return None, f"{word} box {box} must lie within 0..{BOX_SCALE}"
    if x2 <= x1 or y2 <= y1:
        return None, f"{word} box {box} is empty: need x1 < x2 and y1 < y2"
    return box, None


def parse_action(text, turn: str = "search") -> ParseResult:
    """Turn any string into an action of a ``turn`` (search | review), or a ParseResult with a one-line
    error. Never raises."""
    if turn not in TURNS:
        return ParseResult(None, f"unknown turn {turn!r}; use one of {', '.join(TURNS)}")
    if not isinstance(text, str):
        return ParseResult(None, f"expected text, got {type(text).__name__}")
    found = [(m.start(), word, m) for word, rx in (("MOVE", _MOVE), ("STOP", _STOP), ("ACCEPT", _ACCEPT),
                                                   ("REFINE", _REFINE)) if (m := rx.search(text))]
    word, match = min(found, key=lambda f: f[0])[1:] if found else (None, None)
    if word in ("ACCEPT", "REFINE") and turn == "search":
        return ParseResult(None, f"{word} answers a review turn; a search turn answers {_EXPECTED['search']}")
    if word == "STOP" and turn == "review":
        return ParseResult(None, f"STOP answers a search turn; a review turn answers {_EXPECTED['review']}")
    if word == "ACCEPT":
        return ParseResult(Action.accept_mask())
    if word == "REFINE":
        box, error = _parse_box(match, "REFINE")
        if box is None:
            return ParseResult(None, error or "REFINE needs a box: 'REFINE [x1, y1, x2, y2]' in 0-1000 view units")
        return ParseResult(Action.refine_to(box))
    move, stop = (match, None) if word == "MOVE" else (None, match)
    if move:
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
        box, error = _parse_box(stop, "STOP")
        return ParseResult(None, error) if error else ParseResult(Action.stop_at(box))
    shown = text.strip().replace("\n", " ")
    shown = shown[:60] + ("…" if len(shown) > 60 else "")
    return ParseResult(None, f"no action in {shown!r}: expected {_EXPECTED[turn]}")


def box_to_pixels(box, width: int, height: int) -> tuple[float, float, float, float]:
    """0–1000 normalised box → pixel box (x1, y1, x2, y2) on a width×height view."""
    x1, y1, x2, y2 = box
    return (x1 * width / BOX_SCALE, y1 * height / BOX_SCALE, x2 * width / BOX_SCALE, y2 * height / BOX_SCALE)


def pixels_to_box(box_px, width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel box → 0–1000 normalised integer box, clipped to the view."""
    x1, y1, x2, y2 = box_px
    f = lambda v, size: int(min(BOX_SCALE, max(0, round(v * BOX_SCALE / size))))  # noqa: E731
    return f(x1, width), f(y1, height), f(x2, width), f(y2, height)
