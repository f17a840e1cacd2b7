"""The gateway's one fan-out path: ask the committee, collect ``t`` answers, combine, verify.

:meth:`FanOut.collect` is generic over what members answer (key-derivation shares, partial signatures);
:meth:`FanOut.threshold_sign` is *the* threshold-signing path, used by certificate issuance and by feed
notices alike: fan out, combine the first ``t`` partials optimistically, verify the signature under the
group key, and fall back to per-share verification when that fails, so a bad partial among the first
``t`` costs latency, never the signature, while ``t`` good ones exist.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from derot.chain.state import RegistryState
from derot.crypto import threshold as th
from derot.crypto.bls import G1, PointDecodeError
from derot.net.fanout import Collected, collect
from derot.net.peers import PeerInfo
from derot.net.status import Refusal
from derot.service.config import LimitsSection
from derot.service.epoch import EpochKeys
from derot.service.metrics import Metrics
from derot.service.peering import Peering, peer_info

T = TypeVar("T")
R = TypeVar("R")

#: the failure reason of a member whose answer failed decoding or verification
INVALID_SHARE = "invalid_share"


class FanOut:
    def __init__(self, peering: Peering, metrics: Metrics, limits: LimitsSection):
        self.peering = peering
        self.metrics = metrics
        self.limits = limits
        self._rotation = 0  # which peers a gateway asks first (round robin)

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
            return own()

        def remote(info: PeerInfo):
            async def call():
                reply = await self.peering.call(info, method, message)
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
        order = peers[shift:] + peers[:shift]  # round robin: spread the eager calls over the committee
        calls = {keys.index: mine}
        calls.update({i: remote(members[i]) for i in order})
        limits = self.limits
        collected = await collect(calls, keys.threshold, first, every, deadline=limits.peer_deadline,
                                  eager=keys.threshold + limits.extra_peers, hedge_after=limits.hedge_after)
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


def invalid_members(collected: Collected) -> list[int]:
    """Members whose shares failed verification in a fan-out."""
    return sorted(i for i, reason in collected.failures.items() if reason == INVALID_SHARE)
