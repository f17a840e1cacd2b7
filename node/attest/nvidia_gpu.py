"""NVIDIA Hopper (H100/H200) GPU attestation: SPDM GET_MEASUREMENTS request || MEASUREMENTS response.

Layout (DMTF SPDM 1.1, DSP0274; NVIDIA's opaque-data TLVs as in nvtrust's local GPU verifier)::

    request  (37)  version u8 | code 0xE0 | param1 (bit0: signature requested) | param2 | nonce 32 | slot u8
    response       version u8 | code 0x60 | param1 | param2 | n_blocks u8 | record_len u24
                   | record | responder_nonce 32 | opaque_len u16 | opaque | signature 96 (P-384 r||s)
    block          index u8 | spec u8 (1 = DMTF) | size u16 | dmtf_type u8 | value_size u16 | value
    opaque TLV     type u16 | size u16 | value      (3 driver version, 6 VBIOS version, 20 FWID, ...)

Verification: the certificate chain (leaf first, ECDSA P-384/SHA-384 links, valid at ``at``) ends at
the pinned NVIDIA Device Identity CA; the report signature is ECDSA P-384/SHA-384 over request ||
response-without-signature under the leaf key; the request nonce is the expected one; the FWID in
the report (when present) equals the FWID in the leaf certificate. All integers little-endian.
RIM comparison and OCSP need NVIDIA's online services and are not done here: derot pins GPU
firmware through the measurement digest allow-list and revokes by FWID instead.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.error import PyAsn1Error

from derot import untrusted
from derot.attest._reader import Reader
from derot.attest._x509 import load_certificates
from derot.attest.claims import Claims, HardwareIds, measurement_digest
from derot.attest.gpu_model import identify
from derot.attest.identity import serial_bytes
from derot.attest.errors import (
    CertificateExpired,
    ChainIncomplete,
    ChainInvalid,
    EvidenceParseError,
    FwidMissing,
    NonceMismatch,
    RootNotTrusted,
    SignatureInvalid,
)
from derot.constants import Platform, TcbStatus

REQUEST_SIZE = 37
SIGNATURE_SIZE = 96
#: zero bytes tolerated after the signature (real Hopper reports carry one; other verifiers ignore it)
MAX_PADDING = 8
SPDM_VERSIONS = (0x10, 0x11, 0x12)
GET_MEASUREMENTS, MEASUREMENTS = 0xE0, 0x60
OID_NVIDIA_FWID = x509.ObjectIdentifier("2.23.133.5.4.1")
OID_DICE_TCB_INFO = x509.ObjectIdentifier("2.23.133.5.4.1.1")
OPAQUE_DRIVER_VERSION, OPAQUE_VBIOS_VERSION, OPAQUE_FWID = 3, 6, 20
OPAQUE_NAMES = {
    1: "cert_issuer_name", 2: "cert_authority_key_id", 3: "driver_version", 4: "gpu_info", 5: "sku",
    6: "vbios_version", 7: "manufacturer_id", 8: "tamper_detection", 9: "smc", 10: "vpr",
    11: "nvdec0_status", 12: "msrscnt", 13: "cprinfo", 14: "board_id", 15: "chip_sku",
    16: "chip_sku_mod", 17: "project", 18: "project_sku", 19: "project_sku_mod", 20: "fwid",
    21: "protected_pcie_status", 22: "switch_pdi", 23: "floorswept_ports", 24: "position_id",
    25: "lock_switch_status", 32: "gpu_link_conn", 33: "sys_enable_status", 34: "opaque_data_version",
    35: "chip_info", 36: "feature_flag",
}


@dataclass(frozen=True)
class MeasurementBlock:
    index: int
    dmtf_type: int
    value: bytes


@dataclass(frozen=True)
class GpuReport:
    """A structurally valid SPDM GET_MEASUREMENTS exchange."""

    raw: bytes
    spdm_version: int
    request_nonce: bytes
    slot_id: int
    blocks: tuple[MeasurementBlock, ...]
    responder_nonce: bytes
    opaque: tuple[tuple[int, bytes], ...]
    signature: bytes
    signed_length: int

    def opaque_field(self, type_id: int) -> bytes | None:
        for t, v in self.opaque:
            if t == type_id:
                return v
        return None

    @property
    def driver_version(self) -> str | None:
        v = self.opaque_field(OPAQUE_DRIVER_VERSION)
        return v.split(b"\0", 1)[0].decode("ascii", "replace") if v is not None else None

    @property
    def vbios_version(self) -> str | None:
        v = self.opaque_field(OPAQUE_VBIOS_VERSION)
        if v is None or len(v) < 5:
            return None
        # nvtrust's formatting: bytes 3,2,1,0 then 4 of the little-endian field, as hex, dotted
        return ".".join(f"{b:02X}" for b in (v[3], v[2], v[1], v[0], v[4]))

    @property
    def fwid(self) -> bytes | None:
        return self.opaque_field(OPAQUE_FWID)


def parse_report(raw: bytes) -> GpuReport:
    """Parse request || response (structure only)."""
    r = Reader(raw, "GPU SPDM report")
    version = r.u8("request SPDM version")
    if version not in SPDM_VERSIONS:
        raise r.fail(f"unsupported SPDM version {version:#x}", 0)
    code = r.u8("request code")
    if code != GET_MEASUREMENTS:
        raise r.fail(f"request code {code:#x} is not GET_MEASUREMENTS (0xe0)", 1)
    param1 = r.u8("request param1")
    if not param1 & 1:
        raise r.fail("request does not ask for a signature", 2)
    r.u8("request param2")
    nonce = r.take(32, "request nonce")
    slot_id = r.u8("request slot id")

    at = r.pos
    if r.u8("response SPDM version") != version:
        raise r.fail("response SPDM version differs from the request's", at)
    if r.u8("response code") != MEASUREMENTS:
        raise r.fail("response code is not MEASUREMENTS (0x60)", at + 1)
    r.take(2, "response params")
    n_blocks = r.u8("number of blocks")
    record = r.sub(r.u24("measurement record length"), "measurement record")
    blocks = []
    for i in range(n_blocks):
        start = record.pos
        index = record.u8("block index")
        spec = record.u8("measurement specification")
        if spec != 1:
            raise record.fail(f"block {index}: measurement specification {spec} is not DMTF (1)", start + 1)
        size = record.u16("block size")
        block = record.sub(size, f"block {index}")
        dmtf_type = block.u8("DMTF value type")
        value = block.take(block.u16("DMTF value size"), "DMTF value")
        if block.remaining():
            raise block.fail(f"block {index}: {block.remaining()} bytes after the DMTF value")
        blocks.append(MeasurementBlock(index, dmtf_type, value))
    if record.remaining():
        raise record.fail(f"{record.remaining()} bytes after {n_blocks} measurement blocks")
    if len({b.index for b in blocks}) != len(blocks):
        raise EvidenceParseError("GPU SPDM report: duplicate measurement block index", at + 8)
    responder_nonce = r.take(32, "responder nonce")
    opaque_r = r.sub(r.u16("opaque data length"), "opaque data")
    opaque = []
    while opaque_r.remaining():
        t = opaque_r.u16("opaque field type")
        opaque.append((t, opaque_r.take(opaque_r.u16("opaque field size"), f"opaque field {t}")))
    signed_length = r.pos
    if r.remaining() < SIGNATURE_SIZE:
        raise r.fail(f"{r.remaining()} bytes left for the signature, expected {SIGNATURE_SIZE}")
    signature = r.take(SIGNATURE_SIZE, "signature")
    padding = r.take(r.remaining(), "padding after the signature")
    if len(padding) > MAX_PADDING or any(padding):
        raise EvidenceParseError(
            f"GPU SPDM report: {len(padding)} bytes after the signature; only up to {MAX_PADDING} zero bytes "
            "of padding are tolerated", r.pos - len(padding))
    return GpuReport(
        raw=bytes(raw[: r.pos - len(padding)]),
        spdm_version=version,
        request_nonce=nonce,
        slot_id=slot_id,
        blocks=tuple(blocks),
        responder_nonce=responder_nonce,
        opaque=tuple(opaque),
        signature=signature,
        signed_length=signed_length,
    )


def load_chain(pem_chain: bytes) -> list[x509.Certificate]:
    """Certificates in a PEM bundle, leaf first."""
    if not pem_chain.lstrip().startswith(b"-----BEGIN"):
        raise EvidenceParseError("GPU certificate chain: not a PEM bundle", 0)
    return load_certificates(pem_chain, "GPU certificate chain")


def cert_fwid(cert: x509.Certificate) -> bytes | None:
    """The FWID NVIDIA puts in the attestation certificate: Hopper's extension 2.23.133.5.4.1 (last
    digest), or Blackwell's TCG DICE TcbInfo 2.23.133.5.4.1.1 (``fwids[0]``, context tag [6])."""
    for oid, parse in ((OID_NVIDIA_FWID, _hopper_fwid), (OID_DICE_TCB_INFO, _dice_tcb_info_fwid)):
        try:
            raw = cert.extensions.get_extension_for_oid(oid).value.value
        except x509.ExtensionNotFound:
            continue
        try:
            untrusted.der_check_depth(raw, what="GPU certificate FWID extension")
            return parse(raw)
        except (untrusted.UntrustedInputError, PyAsn1Error, IndexError, TypeError, KeyError, RecursionError, ValueError):
            raise ChainInvalid(f"GPU certificate FWID extension {oid.dotted_string} is malformed") from None
    return None


