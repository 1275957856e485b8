"""The instruction message's form, shared by the policy node and the bag reader (no ROS here).

An instruction is plain text or JSON ``{"id": "...", "instruction": "..."}``; the id comes back in
every status, feedback line and result of the search it starts. An instruction is at most
:data:`MAX_INSTRUCTION_CHARS` characters; chat-template special tokens (``<|im_start|>`` …) and control
characters are removed before it can reach a prompt; statuses echo at most :data:`ECHO_CHARS` of it.
"""
from __future__ import annotations

import json
import re

MAX_INSTRUCTION_CHARS = 512  # a referring expression is a sentence; longer text is refused, not cut
MAX_ID_CHARS = 128  # an instruction id longer than this is cut (it is echoed in every status)
ECHO_CHARS = 160  # statuses carry at most this much of an instruction (or of a refused message)
_SPECIAL_TOKEN = re.compile(r"<\|[^<>|]{0,64}\|>")  # Qwen / ChatML style: <|im_start|>, <|vision_start|> ...
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class InstructionError(ValueError):
    """An instruction message that cannot start a search; ``id`` is its id when it had one."""

    def __init__(self, message: str, rid: str | None = None):
        super().__init__(message)
        self.id = rid


def parse_instruction(text: str) -> tuple[str | None, str]:
    """An instruction message → (id, instruction): JSON ``{"id": ..., "instruction": ...}`` or plain text
    (id None), the instruction as :func:`plain_text`. Raises :class:`InstructionError` (one line) for a JSON
    object without a text instruction and for an instruction longer than :data:`MAX_INSTRUCTION_CHARS`."""
    payload = json_object(text) if text.lstrip().startswith("{") else None
    rid, words = None, text
    if payload is not None:
        rid = None if payload.get("id") is None else str(payload["id"])[:MAX_ID_CHARS]
        words = payload.get("instruction")
        if not isinstance(words, str):
            raise InstructionError('the JSON instruction has no "instruction" text; send {"id": "...", '
                                   '"instruction": "the chair next to the bed"} or plain text', rid)
    if len(words) > MAX_INSTRUCTION_CHARS:
        raise InstructionError(f"the instruction is {len(words)} characters long; at most {MAX_INSTRUCTION_CHARS} "
                               f"are accepted: describe the object in one sentence", rid)
    return rid, plain_text(words)


def plain_text(text: str) -> str:
    """``text`` without chat-template special tokens and control characters (removed until none is left, so
    pieces cannot join into a new token); what an instruction may bring into a prompt."""
    while True:
        cleaned = _CONTROL.sub(" ", _SPECIAL_TOKEN.sub("", text))
        if cleaned == text:
            return text
        text = cleaned


def echo(text, limit: int = ECHO_CHARS):
    """A copy of ``text`` short enough to echo in a status (None stays None)."""
    if text is None or len(text) <= limit:
        return text
    return text[:limit - 1] + "…"


def json_object(text: str) -> dict | None:
    """A JSON object's value, or None when the text is not a JSON object (statuses, results, instructions)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None
