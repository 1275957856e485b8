"""Exact-stamp matching of messages from several topics (what message_filters' TimeSynchronizer does,
without the dependency): a view, its pose and its canvas share one header stamp by construction."""
from __future__ import annotations

import threading
from typing import Callable

from .conversions import stamp_ns


class ExactTimeSync:
    """Calls ``callback(stamp_ns, msg_0, …, msg_n-1)`` once all inputs have a message with the same stamp.

    Only the newest ``depth`` incomplete stamps are kept; once a stamp completes, older ones are dropped
    (they can no longer be the newest observation). Thread-safe; the callback runs outside the lock.
    """

    def __init__(self, n_inputs: int, callback: Callable, depth: int = 4):
        self.n = int(n_inputs)
        self.callback = callback
        self.depth = int(depth)
        self._pending: dict[int, list] = {}
        self._lock = threading.Lock()

    def add(self, index: int, msg) -> None:
        key = stamp_ns(msg.header.stamp)
        with self._lock:
            slot = self._pending.setdefault(key, [None] * self.n)
            slot[index] = msg
            if any(m is None for m in slot):
                for old in sorted(self._pending)[:-self.depth]:
                    del self._pending[old]
                return
            for old in [k for k in self._pending if k <= key]:
                del self._pending[old]
        self.callback(key, *slot)

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()