def _hopper_fwid(raw: bytes) -> bytes:
    value, _ = der_decoder.decode(raw)
    return bytes(value[len(value) - 1][1])


def _der_items(data: bytes) -> list[tuple[int, bytes]]:
    """(tag byte, contents) of each DER item in ``data`` (short and long definite lengths only)."""
    items, pos = [], 0
    while pos < len(data):
        tag, n = data[pos], data[pos + 1]
        pos += 2
        if n & 0x80:
            k = n & 0x7F
            if not 1 <= k <= 3:
                raise ValueError("unsupported DER length")
            n, pos = int.from_bytes(data[pos : pos + k], "big"), pos + k
        if pos + n > len(data):
            raise ValueError("truncated DER item")
        items.append((tag, data[pos : pos + n]))
        pos += n
    return items


def _dice_tcb_info_fwid(raw: bytes) -> bytes:
    (tag, body), = _der_items(raw)
    if tag != 0x30:
        raise ValueError("TcbInfo is not a SEQUENCE")
    fwids = next(v for t, v in _der_items(body) if t == 0xA6)
    first = _der_items(fwids)[0][1]
    (t_oid, _), (t_digest, digest) = _der_items(first)
    if t_oid != 0x06 or t_digest != 0x04:
        raise ValueError("FWID is not (OID, OCTET STRING)")
    return digest


