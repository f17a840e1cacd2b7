"""The machine identities governance can revoke, taken from verified :class:`Claims`.

Every identity is a ``(RevocationKind, id)`` pair with the id in exactly the form ``DerotRegistry.revoke``
takes, so an operator can copy it from ``derot attest verify`` into ``derot gov``:

- Intel (TDX, SGX): ``FMSPC`` (platform family), ``PPID`` (the platform; 16 bytes from the verified PCK
  certificate) and ``PCK_CERT`` (:func:`pck_id`: one PCK certificate, by issuer and serial);
- AMD SEV-SNP: ``CHIP_ID`` (64 bytes) for a VCEK-signed report. A VLEK-signed report carries a masked
  (all-zero) chip_id: nothing in it names the chip, so it has no per-machine identity (docs/revocation.md);
- NVIDIA GPU: ``GPU_FWID`` (a firmware build), and ``GPU_DEVICE`` twice: the serial of the device
  identity certificate NVIDIA provisioned (stable across firmware updates) and the UEID, the serial of
  the attestation (leaf) certificate that NVIDIA's tools report.

A certificate lists the :func:`hardware_key` of every identity its evidence was verified with
(``Certificate.hardware``), so ``verifyCertificate`` can refuse it once any of them is revoked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from eth_utils import keccak

from derot.attest.claims import Claims
from derot.constants import RevocationKind

PCK_DOMAIN = b"DEROT-V1-PCK"
#: The most hardware keys a certificate may carry (a CPU TEE's 3 plus 3 for each of up to 8 GPUs, rounded up).
MAX_HARDWARE_KEYS = 32

_LABELS = {
    RevocationKind.FMSPC: "Intel FMSPC (platform family)",
    RevocationKind.PPID: "Intel PPID (platform)",
    RevocationKind.PCK_CERT: "Intel PCK certificate",
    RevocationKind.CHIP_ID: "SEV-SNP chip_id (chip)",
    RevocationKind.GPU_FWID: "NVIDIA FWID (firmware build)",
    RevocationKind.GPU_DEVICE: "NVIDIA GPU device",
}


@dataclass(frozen=True)
class MachineId:
    """One revocable hardware identity: the kind, the id as ``revoke`` takes it, and what it names."""

    kind: RevocationKind
    ident: bytes
    label: str

    @property
    def per_machine(self) -> bool:
        return self.kind not in (RevocationKind.FMSPC, RevocationKind.GPU_FWID)


def serial_bytes(serial: int) -> bytes:
    """An X.509 serial number as minimal big-endian bytes (at least one byte)."""
    return serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big")


def pck_id(issuer_der: bytes, serial: int) -> bytes:
    """The PCK_CERT id: SHA-256("DEROT-V1-PCK" ‖ u16 len(issuer) ‖ issuer Name DER ‖ serial, big-endian)."""
    return hashlib.sha256(PCK_DOMAIN + len(issuer_der).to_bytes(2, "big") + issuer_der + serial_bytes(serial)).digest()


def _one(claims: Claims) -> Iterator[MachineId]:
    ids = claims.hardware_ids
    candidates = (
        (RevocationKind.FMSPC, ids.fmspc, None),
        (RevocationKind.PPID, ids.ppid, None),
        (RevocationKind.PCK_CERT, ids.pck_cert, None),
        (RevocationKind.CHIP_ID, ids.chip_id, None),
        (RevocationKind.GPU_FWID, ids.gpu_fwid, None),
        (RevocationKind.GPU_DEVICE, ids.gpu_device, "NVIDIA GPU device certificate serial (the GPU)"),
        (RevocationKind.GPU_DEVICE, ids.gpu_ueid, "NVIDIA GPU UEID (attestation certificate serial)"),
    )
    for kind, ident, label in candidates:
        if ident is None or not any(ident):  # a masked (all-zero) id names no machine
            continue
        try:
            kind.check_length(ident)
        except ValueError:
            continue  # not an id the registry could hold, so nothing can revoke it
        yield MachineId(kind, bytes(ident), label or _LABELS[kind])


def identities(claims: Claims) -> tuple[MachineId, ...]:
    """Every revocable hardware identity of ``claims`` and of its paired GPUs, CPU first, without repeats."""
    seen: dict[tuple[RevocationKind, bytes], MachineId] = {}
    for c in (claims, *claims.gpus):
        for mid in _one(c):
            seen.setdefault((mid.kind, mid.ident), mid)
    return tuple(seen.values())


def hardware_key(kind: RevocationKind, ident: bytes) -> bytes:
    """keccak256(u8 kind ‖ id): how a certificate names a hardware identity, and how the registry indexes it."""
    return _hardware_key(int(kind), bytes(ident))


@lru_cache(maxsize=4096)
def _hardware_key(kind: int, ident: bytes) -> bytes:
    # memoised: every request from one machine names the same identities (a hit saves a keccak per identity)
    return keccak(bytes([kind]) + ident)


def hardware_keys(claims: Claims) -> tuple[bytes, ...]:
    """The certificate's ``hardware`` list: the keys of :func:`identities`, sorted ascending, at most
    :data:`MAX_HARDWARE_KEYS` (more identities than that is an error, never a silent cut)."""
    keys = sorted({hardware_key(m.kind, m.ident) for m in identities(claims)})
    if len(keys) > MAX_HARDWARE_KEYS:
        raise ValueError(f"evidence names {len(keys)} hardware identities; a certificate holds {MAX_HARDWARE_KEYS}")
    return tuple(keys)


def revoked_keys(revocations: Iterable[tuple[RevocationKind, Iterable[bytes]]]) -> frozenset[bytes]:
    """The hardware keys of revoked ids, given ``(kind, ids)`` pairs (non-hardware kinds are skipped)."""
    return frozenset(hardware_key(kind, ident) for kind, ids in revocations if kind.machine for ident in ids)
