"""Parser for Intel DCAP quotes: SGX v3, TDX v4 (TD 1.0 body) and TDX v5 (TD 1.0 / TD 1.5 bodies).

Layout (Intel DCAP Quote Library API, "Quote Format"); all integers little-endian::

    header (48)     version u16 | att_key_type u16 | tee_type u32 | qe_svn u16 | pce_svn u16
                    | qe_vendor_id 16 | user_data 20
    v5 only         body_type u16 (1 SGX, 2 TD1.0, 3 TD1.5) | body_size u32
    body            SGX report 384 | TD report 1.0 584 | TD report 1.5 648
    sig_data_len u32, then sig data:
      v3            ecdsa_sig 64 | att_key 64 | qe_report 384 | qe_report_sig 64
                    | qe_auth_len u16 | qe_auth | cert_type u16 | cert_size u32 | cert_data
      v4/v5         ecdsa_sig 64 | att_key 64 | cert_type u16 (=6) | cert_size u32 | then the v3 tail
                    from qe_report on, nested inside that certification data

The quote signature covers header (+ v5 body descriptor) + body: ``raw[:signed_length]``.
Bytes after the signature data are unsigned and ignored, as Intel's QVL does: quotes are often
zero-padded (and go-tdx-guest's sample carries a text trailer); ``IntelQuote.raw`` excludes them.
Every failure raises :class:`EvidenceParseError` with the byte offset.
"""

from __future__ import annotations

from dataclasses import dataclass

from derot.attest._reader import Reader

TEE_SGX = 0x00000000
TEE_TDX = 0x00000081
ATT_KEY_ECDSA_P256 = 2
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
CERT_TYPE_PCK_CHAIN = 5
CERT_TYPE_QE_REPORT = 6

SGX_REPORT_SIZE = 384
TD10_SIZE = 584
TD15_SIZE = 648
_V5_BODY = {1: ("SGX", SGX_REPORT_SIZE), 2: ("TD10", TD10_SIZE), 3: ("TD15", TD15_SIZE)}

# TD attributes (u64 LE): bit 0 DEBUG, bit 28 SEPT_VE_DISABLE
TD_ATTR_DEBUG = 1 << 0
TD_ATTR_SEPT_VE_DISABLE = 1 << 28
SGX_ATTR_DEBUG = 1 << 1


@dataclass(frozen=True)
class SgxReportBody:
    """SGX enclave report body (384 bytes); the QE report has the same layout."""

    cpu_svn: bytes
    misc_select: int
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    isv_family_id: bytes
    report_data: bytes

    @property
    def debug(self) -> bool:
        return bool(int.from_bytes(self.attributes[:8], "little") & SGX_ATTR_DEBUG)


@dataclass(frozen=True)
class TdReportBody:
    """TD report 1.0 (``tee_tcb_svn2`` and ``mr_service_td`` are ``None``) or 1.5."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None = None
    mr_service_td: bytes | None = None

    @property
    def attributes_u64(self) -> int:
        return int.from_bytes(self.td_attributes, "little")

    @property
    def debug(self) -> bool:
        return bool(self.attributes_u64 & TD_ATTR_DEBUG)

    @property
    def sept_ve_disable(self) -> bool:
        return bool(self.attributes_u64 & TD_ATTR_SEPT_VE_DISABLE)


@dataclass(frozen=True)
class IntelQuote:
    """A structurally valid DCAP quote. ``raw`` excludes trailing zero padding."""

    raw: bytes
    version: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes
    body_kind: str  # "SGX" | "TD10" | "TD15"
    body: SgxReportBody | TdReportBody
    signed_length: int
    signature: bytes  # r || s, big-endian
    attestation_key: bytes  # x || y
    qe_report_raw: bytes
    qe_report: SgxReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    cert_data_type: int
    cert_data: bytes

    @property
    def is_tdx(self) -> bool:
        return self.tee_type == TEE_TDX

    @property
    def pck_chain_pem(self) -> bytes | None:
        return self.cert_data if self.cert_data_type == CERT_TYPE_PCK_CHAIN else None


def parse_sgx_report(r: Reader) -> SgxReportBody:
    cpu_svn = r.take(16, "cpu_svn")
    misc_select = r.u32("misc_select")
    r.take(12, "reserved1")
    r.take(16, "isv_ext_prod_id")
    attributes = r.take(16, "attributes")
    mr_enclave = r.take(32, "mr_enclave")
    r.take(32, "reserved2")
    mr_signer = r.take(32, "mr_signer")
    r.take(32, "reserved3")
    config_id = r.take(64, "config_id")
    isv_prod_id = r.u16("isv_prod_id")
    isv_svn = r.u16("isv_svn")
    config_svn = r.u16("config_svn")
    r.take(42, "reserved4")
    isv_family_id = r.take(16, "isv_family_id")
    report_data = r.take(64, "report_data")
    return SgxReportBody(
        cpu_svn, misc_select, attributes, mr_enclave, mr_signer, config_id,
        isv_prod_id, isv_svn, config_svn, isv_family_id, report_data,
    )


def _parse_td_report(r: Reader, td15: bool) -> TdReportBody:
    fields = dict(
        tee_tcb_svn=r.take(16, "tee_tcb_svn"),
        mr_seam=r.take(48, "mr_seam"),
        mr_signer_seam=r.take(48, "mr_signer_seam"),
        seam_attributes=r.take(8, "seam_attributes"),
        td_attributes=r.take(8, "td_attributes"),
        xfam=r.take(8, "xfam"),
        mr_td=r.take(48, "mr_td"),
        mr_config_id=r.take(48, "mr_config_id"),
        mr_owner=r.take(48, "mr_owner"),
        mr_owner_config=r.take(48, "mr_owner_config"),
        rtmr=tuple(r.take(48, f"rtmr{i}") for i in range(4)),
        report_data=r.take(64, "report_data"),
    )
    if td15:
        fields["tee_tcb_svn2"] = r.take(16, "tee_tcb_svn2")
        fields["mr_service_td"] = r.take(48, "mr_service_td")
    return TdReportBody(**fields)


def _parse_version_and_tee(r: Reader) -> tuple[int, int]:
    """Read the version, attestation key type and TEE type; refuse any combination derot does not parse."""
    version = r.u16("version")
    if version not in (3, 4, 5):
        raise r.fail(f"unsupported quote version {version} (expected 3, 4 or 5)", 0)
    att_key_type = r.u16("attestation_key_type")
    if att_key_type != ATT_KEY_ECDSA_P256:
        raise r.fail(f"unsupported attestation key type {att_key_type} (expected 2, ECDSA-P256)", 2)
    tee_type = r.u32("tee_type")
    if tee_type not in (TEE_SGX, TEE_TDX):
        raise r.fail(f"unknown TEE type {tee_type:#x}", 4)
    if tee_type == TEE_SGX and version != 3:
        raise r.fail(f"SGX quotes must be version 3, got {version}", 0)
    if tee_type == TEE_TDX and version == 3:
        raise r.fail("TDX quotes must be version 4 or 5, got 3", 0)
    return version, tee_type


def _body_kind(r: Reader, version: int, tee_type: int) -> str:
    """The report body's kind ("SGX", "TD10" or "TD15"); a v5 quote names it (and its size) explicitly."""
    if version != 5:
        return "SGX" if tee_type == TEE_SGX else "TD10"
    at = r.pos
    body_type = r.u16("body_type")
    if body_type not in _V5_BODY or (body_type == 1) != (tee_type == TEE_SGX):
        raise r.fail(f"body type {body_type} invalid for TEE type {tee_type:#x}", at)
    body_kind, expected = _V5_BODY[body_type]
    body_size = r.u32("body_size")
    if body_size != expected:
        raise r.fail(f"body size {body_size} != {expected} for body type {body_type}", at + 2)
    return body_kind


