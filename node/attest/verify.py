"""The single entry point: :func:`verify_evidence` (evidence + trust -> Claims, or an error).

Dispatch by platform to the one verifier for it; a GPU TEE's GPUs are verified after the CPU evidence
with their nonce bound to its report_data (:func:`derot.attest.binding.gpu_nonce`), and every GPU must
pass. TDX evidence with an event log is replayed against its RTMRs (:mod:`derot.attest.eventlog`); Azure
CVM evidence goes to :mod:`derot.attest.azure`. Evidence that carries Intel collateral uses it (collateral
is signed by Intel, so a requester can supply it; it must still be fresh at ``at``); otherwise the trust config's collateral store provides it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import replace

from derot import untrusted
from derot.attest import nvidia_gpu, sev_snp
from derot.attest._x509 import load_certificates
from derot.attest.binding import gpu_nonce
from derot.attest.claims import Claims
from derot.attest.collateral import Collateral
from derot.attest.errors import AttestationError, EvidenceParseError, RootNotTrusted, UnsupportedEvidence
from derot.attest.evidence import Evidence
from derot.attest.trust import TrustConfig
from derot.constants import Platform

_collateral_cache: dict[bytes, Collateral] = {}
_collateral_lock = threading.Lock()


def _parsed_collateral(blob: bytes) -> Collateral:
    key = hashlib.sha256(blob).digest()
    hit = _collateral_cache.get(key)
    if hit is None:
        hit = Collateral.from_json(blob)
        with _collateral_lock:
            if len(_collateral_cache) > 256:
                _collateral_cache.clear()
            _collateral_cache[key] = hit
    return hit


def verify_evidence(evidence: Evidence, trust: TrustConfig, *, at: int | None = None,
                    gpu_nonce_override: bytes | None = None) -> Claims:
    """Verify ``evidence`` at unix time ``at`` (default: now) and return its Claims.

    Raises :class:`EvidenceParseError` for malformed bytes and a :class:`VerificationError` subclass for
    every failed check. ``gpu_nonce_override`` verifies standalone GPU evidence against a caller's nonce.
    """
    untrusted.pin_recursion_limit()
    at = int(time.time()) if at is None else int(at)
    try:
        return _verify(evidence, trust, at, gpu_nonce_override)
    except AttestationError:
        raise
    except Exception as exc:  # noqa: BLE001 - a parser library's stray exception is malformed evidence
        raise EvidenceParseError(f"evidence: {type(exc).__name__}: {exc}", 0) from None


def _verify(evidence: Evidence, trust: TrustConfig, at: int, gpu_nonce_override: bytes | None) -> Claims:
    platform = evidence.platform
    if platform in (Platform.TDX, Platform.SGX):
        collateral = _parsed_collateral(evidence.collateral) if evidence.collateral else None
        claims = trust.intel.verify(evidence.quote, at, collateral)
        if evidence.event_log:
            from derot.attest.eventlog import apply_event_log

            claims = apply_event_log(claims, evidence.event_log)
    elif platform == Platform.SEV_SNP:
        if trust.amd is None:
            raise RootNotTrusted("this verifier trusts no AMD roots")
        if not evidence.vek:
            raise UnsupportedEvidence("SEV-SNP evidence without its VCEK/VLEK certificate")
        vek, bundled = sev_snp.split_vek_bundle(evidence.vek)
        claims = sev_snp.verify_report(evidence.quote, vek, trust.amd, at)
        if bundled:
            _check_pinned_amd(bundled, trust.amd)
        if evidence.ask:
            _check_supplied_ask(evidence.ask, trust.amd)
    elif platform in (Platform.AZURE_SNP, Platform.AZURE_TDX):
        claims = _verify_azure(evidence, trust, at)
    elif platform == Platform.NVIDIA_GPU:
        if len(evidence.gpus) != 1 or evidence.quote:
            raise UnsupportedEvidence("standalone GPU evidence carries exactly one GPU and no CPU quote")
        return _verify_gpu(evidence.gpus[0], trust, at, gpu_nonce_override)
    else:  # pragma: no cover - Platform is closed
        raise UnsupportedEvidence(f"unknown platform {platform}")
    if claims.platform != platform:
        raise UnsupportedEvidence(f"evidence says {platform.name} but the quote is {claims.platform.name}")
    if evidence.gpus:
        nonce = gpu_nonce(claims.report_data)
        claims = claims.with_gpus(tuple(_verify_gpu(g, trust, at, nonce) for g in evidence.gpus))
    return claims


def _verify_azure(evidence: Evidence, trust: TrustConfig, at: int) -> Claims:
    from derot.attest import azure

    if evidence.platform == Platform.AZURE_SNP:
        if trust.amd is None:
            raise RootNotTrusted("this verifier trusts no AMD roots")
        return azure.verify(evidence, azure.snp_hardware(evidence.vek, trust.amd, at))
    collateral = _parsed_collateral(evidence.collateral) if evidence.collateral else None

    def tdx(hcl) -> Claims:
        claims = trust.intel.verify(evidence.td_quote, at, collateral)
        if claims.platform != Platform.TDX:
            raise UnsupportedEvidence("AZURE_TDX evidence whose td_quote is not a TDX quote")
        return claims

    return azure.verify(evidence, tdx)


def _verify_gpu(gpu, trust: TrustConfig, at: int, nonce: bytes | None) -> Claims:
    if trust.nvidia is None:
        raise RootNotTrusted("this verifier trusts no NVIDIA roots")
    claims = nvidia_gpu.verify_report(gpu.report, gpu.cert_chain, trust.nvidia, at, expected_nonce=nonce)
    rims = getattr(trust, "rims", None)
    if rims is None:
        return claims
    return replace(claims, tee_attributes={**claims.tee_attributes, "rim": rims.check(claims, at)})


def _check_supplied_ask(pem: bytes, roots: sev_snp.AmdRoots) -> None:
    _check_pinned_amd(load_certificates(pem, "supplied ASK/ARK"), roots)


def _check_pinned_amd(supplied, roots: sev_snp.AmdRoots) -> None:
    """Certificates shipped with the VEK (ASK/ASVK/ARK) must be the pinned ones: they never add trust."""
    pinned = {c for s in roots.sets for c in (s.ask, s.asvk, s.ark) if c is not None}
    if any(c not in pinned for c in supplied):
        raise RootNotTrusted("supplied ASK/ARK differs from the pinned AMD roots")
