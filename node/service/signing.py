"""The gateway's one fan-out path: ask the committee, collect ``t`` answers, combine, verify.

:meth:`FanOut.collect` is generic over what members answer (key-derivation shares, partial signatures);
:meth:`FanOut.threshold_sign` is *the* threshold-signing path, used by certificate issuance and by feed
notices alike: fan out, combine the first ``t`` partials optimistically, verify the signature under the
group key, and fall back to per-share verification when that fails, so a bad partial among the first
``t`` costs latency, never the signature, while ``t`` good ones exist.

Whom it asks first: the ``t − 1`` peers with the lowest round-trip estimate (:mod:`derot.service.latency`,
learnt from this gateway's own completed calls; equally fast peers in round robin), plus ``extra_peers``;
a peer that stays silent past its own estimate-based hedge delay makes the gateway ask the next one.

The combine is planned (:class:`Linear`, :class:`_Plan`): with no ``extra_peers``, the members asked first
are the set whose answers the optimistic combine expects, so their Lagrange weights are known before any
answer arrives and each answer is weighted on arrival; the gateway's own is made weighted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from derot.chain.state import RegistryState
from derot.crypto import threshold as th
from derot.crypto.bls import G1, PointDecodeError
from derot.crypto.hazmat.poly import lagrange_coefficients  # of public indices: variable time is fine
from derot.net import status
from derot.net.fanout import Collected, collect
from derot.net.peers import PeerInfo
from derot.net.status import Refusal
from derot.service.config import LimitsSection
from derot.service.epoch import EpochKeys
from derot.service.latency import HedgeBudget, HedgePolicy, PeerLatency
from derot.service.metrics import Metrics
from derot.service.peering import Peering, peer_info

T = TypeVar("T")
R = TypeVar("R")

#: event-loop turns the gateway's own answer waits: one for the peer calls' tasks to start, one for the send
#: tasks grpc.aio schedules (a cached channel's call suspends nowhere before that)
_YIELDS_BEFORE_OWN = 2

#: the failure reason of a member whose answer failed decoding or verification
INVALID_SHARE = "invalid_share"
#: refusals that say the peer itself cannot serve now (down, overloaded, lagging, without keys): it is asked
#: last for a while. Refusals about the request (policy, malformed) are answers like any other: an attacker's
#: bad requests must not reorder the peers for everyone
PEER_CANNOT_SERVE = frozenset({status.UNAVAILABLE, status.DEADLINE_EXCEEDED, status.OVERLOADED,
                               status.NO_ACTIVE_EPOCH, status.WRONG_EPOCH, status.NOT_A_MEMBER,
                               status.CHAIN_STALE, status.CHAIN_UNVERIFIED, status.NOT_CONFIRMED,
                               status.INTERNAL})


class FanOut:
    def __init__(self, peering: Peering, metrics: Metrics, limits: LimitsSection):
        self.peering = peering
        self.metrics = metrics
        self.limits = limits
        policy = hedge_policy(limits)
        self.latency = PeerLatency(policy)  # by member operator (indices change per epoch)
        self.hedges = HedgeBudget(policy.budget, policy.burst)
        self._rotation = 0  # among equally fast peers, which a gateway asks first (round robin)

    async def collect(
        self,
        state: RegistryState,
        keys: EpochKeys,
        *,
        own: Callable[[int], T],
        method: str,
        message,
        decode: Callable[[object], T],
        linear: Linear[T],
        every: Callable[[dict[int, T]], tuple[T, tuple[int, ...], tuple[int, ...]]],
    ) -> Collected[T]:
        """Ask every committee member and combine, as a gateway. ``own(weight)`` is this node's answer made
        with its secret share times ``weight`` (1: its plain answer).

        The optimistic combine is ``linear``'s Lagrange sum over the first ``t`` answers, verified by
        ``linear.checker()``'s check; ``every`` is :func:`derot.net.fanout.collect`'s verifying combine. The
        members asked first are the planned set: this node's answer is made weighted, each peer's is weighted as
        it arrives, and the check is made while the peers work, so what is left after the last answer is one
        weighting, a sum and the check."""
        latency = self.latency
        members = peer_info(state, state.committee)
        order = self._order(members, keys.index)
        planned = (keys.index, *order[:keys.threshold - 1]) if self.limits.extra_peers == 0 else ()
        plan = _Plan(linear, planned, keys.index, own)

        async def mine():
            # let the peer calls launched with this one put their requests on the wire first (grpc.aio sends
            # from a task each call schedules), so the peers work while this node computes its own answer
            for _ in range(_YIELDS_BEFORE_OWN):
                await asyncio.sleep(0)
            answer = plan.mine()
            plan.check()  # made now, while the peers work
            return answer

        def remote(index: int, info: PeerInfo):
            async def call():
                started = time.monotonic()
                try:
                    reply = await self.peering.call(info, method, message)
                except Refusal as refusal:
                    if refusal.reason in PEER_CANNOT_SERVE:
                        latency.penalize(info.operator)
                    else:  # the peer answered (with a refusal): a round trip like any other
                        latency.observe(info.operator, time.monotonic() - started)
                    raise
                except asyncio.CancelledError:
                    latency.abandoned(info.operator, time.monotonic() - started)
                    raise
                latency.observe(info.operator, time.monotonic() - started)
                try:
                    return plan.arrived(index, decode(reply))
                except PointDecodeError as exc:
                    self.metrics.shares.labels(str(info.index), "malformed").inc()
                    raise Refusal(INVALID_SHARE, str(exc)) from None
            return call

        calls = {keys.index: mine}
        calls.update({i: remote(i, members[i]) for i in order})
        limits = self.limits

        def hedge_after(index: int) -> float:
            return limits.peer_deadline if index == keys.index else latency.hedge_after(members[index].operator)

        self.hedges.deposit()
        collected = await collect(calls, keys.threshold, plan.first, plan.plain(every),
                                  deadline=limits.peer_deadline, eager=keys.threshold + limits.extra_peers,
                                  hedge_after=hedge_after, may_hedge=self.hedges.take, late_hedge=latency.policy.cap)
        for index, reason in collected.failures.items():
            if reason == INVALID_SHARE:  # a lying (often fast) peer: ask it last from now on
                latency.penalize(members[index].operator)
        for index in collected.used:
            self.metrics.shares.labels(str(index), "accepted").inc()
        for index, reason in collected.failures.items():
            self.metrics.shares.labels(str(index), reason).inc()
        return collected

    def _order(self, members: dict[int, PeerInfo], own_index: int) -> list[int]:
        """The peers in the order this gateway asks them: lowest round-trip estimate first, equally fast
        peers in round robin."""
        peers = [i for i in members if i != own_index]
        self._rotation += 1
        shift = self._rotation % max(1, len(peers))
        rotated = peers[shift:] + peers[:shift]
        by_operator = {members[i].operator: i for i in rotated}
        return [by_operator[op] for op in self.latency.order(list(by_operator))]

    async def threshold_sign(
        self,
        state: RegistryState,
        keys: EpochKeys,
        *,
        digest: bytes,
        dst: bytes,
        own: Callable[[int], G1],
        method: str,
        message,
    ) -> Collected[G1]:
        """A signature over ``digest`` (with ``dst``) under the sig group key, verified before it is returned.

        ``own(weight)`` is this node's partial made with its secret share times ``weight``;
        ``method``/``message`` is the Peer call whose answer carries ``partial_signature``."""

        def every(partials: dict[int, G1]):
            combined = th.combine_verified(partials, keys.threshold, keys.sig.group_key, keys.sig.share_keys,
                                           digest, dst)
            return combined.signature, combined.used, combined.bad

        linear = Linear(weigh=lambda partial, weight: partial * weight, total=G1.sum,
                        checker=lambda: th.SignatureCheck(keys.sig.group_key, digest, dst))
        return await self.collect(
            state, keys, own=own, method=method, message=message,
            decode=lambda reply: G1.from_bytes(reply.partial_signature), linear=linear, every=every,
        )


@dataclass(frozen=True)
class Linear(Generic[T]):
    """Answers that are shares of one linear secret: their combine over a set ``S`` of ``t`` members is
    ``total([weigh(answer_i, λ_i^S) for i in S])``. ``checker()`` makes the check of a combined result under
    the group key (made once per request)."""

    weigh: Callable[[T, int], T]
    total: Callable[[list[T]], T]
    checker: Callable[[], Callable[[T], bool]]


class _Plan(Generic[T]):
    """One request's optimistic combine. ``planned``: the members asked first (empty: no plan). This node's
    answer is made with its planned weight (``own(λ)``: no extra work) and each other planned answer is
    weighted as it arrives. Any other first ``t`` answers (after a failure or a hedge) are weighted when they
    are combined, this node's made again with its weight in that set; the verifying combine gets this node's
    plain answer (:meth:`plain`)."""

    def __init__(self, linear: Linear[T], planned: tuple[int, ...], own_index: int, own: Callable[[int], T]):
        self.linear = linear
        self._weights = lagrange_coefficients(planned) if planned else {}
        self._own_index, self._own = own_index, own
        self._weighted: dict[int, T] = {}
        self._check: Callable[[T], bool] | None = None

    def mine(self) -> T:
        """This node's answer as the fan-out records it: weighted for the plan (plain without one)."""
        weight = self._weights.get(self._own_index)
        if weight is None:
            return self._own(1)
        answer = self._weighted[self._own_index] = self._own(weight)
        return answer

    def arrived(self, index: int, answer: T) -> T:
        weight = self._weights.get(index)
        if weight is not None:
            self._weighted[index] = self.linear.weigh(answer, weight)
        return answer

    def check(self) -> Callable[[T], bool]:
        if self._check is None:
            self._check = self.linear.checker()
        return self._check

    def first(self, answers: dict[int, T]) -> T | None:
        """The combine of exactly ``t`` answers if it verifies, else None."""
        if answers.keys() == self._weights.keys():
            terms = [self._weighted[i] for i in answers]
        else:
            weights = lagrange_coefficients(answers)
            terms = [self._own(weights[i]) if i == self._own_index else self.linear.weigh(answer, weights[i])
                     for i, answer in answers.items()]
        combined = self.linear.total(terms)
        return combined if self.check()(combined) else None

    def plain(self, every: Callable[[dict[int, T]], R]) -> Callable[[dict[int, T]], R]:
        """``every`` over the answers with this node's plain answer in place of its weighted one."""
        def with_plain_own(answers: dict[int, T]) -> R:
            if self._own_index in answers and self._own_index in self._weights:
                answers = {**answers, self._own_index: self._own(1)}
            return every(answers)
        return with_plain_own


def hedge_policy(limits: LimitsSection) -> HedgePolicy:
    """The gateway's hedge policy from the node config's ``[limits]``."""
    return HedgePolicy(initial=limits.hedge_after, factor=limits.hedge_factor, floor=limits.hedge_floor,
                       cap=limits.hedge_cap, budget=limits.hedge_budget)


def invalid_members(collected: Collected) -> list[int]:
    """Members whose shares failed verification in a fan-out."""
    return sorted(i for i, reason in collected.failures.items() if reason == INVALID_SHARE)
