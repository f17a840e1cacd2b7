"""Typed views of DerotRegistry records. Enum values mirror the Solidity enums (part of the ABI)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from derot.certs.verify import EpochPhase
from derot.constants import RevocationKind
from derot.crypto.bls import G2

__all__ = ["EpochPhase", "EpochRecord", "NodeRecord", "NodeStatus", "RevocationKind"]


class NodeStatus(enum.IntEnum):
    NONE = 0
    PENDING = 1
    APPROVED = 2
    SUSPENDED = 3
    REMOVED = 4


@dataclass(frozen=True)
class NodeRecord:
    operator: str
    status: NodeStatus
    identity_key: bytes  # Ed25519, 32 bytes
    x25519_key: bytes
    endpoint: str
    tls_key_hash: bytes
    evidence_hash: bytes


@dataclass(frozen=True)
class EpochRecord:
    """An epoch: ordered members (member i has index i+1), threshold, phase and, once active, its keys."""

    id: int
    phase: EpochPhase
    threshold: int
    previous: int
    started_block: int
    activated_block: int
    key_store: str | None
    transcript_hash: bytes
    members: tuple[str, ...]
    group_key_sig: G2 | None = None
    group_key_kd: G2 | None = None

    def index_of(self, operator: str) -> int:
        """1-based member index, or 0 if ``operator`` is not a member."""
        lowered = operator.lower()
        for i, member in enumerate(self.members, start=1):
            if member.lower() == lowered:
                return i
        return 0
