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
CERT_VERSION = 1
#: Default certificate lifetime: short, renewed by re-attesting.
CERT_DEFAULT_LIFETIME_S = 24 * 3600


class Platform(enum.IntEnum):
    """TEE platform of a piece of evidence (certificate ``platform`` field)."""

    TDX = 1
    SGX = 2
    SEV_SNP = 3
    NVIDIA_GPU = 4
    AZURE_SNP = 5  # SEV-SNP behind Azure's paravisor: SNP report + HCL runtime data + vTPM quote
    AZURE_TDX = 6  # TDX behind Azure's paravisor: TD quote + HCL runtime data + vTPM quote


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
