"""SEV-SNP evidence assembly shared by the ``/dev/sev-guest`` and configfs-tsm devices.

- :func:`parse_cert_table`: the GHCB certificate table the host attaches to an extended report
  (``SNP_GET_EXT_REPORT`` certificate buffer, configfs-tsm ``auxblob``). GHCB spec 2.03, 4.1.8.1:
  entries ``guid[16] | offset u32 | length u32`` (little-endian), ended by an all-zero entry; offsets
  count from the start of the table. GUIDs are in RFC 4122 byte order, as ``uuid_parse`` writes them
  (AMD's sev-guest tools, go-sev-guest and virtee/sev agree).
- :func:`snp_evidence`: checks the report binds the requested report_data (and VMPL) and attaches
  the VEK that signs it: the host table's VCEK or VLEK (whichever the report names), else the
  operator's ``vek_path``. Nodes cannot fetch a VEK themselves, and a guest without internet cannot
  query AMD's KDS, so without either the device fails with the KDS URL to download it from.
  The ASK/ARK are not attached: nodes pin them.
"""

from __future__ import annotations

import functools
import struct
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from derot.attest import sev_snp
from derot.attest.errors import EvidenceParseError
from derot.attest.evidence import Evidence
from derot.constants import Platform

from derot.app.tee.device import ConfiguredFile
from derot.app.tee.errors import MalformedResponse, ReportDataMismatch, ShortRead, TeeConfigError

VCEK_GUID = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
VLEK_GUID = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
ASK_GUID = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
ARK_GUID = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")
CRL_GUID = uuid.UUID("92f81bc3-5811-4d3d-97ff-d19f88dc67ea")
_ENTRY = struct.Struct("<16sII")
_KDS = "https://kdsintf.amd.com"


@dataclass(frozen=True)
class CertTableEntry:
    guid: uuid.UUID
    offset: int
    data: bytes


def parse_cert_table(blob: bytes, what: str = "certificate table") -> tuple[CertTableEntry, ...]:
    """Entries of a GHCB certificate table. An empty or all-zero blob is an empty table (the host
    supplied no certificates). Zero-length entries are skipped; a GUID may appear once."""
    blob = bytes(blob)
    entries: list[CertTableEntry] = []
    pos = 0
    while True:
        if pos + _ENTRY.size > len(blob):
            if not blob.strip(b"\0"):
                return ()
            raise ShortRead(f"{what}: no terminating all-zero entry in {len(blob)} bytes", pos)
        raw_guid, offset, length = _ENTRY.unpack_from(blob, pos)
        if raw_guid == bytes(16) and offset == 0 and length == 0:
            break
        guid = uuid.UUID(bytes=raw_guid)
        if offset + length > len(blob):
            raise ShortRead(f"{what}: entry {guid} covers bytes {offset}..{offset + length}, "
                            f"but the table has {len(blob)}", pos + 16)
        if any(e.guid == guid for e in entries):
            raise MalformedResponse(f"{what}: GUID {guid} appears twice", pos)
        if length:
            entries.append(CertTableEntry(guid, offset, blob[offset : offset + length]))
        pos += _ENTRY.size
    table_end = pos + _ENTRY.size
    for e in entries:
        if e.offset < table_end:
            raise MalformedResponse(f"{what}: entry {e.guid} at offset {e.offset} overlaps the table", e.offset)
    return tuple(entries)


def parse_snp_report(raw: bytes, what: str) -> sev_snp.SnpReport:
    """A report from the TEE, parsed with the verifier's parser; errors become :class:`MalformedResponse`."""
    if len(raw) < sev_snp.REPORT_SIZE:
        raise ShortRead(f"{what}: {len(raw)} bytes, an SEV-SNP report has {sev_snp.REPORT_SIZE}", len(raw))
    try:
        return sev_snp.parse_report(raw)
    except EvidenceParseError as exc:
        message = str(exc).rsplit(" (at byte offset", 1)[0]
        raise MalformedResponse(f"{what}: {message}", exc.offset) from None


