"""Per-peer latency estimates for the gateway's hedged fan-out (:class:`~derot.service.signing.FanOut`).

A gateway asks the ``t − 1`` peers it knows to be fastest first, and hedges to the next peer when one of them
stays silent for longer than its own estimate allows. :class:`PeerLatency` keeps, per peer, an exponentially
weighted moving average (EWMA) of the round-trip times of completed calls. Pure: no I/O, the clock is injected.

Invariants:
- :meth:`PeerLatency.hedge_after` is ``clamp(estimate × factor, floor, cap)`` for a known peer and ``initial``
  for an unknown one, so a peer that answered fast and then stalls holds a request for at most its own
  (short) hedge delay, and no peer, whatever it answered before, can push its hedge delay past ``cap``.
- A peer is unknown until its first sample, and again once its last sample is older than ``ttl``: unknown
  peers are ordered first, so every peer is measured (probed) on its own once per ``ttl``, and a peer that
  was slow or demoted once is not shunned forever.
- A call abandoned without an answer only raises an estimate (it is a lower bound), and only when it was
  overdue: a call cancelled because ``t`` others already answered says nothing about its peer.
- :meth:`PeerLatency.penalize` (a transport failure, a share that failed verification) sets the estimate to
  ``cap``: a lying-fast peer is asked last until its sample ages out.
- :class:`HedgeBudget`: early hedges (before ``cap``) are at most ``budget`` per fan-out in the long run, plus a
  burst of ``burst``. On a saturated gateway every round trip stretches, so estimate-based hedges would fire
  on many requests and add load exactly when there is none to spare; past the budget a silent peer is hedged
  at ``cap``, so a hung peer still costs a request at most ``cap``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class HedgePolicy:
    initial: float = 0.05  # seconds: the hedge delay of a peer with no (fresh) estimate
    factor: float = 2.0  # a known peer is hedged after estimate × factor ...
    floor: float = 0.01  # ... but never sooner than this (a loaded gateway's own scheduling jitter)
    cap: float = 0.5  # ... and never later than this
    alpha: float = 0.2  # weight of a new sample in the moving average
    resolution: float = 0.005  # estimates this close count as equally fast (then: round robin)
    ttl: float = 30.0  # seconds after which a peer's last sample no longer counts
    budget: float = 0.1  # early hedges per fan-out, in the long run (HedgeBudget)
    burst: float = 10.0  # early hedges that may happen at once

    def __post_init__(self) -> None:
        if not (0 < self.floor <= self.cap and self.initial > 0 and self.factor >= 1 and 0 < self.alpha <= 1
                and self.resolution > 0 and self.ttl > 0 and 0 <= self.budget <= 1 and self.burst >= 1):
            raise ValueError(f"inconsistent hedge policy: {self}")


@dataclass
class _Estimate:
    seconds: float
    at: float  # clock time of the last sample


class PeerLatency:
    """Round-trip estimates per peer key (a member index, an operator, ...)."""

    def __init__(self, policy: HedgePolicy | None = None, *, clock: Callable[[], float] = time.monotonic):
        self.policy = policy or HedgePolicy()
        self._clock = clock
        self._estimates: dict[Hashable, _Estimate] = {}

    def estimate(self, peer: Hashable) -> float | None:
        """The peer's current round-trip estimate in seconds; None while unknown (no fresh sample)."""
        entry = self._estimates.get(peer)
        if entry is None or self._clock() - entry.at > self.policy.ttl:
            return None
        return entry.seconds

    def hedge_after(self, peer: Hashable) -> float:
        """Seconds to wait on ``peer`` before asking the next one as well."""
        p = self.policy
        estimate = self.estimate(peer)
        if estimate is None:
            return p.initial
        return min(p.cap, max(p.floor, estimate * p.factor))

    def order(self, peers: Sequence[Hashable]) -> list[Hashable]:
        """``peers`` by preference: unknown ones first (to measure them), then fastest first. Peers within
        ``resolution`` of each other keep their given order, so a caller that rotates ``peers`` spreads the
        load over equally fast peers."""
        def rank(peer):
            estimate = self.estimate(peer)
            return (0, 0) if estimate is None else (1, int(estimate / self.policy.resolution))
        return sorted(peers, key=rank)

    def observe(self, peer: Hashable, seconds: float) -> None:
        """A call to ``peer`` completed (with any answer) after ``seconds``."""
        seconds = max(0.0, seconds)
        now, previous = self._clock(), self.estimate(peer)
        value = seconds if previous is None else previous + self.policy.alpha * (seconds - previous)
        self._estimates[peer] = _Estimate(value, now)

    def abandoned(self, peer: Hashable, waited: float) -> None:
        """A call to ``peer`` was cancelled after ``waited`` seconds without an answer."""
        if waited < self.hedge_after(peer):
            return  # not overdue: cancelled because others were faster, which says nothing about this peer
        previous = self.estimate(peer)
        self._estimates[peer] = _Estimate(max(waited, previous or 0.0), self._clock())

    def penalize(self, peer: Hashable) -> None:
        """``peer`` failed (transport) or answered with a share that failed verification: ask it last."""
        self._estimates[peer] = _Estimate(self.policy.cap, self._clock())


class HedgeBudget:
    """A token bucket of early hedges: each fan-out deposits ``budget`` tokens (at most ``burst`` held), each
    early hedge takes one. Pure: no clock."""

    def __init__(self, budget: float, burst: float):
        self.budget, self.burst = budget, burst
        self.tokens = burst

    def deposit(self) -> None:
        """A fan-out started."""
        self.tokens = min(self.burst, self.tokens + self.budget)

    def take(self) -> bool:
        """May a silent peer be hedged now (before ``cap``)? Takes a token if so."""
        if self.tokens < 1 - 1e-9:  # ten deposits of 0.1 make a token, whatever the float rounding
            return False
        self.tokens -= 1
        return True
