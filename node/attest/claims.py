"""The one result every verifier returns: :class:`Claims`.

Claims are facts established by verification, never decisions: a debug TD or an out-of-date TCB still
yields Claims; :mod:`derot.attest.policy` decides.

Canonical measurement digest (the ``bytes32 measurement`` of certificates and of the registry's
allow-lists)::

    SHA-256( "DEROT-V1-MEASUREMENT" || u8 platform
             || for each identity register, in the platform's fixed order:
                  u8 len(name) || name (ASCII) || u16be len(value) || value )

Identity registers, per platform (what an app owner pins; everything else is a reported fact):

- TDX: ``MRTD, RTMR0, RTMR1, RTMR2, RTMR3, MRCONFIGID``. MRTD is the TD firmware, RTMR0..2 the firmware
  configuration, kernel and command line/initrd, RTMR3 the runtime/app layer, MRCONFIGID the launch
  configuration chosen by the app. MROWNER/MROWNERCONFIG identify the *operator* and would tie an app
  to one host, so they are excluded; MRSEAM is rated by the TCB status, not pinned by apps.
- SGX: ``MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN`` (u16 little-endian as in the report).
- SEV-SNP: ``MEASUREMENT, HOST_DATA``. HOST_DATA is the launch-time configuration (the MRCONFIGID
  analogue); ID-block digests, VMPL and the guest policy are reported facts.
- NVIDIA GPU: every SPDM measurement block as ``MEASUREMENT[<index>]`` in index order.
- Azure SEV-SNP / TDX (vTPM behind the paravisor): the hardware identity registers above (the paravisor) plus
  the vTPM's SHA-256 PCRs 0-9 and 11-14 (firmware, boot chain, kernel, command line, Secure Boot, PCR8 for
  init-data). PCR10 (IMA, order-dependent), PCR15 (machine-id, volume keys: per instance), PCR16 and 23
  (resettable) and 17-22 (DRTM) are reported, never pinned.
- TDX with a replayed event log (``derot.attest.eventlog``): ``MRTD, RTMR0, RTMR1, RTMR2, MRCONFIGID,
  APP_EVENTS`` (:data:`TDX_EVENTLOG_REGISTERS`): RTMR3 is replaced by the digest of its named app events.

Names are part of the encoding, so two platforms or two register layouts can never collide, and a
register can be added in a later version without ambiguity.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from derot.constants import Platform, TcbStatus

MEASUREMENT_DOMAIN = b"DEROT-V1-MEASUREMENT"

#: vTPM PCRs an Azure CVM app pins (module docstring), as register names ``PCR00``..``PCR23``.
AZURE_IDENTITY_PCRS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14)
AZURE_PCR_NAMES = tuple(f"PCR{i:02d}" for i in AZURE_IDENTITY_PCRS)

#: Identity registers per platform, in digest order.
IDENTITY_REGISTERS: Mapping[Platform, tuple[str, ...]] = MappingProxyType(
    {
        Platform.TDX: ("MRTD", "RTMR0", "RTMR1", "RTMR2", "RTMR3", "MRCONFIGID"),
        Platform.SGX: ("MRENCLAVE", "MRSIGNER", "ISVPRODID", "ISVSVN"),
        Platform.SEV_SNP: ("MEASUREMENT", "HOST_DATA"),
        Platform.AZURE_SNP: ("MEASUREMENT", "HOST_DATA") + AZURE_PCR_NAMES,
        Platform.AZURE_TDX: ("MRTD", "RTMR0", "RTMR1", "RTMR2", "RTMR3", "MRCONFIGID") + AZURE_PCR_NAMES,
    }
)
#: The TDX identity when the evidence carries an event log: RTMR3 replaced by its app events' digest.
TDX_EVENTLOG_REGISTERS = ("MRTD", "RTMR0", "RTMR1", "RTMR2", "MRCONFIGID", "APP_EVENTS")


def measurement_digest(platform: Platform, registers: Mapping[str, bytes],
                       names: tuple[str, ...] | None = None) -> bytes:
    """The canonical 32-byte measurement digest (module docstring) of ``registers``; ``names`` overrides the
    platform's identity registers (the TDX event-log profile)."""
    names = names or IDENTITY_REGISTERS.get(platform)
    if names is None:  # GPU: every block, by index
        names = tuple(sorted(registers, key=_block_index))
    h = hashlib.sha256(MEASUREMENT_DOMAIN + bytes([int(platform)]))
    for name in names:
        value = registers[name]
        raw = name.encode("ascii")
        h.update(bytes([len(raw)]) + raw + struct.pack(">H", len(value)) + value)
    return h.digest()


