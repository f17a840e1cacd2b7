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
    EvidenceParseError,
    SignatureInvalid,
    TcbNotSupported,
    TcbRevoked,
)
from derot.attest._x509 import load_certificates, load_crl
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


def _require_ca(cert: x509.Certificate, what: str, *, crl: bool = False) -> None:
    """``cert`` may issue certificates (basicConstraints CA, keyUsage keyCertSign; cRLSign for CRL issuers)."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise ChainInvalid(f"{what}: {cert.subject.rfc4514_string()!r} lacks {exc.oid._name}") from None
    if not bc.ca or not ku.key_cert_sign or (crl and not ku.crl_sign):
        raise ChainInvalid(f"{what}: {cert.subject.rfc4514_string()!r} is not a CA for this use "
                           f"(basicConstraints/keyUsage)")


def _require_signer(cert: x509.Certificate, what: str) -> None:
    """``cert`` is an end entity allowed to sign data (not a CA; keyUsage digitalSignature)."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise ChainInvalid(f"{what}: {cert.subject.rfc4514_string()!r} has no keyUsage") from None
    if (bc is not None and bc.ca) or not ku.digital_signature:
        raise ChainInvalid(f"{what}: {cert.subject.rfc4514_string()!r} is not a signing end entity "
                           f"(basicConstraints/keyUsage)")


def _chain_to_root(certs: list[x509.Certificate], root: x509.Certificate, at: int, what: str, *,
                   leaf_is_ca: bool = False) -> None:
    """``certs`` (leaf first) ends at or is issued by the pinned ``root``; links, validity,
    basicConstraints and keyUsage checked (every issuer a CA; the leaf a signing end entity, or a CRL
    issuing CA when ``leaf_is_ca``)."""
    if certs and certs[-1] == root:
        certs = certs[:-1]
    if not certs:
        raise ChainInvalid(f"{what}: no certificate below the root")
    if leaf_is_ca:
        _require_ca(certs[0], what, crl=True)
    else:
        _require_signer(certs[0], what)
    for cert, issuer in zip(certs, certs[1:] + [root]):
        _require_ca(issuer, what)
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise ChainInvalid(f"{what}: {cert.subject.rfc4514_string()!r} not issued by "
                               f"{issuer.subject.rfc4514_string()!r}: {exc}") from None
        _valid_at(cert, at)
    _valid_at(root, at)


def _check_crl(crl: x509.CertificateRevocationList, issuer: x509.Certificate, at: int, what: str) -> None:
    _require_ca(issuer, what, crl=True)
    if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):
        raise ChainInvalid(f"{what} is not signed by {issuer.subject.rfc4514_string()!r}")
    nxt = crl.next_update_utc
    if crl.last_update_utc.timestamp() > at or (nxt is not None and nxt.timestamp() < at):
        raise CollateralStale(f"{what} valid {crl.last_update_utc:%Y-%m-%d}..{nxt:%Y-%m-%d}, not at the verification time")


