"""Certificates (docs/design.md §4): format, encoding, signing message and verification.

Importable by the app SDK: depends on eth_abi/eth_utils and derot.crypto only (no web3, no server code).
"""

from derot.certs.certificate import CERT_ABI_TYPE, Certificate, CertificateDecodeError
from derot.certs.reasons import Reason
from derot.certs.verify import (
    CertEpoch,
    CertificateTrust,
    EpochPhase,
    Verdict,
    decode_signature,
    signature_bytes,
    verify_certificate,
)

__all__ = [
    "CERT_ABI_TYPE",
    "CertEpoch",
    "Certificate",
    "CertificateDecodeError",
    "CertificateTrust",
    "EpochPhase",
    "Reason",
    "Verdict",
    "decode_signature",
    "signature_bytes",
    "verify_certificate",
]