def _block_index(name: str) -> int:
    return int(name[name.index("[") + 1 : -1])


@dataclass(frozen=True)
class HardwareIds:
    """Hardware identities governance can revoke. Absent ids are ``None``."""

    fmspc: bytes | None = None  # Intel platform family (6 bytes)
    ppid: bytes | None = None  # Intel platform provisioning id (16 bytes)
    chip_id: bytes | None = None  # AMD chip id (64 bytes), VCEK-signed reports only (a VLEK endorses no chip)
    gpu_fwid: bytes | None = None  # NVIDIA firmware id (48 bytes)
    pck_cert: bytes | None = None  # Intel PCK certificate id (32 bytes, derot.attest.identity.pck_id)
    gpu_device: bytes | None = None  # NVIDIA device identity certificate serial (the leaf's issuer)
    gpu_ueid: bytes | None = None  # NVIDIA UEID: the attestation (leaf) certificate serial


@dataclass(frozen=True)
class Claims:
    """Verified facts about one piece of evidence.

    Invariants: ``measurement_digest == measurement_digest(platform, identity registers)``;
    ``report_data`` is 64 bytes (a GPU's 32-byte SPDM nonce is zero-padded);
    ``not_before <= not_after`` are unix seconds bounding when this verification result holds
    (collateral, CRL and certificate validity); ``root`` names the trust anchor that verified it
    (``"production"`` or ``"devnet"``). ``gpus`` holds the paired GPU claims of a GPU TEE.
    """

    platform: Platform
    measurements: Mapping[str, bytes]
    measurement_digest: bytes
    report_data: bytes
    tcb_status: TcbStatus
    advisory_ids: tuple[str, ...]
    debug: bool
    hardware_ids: HardwareIds
    not_before: int
    not_after: int
    root: str = "production"
    details: Mapping[str, object] = field(default_factory=dict)
    gpus: tuple["Claims", ...] = ()
    #: named security attributes policy checks (JSON-ready): TDX ``td_attributes`` (by name),
    #: ``mr_service_td``, ``seam_attributes``; SEV-SNP ``vmpl``, ``guest_policy`` (by name),
    #: ``product`` and ``tcb`` (per component); NVIDIA ``rim`` results
    tee_attributes: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "measurements", MappingProxyType(dict(self.measurements)))
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))
        object.__setattr__(self, "tee_attributes", MappingProxyType(dict(self.tee_attributes)))

    def with_gpus(self, gpus: tuple["Claims", ...]) -> "Claims":
        """A copy of these claims paired with verified GPU claims."""
        return replace(self, gpus=tuple(gpus))

    def to_json_dict(self) -> dict:
        """A JSON-ready view (bytes as hex) for the CLI and logs; contains no secrets."""
        return {
            "platform": self.platform.name,
            "measurement_digest": self.measurement_digest.hex(),
            "measurements": {k: v.hex() for k, v in self.measurements.items()},
            "report_data": self.report_data.hex(),
            "tcb_status": self.tcb_status.name,
            "advisory_ids": list(self.advisory_ids),
            "debug": self.debug,
            "hardware_ids": {
                k: (v.hex() if v is not None else None) for k, v in vars(self.hardware_ids).items()
            },
            "not_before": self.not_before,
            "not_after": self.not_after,
            "root": self.root,
            "details": {k: _jsonable(v) for k, v in self.details.items()},
            "gpus": [g.to_json_dict() for g in self.gpus],
            "tee_attributes": _jsonable(self.tee_attributes),
        }


def _jsonable(value):
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
