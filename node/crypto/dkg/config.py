"""What a DKG or reshare run is about: committees, keys, thresholds, and the session id that binds them.

Invariants (checked at construction, :class:`DkgConfigError` otherwise):
- member indices are distinct positive integers, listed in ascending order; identity keys are distinct;
- ``floor(n/2) + 1 ≤ t ≤ n`` for every committee;
- a reshare's previous epoch lists a share key ``PK_i`` for exactly its members, for both secrets.

The two secrets are always handled in the order :data:`SECRETS` = (sig, kd).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from derot.crypto.bls import G2, R
from derot.crypto.dkg.errors import DkgConfigError

#: The two secrets one run produces: ``sig`` signs certificates, ``kd`` derives app keys.
SECRETS = ("sig", "kd")
MAX_NETWORK_ID = 255


@dataclass(frozen=True)
class Member:
    """One committee seat: its index and the node's public Ed25519 (signing) and X25519 (box) keys."""

    index: int
    signing_key: bytes
    box_key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.index, int) or not 1 <= self.index < 2**32:
            raise DkgConfigError(f"member index must be in 1..2^32-1, got {self.index!r}")
        for name in ("signing_key", "box_key"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != 32:
                raise DkgConfigError(f"member {self.index}: {name} must be 32 bytes")


@dataclass(frozen=True)
class Committee:
    members: tuple[Member, ...]
    threshold: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(self.members))
        n = len(self.members)
        if n == 0:
            raise DkgConfigError("a committee needs at least one member")
        indices = [m.index for m in self.members]
        if indices != sorted(set(indices)):
            raise DkgConfigError(f"member indices must be distinct and ascending, got {indices}")
        if len({m.signing_key for m in self.members}) != n or len({m.box_key for m in self.members}) != n:
            raise DkgConfigError("two members share an identity key")
        if not n // 2 + 1 <= self.threshold <= n:
            raise DkgConfigError(f"threshold {self.threshold} is outside floor(n/2)+1..n for n = {n}")

    @property
    def n(self) -> int:
        return len(self.members)

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(m.index for m in self.members)

    def member(self, index: int) -> Member | None:
        for m in self.members:
            if m.index == index:
                return m
        return None

    def index_of(self, signing_key: bytes) -> int | None:
        for m in self.members:
            if m.signing_key == signing_key:
                return m.index
        return None


@dataclass(frozen=True)
class PublicKeys:
    """The public side of one shared secret: the group key ``PK`` and every member's ``PK_m = x_m·G2``."""

    group_key: G2
    share_keys: Mapping[int, G2]

    def __post_init__(self) -> None:
        object.__setattr__(self, "share_keys", MappingProxyType(dict(sorted(self.share_keys.items()))))

    def __hash__(self) -> int:
        return hash((self.group_key, tuple(self.share_keys.items())))


@dataclass(frozen=True)
class PreviousEpoch:
    """What a reshare starts from: the old committee and the public keys its shares belong to."""

    committee: Committee
    sig: PublicKeys
    kd: PublicKeys

    def __post_init__(self) -> None:
        for name in SECRETS:
            keys: PublicKeys = getattr(self, name)
            if tuple(keys.share_keys) != self.committee.indices:
                raise DkgConfigError(f"previous {name} share keys must cover exactly the old members")
            if keys.group_key.is_identity():
                raise DkgConfigError(f"previous {name} group key is the identity")

    def keys(self, secret: int) -> PublicKeys:
        return self.sig if secret == 0 else self.kd


@dataclass(frozen=True)
class DkgConfig:
    """One run. ``previous`` is None for a fresh DKG and the old epoch for a reshare.

    The same config must be given to every member: :attr:`session_id` hashes all of it, and every
    signed message carries it. A retry of a failed run raises ``attempt``, which gives it a new session
    id: messages of the failed attempt are refused by the new one (``WRONG_SESSION``), never replayed.
    """

    network: bytes
    epoch: int
    committee: Committee
    previous: PreviousEpoch | None = None
    attempt: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.network, bytes) or not 1 <= len(self.network) <= MAX_NETWORK_ID:
            raise DkgConfigError(f"network id must be 1..{MAX_NETWORK_ID} bytes")
        if not isinstance(self.epoch, int) or not 0 <= self.epoch < 2**64:
            raise DkgConfigError("epoch must be a u64")
        if not isinstance(self.attempt, int) or not 0 <= self.attempt < 2**32:
            raise DkgConfigError("attempt must be a u32")

    @property
    def is_reshare(self) -> bool:
        return self.previous is not None

    @property
    def dealers(self) -> Committee:
        """Who deals: the old committee in a reshare, else the committee itself."""
        return self.previous.committee if self.previous is not None else self.committee

    @property
    def recipients(self) -> Committee:
        return self.committee

    @property
    def qualified_needed(self) -> int:
        """How many qualified dealers the run needs: t, or t_old in a reshare (to interpolate x)."""
        return self.dealers.threshold

    @cached_property
    def session_id(self) -> bytes:
        return _session_id(self)


def _encode_committee(c: Committee) -> bytes:
    out = struct.pack(">II", c.threshold, c.n)
    for m in c.members:
        out += struct.pack(">I", m.index) + m.signing_key + m.box_key
    return out


def _session_id(config: DkgConfig) -> bytes:
    h = hashlib.sha256(b"DEROT-V1-DKG-SESSION\x00")
    h.update(b"\x01" if config.is_reshare else b"\x00")
    h.update(struct.pack(">H", len(config.network)) + config.network + struct.pack(">Q", config.epoch))
    h.update(struct.pack(">I", config.attempt))
    h.update(_encode_committee(config.committee))
    if config.previous is not None:
        prev = config.previous
        h.update(_encode_committee(prev.committee))
        for name in SECRETS:
            keys: PublicKeys = getattr(prev, name)
            h.update(keys.group_key.to_bytes())
            for index in prev.committee.indices:
                h.update(keys.share_keys[index].to_bytes())
    return h.digest()


@dataclass(frozen=True)
class Identity:
    """This node's private identity keys. Never printed: the repr shows public keys only."""

    signing_key: Ed25519PrivateKey = field(repr=False)
    box_key: X25519PrivateKey = field(repr=False)

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    @property
    def signing_public(self) -> bytes:
        return self.signing_key.public_key().public_bytes_raw()

    @property
    def box_public(self) -> bytes:
        return self.box_key.public_key().public_bytes_raw()

    def member(self, index: int) -> Member:
        """This identity's public seat in a committee at ``index``."""
        return Member(index, self.signing_public, self.box_public)


@dataclass(frozen=True)
class KeyShares:
    """A member's secret shares ``x_j`` of (sig, kd). Never printed."""

    sig: int = field(repr=False)
    kd: int = field(repr=False)

    def __post_init__(self) -> None:
        for value in (self.sig, self.kd):
            if not isinstance(value, int) or not 0 <= value < R:
                raise DkgConfigError("a key share must be an integer in [0, r)")

    def __getitem__(self, secret: int) -> int:
        return self.sig if secret == 0 else self.kd
