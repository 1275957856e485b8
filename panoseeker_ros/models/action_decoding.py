"""The closed action grammar at token level, and the draft trie, for constrained greedy decoding.

:class:`ActionGrammar` is the set of answers in core/actions.py's format that the constrained decoder
may write, character by character (every one parses to the action it spells); :class:`BoxScan` /
:func:`scan_box` follow a ``STOP [x1, y1, x2, y2]`` box as it is written. :class:`TokenConstraint` sees
the grammar through one tokenizer (:func:`token_pieces`): which token ids may follow a partial answer.
:class:`AnswerTrie` is the token trie of how an answer may go on, scored in one forward pass with a
tree attention mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.actions import lattice_moves

BOX_OPEN = "STOP ["  # a search turn's box
REFINE_OPEN = "REFINE ["  # a review turn's box


# ---------------------------------------------------------------------------------------------
# The action grammar, character by character.


def _spellings(value: float) -> list[str]:
    """Ways to write one move component that parse_action reads back as ``value``."""
    v = int(value)
    if v == 0:
        return ["0"]
    if v == 180:
        return ["+180", "180", "-180"]
    return [f"{v:+d}"] + ([] if v < 0 else [str(v)])


def _number_prefix_ok(digits: str, lo: int, hi: int) -> bool:
    """Can ``digits`` be extended to a decimal integer in [lo, hi] written without leading zeros?"""
    if not digits:
        return lo <= hi
    if digits[0] == "0":
        return digits == "0" and lo <= 0
    value = int(digits)
    for extra in range(0, 5 - len(digits)):
        low, high = value * 10 ** extra, value * 10 ** extra + 10 ** extra - 1
        if low <= hi and high >= lo:
            return True
    return False


def _number_ok(digits: str, lo: int, hi: int) -> bool:
    return bool(digits) and (digits == "0" or digits[0] != "0") and lo <= int(digits) <= hi


@dataclass(frozen=True)
class BoxScan:
    """Where the text after ``STOP [`` stands in 'x1, y1, x2, y2]' (integers, 0 <= x1 < x2 <= 1000, same for y).

    ``open_field``: (digits so far, lowest and highest value allowed, separator after it) when the text
    ends inside a number."""

    viable: bool
    complete: bool = False
    open_field: tuple[str, int, int, str] | None = None


def scan_box(rest: str) -> BoxScan:
    nums: list[int] = []
    i = 0
    for k in range(4):
        lo, hi = (nums[k - 2] + 1 if k >= 2 else 0), (999 if k < 2 else 1000)
        sep = ", " if k < 3 else "]"
        j = i
        while j < len(rest) and rest[j] in "0123456789":
            j += 1
        digits = rest[i:j]
        if j == len(rest):
            ok = _number_prefix_ok(digits, lo, hi)
            return BoxScan(ok, open_field=(digits, lo, hi, sep) if ok else None)
        if not _number_ok(digits, lo, hi):
            return BoxScan(False)
        tail = rest[j:j + len(sep)]
        if tail != sep:  # a separator cut short by the end of the text is still viable
            return BoxScan(j + len(tail) == len(rest) and sep.startswith(tail))
        nums.append(int(digits))
        i = j + len(sep)
    return BoxScan(i == len(rest), i == len(rest))


def number_completions(digits: str, lo: int, hi: int) -> list[str]:
    """Every digit string that completes ``digits`` into an integer in [lo, hi] without leading zeros."""
    out = []
    for extra in range(0, 5 - len(digits)):
        for v in range(10 ** extra):
            tail = str(v).zfill(extra) if extra else ""
            if _number_ok(digits + tail, lo, hi):
                out.append(tail)
    return out


class ActionGrammar:
    """The answers the constrained decoder may write on a ``turn`` (every one parses to the action it
    spells, with core.actions.parse_action(text, turn)).

    * ``MOVE a b`` for every lattice move, each component signed (``+30``) or, when positive, unsigned
      (``30``); 0 as ``0``; 180 also as ``-180``; single spaces.
    * search: ``STOP``, and ``STOP [x1, y1, x2, y2]`` with integers 0..1000 without leading zeros, x1 < x2,
      y1 < y2; review: ``ACCEPT``, and ``REFINE [x1, y1, x2, y2]`` with the same box.
    """

    def __init__(self, turn: str = "search"):
        if turn not in ("search", "review"):
            raise ValueError(f"unknown turn {turn!r}; use search or review")
        self.turn = turn
        self.box_open = BOX_OPEN if turn == "search" else REFINE_OPEN
        words = {"STOP" if turn == "search" else "ACCEPT"}
        for move in lattice_moves():
            for a in _spellings(move.dtheta):
                for b in _spellings(move.dphi):
                    words.add(f"MOVE {a} {b}")
        self.words = frozenset(words)
        stems = words | {self.box_open}
        self._prefixes = frozenset(w[:i] for w in stems for i in range(len(w) + 1))
        self._proper_prefixes = frozenset(w[:i] for w in stems for i in range(len(w)))
        self.alphabet = frozenset("".join(stems) + "0123456789, ]")

    def viable(self, text: str) -> bool:
        """Is ``text`` a prefix of some answer?"""
        if text in self._prefixes:
            return True
        return text.startswith(self.box_open) and scan_box(text[len(self.box_open):]).viable

    def complete(self, text: str) -> bool:
        """Is ``text`` a whole answer?"""
        if text in self.words:
            return True
        return text.startswith(self.box_open) and scan_box(text[len(self.box_open):]).complete

    def extendable(self, text: str) -> bool:
        """Is ``text`` a proper prefix of some answer (could the answer go on)?"""
        if text in self._proper_prefixes:
            return True
        if not text.startswith(self.box_open):
            return False
        scan = scan_box(text[len(self.box_open):])
        return scan.viable and not scan.complete


# ---------------------------------------------------------------------------------------------
# The grammar through a tokenizer.


def bytes_to_unicode() -> dict[int, str]:
    """The byte ↔ printable-character map of byte-level BPE vocabularies (GPT-2, Qwen)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def token_pieces(tokenizer) -> list[str | None]:
    """The text each token id adds to an answer; None for special/added tokens and partial UTF-8 bytes."""
    size = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    skip = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    decoder = {c: b for b, c in bytes_to_unicode().items()}
    pieces: list[str | None] = []
    failed = 0
    for i, tok in enumerate(tokens):
        if tok is None or i in skip:
            pieces.append(None)
            continue
        try:
            pieces.append(bytes(decoder[c] for c in tok).decode("utf-8"))
        except (KeyError, UnicodeDecodeError):
            pieces.append(None)
            failed += 1
    if failed > size // 2:  # not a byte-level vocabulary: ask the tokenizer token by token
        pieces = [None if i in skip else tokenizer.decode([i]) for i in range(size)]
    return pieces


class TokenConstraint:
    """The grammar seen through one tokenizer: which token ids may follow a partial answer."""

    def __init__(self, grammar: ActionGrammar, pieces: list[str | None], eos_ids, device):
        self.grammar = grammar
        self.pieces = pieces
        self.eos_ids = sorted(set(int(i) for i in eos_ids))
        self.device = device
        self._by_first: dict[str, list[tuple[int, str]]] = {}
        for i, piece in enumerate(pieces):
            if piece and set(piece) <= grammar.alphabet:
                self._by_first.setdefault(piece[0], []).append((i, piece))
        self._cache: dict[str, tuple[list[int], torch.Tensor]] = {}

    def text_of(self, token_ids) -> str:
        return "".join(self.pieces[int(t)] or "" for t in token_ids)

    def allowed(self, text: str) -> tuple[list[int], torch.Tensor]:
        """Sorted ids allowed after ``text`` (with the end tokens when ``text`` is complete): a list and a tensor."""
        hit = self._cache.get(text)
        if hit is None:
            g = self.grammar
            ids = [i for first, items in self._by_first.items() if g.viable(text + first)
                   for i, piece in items if g.viable(text + piece)]
            if g.complete(text):
                ids += self.eos_ids
            ids.sort()
            if len(self._cache) > 20000:
                self._cache.clear()
            hit = self._cache[text] = (ids, torch.tensor(ids, dtype=torch.long, device=self.device))
        return hit


@dataclass
class AnswerTrie:
    """A token trie scored in one forward pass: the draft of how an answer may go on.

    Nodes are in breadth-first order; ``depth`` is 1 for the root tokens.
    ``visible`` (N, N) bool: node i attends to node j when j is i or one of its ancestors.
    """

    tokens: list[int]
    parents: list[int]
    depth: list[int]
    children: dict[tuple[int, int], int]
    visible: torch.Tensor

    @classmethod
    def build(cls, sequences: list[list[int]], device) -> "AnswerTrie":
        children: dict[tuple[int, int], int] = {}
        tokens, parents, depth = [], [], []
        frontier = [(-1, seq) for seq in sequences]
        level = 0
        while frontier:  # breadth first
            level += 1
            nxt = []
            for parent, seq in frontier:
                if not seq:
                    continue
                key = (parent, int(seq[0]))
                if key not in children:
                    children[key] = len(tokens)
                    tokens.append(int(seq[0]))
                    parents.append(parent)
                    depth.append(level)
                nxt.append((children[key], seq[1:]))
            frontier = nxt
        n = len(tokens)
        visible = np.eye(n, dtype=bool)
        for i in range(n):  # breadth-first order: a parent's row is complete before its children's
            if parents[i] >= 0:
                visible[i] |= visible[parents[i]]
        return cls(tokens, parents, depth, children, torch.from_numpy(visible).to(device))

    def child(self, node: int, token: int) -> int | None:
        return self.children.get((node, token))
