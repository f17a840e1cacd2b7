"""Intel TDX (quote v4/v5, TD 1.0 and TD 1.5 bodies) and SGX (quote v3) verification through dcap-qvl.

dcap-qvl checks, against the pinned Intel root: the root CA CRL, the TCB info and QE identity
signatures and issuer chains, the PCK chain and PCK CRL, the QE report signature (PCK key), the QE
report data binding of the attestation key, the QE identity, the quote signature, and it matches the
platform TCB level (for TDX with Intel's rule: TEE TCB SVN bytes 0-1 are skipped when byte 1 > 0 and
the module is rated by ``tdxModuleIdentities``; see tests/attest/test_intel_tcb.py) and merges the
QE TCB status.

derot calls ``verify_with_root_ca`` (pinned root, explicit time). It returns the TCB status and
advisories for any status but Revoked, so the TCB floor is derot's decision. dcap-qvl also refuses,
on every API path including ``QuoteVerifier.verify_with_policy`` with ``QuotePolicy.claims_only``,
debug TDs and enclaves, TDs without SEPT_VE_DISABLE, with migration/profiling/SERVTD_EXT, and a
non-zero MRSERVICETD, without returning any facts (``allow_debug``/``allow_service_td`` exist only
in its Rust API). When the quote body carries any of those (a structured signal computed from the
parsed quote, :func:`derot.attest.intel_attributes.dcap_policy_objections`, never from dcap-qvl's error
text), derot verifies the quote with its own verifier (:mod:`derot.attest.intel_dcap`, which checks
what a QVL checks) and reports the facts in :class:`Claims` (``debug``, ``tee_attributes``), so
:mod:`derot.attest.policy_tee` decides with a named reason. ``claims_only`` adds no
facts derot needs and costs a JSON round trip, so it is not used. The validity window is the
collateral's intersected with the PCK chain's.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace

import dcap_qvl
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.exceptions import InvalidSignature

from derot.attest.claims import Claims, HardwareIds, measurement_digest
from derot.attest.collateral import Collateral, CollateralKey, CollateralStore
from derot.attest.errors import (
    CertificateExpired,
    CertificateRevoked,
    ChainInvalid,
    CollateralError,
    PckChainMismatch,
    CollateralStale,
    RootNotTrusted,
    SignatureInvalid,
    TcbNotSupported,
    TcbRevoked,
    UnsupportedEvidence,
    VerificationError,
)
from derot.attest import intel_attributes, intel_dcap
from derot.attest.identity import pck_id
from derot.attest._x509 import load_certificates
from derot.attest.intel_quote import IntelQuote, SgxReportBody, TdReportBody, parse_quote
from derot.constants import Platform, TcbStatus

DEVNET_MARKER = "derot devnet"


@dataclass(frozen=True)
class PckInfo:
    """Facts from the PCK certificate chain embedded in a quote (not yet verified)."""

    fmspc: bytes
    ppid: bytes
    ca: str  # "platform" | "processor"
    root_der: bytes
    root_subject: str
    sgx_type: int
    not_before: int  # intersection of the chain's validity periods
    not_after: int
    pck_cert: bytes = b""  # derot.attest.identity.pck_id of the leaf (issuer Name DER + serial)
    chain_der: tuple[bytes, ...] = ()  # every certificate, leaf first, DER


_pck_cache: dict[bytes, PckInfo] = {}
_pck_lock = threading.Lock()


def pck_info(quote: IntelQuote) -> PckInfo:
    """Parse (and memoise by chain bytes) the embedded PCK chain: FMSPC, PPID, CA type and root."""
    pem = quote.pck_chain_pem
    if pem is None:
        raise UnsupportedEvidence(
            f"quote carries PCK certification data type {quote.cert_data_type}; only an embedded PCK chain (5) is supported"
        )
    hit = _pck_cache.get(pem)
    if hit is not None:
        return hit
    certs = load_certificates(pem.rstrip(b"\0"), "embedded PCK certificate chain")
    try:
        ext = dcap_qvl.parse_pck_extension_from_pem(pem.rstrip(b"\0"))
    except ValueError as exc:
        raise ChainInvalid(f"PCK certificate has no readable SGX extension: {exc}") from None
    if len(certs) < 2:
        raise ChainInvalid("embedded PCK certificate chain has fewer than two certificates")
    issuer = certs[0].issuer.rfc4514_string()
    info = PckInfo(
        fmspc=bytes(ext.fmspc),
        ppid=bytes(ext.ppid),
        ca="processor" if "Processor" in issuer else "platform",
        root_der=certs[-1].public_bytes(Encoding.DER),
        root_subject=certs[-1].subject.rfc4514_string(),
        sgx_type=int(ext.sgx_type),
        not_before=max(int(c.not_valid_before_utc.timestamp()) for c in certs),
        not_after=min(int(c.not_valid_after_utc.timestamp()) for c in certs),
        pck_cert=pck_id(certs[0].issuer.public_bytes(), certs[0].serial_number),
        chain_der=tuple(c.public_bytes(Encoding.DER) for c in certs),
    )
    with _pck_lock:
        if len(_pck_cache) > 4096:
            _pck_cache.clear()
        _pck_cache[pem] = info
    return info


def require_same_pck_chain(pck: PckInfo, collateral: Collateral, root_der: bytes) -> None:
    """dcap-qvl verifies against the collateral's ``pck_certificate_chain`` when it has one, while the claims
    (FMSPC, PPID, PCK certificate, CA type, validity) come from the chain embedded in the quote. Refuse a
    collateral chain that differs from the embedded one (a pinned root at the end of either is ignored), so
    the claims always come from the chain that was verified."""
    pem = collateral.pck_chain_pem
    if pem is None:
        return
    theirs = [c.public_bytes(Encoding.DER) for c in load_certificates(pem, "collateral PCK certificate chain")]
    ours = list(pck.chain_der)
    for chain in (theirs, ours):
        if chain and chain[-1] == root_der:
            chain.pop()
    if theirs != ours:
        raise PckChainMismatch(
            "the collateral's pck_certificate_chain differs from the PCK chain embedded in the quote "
            "(dcap-qvl would verify one and derot would read the hardware ids from the other)"
        )


_verified_chains: set[bytes] = set()  # sha256 of embedded PCK chains whose signatures verified


def check_chain_signatures(quote: IntelQuote) -> None:
    """Raise :class:`ChainInvalid` unless every certificate of the embedded PCK chain is signed by the next.

    Cheap (a few ECDSA verifications, memoised by chain): it runs before anything is fetched for the quote, so
    an attacker's own leaf and CA with a trusted root appended cost the operator no PCCS request."""
    pem = quote.pck_chain_pem.rstrip(b"\0")
    digest = hashlib.sha256(pem).digest()
    if digest in _verified_chains:
        return
    certs = load_certificates(pem, "embedded PCK certificate chain")
    for child, parent in zip(certs, certs[1:]):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise ChainInvalid(f"PCK chain: {child.subject.rfc4514_string()!r} is not signed by "
                               f"{parent.subject.rfc4514_string()!r} ({type(exc).__name__})") from None
    with _pck_lock:
        if len(_verified_chains) > 4096:
            _verified_chains.clear()
        _verified_chains.add(digest)


