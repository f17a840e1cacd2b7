"""The governance state the policy engine decides from, as of one confirmed block.

A :class:`GovernanceSnapshot` is a plain immutable value. ``derot.chain`` builds it from
``DerotRegistry`` at ``head - confirmations``; tests and tools may build it by hand.

Invariants:
- hardware ids and measurements are raw bytes (FMSPC 6 bytes, SNP chip_id 64 bytes, Intel PPID 16
  bytes, PCK certificate id 32 bytes, GPU FWID as reported, GPU device serials 1..32 bytes, measurement
  digests 32 bytes);
- ``apps`` is keyed by the 32-byte appId;
- a platform missing from ``platforms`` is disabled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from derot.constants import Platform, RevocationKind, TcbStatus


@dataclass(frozen=True)
class PlatformRule:
    """Per-platform policy: whether the platform is enabled and its minimum TCB status."""

    enabled: bool
    tcb_floor: TcbStatus = TcbStatus.UP_TO_DATE


@dataclass(frozen=True)
class AppRecord:
    """An app as registered on-chain.

    ``measurements`` holds the allowed ``(platform, measurement_digest)`` pairs. When ``delegate``
    is set, the app's own contract decides (``isAppAllowed``) and ``measurements`` is not consulted.
    """

    app_id: bytes
    owner: str
    key_version: int
    frozen: bool = False
    allow_debug: bool = False
    measurements: frozenset[tuple[Platform, bytes]] = frozenset()
    delegate: str | None = None
    #: named TEE checks governance waives for this app (``policy_tee`` docstring), like ``allow_debug``
    tee_exceptions: frozenset[str] = frozenset()
    #: allowed GPU models (``derot.constants.GpuModel`` bits; 0 = any) and whether a GPU must be attested
    gpu_models: int = 0
    gpu_required: bool = False


class DelegateOracle(Protocol):
    """Answers an app delegate's ``isAppAllowed`` at the snapshot's block."""

    def is_app_allowed(self, app: AppRecord, platform: Platform, measurement: bytes) -> bool: ...


def _frozen_map(value) -> Mapping:
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class GovernanceSnapshot:
    """Everything policy needs from the registry at one confirmed block."""

    chain_id: int
    registry: str
    block_number: int
    block_hash: bytes = b""
    block_timestamp: int = 0
    platforms: Mapping[Platform, PlatformRule] = field(default_factory=dict)
    revoked_fmspcs: frozenset[bytes] = frozenset()
    revoked_chip_ids: frozenset[bytes] = frozenset()
    revoked_gpu_fwids: frozenset[bytes] = frozenset()
    revoked_measurements: frozenset[bytes] = frozenset()
    node_measurements: frozenset[tuple[Platform, bytes]] = frozenset()
    apps: Mapping[bytes, AppRecord] = field(default_factory=dict)
    #: SEV-SNP governance inputs (DerotRegistry.snpPolicy; see docs/attestation.md):
    #: the highest VMPL accepted, the guest policy bits required (name -> value), and the minimum TCB
    #: per product ("Milan"/"Genoa"/"Turin") per component (bootloader, tee, snp, microcode, fmc)
    snp_max_vmpl: int = 0
    snp_guest_policy: Mapping[str, bool] = field(default_factory=lambda: {"migrate_ma": False})
    snp_min_tcb: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    revoked_ppids: frozenset[bytes] = frozenset()
    revoked_pck_certs: frozenset[bytes] = frozenset()
    revoked_gpu_devices: frozenset[bytes] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "platforms", _frozen_map(self.platforms))
        object.__setattr__(self, "apps", _frozen_map(self.apps))
        object.__setattr__(self, "snp_guest_policy", _frozen_map(self.snp_guest_policy))
        object.__setattr__(self, "snp_min_tcb", _frozen_map({k: _frozen_map(v) for k, v in self.snp_min_tcb.items()}))

    def platform_rule(self, platform: Platform) -> PlatformRule:
        return self.platforms.get(platform, PlatformRule(enabled=False))

    def revoked_hardware(self) -> dict[RevocationKind, frozenset[bytes]]:
        """The revoked ids of every hardware kind, by kind."""
        return {
            RevocationKind.FMSPC: self.revoked_fmspcs, RevocationKind.CHIP_ID: self.revoked_chip_ids,
            RevocationKind.GPU_FWID: self.revoked_gpu_fwids, RevocationKind.PPID: self.revoked_ppids,
            RevocationKind.PCK_CERT: self.revoked_pck_certs, RevocationKind.GPU_DEVICE: self.revoked_gpu_devices,
        }
