"""Azure confidential VMs: SEV-SNP or TDX behind Microsoft's paravisor (HCL) and its vTPM.

On Azure the paravisor owns the hardware report; the guest attests with its vTPM. Evidence (kinds
``AZURE_SNP`` / ``AZURE_TDX``, :class:`derot.attest.evidence.Evidence`): the HCL report (``quote``), the
hardware report it wraps (SNP: inside the HCL report, verified with ``vek``; TDX: ``td_quote``), and a
TPM2_Quote (``tpm_quote`` TPMS_ATTEST, ``tpm_signature``, ``tpm_pcrs``).

HCL report layout (2600 bytes as Azure's vTPM NV index 0x01400001 returns it): header 0x00-0x1F ("HCLA",
version, report_size, request_type, status, reserved); the hardware report at 0x20 (SNP: 1184-byte
ATTESTATION_REPORT; TDX: 1024-byte TDREPORT); IGVM request data at 0x4C0 (u32 data_size, version,
report_type 2=SNP/4=TDX, hash_type 1=SHA-256, variable_data_size); the runtime data (JSON) at 0x4D4.

Verification, in order (each failure raises its own named error):

1. the HCL report parses and its report type is the evidence kind's (``hcl_report_invalid``);
2. the hardware evidence verifies exactly as bare SNP/TDX evidence does (``sev_snp.verify_report``,
   the Intel verifier); an SNP report must come from VMPL 0, where the paravisor runs;
3. SHA-256(runtime data) == hardware report_data[0:32] (``ak_not_bound``), then the runtime data's JWK
   ``HCLAkPub`` is the attestation key (AK);
4. the TPM quote's signature verifies under the AK (``tpm_quote_signature_invalid``);
5. the PCR values hash to the signed pcrDigest (``pcr_digest_mismatch``);
6. if ``hcl_user_data_bound``, the runtime data's ``user-data`` starts with the quote's nonce
   (``hcl_user_data_mismatch``); if the caller expects a nonce, it is the quote's extraData
   (``tpm_nonce_mismatch``).

The request binding is the quote's extraData: ``Claims.report_data`` is extraData zero-padded to 64 bytes
(an app cannot choose the hardware report_data on Azure). The measurement is the hardware identity plus
the identity PCRs (:data:`derot.attest.claims.AZURE_PCR_NAMES`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa

from derot import untrusted
from derot.attest import sev_snp, tpm
from derot.attest._reader import Reader
from derot.attest.claims import Claims, measurement_digest
from derot.attest.errors import EvidenceParseError, NonceMismatch, UnsupportedEvidence, VerificationError
from derot.constants import Platform

HCL_MAGIC = b"HCLA"
HW_REPORT_OFFSET = 0x20
IGVM_OFFSET = 0x4C0
VAR_DATA_OFFSET = 0x4D4
MAX_HCL_SIZE = 8192
REPORT_TYPE = {Platform.AZURE_SNP: 2, Platform.AZURE_TDX: 4}
HW_REPORT_SIZE = {2: sev_snp.REPORT_SIZE, 4: 1024}
HASH_TYPE_SHA256 = 1
AK_KID = "HCLAkPub"


class HclReportInvalid(VerificationError):
    """The HCL report is of the wrong type for the evidence kind, or its hardware report is not the
    paravisor's (SNP VMPL other than 0)."""

    reason = "hcl_report_invalid"


class AkNotBound(VerificationError):
    """The HCL runtime data (holding the attestation key) is not the data the hardware report binds."""

    reason = "ak_not_bound"


class TpmNonceMismatch(NonceMismatch):
    """The TPM quote's qualifying data (nonce) is not the expected one."""

    reason = "tpm_nonce_mismatch"


class HclUserDataMismatch(NonceMismatch):
    """The HCL runtime data's user-data does not carry the quote's nonce although the evidence says it does."""

    reason = "hcl_user_data_mismatch"


@dataclass(frozen=True)
class HclReport:
    """A structurally valid HCL report. ``runtime_data`` is raw (parsed only once bound, see :func:`runtime_key`)."""

    raw: bytes
    version: int
    request_type: int
    report_type: int
    hardware_report: bytes
    runtime_data: bytes