def classify_dcap_error(message: str) -> VerificationError:
    """Map a dcap-qvl error message onto derot's failure classes (the message is kept)."""
    m = message.lower()
    text = f"dcap-qvl: {message}"
    if any(k in m for k in ("no matching tcb level", "below minimum required", "tdx module tcb level", "no tdx module identity",
                            "tdx module identity check")):
        return TcbNotSupported(text)
    if "tcb status is invalid" in m and "revoked" in m:
        return TcbRevoked(text)
    if "crlexpired" in m or "tcb info expired" in m or "tcbinfo expired" in m or "qe identity expired" in m:
        return CollateralStale(text)
    if "revoked" in m and "tcb status" not in m:
        return CertificateRevoked(text)
    if "expired" in m or "notvalidyet" in m or "not valid yet" in m:
        return CertificateExpired(text)
    if "signature" in m or "qe report data" in m or "hash" in m:
        return SignatureInvalid(text)
    if "fmspc" in m or "tcb info" in m or "qe identity" in m or "collateral" in m or "crl" in m:
        return CollateralError(text)
    if "issuer" in m or "certificate" in m or "cert" in m or "chain" in m:
        return ChainInvalid(text)
    return VerificationError(text)


class IntelVerifier:
    """Verifies Intel quotes against pinned roots (label -> root CA DER) and a collateral store."""

    def __init__(self, roots: Mapping[str, bytes], store: CollateralStore):
        self.roots = dict(roots)
        self.store = store
        self._by_der = {der: label for label, der in self.roots.items()}

    def _trusted_pck(self, quote: IntelQuote) -> tuple[PckInfo, str]:
        """The quote's PCK facts and root label, once its chain ends in a pinned root and its signatures verify."""
        pck = pck_info(quote)
        label = self._by_der.get(pck.root_der)
        if label is None:
            devnet = DEVNET_MARKER in pck.root_subject.lower()
            raise RootNotTrusted(
                f"quote chains to {'a derot devnet root' if devnet else 'an unknown root'} "
                f"({pck.root_subject!r}), which this verifier does not trust"
                + (" (production verifiers refuse devnet roots)" if devnet else "")
            )
        check_chain_signatures(quote)
        return pck, label

    def collateral_key(self, raw: bytes) -> CollateralKey:
        """The collateral a quote needs; raises unless its PCK chain verifies up to a pinned root."""
        quote = parse_quote(raw)
        pck, _ = self._trusted_pck(quote)
        return CollateralKey("TDX" if quote.is_tdx else "SGX", pck.fmspc, pck.ca)

    def verify(self, raw: bytes, at: int, collateral: Collateral | None = None) -> Claims:
        quote = parse_quote(raw)
        pck, label = self._trusted_pck(quote)
        tee = "TDX" if quote.is_tdx else "SGX"
        if collateral is None:
            collateral = self.store.get(CollateralKey(tee, pck.fmspc, pck.ca), quote.raw, at)
        if collateral.tee != tee:
            raise CollateralError(f"collateral is for {collateral.tee}, the quote is {tee}")
        if collateral.fmspc != pck.fmspc:
            raise CollateralError(
                f"collateral is for FMSPC {collateral.fmspc.hex()}, the quote's PCK says {pck.fmspc.hex()}"
            )
        collateral.require_fresh(at)
        require_same_pck_chain(pck, collateral, self.roots[label])
        objections = intel_attributes.dcap_policy_objections(quote.body)
        if objections:  # dcap-qvl could only refuse by its own policy: verify here, policy decides
            return self._verify_own(quote, pck, collateral, label, at, objections)
        try:
            report = dcap_qvl.verify_with_root_ca(quote.raw, collateral.qvl, pck.root_der, at)
        except ValueError as exc:
            raise classify_dcap_error(str(exc)) from None
        return _claims(quote, report.status, tuple(report.advisory_ids), "dcap-qvl", pck, collateral, label)

    def _verify_own(self, quote, pck, collateral, label, at, objections: tuple[str, ...]) -> Claims:
        """Verify with derot's own QVL (:mod:`derot.attest.intel_dcap`) and report the facts."""
        result, _ = intel_dcap.verify_quote(quote, collateral, self.roots[label], at)
        claims = _claims(quote, result.status, result.advisory_ids, "derot intel_dcap", pck, collateral, label)
        return replace(claims, details={**claims.details, "dcap_qvl_policy_objections": list(objections)})