class NvidiaRoots:
    """Pinned NVIDIA Device Identity CA certificate(s), each labelled; verified chains cached by content."""

    def __init__(self, roots: list[x509.Certificate], label: str = "production"):
        self.roots = list(roots)
        self.labels = {id(r): label for r in self.roots}
        self.label = label
        self._cache: dict[bytes, tuple[x509.Certificate, bytes | None, int, int, str]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_pem(cls, pem: bytes, label: str = "production") -> "NvidiaRoots":
        return cls(x509.load_pem_x509_certificates(pem), label)

    def __add__(self, other: "NvidiaRoots") -> "NvidiaRoots":
        combined = NvidiaRoots(self.roots + other.roots, self.label)
        combined.labels = {**self.labels, **other.labels}
        return combined

    def verify_chain(self, pem_chain: bytes, at: int) -> tuple[x509.Certificate, bytes | None, int, int, str]:
        """Leaf certificate, its FWID, the chain's validity window and the root's label (checked at ``at``)."""
        key = hashlib.sha256(pem_chain).digest()
        hit = self._cache.get(key)
        if hit is None:
            certs = load_chain(pem_chain)
            anchor = self._complete_chain(certs)
            nb = max(int(c.not_valid_before_utc.timestamp()) for c in certs)
            na = min(int(c.not_valid_after_utc.timestamp()) for c in certs)
            fwid = cert_fwid(certs[0])
            if fwid is None:
                raise FwidMissing(f"the GPU leaf {certs[0].subject.rfc4514_string()!r} has no FWID extension "
                                  f"({OID_NVIDIA_FWID.dotted_string})")
            hit = (certs[0], fwid, nb, na, self.labels[id(anchor)])
            with self._lock:
                self._cache[key] = hit
        nb, na = hit[2], hit[3]
        if not nb <= at <= na:
            raise CertificateExpired(f"GPU certificate chain valid {nb}..{na} (unix), not at {at}")
        return hit


    def _complete_chain(self, certs: list[x509.Certificate]) -> x509.Certificate:
        """Check that ``certs`` runs from the GPU's attestation (FMC) leaf, each certificate issued by the next,
        to a pinned root (appended to ``certs`` when the chain stops just below it); returns that root."""
        if not certs:
            raise ChainIncomplete("the GPU certificate chain is empty")
        if len(certs) == 1 and any(r == certs[0] for r in self.roots):
            raise ChainIncomplete("the GPU certificate chain holds only the pinned root: the attestation (FMC) leaf "
                                  "and its intermediates are missing")
        if _is_ca(certs[0]):
            raise ChainIncomplete(f"the GPU certificate chain starts at CA {certs[0].subject.rfc4514_string()!r}, "
                                  "not at the GPU's attestation (FMC) leaf")
        for cert, issuer in zip(certs, certs[1:]):
            if cert.issuer != issuer.subject:
                raise ChainIncomplete(f"the issuer {cert.issuer.rfc4514_string()!r} of "
                                      f"{cert.subject.rfc4514_string()!r} is missing from the GPU certificate chain")
            _check_link(cert, issuer)
        top = certs[-1]
        anchor = next((r for r in self.roots if r == top), None)
        if anchor is None:
            anchor = next((r for r in self.roots if r.subject == top.issuer), None)
            if anchor is None:
                raise RootNotTrusted(f"GPU chain ends at {top.subject.rfc4514_string()!r}, not a pinned NVIDIA root")
            _check_link(top, anchor)
            certs.append(anchor)
        return anchor


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _check_link(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    try:
        bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not bc.ca:
            raise ChainInvalid(f"{issuer.subject.rfc4514_string()!r} is not a CA")
    except x509.ExtensionNotFound:
        raise ChainInvalid(f"{issuer.subject.rfc4514_string()!r} has no basicConstraints") from None
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ChainInvalid(
            f"{cert.subject.rfc4514_string()!r} is not signed by {issuer.subject.rfc4514_string()!r}: {exc}"
        ) from None


def _device_serial(pem_chain: bytes) -> bytes | None:
    """Serial of the leaf's issuer, the device identity certificate NVIDIA provisioned (a verified link)."""
    certs = load_chain(pem_chain)
    return serial_bytes(certs[1].serial_number) if len(certs) > 2 else None


def verify_report(
    raw_report: bytes,
    pem_chain: bytes,
    roots: NvidiaRoots,
    at: int,
    expected_nonce: bytes | None = None,
) -> Claims:
    """Verify one GPU's SPDM report and certificate chain; return its Claims."""
    report = parse_report(raw_report)
    leaf, chain_fwid, not_before, not_after, label = roots.verify_chain(pem_chain, at)
    pub = leaf.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey) or not isinstance(pub.curve, ec.SECP384R1):
        raise ChainInvalid("GPU attestation key is not ECDSA P-384")
    sig = report.signature
    try:
        pub.verify(
            encode_dss_signature(int.from_bytes(sig[:48], "big"), int.from_bytes(sig[48:], "big")),
            report.raw[: report.signed_length],
            ec.ECDSA(hashes.SHA384()),
        )
    except InvalidSignature:
        raise SignatureInvalid("GPU SPDM report signature does not verify under the attestation key") from None
    if expected_nonce is not None and report.request_nonce != expected_nonce:
        raise NonceMismatch(
            f"GPU request nonce {report.request_nonce.hex()} != expected {expected_nonce.hex()}"
        )
    fwid = report.fwid
    if fwid is not None and fwid != chain_fwid:
        raise ChainInvalid("FWID in the GPU report differs from the FWID in its certificate")
    fwid = chain_fwid

    chip, model = identify(leaf.subject.rfc4514_string(), {OPAQUE_NAMES.get(t, ""): v for t, v in report.opaque})
    registers = {f"MEASUREMENT[{b.index}]": b.value for b in sorted(report.blocks, key=lambda b: b.index)}
    details = {
        "spdm_version": f"{report.spdm_version >> 4}.{report.spdm_version & 0xF}",
        "nonce": report.request_nonce,
        "responder_nonce": report.responder_nonce,
        "driver_version": report.driver_version,
        "vbios_version": report.vbios_version,
        "measurement_blocks": len(report.blocks),
        "device": leaf.subject.rfc4514_string(),
        "opaque": {OPAQUE_NAMES.get(t, str(t)): v for t, v in report.opaque if t in (4, 5, 15, 17, 18, 35)},
    }
    return Claims(
        platform=Platform.NVIDIA_GPU,
        measurements=registers,
        measurement_digest=measurement_digest(Platform.NVIDIA_GPU, registers),
        report_data=report.request_nonce + bytes(32),
        # NVIDIA's own status comes from online RIM and OCSP services; see the module docstring.
        tcb_status=TcbStatus.UP_TO_DATE,
        advisory_ids=(),
        debug=False,
        hardware_ids=HardwareIds(gpu_fwid=fwid, gpu_device=_device_serial(pem_chain), gpu_ueid=serial_bytes(leaf.serial_number)),
        not_before=not_before,
        not_after=not_after,
        root=label,
        details=details,
        tee_attributes={"gpu_chip": chip, "gpu_model": model.name if model is not None else None},
    )