def parse_hcl_report(raw: bytes) -> HclReport:
    """Parse the HCL report's fixed layout (module docstring); raises :class:`EvidenceParseError`."""
    r = Reader(raw, "HCL report")
    if not VAR_DATA_OFFSET <= len(r.data) <= MAX_HCL_SIZE:
        raise r.fail(f"size {len(r.data)} outside {VAR_DATA_OFFSET}..{MAX_HCL_SIZE}", 0)
    if r.take(4, "signature") != HCL_MAGIC:
        raise r.fail("signature is not 'HCLA'", 0)
    version, _size, request_type, _status = (r.u32(f) for f in ("version", "report_size", "request_type", "status"))
    r.pos = IGVM_OFFSET
    data_size = r.u32("IGVM data_size")
    r.u32("IGVM version")
    report_type = r.u32("IGVM report_type")
    hash_type = r.u32("IGVM hash_type")
    var_size = r.u32("variable_data_size")
    if report_type not in HW_REPORT_SIZE:
        raise r.fail(f"report type {report_type} is neither SNP (2) nor TDX (4)", IGVM_OFFSET + 8)
    if hash_type != HASH_TYPE_SHA256:
        raise r.fail(f"runtime data hash type {hash_type} is not SHA-256 (1)", IGVM_OFFSET + 12)
    if data_size != var_size + (VAR_DATA_OFFSET - IGVM_OFFSET):
        raise r.fail(f"IGVM data_size {data_size} does not match variable_data_size {var_size}", IGVM_OFFSET)
    runtime = r.take(var_size, "runtime data")
    hw = r.data[HW_REPORT_OFFSET:HW_REPORT_OFFSET + HW_REPORT_SIZE[report_type]]
    return HclReport(r.data, version, request_type, report_type, hw, runtime)


@dataclass(frozen=True)
class RuntimeData:
    """The bound HCL runtime data: the AK, the user-data and the VM configuration the paravisor reports."""

    ak: rsa.RSAPublicKey
    user_data: bytes
    vm_configuration: Mapping[str, object]


def _b64url_int(text: object, what: str) -> int:
    if not isinstance(text, str) or len(text) > 1024:
        raise AkNotBound(f"AK JWK field {what} is not a base64url string")
    try:
        return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")
    except (binascii.Error, ValueError):
        raise AkNotBound(f"AK JWK field {what} is not base64url") from None


_RUNTIME_CACHE: dict[bytes, RuntimeData] = {}
_RUNTIME_LOCK = threading.Lock()


def runtime_data(hcl: HclReport, hardware_report_data: bytes) -> RuntimeData:
    """Check that the hardware report binds the runtime data, then parse it (bounded JSON) for the AK.
    Parsed runtime data is cached by its SHA-256 (the value the hardware binds), so a VM's AK is parsed once."""
    digest = hashlib.sha256(hcl.runtime_data).digest()
    if hardware_report_data[:32] != digest:
        raise AkNotBound("SHA-256 of the HCL runtime data is not the hardware report_data: "
                         "the attestation key is not bound to this TEE")
    hit = _RUNTIME_CACHE.get(digest)
    if hit is None:
        hit = _parse_runtime(hcl.runtime_data)
        with _RUNTIME_LOCK:
            if len(_RUNTIME_CACHE) > 4096:
                _RUNTIME_CACHE.clear()
            _RUNTIME_CACHE[digest] = hit
    return hit


def _parse_runtime(raw: bytes) -> RuntimeData:
    doc = _json(raw, "HCL runtime data", len(raw), 8)
    keys = doc.get("keys") if isinstance(doc, dict) else None
    jwk = next((k for k in keys if isinstance(k, dict) and k.get("kid") == AK_KID), None) \
        if isinstance(keys, list) else None
    if jwk is None or jwk.get("kty") != "RSA":
        raise AkNotBound("the HCL runtime data has no RSA key 'HCLAkPub'")
    n, e = _b64url_int(jwk.get("n"), "n"), _b64url_int(jwk.get("e"), "e")
    if n.bit_length() < 2048 or e < 3 or e % 2 == 0:
        raise AkNotBound("the AK is not an RSA key of at least 2048 bits")
    user = doc.get("user-data", "")
    try:
        user_data = bytes.fromhex(user) if isinstance(user, str) and len(user) <= 256 else b""
    except ValueError:
        user_data = b""
    config = doc.get("vm-configuration")
    return RuntimeData(rsa.RSAPublicNumbers(e, n).public_key(), user_data,
                       dict(config) if isinstance(config, dict) else {})


@dataclass(frozen=True)
class VtpmFacts:
    """What the vTPM half of Azure evidence established: the quote, its nonce and the PCRs it covers."""

    attest: tpm.QuoteAttest
    pcrs: Mapping[int, bytes]
    runtime: RuntimeData


def verify_vtpm(hcl: HclReport, hardware_report_data: bytes, tpm_quote: bytes, tpm_signature: bytes,
                pcrs: tuple[bytes, ...], *, user_data_bound: bool = False,
                expected_nonce: bytes | None = None) -> VtpmFacts:
    """Steps 3-6 of the module docstring, given the verified hardware report_data."""
    runtime = runtime_data(hcl, hardware_report_data)
    attest = tpm.parse_quote_attest(tpm_quote)
    tpm.verify_quote_signature(runtime.ak, attest.raw, tpm_signature)
    values = tpm.check_pcrs(attest, tuple(pcrs))
    nonce = attest.extra_data
    if user_data_bound and (not nonce or runtime.user_data[:len(nonce)] != nonce):
        raise HclUserDataMismatch("the HCL user-data does not carry the TPM quote's nonce")
    if expected_nonce is not None and nonce != expected_nonce:
        raise TpmNonceMismatch("the TPM quote's nonce is not the expected one")
    return VtpmFacts(attest, values, runtime)


