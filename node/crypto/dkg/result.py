"""What a finished run gives a member, and the transcript hash members report on-chain."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from derot.crypto.dkg.config import Committee, KeyShares, PreviousEpoch, PublicKeys

TRANSCRIPT_DOMAIN = b"DEROT-V1-DKG-TRANSCRIPT\x00"


def transcript_hash(session_id: bytes, qualified: Sequence[tuple[int, bytes]], used: Sequence[int]) -> bytes:
    """The hash members report on-chain and compare; deterministic across members holding the same messages.

    ``SHA-256(domain ‖ session_id ‖ u32 |QUAL| ‖ (u32 dealer ‖ bundle_hash)* ‖ u32 |used| ‖ (u32 dealer)*)``,
    QUAL and used ascending by index (used = QUAL in a DKG, the first ``t_old`` of QUAL in a reshare).

    It covers: the run's whole configuration (the session id hashes network, epoch, both committees with
    their identity keys and thresholds, and in a reshare the old group and share keys); exactly which
    bundle of each qualified dealer counts; and which of them make the result. The bundles fix every
    output (group keys, share keys, the boxes that carry each member's shares, hence who holds a share),
    so members that agree on this hash agree on the whole result. It does not cover the evidence that
    excluded the other dealers (responses, second bundles): two members with different evidence but the
    same QUAL get the same, equally valid result.
    """
    h = hashlib.sha256(TRANSCRIPT_DOMAIN + session_id + struct.pack(">I", len(qualified)))
    for dealer, bundle_hash in sorted(qualified):
        h.update(struct.pack(">I", dealer) + bundle_hash)
    h.update(struct.pack(">I", len(used)))
    for dealer in sorted(used):
        h.update(struct.pack(">I", dealer))
    return h.digest()


@dataclass(frozen=True)
class DkgResult:
    """One member's view of a finished DKG or reshare. Honest members get equal results except ``index``
    and ``shares``. ``shares`` is None for an old member that only dealt in a reshare."""

    network: bytes
    epoch: int
    session_id: bytes
    committee: Committee
    index: int | None
    qualified: tuple[int, ...]
    used: tuple[int, ...]
    excluded: Mapping[int, str]
    sig: PublicKeys
    kd: PublicKeys
    shares: KeyShares | None
    transcript_hash: bytes
    #: recipients that every used dealer sealed a box to (the members that can hold a share)
    holders: tuple[int, ...] = ()
    #: (dealer, bundle hash) of every qualified dealer, ascending: what the transcript hash covers
    bundle_hashes: tuple[tuple[int, bytes], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "excluded", MappingProxyType(dict(sorted(self.excluded.items()))))

    @property
    def threshold(self) -> int:
        return self.committee.threshold

    def keys(self, secret: int) -> PublicKeys:
        return self.sig if secret == 0 else self.kd

    def as_previous_epoch(self) -> PreviousEpoch:
        """The input of the next reshare."""
        return PreviousEpoch(self.committee, self.sig, self.kd)
