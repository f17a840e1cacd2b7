"""Typed views of DerotRegistry records. Enum values mirror the Solidity enums (part of the ABI)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from derot.certs.verify import EpochPhase
from derot.crypto.bls import G2

__all__ = ["EpochPhase", "EpochRecord", "NodeRecord", "NodeStatus", "RevocationKind"]


class NodeStatus(enum.IntEnum):
    NONE = 0
    PENDING = 1
    APPROVED = 2
    SUSPENDED = 3
    REMOVED = 4


class RevocationKind(enum.IntEnum):
    """Kinds of revocable identifiers and their lengths (``DerotRegistry.revoke``)."""

    NONE = 0
    FMSPC = 1  # 6 bytes
    CHIP_ID = 2  # 1..64 bytes (SEV-SNP chip_id 64, Intel PPID 16)
    GPU_FWID = 3  # 1..64 bytes
    MEASUREMENT = 4  # 32 bytes
    CERT_SERIAL = 5  # 32 bytes
    EVIDENCE_HASH = 6  # 32 bytes

    def check_length(self, ident: bytes) -> None:
        """Hardware ids have their platform's exact sizes: FMSPC 6; chip id 64 (SEV-SNP CHIP_ID) or 16 (an
        Intel PPID); NVIDIA FWID 48 bytes; measurements, serials and evidence hashes 32."""
        if self is RevocationKind.NONE:
            raise ValueError("no revocation kind given")
        sizes = {RevocationKind.FMSPC: (6,), RevocationKind.CHIP_ID: (64, 16),
                 RevocationKind.GPU_FWID: (48,)}.get(self, (32,))
        if len(ident) not in sizes:
            label = {RevocationKind.FMSPC: "FMSPC", RevocationKind.CHIP_ID: "chip id (SEV-SNP CHIP_ID; 16: Intel PPID)",
                     RevocationKind.GPU_FWID: "GPU FWID"}.get(self, self.name.lower().replace("_", " "))
            raise ValueError(f"{label} must be {' or '.join(map(str, sizes))} bytes, got {len(ident)}")


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
    pk_sig: G2 | None = None
    pk_kd: G2 | None = None

    def index_of(self, operator: str) -> int:
        """1-based member index, or 0 if ``operator`` is not a member."""
        lowered = operator.lower()
        for i, member in enumerate(self.members, start=1):
            if member.lower() == lowered:
                return i
        return 0
