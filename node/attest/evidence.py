"""The evidence envelope a request carries, encoded with ``derot.v1.Evidence`` (attestation.proto).

``Evidence.encode()`` is deterministic, so ``Evidence.digest()`` (SHA-256 of the encoding) is a stable
``evidenceHash`` for certificates. ``Evidence.decode`` raises :class:`EvidenceParseError` on anything
that is not a well-formed version-1 envelope.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from derot.attest.errors import EvidenceParseError
from derot.constants import Platform

ENVELOPE_VERSION = 1
MAX_ENCODED_SIZE = 1 << 20
#: GPUs one piece of evidence may carry: an HGX box has 8; a certificate's ``gpuCount`` is a uint8
MAX_GPUS = 16


def _pb():
    from derot import _proto

    return _proto.load("attestation_pb2")


@dataclass(frozen=True)
class GpuEvidence:
    report: bytes  # SPDM request || response
    cert_chain: bytes  # PEM, leaf first


@dataclass(frozen=True)
class Evidence:
    """One TEE's evidence: a quote/report plus what verifying it needs that is not pinned."""

    platform: Platform
    quote: bytes = b""
    vek: bytes = b""
    ask: bytes = b""
    collateral: bytes = b""
    gpus: tuple[GpuEvidence, ...] = ()
    # Azure CVMs (derot.attest.azure): quote = HCL report; the vTPM quote, its signature and PCRs 0..23
    tpm_quote: bytes = b""
    tpm_signature: bytes = b""
    tpm_pcrs: tuple[bytes, ...] = ()
    td_quote: bytes = b""
    hcl_user_data_bound: bool = False
    event_log: bytes = b""  # TDX: CCEL event log (derot.attest.eventlog)

    def encode(self) -> bytes:
        pb = _pb()
        msg = pb.Evidence(
            version=ENVELOPE_VERSION,
            platform=int(self.platform),
            quote=self.quote,
            vek_cert=self.vek,
            ask_cert=self.ask,
            collateral_json=self.collateral,
            gpus=[pb.GpuEvidence(report=g.report, cert_chain_pem=g.cert_chain) for g in self.gpus],
            tpm_quote=self.tpm_quote,
            tpm_signature=self.tpm_signature,
            tpm_pcrs=list(self.tpm_pcrs),
            td_quote=self.td_quote,
            hcl_user_data_bound=self.hcl_user_data_bound,
            event_log=self.event_log,
        )
        return msg.SerializeToString(deterministic=True)

    def digest(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    @classmethod
    def decode(cls, data: bytes) -> "Evidence":
        if not isinstance(data, (bytes, bytearray)):
            raise EvidenceParseError("evidence envelope: expected bytes", 0)
        if len(data) > MAX_ENCODED_SIZE:
            raise EvidenceParseError(f"evidence envelope: {len(data)} bytes exceeds {MAX_ENCODED_SIZE}", MAX_ENCODED_SIZE)
        from google.protobuf.message import DecodeError

        msg = _pb().Evidence()
        try:
            msg.ParseFromString(bytes(data))
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise EvidenceParseError(f"evidence envelope: not a derot.v1.Evidence message ({exc})", 0) from None
        if msg.version != ENVELOPE_VERSION:
            raise EvidenceParseError(f"evidence envelope: version {msg.version}, expected {ENVELOPE_VERSION}", 0)
        try:
            platform = Platform(msg.platform)
        except ValueError:
            raise EvidenceParseError(f"evidence envelope: unknown platform {msg.platform}", 0) from None
        if len(msg.gpus) > MAX_GPUS:
            raise EvidenceParseError(f"evidence envelope: {len(msg.gpus)} GPU reports, at most {MAX_GPUS}", 0)
        return cls(
            platform=platform,
            quote=msg.quote,
            vek=msg.vek_cert,
            ask=msg.ask_cert,
            collateral=msg.collateral_json,
            gpus=tuple(GpuEvidence(g.report, g.cert_chain_pem) for g in msg.gpus),
            tpm_quote=msg.tpm_quote,
            tpm_signature=msg.tpm_signature,
            tpm_pcrs=tuple(msg.tpm_pcrs),
            td_quote=msg.td_quote,
            hcl_user_data_bound=msg.hcl_user_data_bound,
            event_log=msg.event_log,
        )
