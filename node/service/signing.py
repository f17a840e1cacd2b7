"""The gateway's one fan-out path: ask the committee, collect ``t`` answers, combine, verify.

:meth:`FanOut.collect` is generic over what members answer (key-derivation shares, partial signatures);
:meth:`FanOut.threshold_sign` is *the* threshold-signing path, used by certificate issuance and by feed
notices alike: fan out, combine the first ``t`` partials optimistically, verify the signature under the
group key, and fall back to per-share verification when that fails, so a bad partial among the first
``t`` costs latency, never the signature, while ``t`` good ones exist.

Whom it asks first: the ``t − 1`` peers with the lowest round-trip estimate (:mod:`derot.service.latency`,
learnt from this gateway's own completed calls; equally fast peers in round robin), plus ``extra_peers``;
a peer that stays silent past its own estimate-based hedge delay makes the gateway ask the next one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from derot.chain.state import RegistryState
from derot.crypto import threshold as th
from derot.crypto.bls import G1, PointDecodeError
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
        own: Callable[[], T],
        method: str,
        message,
        decode: Callable[[object], T],
        first: Callable[[dict[int, T]], R | None],
        every: Callable[[dict[int, T]], tuple[R, tuple[int, ...], tuple[int, ...]]],
    ) -> Collected[R]:
        """Ask every committee member (this node answers ``own()`` itself) and combine, as a gateway.

        ``first``/``every`` are :func:`derot.net.fanout.collect`'s optimistic and verifying combines."""

        async def mine():
            # let the peer calls launched with this one put their requests on the wire first (grpc.aio sends
            # from a task each call schedules), so the peers work while this node computes its own answer
            for _ in range(_YIELDS_BEFORE_OWN):
                await asyncio.sleep(0)
            return own()

        latency = self.latency

        def remote(info: PeerInfo):
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
                    return decode(reply)
                except PointDecodeError as exc:
                    self.metrics.shares.labels(str(info.index), "malformed").inc()
                    raise Refusal(INVALID_SHARE, str(exc)) from None
            return call

        members = peer_info(state, state.committee)
        peers = [i for i in members if i != keys.index]
        self._rotation += 1
        shift = self._rotation % max(1, len(peers))
        rotated = peers[shift:] + peers[:shift]  # round robin among equally fast peers
        by_operator = {members[i].operator: i for i in rotated}
        order = [by_operator[op] for op in latency.order(list(by_operator))]
        calls = {keys.index: mine}
        calls.update({i: remote(members[i]) for i in order})
        limits = self.limits

        def hedge_after(index: int) -> float:
            return limits.peer_deadline if index == keys.index else latency.hedge_after(members[index].operator)

        self.hedges.deposit()
        collected = await collect(calls, keys.threshold, first, every, deadline=limits.peer_deadline,
                                  eager=keys.threshold + limits.extra_peers, hedge_after=hedge_after,
                                  may_hedge=self.hedges.take, late_hedge=latency.policy.cap)
        for index, reason in collected.failures.items():
            if reason == INVALID_SHARE:  # a lying (often fast) peer: ask it last from now on
                latency.penalize(members[index].operator)
        for index in collected.used:
            self.metrics.shares.labels(str(index), "accepted").inc()
        for index, reason in collected.failures.items():
            self.metrics.shares.labels(str(index), reason).inc()
        return collected

    async def threshold_sign(
        self,
        state: RegistryState,
        keys: EpochKeys,
        *,
        digest: bytes,
        dst: bytes,
        own: Callable[[], G1],
        method: str,
        message,
    ) -> Collected[G1]:
        """A signature over ``digest`` (with ``dst``) under the sig group key, verified before it is returned.

        ``method``/``message`` is the Peer call whose answer carries ``partial_signature``."""

        def first(partials: dict[int, G1]) -> G1 | None:
            signature = th.combine(partials)
            return signature if th.verify(keys.sig.group_key, digest, signature, dst) else None

        def every(partials: dict[int, G1]):
            combined = th.combine_verified(partials, keys.threshold, keys.sig.group_key, keys.sig.share_keys,
                                           digest, dst)
            return combined.signature, combined.used, combined.bad

        return await self.collect(
            state, keys, own=own, method=method, message=message,
            decode=lambda reply: G1.from_bytes(reply.partial_signature), first=first, every=every,
        )


def hedge_policy(limits: LimitsSection) -> HedgePolicy:
    """The gateway's hedge policy from the node config's ``[limits]``."""
    return HedgePolicy(initial=limits.hedge_after, factor=limits.hedge_factor, floor=limits.hedge_floor,
                       cap=limits.hedge_cap, budget=limits.hedge_budget)


def invalid_members(collected: Collected) -> list[int]:
    """Members whose shares failed verification in a fan-out."""
    return sorted(i for i, reason in collected.failures.items() if reason == INVALID_SHARE)
