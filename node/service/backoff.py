"""Per-key retry schedules: the delay doubles from ``first`` up to ``cap`` with each failure and clears on success."""

from __future__ import annotations

import time
from collections.abc import Hashable


class BackOff:
    """When each key (a peer, a registrant) may be tried again. Invariant: a key never failed, or that succeeded
    since, is due at once."""

    def __init__(self, first: float, cap: float) -> None:
        self.first, self.cap = first, cap
        self._at: dict[Hashable, tuple[float, float]] = {}  # key -> (next attempt, last delay)

    def next_attempt(self, key: Hashable) -> float:
        """Monotonic time from which ``key`` may be tried (0 if it is due)."""
        return self._at.get(key, (0.0, 0.0))[0]

    def due(self, key: Hashable) -> bool:
        return time.monotonic() >= self.next_attempt(key)

    def failed(self, key: Hashable) -> float:
        """Record a failure; the delay before the next attempt."""
        delay = min(self._at.get(key, (0.0, self.first / 2))[1] * 2, self.cap)
        self._at[key] = (time.monotonic() + delay, delay)
        return delay

    def succeeded(self, key: Hashable) -> None:
        self._at.pop(key, None)
