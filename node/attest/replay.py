"""Replay cache: each request's report_data is accepted once while its timestamp is within the window.

:class:`ReplayCache` is the in-memory implementation; the node's SQLite store can implement the same
:class:`ReplayStore` protocol so a restart does not reopen the window. Entries expire at the end of
the freshness window, after which :mod:`derot.attest.policy` refuses the request as stale anyway, so
memory stays bounded by the request rate times the window.
"""

from __future__ import annotations

import heapq
import threading
from typing import Protocol


class ReplayStore(Protocol):
    def add_if_absent(self, key: bytes, expires_at: int, now: int) -> bool:
        """Record ``key`` until ``expires_at``; False if it is already recorded and unexpired."""
        ...


class ReplayCache:
    """Thread-safe in-memory :class:`ReplayStore` with a hard size cap (oldest expiry evicted first)."""

    def __init__(self, max_entries: int = 1_000_000):
        self.max_entries = max_entries
        self._expiry: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    def add_if_absent(self, key: bytes, expires_at: int, now: int) -> bool:
        with self._lock:
            self._purge(now)
            current = self._expiry.get(key)
            if current is not None and current >= now:
                return False
            while len(self._expiry) >= self.max_entries and self._heap:
                _, old = heapq.heappop(self._heap)
                self._expiry.pop(old, None)
            self._expiry[key] = expires_at
            heapq.heappush(self._heap, (expires_at, key))
            return True

    def _purge(self, now: int) -> None:
        while self._heap and self._heap[0][0] < now:
            exp, key = heapq.heappop(self._heap)
            if self._expiry.get(key) == exp:
                del self._expiry[key]
