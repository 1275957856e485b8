"""Bounds on what the graph accepts from the outside: a token-bucket rate limit and a bounded set of keys
(for "logged once" bookkeeping whose keys may come from messages)."""
from __future__ import annotations

import threading
from collections import OrderedDict


class RateLimit:
    """At most ``per_s`` events per second on average, bursts up to ``burst`` (default two seconds' worth).
    ``allow(now)`` [s, monotonic] says whether one more event may pass and counts it; thread-safe."""

    def __init__(self, per_s: float, burst: float | None = None):
        if per_s <= 0:
            raise ValueError(f"a rate limit must be positive, got {per_s}")
        self.per_s = float(per_s)
        self.burst = float(burst if burst is not None else 2.0 * per_s)
        self._tokens = self.burst
        self._t: float | None = None
        self._lock = threading.Lock()
        self.refused = 0  # events refused so far

    def allow(self, now: float) -> bool:
        with self._lock:
            if self._t is not None:
                self._tokens = min(self.burst, self._tokens + (now - self._t) * self.per_s)
            self._t = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            self.refused += 1
            return False


class BoundedSet:
    """A set that remembers at most ``limit`` keys, forgetting the oldest first: memory stays bounded
    whatever keys arrive. ``add(key)`` says whether the key was new."""

    def __init__(self, limit: int = 256):
        self.limit = limit
        self._keys: OrderedDict = OrderedDict()

    def add(self, key) -> bool:
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self.limit:
            self._keys.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key) -> bool:
        return key in self._keys
