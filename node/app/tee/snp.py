"""SEV-SNP evidence assembly shared by the ``/dev/sev-guest`` and configfs-tsm devices.

- :func:`parse_cert_table`: the GHCB certificate table the host attaches to an extended report
  (``SNP_GET_EXT_REPORT`` certificate buffer, configfs-tsm ``auxblob``). GHCB spec 2.03, 4.1.8.1:
  entries ``guid[16] | offset u32 | length u32`` (little-endian), ended by an all-zero entry; offsets
  count from the start of the table. Entries are checked one by one: the host is untrusted and the
  kernel cuts ``auxblob`` at 16 KiB, so a broken entry never hides an intact VEK or the ``vek_path``. GUIDs are in RFC 4122 byte order, as ``uuid_parse`` writes them
  (AMD's sev-guest tools, go-sev-guest and virtee/sev agree).
- :func:`snp_evidence`: checks the report binds the requested report_data (and VMPL) and attaches
  the VEK that signs it: the host table's VCEK or VLEK (whichever the report names), else the
  operator's ``vek_path``. Nodes cannot fetch a VEK themselves, and a guest without internet cannot
  query AMD's KDS, so without either the device fails with the KDS URL to download it from.
  The ASK/ARK are not attached: nodes pin them.
"""

from __future__ import annotations

import functools
import logging
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
log = logging.getLogger("derot.app.tee")
#: entries of one GUID whose signature is tried (a host can repeat a GUID; each try costs a verify)
MAX_TRIES = 4
_KDS = "https://kdsintf.amd.com"


@dataclass(frozen=True)
class CertTableEntry:
    guid: uuid.UUID
    offset: int
    data: bytes


@dataclass(frozen=True)
class CertTable:
    """A parsed certificate table: the usable ``entries`` and, for people, what was wrong with the rest."""

    entries: tuple[CertTableEntry, ...] = ()
    errors: tuple[str, ...] = ()


def parse_cert_table(blob: bytes, what: str = "certificate table") -> CertTable:
    """A GHCB certificate table, each entry checked on its own. An empty or all-zero blob is an empty
    table (the host supplied no certificates). An entry that runs past the blob (the kernel cuts the
    table at 16 KiB, so a large trailing CRL often does), overlaps the table, or repeats a GUID is
    named in ``errors``; cut or overlapping entries are left out, the others are kept, so a VEK entry
    that is intact stays usable. Zero-length entries are skipped."""
    blob = bytes(blob)
    if not blob.strip(b"\0"):
        return CertTable()
    headers, errors, pos, terminated = [], [], 0, False
    while pos + _ENTRY.size <= len(blob):
        raw_guid, offset, length = _ENTRY.unpack_from(blob, pos)
        if raw_guid == bytes(16) and offset == 0 and length == 0:
            terminated = True
            break
        headers.append((pos, uuid.UUID(bytes=raw_guid), offset, length))
        pos += _ENTRY.size
    if not terminated:
        errors.append(f"{what}: no terminating all-zero entry in {len(blob)} bytes (at byte offset {pos})")
    table_end = pos + _ENTRY.size if terminated else pos
    entries: list[CertTableEntry] = []
    seen: set[uuid.UUID] = set()
    for at, guid, offset, length in headers:
        if not length:
            continue
        if offset < table_end:
            errors.append(f"{what}: entry {guid} at offset {offset} overlaps the table (at byte offset {at + 16})")
        elif offset + length > len(blob):
            errors.append(f"{what}: entry {guid} covers bytes {offset}..{offset + length}, but the table has "
                          f"{len(blob)} (cut off; at byte offset {at + 16})")
        else:
            if guid in seen:
                errors.append(f"{what}: GUID {guid} appears twice (at byte offset {at})")
            seen.add(guid)
            entries.append(CertTableEntry(guid, offset, blob[offset : offset + length]))
    return CertTable(tuple(entries), tuple(errors))


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


def select_vek(report: sev_snp.SnpReport, table: CertTable, vek_file: ConfiguredFile | None) -> bytes:
    """The DER VEK that signed ``report``: the host table's entry for the report's signing key,
    then ``vek_file``. :class:`TeeConfigError` (naming where to get one, and what was wrong with the
    host's table) if neither signs it."""
    if report.signing_key == sev_snp.SIGNING_KEY_VLEK:
        name, guid = "VLEK", VLEK_GUID
        hint = "a VLEK comes from the cloud provider that leased it (AMD KDS serves it only to them)"
    elif report.signing_key == sev_snp.SIGNING_KEY_VCEK:
        name, guid = "VCEK", VCEK_GUID
        hint = f"download the VCEK from {kds_vcek_url(report)} on a machine with internet"
    else:
        raise MalformedResponse("SEV-SNP report is not signed (signing_key = none)", 0x48)
    tried = []
    for entry in [e for e in table.entries if e.guid == guid][:MAX_TRIES]:
        tried.append(f"the host's {name}")
        if (der := _signs(entry.data, report)) is not None:
            return der
    if vek_file is not None:
        tried.append(vek_file.path)
        if (der := _signs(vek_file.read(), report)) is not None:
            return der
    table_note = f" (the host's certificate table: {'; '.join(table.errors)})" if table.errors else ""
    if tried:
        raise TeeConfigError(f"the report is signed by a {name} that {' and '.join(tried)} does not match "
                             f"(another chip, or a TCB from before a firmware update); {hint} and pass it as "
                             f"vek_path{table_note}")
    raise TeeConfigError(f"the report is signed by a {name}, but the host supplied no usable certificate table "
                         f"entry for it and no vek_path is configured; {hint} and pass it as vek_path{table_note}")


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
    table = parse_cert_table(cert_table, table_what)
    for error in table.errors:
        log.warning("%s; using the intact entries%s", error, " and vek_path" if vek_file is not None else "")
    return Evidence(platform=Platform.SEV_SNP, quote=raw_report, vek=select_vek(report, table, vek_file))
