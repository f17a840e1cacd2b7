"""Wire constants shared by the contracts, certificates, attestation and the network.

The numeric values are part of the on-chain ABI (``uint8`` fields of the certificate and of
``DerotRegistry``); never renumber them.
"""

from __future__ import annotations

import enum

#: Domain separation tags (docs/design.md §3). Every BLS purpose has its own.
DST_CERT = b"DEROT-V1-CERT-BLS12381G1_XMD:SHA-256_SSWU_RO_"
DST_KD = b"DEROT-V1-KD-BLS12381G1_XMD:SHA-256_SSWU_RO_"

#: Certificate format version (docs/design.md §4).
CERT_VERSION = 3  # 2: adds ``bytes32[] hardware`` (docs/revocation.md); 3: adds ``gpuCount``, ``gpuModels``
#: The certificate's ``gpuModels`` bit for an attested GPU whose model derot does not recognise
#: (derot.attest.gpu_model); never a GpuModel member, so an allowed-model mask never contains it.
GPU_MODEL_UNRECOGNISED = 1 << 31
#: Default certificate lifetime: short, renewed by re-attesting.
CERT_DEFAULT_LIFETIME_S = 24 * 3600


def spelled(enum_cls: type[enum.IntEnum], value: int) -> str:
    """A wire enum value in derot's one user-facing spelling (``sev-snp``, ``up-to-date``, ``secp256k1``):
    the member name in lower case with ``-`` for ``_``; a value outside the enum as ``<enum> <value>``."""
    try:
        return enum_cls(value).name.lower().replace("_", "-")
    except ValueError:
        return f"{enum_cls.__name__.lower()} {value}"


class Platform(enum.IntEnum):
    """TEE platform of a piece of evidence (certificate ``platform`` field)."""

    TDX = 1
    SGX = 2
    SEV_SNP = 3
    NVIDIA_GPU = 4
    AZURE_SNP = 5  # SEV-SNP behind Azure's paravisor: SNP report + HCL runtime data + vTPM quote
    AZURE_TDX = 6  # TDX behind Azure's paravisor: TD quote + HCL runtime data + vTPM quote


class GpuModel(enum.IntFlag):
    """NVIDIA GPU models, as bits: a certificate's ``uint32 gpuModels`` is the OR of its GPUs' models, and an
    app's allowed-model policy is a mask of the same bits. Never renumber; 0 is "no recognised model"."""

    H100 = 1
    H200 = 2
    B100 = 4
    B200 = 8
    GB200 = 16


class TcbStatus(enum.IntEnum):
    """TCB status, ordered so that ``a >= b`` means "a is at least as good as b".

    Names follow Intel's TCB-info statuses; AMD SEV-SNP and NVIDIA evidence map onto the same scale.
    ``UNKNOWN`` (0) is never acceptable; a platform floor is compared with ``>=``.
    """

    UNKNOWN = 0
    REVOKED = 1
    OUT_OF_DATE_CONFIGURATION_NEEDED = 2
    OUT_OF_DATE = 3
    CONFIGURATION_AND_SW_HARDENING_NEEDED = 4
    CONFIGURATION_NEEDED = 5
    SW_HARDENING_NEEDED = 6
    UP_TO_DATE = 7

    @classmethod
    def from_intel(cls, name: str) -> "TcbStatus":
        """Map Intel's status string (``"UpToDate"``, ``"OutOfDateConfigurationNeeded"``…)."""
        table = {
            "UpToDate": cls.UP_TO_DATE,
            "SWHardeningNeeded": cls.SW_HARDENING_NEEDED,
            "ConfigurationNeeded": cls.CONFIGURATION_NEEDED,
            "ConfigurationAndSWHardeningNeeded": cls.CONFIGURATION_AND_SW_HARDENING_NEEDED,
            "OutOfDate": cls.OUT_OF_DATE,
            "OutOfDateConfigurationNeeded": cls.OUT_OF_DATE_CONFIGURATION_NEEDED,
            "Revoked": cls.REVOKED,
        }
        return table.get(name, cls.UNKNOWN)


class KeyType(enum.IntEnum):
    """Type of a certificate's ``subjectKey`` and of a derived app key."""

    SECP256K1 = 1
    ED25519 = 2
    X25519 = 3
    P256 = 4


class RevocationKind(enum.IntEnum):
    """Kinds of revocable identifiers (``DerotRegistry.RevocationKind``) and their lengths.

    The per-machine kinds are CHIP_ID (SEV-SNP, VCEK-signed), PPID and PCK_CERT (Intel) and GPU_DEVICE
    (NVIDIA); FMSPC and GPU_FWID name a whole platform family or firmware build. See docs/revocation.md.
    """

    NONE = 0
    FMSPC = 1  # Intel platform family, 6 bytes
    CHIP_ID = 2  # SEV-SNP chip_id, 64 bytes, not all zero (a VLEK report's masked chip_id is no identity)
    GPU_FWID = 3  # NVIDIA firmware id, 1..64 bytes
    MEASUREMENT = 4  # 32 bytes
    CERT_SERIAL = 5  # 32 bytes
    EVIDENCE_HASH = 6  # 32 bytes
    PPID = 7  # Intel platform provisioning id, 16 bytes, not all zero
    PCK_CERT = 8  # Intel PCK certificate: SHA-256 over its issuer and serial (derot.attest.identity.pck_id), 32 bytes
    GPU_DEVICE = 9  # NVIDIA device certificate serial or UEID (leaf certificate serial), 1..32 bytes

    def check_length(self, ident: bytes) -> None:
        """Raise ValueError unless ``ident`` has a length (and form) the registry accepts for this kind."""
        n = len(ident)
        ok = {
            RevocationKind.NONE: False,
            RevocationKind.FMSPC: n == 6,
            RevocationKind.CHIP_ID: n == 64 and any(ident),
            RevocationKind.GPU_FWID: 1 <= n <= 64,
            RevocationKind.PPID: n == 16 and any(ident),
            RevocationKind.GPU_DEVICE: 1 <= n <= 32 and any(ident),
        }.get(self, n == 32)
        if not ok:
            expected = {RevocationKind.FMSPC: "6", RevocationKind.CHIP_ID: "64", RevocationKind.GPU_FWID: "1..64",
                        RevocationKind.PPID: "16", RevocationKind.GPU_DEVICE: "1..32"}.get(self, "32")
            if n and not any(ident):
                raise ValueError(f"a {self.name} id must not be all zero")
            raise ValueError(f"a {self.name} id must be {expected} bytes, got {n}")

    @property
    def machine(self) -> bool:
        """Kinds that name hardware (a machine or a family); a certificate lists the ones it was issued on."""
        return self in HARDWARE_KINDS


HARDWARE_KINDS = frozenset({RevocationKind.FMSPC, RevocationKind.CHIP_ID, RevocationKind.GPU_FWID,
                            RevocationKind.PPID, RevocationKind.PCK_CERT, RevocationKind.GPU_DEVICE})

