"""The instruction message's form, shared by the policy node and the bag reader (no ROS here).

An instruction is plain text or JSON ``{"id": "...", "instruction": "..."}``; the id comes back in
every status, feedback line and result of the search it starts.
"""
from __future__ import annotations

import json


class InstructionError(ValueError):
    """An instruction message that cannot start a search; ``id`` is its id when it had one."""

    def __init__(self, message: str, rid: str | None = None):
        super().__init__(message)
        self.id = rid


def parse_instruction(text: str) -> tuple[str | None, str]:
    """An instruction message → (id, instruction): JSON ``{"id": ..., "instruction": ...}`` or plain text
    (id None). Raises :class:`InstructionError` (one line) for a JSON object without a text instruction."""
    payload = json_object(text) if text.lstrip().startswith("{") else None
    if payload is None:
        return None, text
    rid = None if payload.get("id") is None else str(payload["id"])
    words = payload.get("instruction")
    if not isinstance(words, str):
        raise InstructionError('the JSON instruction has no "instruction" text; send {"id": "...", '
                               '"instruction": "the chair next to the bed"} or plain text', rid)
    return rid, words


def json_object(text: str) -> dict | None:
    """A JSON object's value, or None when the text is not a JSON object (statuses, results, instructions)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None
