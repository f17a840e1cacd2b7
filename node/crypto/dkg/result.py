"""What a finished run gives a member, and the transcript hash members report on-chain."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from derot.crypto.dkg.config import Committee, KeyShares, PreviousEpoch, PublicKeys

TRANSCRIPT_DOMAIN = b"DEROT-V1-DKG-TRANSCRIPT\x00"


def transcript_hash(session_id: bytes, used: Sequence[tuple[int, bytes]]) -> bytes:
    """``SHA-256(domain ‖ session_id ‖ u32 count ‖ (u32 dealer ‖ bundle_hash)*)`` over the dealers whose
    polynomials make the result (QUAL, or S in a reshare), ascending by index.

    The bundles fix every output (group keys, share keys, each member's share), and the session id fixes
    the committee and thresholds, so members that agree on this hash agree on the whole result.
    """
    h = hashlib.sha256(TRANSCRIPT_DOMAIN + session_id + struct.pack(">I", len(used)))
    for dealer, bundle_hash in sorted(used):
        h.update(struct.pack(">I", dealer) + bundle_hash)
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
