"""A second, independent DCAP quote verifier in Python (``cryptography``), with Intel's TCB rules.

Why it exists: dcap-qvl 0.7.0's Python API applies its own attribute policy on every path
(``verify``, ``verify_with_root_ca`` and ``QuoteVerifier.verify_with_policy`` even with
``QuotePolicy.claims_only``): debug TDs and enclaves, TDs without SEPT_VE_DISABLE, with migration,
profiling or SERVTD_EXT, and non-zero MRSERVICETD are refused with no facts returned, and
``allow_debug``/``allow_service_td`` exist only in its Rust API. derot must report those facts and let
its policy engine decide (an app may allow debug TEEs), so for exactly those refusals
:mod:`derot.attest.intel` re-verifies the quote here. Every other quote is verified by dcap-qvl.
The tests also use this module as an oracle against dcap-qvl on the vectors.

Checks, all against the pinned root at time ``at``:

1. root CA CRL and PCK CRL are signed by their issuers (root, PCK CA), current, and revoke neither
   the PCK CA nor the PCK certificate; PCK chain (leaf -> PCK CA -> pinned root) signatures and validity;
2. TCB info and QE identity: ECDSA P-256 signatures (raw r||s) over the exact JSON text, by the TCB
   signing certificate, which chains to the pinned root; issueDate <= at <= nextUpdate;
3. QE report signed by the PCK key; QE report_data == SHA-256(attestation key || QE auth data) || 0^32;
4. QE report matches the QE identity (MRSIGNER, ISVPRODID, masked MISCSELECT and ATTRIBUTES);
5. quote signature by the attestation key over header || body;
6. TCB status, Intel's rules: the first TCB level (highest first) whose SGX components <= CPUSVN,
   PCESVN <= PCESVN and, for TDX, TDX components <= TEE_TCB_SVN, where bytes 0-1 are skipped when
   TEE_TCB_SVN[1] > 0; then the TDX module identity ``TDX_<byte 1>`` rated by its ISVSVN levels;
   then the QE identity level by the QE's ISVSVN. Statuses converge to the worst one, except that
   OutOfDate with a Configuration* status gives OutOfDateConfigurationNeeded (Intel QVL).
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from derot import untrusted
from derot.attest.collateral import Collateral
from derot.attest.errors import (
    CertificateExpired,
    CertificateRevoked,
    ChainInvalid,
    CollateralError,
    CollateralStale,
    SignatureInvalid,
    TcbNotSupported,
)
from derot.attest.intel_quote import IntelQuote, TdReportBody

_SEVERITY = {
    "UpToDate": 0, "SWHardeningNeeded": 1, "ConfigurationNeeded": 2, "ConfigurationAndSWHardeningNeeded": 3,
    "OutOfDate": 4, "OutOfDateConfigurationNeeded": 5, "Revoked": 6,
}


@dataclass(frozen=True)
class TcbResult:
    status: str
    advisory_ids: tuple[str, ...]
    tcb_date: str | None = None


def _ts(value: str) -> int:
    return int(datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())


def _p256_raw_verify(pub: ec.EllipticCurvePublicKey, sig: bytes, data: bytes, what: str) -> None:
    if len(sig) != 64:
        raise SignatureInvalid(f"{what}: signature is {len(sig)} bytes, expected 64")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        pub.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureInvalid(f"{what}: signature does not verify") from None


def _valid_at(cert: x509.Certificate, at: int) -> None:
    if not cert.not_valid_before_utc.timestamp() <= at <= cert.not_valid_after_utc.timestamp():
        raise CertificateExpired(
            f"{cert.subject.rfc4514_string()!r} valid {cert.not_valid_before_utc:%Y-%m-%d}.."
            f"{cert.not_valid_after_utc:%Y-%m-%d}, not at {datetime.datetime.fromtimestamp(at, datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ}"
        )


def _chain_to_root(certs: list[x509.Certificate], root: x509.Certificate, at: int, what: str) -> None:
    """``certs`` (leaf first) ends at or is issued by the pinned ``root``; links and validity checked."""
    if certs and certs[-1] == root:
        certs = certs[:-1]
    for cert, issuer in zip(certs, certs[1:] + [root]):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise ChainInvalid(f"{what}: {cert.subject.rfc4514_string()!r} not issued by "
                               f"{issuer.subject.rfc4514_string()!r}: {exc}") from None
        _valid_at(cert, at)
    _valid_at(root, at)


def _check_crl(crl: x509.CertificateRevocationList, issuer: x509.Certificate, at: int, what: str) -> None:
    if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):
        raise ChainInvalid(f"{what} is not signed by {issuer.subject.rfc4514_string()!r}")
    nxt = crl.next_update_utc
    if crl.last_update_utc.timestamp() > at or (nxt is not None and nxt.timestamp() < at):
        raise CollateralStale(f"{what} valid {crl.last_update_utc:%Y-%m-%d}..{nxt:%Y-%m-%d}, not at the verification time")


def _bounded_json(text: str, what: str):
    try:
        return untrusted.json_loads(text, what=what)
    except untrusted.UntrustedInputError as exc:
        raise CollateralError(str(exc)) from None


def verify_crypto(quote: IntelQuote, collateral: Collateral, root_der: bytes, at: int) -> dict:
    """Checks 1-5 of the module docstring; returns the verified TCB info and QE identity."""
    doc = _bounded_json(collateral.json_text, "collateral")
    root = x509.load_der_x509_certificate(root_der)
    try:
        root_crl = x509.load_der_x509_crl(bytes.fromhex(doc["root_ca_crl"]))
        pck_crl = x509.load_der_x509_crl(bytes.fromhex(doc["pck_crl"]))
        pck_crl_chain = x509.load_pem_x509_certificates(doc["pck_crl_issuer_chain"].encode())
        tcb_chain = x509.load_pem_x509_certificates(doc["tcb_info_issuer_chain"].encode())
        qe_chain = x509.load_pem_x509_certificates(doc["qe_identity_issuer_chain"].encode())
        pck_chain = x509.load_pem_x509_certificates(quote.cert_data.rstrip(b"\0"))
    except (ValueError, KeyError) as exc:
        raise CollateralError(f"unreadable certificate or CRL: {exc}") from None

    _check_crl(root_crl, root, at, "root CA CRL")
    _chain_to_root(pck_chain, root, at, "PCK chain")
    pck_leaf, pck_ca = pck_chain[0], pck_chain[1]
    _chain_to_root(pck_crl_chain, root, at, "PCK CRL issuer chain")
    _check_crl(pck_crl, pck_crl_chain[0], at, "PCK CRL")
    if pck_crl_chain[0].subject != pck_ca.subject:
        raise CollateralError("PCK CRL is issued by a different CA than the quote's PCK CA")
    for cert, crl in ((pck_ca, root_crl), (pck_leaf, pck_crl)):
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            raise CertificateRevoked(f"{cert.subject.rfc4514_string()!r} is revoked")

    for name, chain in (("tcb_info", tcb_chain), ("qe_identity", qe_chain)):
        _chain_to_root(chain, root, at, f"{name} issuer chain")
        _p256_raw_verify(chain[0].public_key(), bytes.fromhex(doc[f"{name}_signature"]), doc[name].encode(), name)
    tcb_info = _bounded_json(doc["tcb_info"], "collateral tcb_info")
    qe_identity = _bounded_json(doc["qe_identity"], "collateral qe_identity")
    for name, body in (("TCB info", tcb_info), ("QE identity", qe_identity)):
        if not _ts(body["issueDate"]) <= at <= _ts(body["nextUpdate"]):
            raise CollateralStale(f"{name} valid {body['issueDate']}..{body['nextUpdate']}, not at the verification time")

    _p256_raw_verify(pck_leaf.public_key(), quote.qe_report_signature, quote.qe_report_raw, "QE report")
    expected = hashlib.sha256(quote.attestation_key + quote.qe_auth_data).digest() + bytes(32)
    if quote.qe_report.report_data != expected:
        raise SignatureInvalid("QE report data does not bind the attestation key")
    qe = quote.qe_report
    if qe.mr_signer != bytes.fromhex(qe_identity["mrsigner"]) or qe.isv_prod_id != qe_identity["isvprodid"]:
        raise ChainInvalid("QE report does not match the QE identity (MRSIGNER/ISVPRODID)")
    mask = int(qe_identity["miscselectMask"], 16)
    if qe.misc_select & mask != int(qe_identity["miscselect"], 16) & mask:
        raise ChainInvalid("QE MISCSELECT does not match the QE identity")
    attrs, amask = bytes.fromhex(qe_identity["attributes"]), bytes.fromhex(qe_identity["attributesMask"])
    if any((a & m) != (b & m) for a, b, m in zip(qe.attributes, attrs, amask)):
        raise ChainInvalid("QE ATTRIBUTES do not match the QE identity")

    point = b"\x04" + quote.attestation_key
    try:
        att_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise SignatureInvalid("attestation key is not a P-256 point") from None
    _p256_raw_verify(att_key, quote.signature, quote.raw[: quote.signed_length], "quote")
    return {"tcb_info": tcb_info, "qe_identity": qe_identity, "pck_leaf": pck_leaf}


def _converge(a: TcbResult, b: TcbResult) -> TcbResult:
    statuses = {a.status, b.status}
    if "OutOfDate" in statuses and statuses & {"ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"}:
        status = "OutOfDateConfigurationNeeded"
    else:
        status = max((a.status, b.status), key=lambda s: _SEVERITY.get(s, 7))
    advisories = tuple(dict.fromkeys(a.advisory_ids + b.advisory_ids))
    return TcbResult(status, advisories, a.tcb_date)


def match_tcb(quote: IntelQuote, tcb_info: dict, qe_identity: dict, cpu_svn: bytes, pce_svn: int) -> TcbResult:
    """Intel's TCB-level matching (module docstring, step 6) over already verified collateral."""
    body = quote.body
    tdx = isinstance(body, TdReportBody)
    tee_svn = body.tee_tcb_svn if tdx else b""
    skip = 2 if tdx and tee_svn[1] > 0 else 0

    def key(level):
        t = level["tcb"]
        return ([c["svn"] for c in t["sgxtcbcomponents"]], t["pcesvn"],
                [c["svn"] for c in t.get("tdxtcbcomponents", [])])

    platform = None
    for level in sorted(tcb_info["tcbLevels"], key=key, reverse=True):
        sgx, pcesvn, tdxc = key(level)
        if len(sgx) != 16 or pce_svn < pcesvn or any(c < s for c, s in zip(cpu_svn, sgx)):
            continue
        if tdx and (len(tdxc) != 16 or any(c < s for c, s in list(zip(tee_svn, tdxc))[skip:])):
            continue
        platform = TcbResult(level["tcbStatus"], tuple(level.get("advisoryIDs", ())), level.get("tcbDate"))
        break
    if platform is None:
        raise TcbNotSupported("no TCB level in the TCB info matches the platform")
    if tdx and tee_svn[1] > 0 and tcb_info.get("tdxModuleIdentities"):
        wanted = f"TDX_{tee_svn[1]:02X}"
        module = next((m for m in tcb_info["tdxModuleIdentities"] if m["id"].upper() == wanted), None)
        if module is None:
            raise TcbNotSupported(f"no TDX module identity {wanted} in the TCB info")
        if body.mr_signer_seam != bytes.fromhex(module["mrsigner"]):
            raise TcbNotSupported(f"TDX module MRSIGNER differs from {wanted}'s")
        level = next((lv for lv in module["tcbLevels"] if tee_svn[0] >= lv["tcb"]["isvsvn"]), None)
        if level is None:
            raise TcbNotSupported(f"TDX module ISVSVN {tee_svn[0]} is below every {wanted} level")
        platform = _converge(platform, TcbResult(level["tcbStatus"], tuple(level.get("advisoryIDs", ()))))
    qe_level = next((lv for lv in qe_identity["tcbLevels"] if quote.qe_report.isv_svn >= lv["tcb"]["isvsvn"]), None)
    if qe_level is None:
        raise TcbNotSupported(f"QE ISVSVN {quote.qe_report.isv_svn} is below every QE identity level")
    return _converge(platform, TcbResult(qe_level["tcbStatus"], tuple(qe_level.get("advisoryIDs", ()))))