def kds_vcek_url(report: sev_snp.SnpReport) -> str:
    """Where AMD's KDS serves the VCEK for this report's chip and reported TCB."""
    product = sev_snp.product_from_cpuid(report.cpuid) if report.cpuid else None
    turin = product == "Turin"
    tcb = sev_snp.TcbVersion.from_u64(report.reported_tcb, turin)
    hwid = report.chip_id[:8].hex() if turin else report.chip_id.hex()
    query = f"blSPL={tcb.bootloader}&teeSPL={tcb.tee}&snpSPL={tcb.snp}&ucodeSPL={tcb.microcode}"
    if turin:
        query = f"fmcSPL={tcb.fmc}&{query}"
    return f"{_KDS}/vcek/v1/{product or '{Milan|Genoa}'}/{hwid}?{query}"


@functools.lru_cache(maxsize=16)
def _vek_key(vek_data: bytes) -> tuple[bytes, ec.EllipticCurvePublicKey] | None:
    """(DER, P-384 public key) of a VEK certificate (DER or PEM, alone or in a VCEK+ASK+ARK PEM bundle,
    as Azure ships it; the verifier checks the chain against its pinned roots), or None if it is not one."""
    try:
        cert = sev_snp.load_vek(sev_snp.split_vek_bundle(vek_data)[0])
    except EvidenceParseError:
        return None
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        return None
    return cert.public_bytes(serialization.Encoding.DER), key


def _signs(vek_data: bytes, report: sev_snp.SnpReport) -> bytes | None:
    """The VEK as DER if its key signed ``report``, else None."""
    if (loaded := _vek_key(bytes(vek_data))) is None:
        return None
    der, key = loaded
    signature = encode_dss_signature(report.signature_r, report.signature_s)
    try:
        key.verify(signature, report.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        return None
    return der


def select_vek(report: sev_snp.SnpReport, table: tuple[CertTableEntry, ...], vek_file: ConfiguredFile | None) -> bytes:
    """The DER VEK that signed ``report``: the host table's entry for the report's signing key,
    then ``vek_file``. :class:`TeeConfigError` (naming where to get one) if neither signs it."""
    if report.signing_key == sev_snp.SIGNING_KEY_VLEK:
        name, guid = "VLEK", VLEK_GUID
        hint = "a VLEK comes from the cloud provider that leased it (AMD KDS serves it only to them)"
    elif report.signing_key == sev_snp.SIGNING_KEY_VCEK:
        name, guid = "VCEK", VCEK_GUID
        hint = f"download the VCEK from {kds_vcek_url(report)} on a machine with internet"
    else:
        raise MalformedResponse("SEV-SNP report is not signed (signing_key = none)", 0x48)
    tried = []
    for entry in table:
        if entry.guid == guid:
            tried.append(f"the host's {name}")
            if (der := _signs(entry.data, report)) is not None:
                return der
    if vek_file is not None:
        tried.append(vek_file.path)
        if (der := _signs(vek_file.read(), report)) is not None:
            return der
    if tried:
        raise TeeConfigError(f"the report is signed by a {name} that {' and '.join(tried)} does not match "
                             f"(another chip, or a TCB from before a firmware update); {hint} and pass it as vek_path")
    raise TeeConfigError(f"the report is signed by a {name}, but the host supplied no certificate table entry "
                         f"for it and no vek_path is configured; {hint} and pass it as vek_path")


def snp_evidence(raw_report: bytes, report_data: bytes, vmpl: int | None, cert_table: bytes,
                 vek_file: ConfiguredFile | None, what: str, table_what: str) -> Evidence:
    """Evidence for a report the TEE returned for ``report_data`` (and ``vmpl``, when one was asked);
    ``what``/``table_what`` name where the report and the certificate table came from."""
    raw_report = bytes(raw_report)
    report = parse_snp_report(raw_report, what)
    if report.report_data != report_data:
        raise ReportDataMismatch(f"{what} binds report_data {report.report_data.hex()[:16]}…, "
                                 f"not the requested {report_data.hex()[:16]}… (a concurrent request?)")
    if vmpl is not None and report.vmpl != vmpl:
        raise ReportDataMismatch(f"{what} is for VMPL {report.vmpl}, not the requested VMPL {vmpl}")
    table = parse_cert_table(cert_table, table_what) if cert_table else ()
    return Evidence(platform=Platform.SEV_SNP, quote=raw_report, vek=select_vek(report, table, vek_file))