def _parse_signature_data(r: Reader, raw: bytes, version: int) -> dict:
    """Parse the signature data after the signed part: the fields of :class:`IntelQuote` it holds.

    Every length is bounded by its enclosing sub-reader; trailing bytes inside the signature data are refused."""
    sig = r.sub(r.u32("signature_data_length"), "signature data")
    signature = sig.take(64, "quote signature")
    attestation_key = sig.take(64, "attestation key")
    if version == 3:
        qe = sig
    else:
        at = sig.pos
        outer_type = sig.u16("certification data type")
        if outer_type != CERT_TYPE_QE_REPORT:
            raise sig.fail(f"certification data type {outer_type} (expected 6, QE report)", at)
        qe = sig.sub(sig.u32("certification data size"), "QE report certification data")
    qe_report_start = qe.pos
    qe_report = parse_sgx_report(qe.sub(SGX_REPORT_SIZE, "QE report"))
    qe_report_raw = raw[qe_report_start : qe_report_start + SGX_REPORT_SIZE]
    qe_report_signature = qe.take(64, "QE report signature")
    qe_auth_data = qe.take(qe.u16("QE auth data size"), "QE auth data")
    cert_data_type = qe.u16("PCK certification data type")
    if cert_data_type not in range(1, 8):
        raise qe.fail(f"unknown PCK certification data type {cert_data_type}", qe.pos - 2)
    cert_data = qe.take(qe.u32("PCK certification data size"), "PCK certification data")
    if qe.remaining():
        raise qe.fail(f"{qe.remaining()} unexpected bytes after the certification data")
    if version != 3 and sig.remaining():
        raise sig.fail(f"{sig.remaining()} unexpected bytes after the certification data")
    return dict(
        signature=signature,
        attestation_key=attestation_key,
        qe_report_raw=qe_report_raw,
        qe_report=qe_report,
        qe_report_signature=qe_report_signature,
        qe_auth_data=qe_auth_data,
        cert_data_type=cert_data_type,
        cert_data=cert_data,
    )


def parse_quote(raw: bytes) -> IntelQuote:
    """Parse an SGX v3 / TDX v4 / TDX v5 quote (structure only; nothing is verified here)."""
    r = Reader(raw, "Intel quote")
    version, tee_type = _parse_version_and_tee(r)
    qe_svn = r.u16("qe_svn")
    pce_svn = r.u16("pce_svn")
    qe_vendor_id = r.take(16, "qe_vendor_id")
    user_data = r.take(20, "user_data")
    body_kind = _body_kind(r, version, tee_type)
    body_r = r.sub({"SGX": SGX_REPORT_SIZE, "TD10": TD10_SIZE, "TD15": TD15_SIZE}[body_kind], "report body")
    body = parse_sgx_report(body_r) if body_kind == "SGX" else _parse_td_report(body_r, body_kind == "TD15")
    signed_length = r.pos
    signature_fields = _parse_signature_data(r, raw, version)
    return IntelQuote(
        raw=bytes(raw[: r.pos]),
        version=version,
        tee_type=tee_type,
        qe_svn=qe_svn,
        pce_svn=pce_svn,
        qe_vendor_id=qe_vendor_id,
        user_data=user_data,
        body_kind=body_kind,
        body=body,
        signed_length=signed_length,
        **signature_fields,
    )