def verify(evidence, hardware: Callable[[HclReport], Claims], *, expected_nonce: bytes | None = None) -> Claims:
    """Verify Azure evidence; ``hardware`` verifies the hardware half (SNP report or TD quote) as bare
    evidence is verified and returns its Claims. Returns the Azure Claims (module docstring)."""
    platform = evidence.platform
    hcl = parse_hcl_report(evidence.quote)
    if hcl.report_type != REPORT_TYPE[platform]:
        raise HclReportInvalid(f"{platform.name} evidence carries an HCL report of type {hcl.report_type}")
    hw = hardware(hcl)
    if platform == Platform.AZURE_SNP and hw.details.get("vmpl") != 0:
        raise HclReportInvalid(f"the SNP report comes from VMPL {hw.details.get('vmpl')}, not the paravisor's VMPL 0")
    facts = verify_vtpm(hcl, hw.report_data, evidence.tpm_quote, evidence.tpm_signature, evidence.tpm_pcrs,
                        user_data_bound=evidence.hcl_user_data_bound, expected_nonce=expected_nonce)
    return _claims(platform, hw, facts)


def _claims(platform: Platform, hw: Claims, facts: VtpmFacts) -> Claims:
    registers = dict(hw.measurements)
    registers.update({f"PCR{i:02d}": v for i, v in facts.pcrs.items()})
    nonce = facts.attest.extra_data
    details = dict(hw.details)
    details.update(
        hardware_report_data=hw.report_data,
        hardware_measurement_digest=hw.measurement_digest,
        tpm_nonce=nonce,
        tpm_clock=facts.attest.clock,
        tpm_firmware_version=facts.attest.firmware_version,
        hcl_user_data=facts.runtime.user_data,
        vm_configuration=dict(facts.runtime.vm_configuration),
    )
    return Claims(
        platform=platform,
        measurements=registers,
        measurement_digest=measurement_digest(platform, registers),
        report_data=nonce.ljust(64, b"\0"),
        tcb_status=hw.tcb_status,
        advisory_ids=hw.advisory_ids,
        debug=hw.debug,
        hardware_ids=hw.hardware_ids,
        not_before=hw.not_before,
        not_after=hw.not_after,
        root=hw.root,
        details=details,
    )


def snp_hardware(vek: bytes, roots: sev_snp.AmdRoots, at: int) -> Callable[[HclReport], Claims]:
    """The SNP hardware verifier for :func:`verify`: the HCL's SNP report under its VCEK, as bare SNP."""
    if not vek:
        raise UnsupportedEvidence("Azure SEV-SNP evidence without its VCEK certificate")
    return lambda hcl: sev_snp.verify_report(hcl.hardware_report, vek, roots, at)


# --------------------------------------------------------------------------- trustee's JSON form


def from_trustee_json(data: bytes | str, platform: Platform | None = None):
    """Convert trustee's az-snp-vtpm / az-tdx-vtpm evidence JSON into a derot :class:`Evidence`.

    Shape: ``{"version", "tpm_quote": {"signature", "message", "pcrs": [24 hex]}, "hcl_report": b64url,
    "vcek": b64url DER (SNP) | "td_quote": b64url (TDX)}``; version >= 2 binds the HCL user-data.
    """
    from derot.attest.evidence import Evidence

    doc = _json(data, "Azure evidence JSON", 64 * 1024, 4)
    try:
        q = doc["tpm_quote"]
        pcrs = q["pcrs"]
        if not isinstance(pcrs, list) or len(pcrs) > tpm.NUM_PCRS:
            raise EvidenceParseError("Azure evidence JSON: pcrs must be a list of at most 24", 0)
        tdx = "td_quote" in doc
        kind = Platform.AZURE_TDX if tdx else Platform.AZURE_SNP
        if platform is not None and platform != kind:
            raise EvidenceParseError(f"Azure evidence JSON is {kind.name}, expected {platform.name}", 0)
        return Evidence(
            platform=kind,
            quote=_b64url(doc["hcl_report"]),
            vek=b"" if tdx else _b64url(doc["vcek"]),
            tpm_quote=bytes.fromhex(q["message"]),
            tpm_signature=bytes.fromhex(q["signature"]),
            tpm_pcrs=tuple(bytes.fromhex(p) for p in pcrs),
            td_quote=_b64url(doc["td_quote"]) if tdx else b"",
            hcl_user_data_bound=int(doc.get("version", 1)) >= 2,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, EvidenceParseError):
            raise
        raise EvidenceParseError(f"Azure evidence JSON: missing or malformed field ({exc})", 0) from None


def _json(data, what: str, max_bytes: int, max_depth: int):
    try:
        return untrusted.json_loads(data, what=what, max_bytes=max_bytes, max_depth=max_depth)
    except untrusted.UntrustedInputError as exc:
        raise EvidenceParseError(str(exc), 0) from None


def _b64url(text: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected a base64url string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None