def pck_svns(pck_leaf: x509.Certificate) -> tuple[bytes, int]:
    """CPUSVN and PCESVN from a PCK certificate (via dcap-qvl's SGX extension parser)."""
    import dcap_qvl

    ext = dcap_qvl.parse_pck_extension_from_pem(pck_leaf.public_bytes(serialization.Encoding.PEM))
    return bytes(ext.cpu_svn), int(ext.pce_svn)


def verify_quote(quote: IntelQuote, collateral: Collateral, root_der: bytes, at: int) -> tuple[TcbResult, dict]:
    """Full verification (checks 1-6); returns the TCB result and the verified collateral facts."""
    verified = verify_crypto(quote, collateral, root_der, at)
    cpu_svn, pce_svn = pck_svns(verified["pck_leaf"])
    if collateral.fmspc != _fmspc(verified["pck_leaf"]):
        raise CollateralError("collateral FMSPC differs from the PCK certificate's")
    return match_tcb(quote, verified["tcb_info"], verified["qe_identity"], cpu_svn, pce_svn), verified


def _fmspc(pck_leaf: x509.Certificate) -> bytes:
    import dcap_qvl

    return bytes(dcap_qvl.parse_pck_extension_from_pem(pck_leaf.public_bytes(serialization.Encoding.PEM)).fmspc)