def _claims(quote: IntelQuote, status_name: str, advisories: tuple[str, ...], verified_by: str, pck: PckInfo,
            collateral: Collateral, label: str) -> Claims:
    body = quote.body
    details: dict[str, object] = {
        "quote_version": quote.version,
        "body": quote.body_kind,
        "tcb_status_intel": status_name,
        "tcb_eval_data_number": collateral.tcb_info.get("tcbEvaluationDataNumber"),
        "pck_ca": pck.ca,
        "sgx_type": pck.sgx_type,
        "verified_by": verified_by,
        "qe_svn": quote.qe_report.isv_svn,
    }
    if isinstance(body, TdReportBody):
        platform = Platform.TDX
        registers = {
            "MRTD": body.mr_td,
            "RTMR0": body.rtmr[0],
            "RTMR1": body.rtmr[1],
            "RTMR2": body.rtmr[2],
            "RTMR3": body.rtmr[3],
            "MRCONFIGID": body.mr_config_id,
            "MROWNER": body.mr_owner,
            "MROWNERCONFIG": body.mr_owner_config,
            "MRSEAM": body.mr_seam,
            "MRSIGNERSEAM": body.mr_signer_seam,
        }
        details.update(
            td_attributes=body.td_attributes,
            sept_ve_disable=body.sept_ve_disable,
            xfam=body.xfam,
            seam_attributes=body.seam_attributes,
            tee_tcb_svn=body.tee_tcb_svn,
        )
        if body.mr_service_td is not None:
            registers["MRSERVICETD"] = body.mr_service_td
            details["tee_tcb_svn2"] = body.tee_tcb_svn2
            details["mr_service_td_zero"] = not any(body.mr_service_td)
    else:
        assert isinstance(body, SgxReportBody)
        platform = Platform.SGX
        registers = {
            "MRENCLAVE": body.mr_enclave,
            "MRSIGNER": body.mr_signer,
            "ISVPRODID": body.isv_prod_id.to_bytes(2, "little"),
            "ISVSVN": body.isv_svn.to_bytes(2, "little"),
            "CONFIGID": body.config_id,
            "CONFIGSVN": body.config_svn.to_bytes(2, "little"),
        }
        details.update(attributes=body.attributes, misc_select=body.misc_select, cpu_svn=body.cpu_svn)
    return Claims(
        platform=platform,
        measurements=registers,
        measurement_digest=measurement_digest(platform, registers),
        report_data=body.report_data,
        tcb_status=TcbStatus.from_intel(status_name),
        advisory_ids=tuple(advisories),
        debug=body.debug,
        hardware_ids=HardwareIds(fmspc=pck.fmspc, ppid=pck.ppid, pck_cert=pck.pck_cert or None),
        not_before=max(pck.not_before, collateral.not_before),
        not_after=min(pck.not_after, collateral.not_after),
        root=label,
        details=details,
        tee_attributes=intel_attributes.tdx_facts(body) if platform == Platform.TDX else {"debug": body.debug},
    )