def _tcb_signer(chain: list[x509.Certificate], root: x509.Certificate, root_crl, at: int, what: str) -> x509.Certificate:
    """The Intel TCB signing certificate itself: issued directly by the pinned root, named
    ``... SGX TCB Signing``, a signing end entity, and not on the root CA CRL. Any other certificate
    that chains to the root (a PCK CA, a PCK leaf) is refused."""
    if chain and chain[-1] == root:
        chain = chain[:-1]
    if len(chain) != 1:
        raise ChainInvalid(f"{what}: expected the TCB signing certificate and the root, got {len(chain)} below the root")
    signer = chain[0]
    cns = [a.value for a in signer.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    if len(cns) != 1 or not str(cns[0]).endswith("SGX TCB Signing"):
        raise ChainInvalid(f"{what}: signed by {signer.subject.rfc4514_string()!r}, not the TCB signing certificate")
    _chain_to_root([signer], root, at, what)
    if root_crl.get_revoked_certificate_by_serial_number(signer.serial_number) is not None:
        raise CertificateRevoked(f"{what}: the TCB signing certificate is revoked")
    return signer


def _bounded_json(text: str, what: str):
    try:
        return untrusted.json_loads(text, what=what)
    except untrusted.UntrustedInputError as exc:
        raise CollateralError(str(exc)) from None


def verify_crypto(quote: IntelQuote, collateral: Collateral, root_der: bytes, at: int) -> dict:
    """Checks 1-5 of the module docstring; returns the verified TCB info and QE identity."""
    doc = _bounded_json(collateral.json_text, "collateral")
    try:
        root = load_certificates(root_der, "pinned Intel root")[0]
        root_crl = load_crl(bytes.fromhex(doc["root_ca_crl"]), "root CA CRL")
        pck_crl = load_crl(bytes.fromhex(doc["pck_crl"]), "PCK CRL")
        pck_crl_chain = load_certificates(doc["pck_crl_issuer_chain"].encode(), "PCK CRL issuer chain")
        tcb_chain = load_certificates(doc["tcb_info_issuer_chain"].encode(), "TCB info issuer chain")
        qe_chain = load_certificates(doc["qe_identity_issuer_chain"].encode(), "QE identity issuer chain")
        pck_chain = load_certificates(quote.cert_data.rstrip(b"\0"), "embedded PCK certificate chain")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        if isinstance(exc, EvidenceParseError):
            raise
        raise CollateralError(f"unreadable certificate or CRL: {exc}") from None

    _check_crl(root_crl, root, at, "root CA CRL")
    if root_crl.get_revoked_certificate_by_serial_number(root.serial_number) is not None:
        raise CertificateRevoked("the pinned root is on its own CRL")
    if len(pck_chain) < 2:
        raise ChainInvalid("PCK chain: fewer than two certificates")
    _chain_to_root(pck_chain, root, at, "PCK chain")
    pck_leaf, pck_ca = pck_chain[0], pck_chain[1]
    _chain_to_root(pck_crl_chain, root, at, "PCK CRL issuer chain", leaf_is_ca=True)
    _check_crl(pck_crl, pck_crl_chain[0], at, "PCK CRL")
    if pck_crl_chain[0].subject != pck_ca.subject or pck_crl_chain[0].public_key() != pck_ca.public_key():
        raise CollateralError("PCK CRL is issued by a different CA than the quote's PCK CA")
    for cert, crl in ((pck_ca, root_crl), (pck_leaf, pck_crl)):
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            raise CertificateRevoked(f"{cert.subject.rfc4514_string()!r} is revoked")

    for name, chain in (("tcb_info", tcb_chain), ("qe_identity", qe_chain)):
        signer = _tcb_signer(chain, root, root_crl, at, f"{name} issuer chain")
        try:
            sig = bytes.fromhex(doc[f"{name}_signature"])
        except (KeyError, TypeError, ValueError):
            raise CollateralError(f"{name}_signature is missing or not hex") from None
        _p256_raw_verify(signer.public_key(), sig, doc[name].encode(), name)
    tcb_info = _bounded_json(doc["tcb_info"], "collateral tcb_info")
    qe_identity = _bounded_json(doc["qe_identity"], "collateral qe_identity")
    for name, body in (("TCB info", tcb_info), ("QE identity", qe_identity)):
        if not _ts(body["issueDate"]) <= at <= _ts(body["nextUpdate"]):
            raise CollateralStale(f"{name} valid {body['issueDate']}..{body['nextUpdate']}, not at the verification time")
    _check_identity_kinds(quote, tcb_info, qe_identity)

    _p256_raw_verify(pck_leaf.public_key(), quote.qe_report_signature, quote.qe_report_raw, "QE report")
    expected = hashlib.sha256(quote.attestation_key + quote.qe_auth_data).digest() + bytes(32)
    if quote.qe_report.report_data != expected:
        raise SignatureInvalid("QE report data does not bind the attestation key")
    qe = quote.qe_report
    if qe.mr_signer != bytes.fromhex(qe_identity["mrsigner"]) or qe.isv_prod_id != qe_identity["isvprodid"]:
        raise ChainInvalid("QE report does not match the QE identity (MRSIGNER/ISVPRODID)")
    if qe.debug:
        raise ChainInvalid("the quoting enclave runs in debug mode")
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


#: QE identity id and accepted versions per TEE, and the lowest TCB info version (as Intel's QVL).
QE_IDENTITY_KIND = {"TDX": ("TD_QE", (2, 3)), "SGX": ("QE", (2,))}
TCB_INFO_MIN_VERSION = {"TDX": 3, "SGX": 2}


def _check_identity_kinds(quote: IntelQuote, tcb_info: dict, qe_identity: dict) -> None:
    """The TCB info and QE identity are of the kind and version the quote's TEE needs."""
    tee = "TDX" if quote.is_tdx else "SGX"
    qe_id, qe_versions = QE_IDENTITY_KIND[tee]
    if qe_identity.get("id") != qe_id or qe_identity.get("version") not in qe_versions:
        raise CollateralError(f"QE identity is {qe_identity.get('id')!r} version {qe_identity.get('version')!r}; "
                              f"a {tee} quote needs {qe_id} version {' or '.join(map(str, qe_versions))}")
    version = tcb_info.get("version")
    if tcb_info.get("id", "SGX") != tee or not isinstance(version, int) or version < TCB_INFO_MIN_VERSION[tee]:
        raise CollateralError(f"TCB info is {tcb_info.get('id')!r} version {version!r}; a {tee} quote needs "
                              f"{tee} version {TCB_INFO_MIN_VERSION[tee]} or later")


def _check_tdx_module(body: TdReportBody, tcb_info: dict) -> dict | None:
    """MRSIGNERSEAM and SEAMATTRIBUTES against ``tdxModule`` (TEE_TCB_SVN[1] = 0) or the module identity
    ``TDX_<byte 1>``; returns that identity (for its TCB levels) or ``None`` for the base module."""
    base = tcb_info.get("tdxModule")
    if not isinstance(base, dict):
        raise CollateralError("TDX TCB info has no tdxModule")
    expected, identity = base, None
    version = body.tee_tcb_svn[1]
    if version > 0:  # a module of version > 0 must have its identity (Intel QVL; dcap-qvl 0.7.0)
        wanted = f"TDX_{version:02X}"
        identities = tcb_info.get("tdxModuleIdentities") or []
        identity = next((m for m in identities if isinstance(m, dict) and str(m.get("id", "")).upper() == wanted), None)
        if identity is None:
            raise TcbNotSupported(f"no TDX module identity {wanted} in the TCB info")
        expected = identity
    try:
        mrsigner = bytes.fromhex(expected["mrsigner"])
        attrs, mask = bytes.fromhex(expected["attributes"]), bytes.fromhex(expected["attributesMask"])
    except (KeyError, TypeError, ValueError):
        raise CollateralError("TDX module identity lacks mrsigner/attributes/attributesMask") from None
    if len(mrsigner) != 48 or len(attrs) != 8 or len(mask) != 8:
        raise CollateralError("TDX module identity fields have the wrong length")
    if body.mr_signer_seam != mrsigner:
        raise TcbNotSupported(f"TDX module MRSIGNER differs from {expected.get('id', 'tdxModule')}'s")
    for a, e, m in zip(body.seam_attributes, attrs, mask):
        if a & m != e & m or a & ~m & 0xFF:
            raise TcbNotSupported(f"SEAMATTRIBUTES {body.seam_attributes.hex()} do not match "
                                  f"{expected.get('id', 'tdxModule')}")
    return identity


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
        if len(sgx) != 16 or (tdx and len(tdxc) != 16):
            raise CollateralError("a TCB level has the wrong number of SVN components")
        if pce_svn < pcesvn or any(c < s for c, s in zip(cpu_svn, sgx)):
            continue
        if tdx and any(c < s for c, s in list(zip(tee_svn, tdxc))[skip:]):
            continue
        platform = TcbResult(level["tcbStatus"], tuple(level.get("advisoryIDs", ())), level.get("tcbDate"))
        break
    if platform is None:
        raise TcbNotSupported("no TCB level in the TCB info matches the platform")
    module = _check_tdx_module(body, tcb_info) if tdx else None
    if module is not None:
        level = next((lv for lv in module["tcbLevels"] if tee_svn[0] >= lv["tcb"]["isvsvn"]), None)
        if level is None:
            raise TcbNotSupported(f"TDX module ISVSVN {tee_svn[0]} is below every {module['id']} level")
        platform = _converge(platform, TcbResult(level["tcbStatus"], tuple(level.get("advisoryIDs", ()))))
    qe_level = next((lv for lv in qe_identity["tcbLevels"] if quote.qe_report.isv_svn >= lv["tcb"]["isvsvn"]), None)
    if qe_level is None:
        raise TcbNotSupported(f"QE ISVSVN {quote.qe_report.isv_svn} is below every QE identity level")
    return _converge(platform, TcbResult(qe_level["tcbStatus"], tuple(qe_level.get("advisoryIDs", ()))))


def _pck_extension(pck_leaf: x509.Certificate):
    """The PCK certificate's SGX extension (via dcap-qvl's parser): FMSPC, PCEID, CPUSVN, PCESVN."""
    import dcap_qvl

    try:
        return dcap_qvl.parse_pck_extension_from_pem(pck_leaf.public_bytes(serialization.Encoding.PEM))
    except ValueError as exc:
        raise ChainInvalid(f"PCK certificate has no readable SGX extension: {exc}") from None


def pck_svns(pck_leaf: x509.Certificate) -> tuple[bytes, int]:
    """CPUSVN and PCESVN from a PCK certificate."""
    ext = _pck_extension(pck_leaf)
    return bytes(ext.cpu_svn), int(ext.pce_svn)


def verify_quote(quote: IntelQuote, collateral: Collateral, root_der: bytes, at: int) -> tuple[TcbResult, dict]:
    """Full verification (checks 1-6); returns the TCB result and the verified collateral facts."""
    verified = verify_crypto(quote, collateral, root_der, at)
    ext = _pck_extension(verified["pck_leaf"])
    cpu_svn, pce_svn = bytes(ext.cpu_svn), int(ext.pce_svn)
    tcb_info = verified["tcb_info"]
    if collateral.fmspc != bytes(ext.fmspc) or str(tcb_info.get("fmspc", "")).lower() != bytes(ext.fmspc).hex():
        raise CollateralError("collateral FMSPC differs from the PCK certificate's")
    if str(tcb_info.get("pceId", "")).lower() != bytes(ext.pce_id).hex():
        raise CollateralError(f"TCB info PCEID {tcb_info.get('pceId')!r} differs from the PCK certificate's "
                              f"{bytes(ext.pce_id).hex()}")
    result = match_tcb(quote, tcb_info, verified["qe_identity"], cpu_svn, pce_svn)
    if result.status == "Revoked":
        raise TcbRevoked(f"Intel rates this platform's TCB Revoked ({', '.join(result.advisory_ids) or 'no advisories'})")
    return result, verified
