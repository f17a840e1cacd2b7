"""Certificate loading for evidence: every lazily parsed field is touched once, so a malformed
certificate fails here with :class:`EvidenceParseError` instead of later with a stray ``ValueError``."""

from __future__ import annotations

import warnings

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from derot.attest.errors import EvidenceParseError


def _touch(cert: x509.Certificate) -> x509.Certificate:
    cert.subject, cert.issuer, cert.extensions, cert.public_key()  # noqa: B018 - force parsing
    cert.signature_algorithm_oid, cert.signature_algorithm_parameters, cert.signature_hash_algorithm  # noqa: B018
    cert.not_valid_before_utc, cert.not_valid_after_utc, cert.tbs_certificate_bytes  # noqa: B018
    return cert


def load_certificates(data: bytes, what: str, *, allow_serial_zero: bool = False) -> list[x509.Certificate]:
    """Certificates from PEM (one or more) or DER (one). ``allow_serial_zero`` silences exactly
    cryptography's warning about AMD's non-positive serial numbers."""
    with warnings.catch_warnings():
        if allow_serial_zero:
            warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning, message=".*serial number.*")
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                certs = x509.load_pem_x509_certificates(data)
            else:
                certs = [x509.load_der_x509_certificate(data)]
            return [_touch(c) for c in certs]
        except Exception as exc:  # noqa: BLE001 - cryptography also raises DuplicateExtension, etc.
            raise EvidenceParseError(f"{what}: malformed certificate ({type(exc).__name__}: {exc})", 0) from None


def load_crl(der: bytes, what: str) -> x509.CertificateRevocationList:
    """A DER CRL with every lazily parsed field touched; anything malformed is :class:`EvidenceParseError`."""
    try:
        crl = x509.load_der_x509_crl(der)
        crl.issuer, crl.extensions, crl.last_update_utc, crl.next_update_utc, crl.signature_hash_algorithm  # noqa: B018
        for _ in crl:
            pass
        return crl
    except Exception as exc:  # noqa: BLE001 - see load_certificates
        raise EvidenceParseError(f"{what}: malformed CRL ({type(exc).__name__}: {exc})", 0) from None
