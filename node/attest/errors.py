"""Exception types of the attestation layer.

Two families, one type per failure class:

- :class:`EvidenceParseError` is the single type every parser raises on malformed bytes (truncated,
  garbage, wrong version or size). It names the field and the byte offset where parsing stopped.
- :class:`VerificationError` subclasses say which check failed on well-formed evidence. Each has a
  stable, machine-readable ``reason`` (snake_case) that the CLI, logs and network replies carry.

Policy refusals are not exceptions: :mod:`derot.attest.policy` returns a verdict with its own reason code.
"""

from __future__ import annotations

from derot.errors import DerotError


class AttestationError(DerotError):
    """Base of every error raised by ``derot.attest``."""

    reason = "attestation_error"


class EvidenceParseError(AttestationError, ValueError):
    """Malformed evidence bytes. ``offset`` is the byte offset of the offending field."""

    reason = "evidence_malformed"

    def __init__(self, message: str, offset: int):
        super().__init__(f"{message} (at byte offset {offset})")
        self.offset = offset


class VerificationError(AttestationError):
    """Well-formed evidence failed a check. Subclasses fix ``reason``."""

    reason = "verification_failed"


class SignatureInvalid(VerificationError):
    """A signature over the evidence (quote, QE report, SNP or SPDM report) does not verify."""

    reason = "signature_invalid"


class ChainInvalid(VerificationError):
    """A certificate chain does not lead to a trusted root, or a certificate is expired or revoked."""

    reason = "cert_chain_invalid"


class RootNotTrusted(VerificationError):
    """The evidence chains to a root this verifier does not trust (e.g. a devnet root in production)."""

    reason = "root_not_trusted"


class CertificateExpired(ChainInvalid):
    """A certificate in the chain is outside its validity period at the verification time."""

    reason = "cert_expired"


class CertificateRevoked(ChainInvalid):
    """A certificate in the chain is listed on its issuer's CRL."""

    reason = "cert_revoked"


class CollateralError(VerificationError):
    """Intel collateral is malformed or does not match the quote."""

    reason = "collateral_invalid"


class CollateralStale(CollateralError):
    """The collateral's validity window (TCB info, QE identity, CRLs) has passed or not begun."""

    reason = "collateral_stale"


class CollateralUnavailable(CollateralError):
    """No usable collateral: the PCCS/PCS cannot be reached and no fresh cached or offline copy exists."""

    reason = "collateral_unavailable"


class TcbNotSupported(VerificationError):
    """No TCB level in the verified TCB info matches the platform (Intel ``TCB_NOT_SUPPORTED``)."""

    reason = "tcb_not_supported"


class TcbRevoked(VerificationError):
    """Intel rates the platform's TCB level Revoked (dcap-qvl refuses it outright)."""

    reason = "tcb_revoked"


class TcbMismatch(VerificationError):
    """The TCB certified by the VCEK/VLEK differs from the report's ``reported_tcb``."""

    reason = "tcb_mismatch"


class HardwareIdMismatch(VerificationError):
    """The certificate's hardware id differs from the one in the report (SNP ``chip_id``)."""

    reason = "hardware_id_mismatch"


class NonceMismatch(VerificationError):
    """The GPU report's SPDM request nonce is not the expected one."""

    reason = "nonce_mismatch"


class UnsupportedEvidence(VerificationError):
    """Evidence of a kind this verifier does not handle (unknown platform, key type, algorithm)."""

    reason = "unsupported_evidence"


class ChainIncomplete(ChainInvalid):
    """A certificate chain lacks a certificate between its leaf and the pinned root (or lacks the leaf)."""

    reason = "cert_chain_incomplete"


class FwidMissing(ChainInvalid):
    """A GPU attestation certificate carries no FWID extension."""

    reason = "gpu_fwid_missing"
