"""How stale the node's chain view is, measured against wall-clock time, never against the RPC's head.

Invariant: :meth:`FreshnessClock.check` reports stale when the view's lag exceeds ``max_staleness`` seconds,
or when nothing was ever observed. The lag is the larger of
- this machine's clock minus the timestamp of the newest block the follower verified (``observe``), and
- this machine's clock minus when the view last advanced to a new block (so a chain whose clock runs ahead
  of ours, like a devnet after timelock warps, still goes stale when it stops).
A frozen, hung or lying-about-its-head RPC therefore makes the view stale on its own; no RPC answer is
needed to notice. When the view stalls because the RPC endpoints disagree (``unverified``, set by the node
from its follower), a stale view is refused as ``chain_unverified`` instead of ``chain_stale``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from derot.errors import DerotError


class ChainStale(DerotError):
    """The node's view of the registry is older than its configured maximum staleness."""

    reason = "chain_stale"


class ChainUnverifiedStale(ChainStale):
    """Stale because the node's RPC endpoints disagree about the chain (no quorum at the confirmed height)."""

    reason = "chain_unverified"


@dataclass(frozen=True)
class Freshness:
    block_number: int | None
    block_timestamp: int | None
    lag_seconds: float | None  # wall clock minus the block's timestamp (None: no block observed yet)
    max_staleness: float

    @property
    def stale(self) -> bool:
        return self.lag_seconds is None or self.lag_seconds > self.max_staleness


class FreshnessClock:
    """Remembers the newest verified block and answers whether the view is still fresh."""

    def __init__(self, max_staleness: float, *, clock: Callable[[], float] = time.time) -> None:
        if max_staleness <= 0:
            raise ValueError("max_staleness must be positive")
        self.max_staleness = float(max_staleness)
        self._clock = clock
        self._block: tuple[int, int, float] | None = None  # number, timestamp, when the view advanced to it
        #: true while the follower's last poll failed because the endpoints disagreed (chain_unverified)
        self.unverified = False

    def observe(self, block_number: int, block_timestamp: int) -> None:
        """The follower verified ``block_number`` (its state now reflects it)."""
        number = int(block_number)
        if self._block is None or self._block[0] != number:
            self._block = (number, int(block_timestamp), self._clock())

    def status(self) -> Freshness:
        if self._block is None:
            return Freshness(None, None, None, self.max_staleness)
        number, timestamp, advanced_at = self._block
        now = self._clock()
        lag = max(0.0, now - timestamp, now - advanced_at)
        return Freshness(number, timestamp, lag, self.max_staleness)

    def check(self) -> Freshness:
        """The current freshness; raises :class:`ChainStale` when stale."""
        status = self.status()
        if status.stale:
            error = ChainUnverifiedStale if self.unverified else ChainStale
            why = "; the RPC endpoints disagree" if self.unverified else ""
            if status.lag_seconds is None:
                raise error(f"no verified chain state yet{why}")
            raise error(f"chain view is {status.lag_seconds:.0f}s old (block {status.block_number}); "
                             f"the maximum is {self.max_staleness:.0f}s{why}")
        return status
