"""AMD SEV-SNP attestation reports (versions 2, 3 and 5; Milan, Genoa, Turin; VCEK and VLEK).

Verification, all with ``cryptography``:

1. the report parses (1184 bytes, SEV-SNP firmware ABI spec table "ATTESTATION_REPORT");
2. the VEK (VCEK or VLEK) chains to a pinned root: VEK -> ASK (VCEK) or ASVK (VLEK) -> ARK, every link
   RSA-PSS with SHA-384 and a 48-byte salt, ARK self-signed, all certificates valid at ``at``;
3. the report signature (ECDSA P-384 over bytes 0x000..0x29F; r and s are 72-byte little-endian
   fields) verifies under the VEK;
4. the TCB the VEK certifies (extensions 1.3.6.1.4.1.3704.1.3.x) equals ``reported_tcb``;
5. for a VCEK, its hwID (1.3.6.1.4.1.3704.1.4) equals the report's ``chip_id``.

AMD issues VCEKs with serial number 0, which RFC 5280 forbids and ``cryptography`` warns about
(``CryptographyDeprecationWarning``). :func:`load_vek` silences exactly that warning while loading a
VEK and nothing else. Verified VEK chains are cached by the VEK's DER digest, so the steady-state cost
is one ECDSA P-384 verification per report.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from derot.attest._reader import Reader
from derot.attest._x509 import load_certificates
from derot.attest.claims import Claims, HardwareIds, measurement_digest
from derot.attest.errors import (
    CertificateExpired,
    ChainInvalid,
    EvidenceParseError,
    HardwareIdMismatch,
    RootNotTrusted,
    SignatureInvalid,
    TcbMismatch,
    UnsupportedEvidence,
)
from derot.constants import Platform, TcbStatus

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SUPPORTED_VERSIONS = (2, 3, 5)
SIG_ALGO_ECDSA_P384_SHA384 = 1
SIGNING_KEY_VCEK, SIGNING_KEY_VLEK = 0, 1

# Guest policy bits (SEV-SNP ABI, GUEST_POLICY)
POLICY_BITS = {
    "smt": 16, "migrate_ma": 18, "debug": 19, "single_socket": 20, "cxl_allow": 21,
    "mem_aes_256_xts": 22, "rapl_dis": 23, "ciphertext_hiding": 24, "page_swap_disable": 25,
}

OID_PRODUCT_NAME = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.2")
OID_HWID = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.4")
OID_CSP_ID = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.5")
OID_TCB = {
    "bootloader": x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.1"),
    "tee": x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.2"),
    "snp": x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.3"),
    "microcode": x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.8"),
    "fmc": x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.9"),
}
PRODUCTS = ("Milan", "Genoa", "Turin")
PSS_SHA384 = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class TcbVersion:
    """A TCB_VERSION. Turin and later add ``fmc`` and use a different byte layout."""

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    @classmethod
    def from_u64(cls, value: int, turin: bool) -> "TcbVersion":
        b = value.to_bytes(8, "little")
        if turin:
            return cls(bootloader=b[1], tee=b[2], snp=b[3], microcode=b[7], fmc=b[0])
        return cls(bootloader=b[0], tee=b[1], snp=b[6], microcode=b[7])

    def to_u64(self) -> int:
        if self.fmc is not None:
            b = bytes([self.fmc, self.bootloader, self.tee, self.snp, 0, 0, 0, self.microcode])
        else:
            b = bytes([self.bootloader, self.tee, 0, 0, 0, 0, self.snp, self.microcode])
        return int.from_bytes(b, "little")


@dataclass(frozen=True)
class SnpReport:
    """A structurally valid SEV-SNP attestation report. TCB fields are raw u64 (layout is per product)."""

    raw: bytes
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: int
    platform_info: int
    author_key_en: bool
    mask_chip_key: bool
    signing_key: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: int
    cpuid: tuple[int, int, int] | None  # (family, model, stepping), version >= 3
    chip_id: bytes
    committed_tcb: int
    current_version: tuple[int, int, int]  # (major, minor, build)
    committed_version: tuple[int, int, int]
    launch_tcb: int
    signature_r: int
    signature_s: int

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_SIZE]

    @property
    def debug(self) -> bool:
        return bool(self.policy >> POLICY_BITS["debug"] & 1)

    def policy_flags(self) -> dict[str, object]:
        flags: dict[str, object] = {name: bool(self.policy >> bit & 1) for name, bit in POLICY_BITS.items()}
        flags["abi_major"] = self.policy >> 8 & 0xFF
        flags["abi_minor"] = self.policy & 0xFF
        return flags


def parse_report(raw: bytes) -> SnpReport:
    """Parse a SEV-SNP attestation report (structure only)."""
    r = Reader(raw, "SEV-SNP report")
    if len(r.data) != REPORT_SIZE:
        raise EvidenceParseError(
            f"SEV-SNP report: size {len(r.data)} bytes, expected {REPORT_SIZE}", min(len(r.data), REPORT_SIZE)
        )
    version = r.u32("version")
    if version not in SUPPORTED_VERSIONS:
        raise r.fail(f"unsupported report version {version} (expected one of {SUPPORTED_VERSIONS})", 0)
    guest_svn = r.u32("guest_svn")
    policy = r.u64("policy")
    family_id = r.take(16, "family_id")
    image_id = r.take(16, "image_id")
    vmpl = r.u32("vmpl")
    if vmpl > 3:
        raise r.fail(f"VMPL {vmpl} out of range 0..3", 0x30)
    signature_algo = r.u32("signature_algo")
    current_tcb = r.u64("current_tcb")
    platform_info = r.u64("platform_info")
    flags = r.u32("key flags")
    signing_key = flags >> 2 & 0x7
    if signing_key not in (SIGNING_KEY_VCEK, SIGNING_KEY_VLEK, 7):
        raise r.fail(f"unknown signing key selector {signing_key}", 0x48)
    r.take(4, "reserved")
    report_data = r.take(64, "report_data")
    measurement = r.take(48, "measurement")
    host_data = r.take(32, "host_data")
    id_key_digest = r.take(48, "id_key_digest")
    author_key_digest = r.take(48, "author_key_digest")
    report_id = r.take(32, "report_id")
    report_id_ma = r.take(32, "report_id_ma")
    reported_tcb = r.u64("reported_tcb")
    cpuid_raw = r.take(3, "cpuid")
    r.take(0x1A0 - 0x18B, "reserved")
    chip_id = r.take(64, "chip_id")
    committed_tcb = r.u64("committed_tcb")
    cur = r.take(4, "current version")
    com = r.take(4, "committed version")
    launch_tcb = r.u64("launch_tcb")
    r.pos = SIGNED_SIZE
    sig_r = int.from_bytes(r.take(72, "signature r"), "little")
    sig_s = int.from_bytes(r.take(72, "signature s"), "little")
    return SnpReport(
        raw=bytes(raw),
        version=version,
        guest_svn=guest_svn,
        policy=policy,
        family_id=family_id,
        image_id=image_id,
        vmpl=vmpl,
        signature_algo=signature_algo,
        current_tcb=current_tcb,
        platform_info=platform_info,
        author_key_en=bool(flags & 1),
        mask_chip_key=bool(flags >> 1 & 1),
        signing_key=signing_key,
        report_data=report_data,
        measurement=measurement,
        host_data=host_data,
        id_key_digest=id_key_digest,
        author_key_digest=author_key_digest,
        report_id=report_id,
        report_id_ma=report_id_ma,
        reported_tcb=reported_tcb,
        cpuid=tuple(cpuid_raw) if version >= 3 else None,
        chip_id=chip_id,
        committed_tcb=committed_tcb,
        current_version=(cur[2], cur[1], cur[0]),
        committed_version=(com[2], com[1], com[0]),
        launch_tcb=launch_tcb,
        signature_r=sig_r,
        signature_s=sig_s,
    )


def product_from_cpuid(cpuid: tuple[int, int, int]) -> str | None:
    """Milan/Genoa/Turin from a v3+ report's CPUID family/model (None if unknown or absent)."""
    family, model, _ = cpuid
    if family == 0x19:
        if model <= 0x0F:
            return "Milan"
        if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:
            return "Genoa"
    if family == 0x1A and model <= 0x1F:
        return "Turin"
    return None


# --------------------------------------------------------------------------- certificates


def split_vek_bundle(data: bytes) -> tuple[bytes, list[x509.Certificate]]:
    """A VEK given alone (DER or PEM), or a PEM bundle holding the VCEK/VLEK with its ASK/ASVK and ARK
    (as cloud providers ship it). The VEK is the one certificate with an EC key that is not a CA and
    may sign (keyUsage digitalSignature when present); returns its DER and the other certificates,
    which the caller checks against the pinned roots."""
    if not data.lstrip().startswith(b"-----BEGIN"):
        return bytes(data), []  # one DER certificate: load_vek parses (and caches) it
    key = hashlib.sha256(data).digest()
    hit = _BUNDLES.get(key)
    if hit is None:
        hit = _split_pem(data)
        with _BUNDLES_LOCK:
            if len(_BUNDLES) > 1024:
                _BUNDLES.clear()
            _BUNDLES[key] = hit
    return hit[0], list(hit[1])


_BUNDLES: dict[bytes, tuple[bytes, tuple[x509.Certificate, ...]]] = {}
_BUNDLES_LOCK = threading.Lock()


def _split_pem(data: bytes) -> tuple[bytes, tuple[x509.Certificate, ...]]:
    certs = load_certificates(data, "SEV-SNP VEK certificate", allow_serial_zero=True)
    if len(certs) == 1:
        return certs[0].public_bytes(serialization.Encoding.DER), ()
    leaves = [c for c in certs if _is_report_signer(c)]
    if len(leaves) != 1:
        raise EvidenceParseError(f"SEV-SNP VEK bundle: {len(leaves)} of {len(certs)} certificates can sign reports, "
                                 "expected exactly one VCEK/VLEK", 0)
    return leaves[0].public_bytes(serialization.Encoding.DER), tuple(c for c in certs if c is not leaves[0])


def _is_report_signer(cert: x509.Certificate) -> bool:
    if not isinstance(cert.public_key(), ec.EllipticCurvePublicKey):
        return False
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
    except x509.ExtensionNotFound:
        pass
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    except x509.ExtensionNotFound:
        return True


def load_vek(data: bytes) -> x509.Certificate:
    """Load a VCEK/VLEK (DER or PEM), tolerating AMD's serial number 0 deliberately."""
    certs = load_certificates(data, "SEV-SNP VEK certificate", allow_serial_zero=True)
    if len(certs) != 1:
        raise EvidenceParseError(f"SEV-SNP VEK certificate: expected one certificate, got {len(certs)}", 0)
    return certs[0]


def _ext_int(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> int | None:
    """An AMD extension holding a DER INTEGER (small, non-negative)."""
    try:
        raw = cert.extensions.get_extension_for_oid(oid).value.value
    except x509.ExtensionNotFound:
        return None
    if len(raw) < 3 or raw[0] != 0x02 or raw[1] != len(raw) - 2 or raw[1] > 8:
        raise ChainInvalid(f"VEK extension {oid.dotted_string} is not a small DER INTEGER")
    return int.from_bytes(raw[2:], "big", signed=True)


def _ext_raw(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_oid(oid).value.value
    except x509.ExtensionNotFound:
        return None


def vek_product(cert: x509.Certificate) -> str:
    """The product line a VEK belongs to, from its productName extension or its issuer name."""
    raw = _ext_raw(cert, OID_PRODUCT_NAME) or b""
    names = [raw.decode("latin-1")] + [a.value for a in cert.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    for text in names:
        for product in PRODUCTS:
            if product.lower() in str(text).lower():
                return product
    raise UnsupportedEvidence("cannot tell the VEK's product line (Milan/Genoa/Turin)")


def vek_tcb(cert: x509.Certificate, turin: bool) -> TcbVersion:
    values = {name: _ext_int(cert, oid) for name, oid in OID_TCB.items()}
    missing = [n for n in ("bootloader", "tee", "snp", "microcode") if values[n] is None]
    if missing or (turin and values["fmc"] is None):
        raise ChainInvalid(f"VEK lacks TCB extensions {missing or ['fmc']}")
    return TcbVersion(
        bootloader=values["bootloader"], tee=values["tee"], snp=values["snp"],
        microcode=values["microcode"], fmc=values["fmc"] if turin else None,
    )


@dataclass(frozen=True)
class AmdRootSet:
    """Pinned AMD roots for one product line: ARK, ASK (signs VCEKs) and optionally ASVK (signs VLEKs)."""

    product: str
    ark: x509.Certificate
    ask: x509.Certificate
    asvk: x509.Certificate | None = None
    label: str = "production"


class AmdRoots:
    """The AMD root sets a verifier trusts (per product line, each labelled ``production`` or ``devnet``).

    Construction checks every ASK/ASVK -> ARK link and each ARK's self-signature once.
    """

    def __init__(self, sets: list[AmdRootSet]):
        self.sets = tuple(sets)
        for s in self.sets:
            _check_link(s.ark, s.ark, f"ARK-{s.product} self-signature")
            _check_link(s.ask, s.ark, f"ASK-{s.product}")
            if s.asvk is not None:
                _check_link(s.asvk, s.ark, f"ASVK-{s.product}")
        self._lock = threading.Lock()
        self._verified: dict[bytes, tuple[str, str, int, int]] = {}

    @classmethod
    def from_pem_files(cls, files: Mapping[str, tuple[bytes, bytes, bytes | None]], label: str) -> "AmdRoots":
        """``files``: product -> (ARK PEM, ASK PEM, ASVK PEM or None)."""
        return cls([
            AmdRootSet(
                product,
                x509.load_pem_x509_certificate(ark),
                x509.load_pem_x509_certificate(ask),
                x509.load_pem_x509_certificate(asvk) if asvk else None,
                label,
            )
            for product, (ark, ask, asvk) in files.items()
        ])

    def __add__(self, other: "AmdRoots") -> "AmdRoots":
        return AmdRoots(list(self.sets) + list(other.sets))

    def verify_vek_chain(self, vek_der: bytes, cert: x509.Certificate, at: int) -> tuple[str, str, int, int]:
        """Check VEK -> ASK/ASVK -> ARK and validity at ``at``; returns (product, label, not_before, not_after).

        Signature results are cached by the VEK's DER digest; validity is checked on every call.
        """
        key = hashlib.sha256(vek_der).digest()
        hit = self._verified.get(key)
        if hit is None:
            product = vek_product(cert)
            is_vlek = "VLEK" in cert.subject.rfc4514_string().upper()
            kind = "ASVK" if is_vlek else "ASK"
            candidates = [s for s in self.sets if s.product == product]
            issuers = [(s, s.asvk if is_vlek else s.ask) for s in candidates]
            issuers = [(s, i) for s, i in issuers if i is not None and i.subject == cert.issuer]
            if not issuers:
                devnet = "derot devnet" in cert.issuer.rfc4514_string().lower()
                raise RootNotTrusted(
                    f"VEK issuer {cert.issuer.rfc4514_string()!r} is not a pinned {product} {kind}"
                    + (" (a derot devnet root; production verifiers refuse devnet roots)" if devnet else "")
                )
            errors = []
            for roots, issuer in issuers:
                try:
                    _check_link(cert, issuer, "VEK")
                except ChainInvalid as exc:
                    errors.append(str(exc))
                    continue
                nb = max(_ts(c.not_valid_before_utc) for c in (cert, issuer, roots.ark))
                na = min(_ts(c.not_valid_after_utc) for c in (cert, issuer, roots.ark))
                hit = (product, roots.label, nb, na)
                break
            else:
                raise RootNotTrusted(f"VEK is not signed by a pinned {product} {kind}: {'; '.join(errors)}")
            with self._lock:
                self._verified[key] = hit
        product, label, nb, na = hit
        if not nb <= at <= na:
            raise CertificateExpired(
                f"AMD certificate chain valid {_iso(nb)}..{_iso(na)}, not at {_iso(at)}"
            )
        return hit


def _check_link(cert: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    """``cert`` is signed by ``issuer`` with RSA-PSS/SHA-384/salt 48 (the only scheme AMD uses)."""
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ChainInvalid(f"{what}: issuer key is not RSA")
    params = cert.signature_algorithm_parameters
    if not isinstance(params, padding.PSS) or not isinstance(cert.signature_hash_algorithm, hashes.SHA384):
        raise ChainInvalid(f"{what}: signature is not RSA-PSS with SHA-384")
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes, PSS_SHA384, hashes.SHA384())
    except InvalidSignature:
        raise ChainInvalid(f"{what}: RSA-PSS signature does not verify") from None


def _ts(dt) -> int:
    return int(dt.timestamp())


def _iso(ts: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- verification


class _VekCache:
    """Parsed VEK certificates (public key, product facts) by DER digest."""

    def __init__(self) -> None:
        self._items: dict[bytes, tuple[x509.Certificate, ec.EllipticCurvePublicKey]] = {}
        self._lock = threading.Lock()

    def get(self, der: bytes) -> tuple[x509.Certificate, ec.EllipticCurvePublicKey]:
        key = hashlib.sha256(der).digest()
        hit = self._items.get(key)
        if hit is None:
            cert = load_vek(der)
            pub = cert.public_key()
            if not isinstance(pub, ec.EllipticCurvePublicKey) or not isinstance(pub.curve, ec.SECP384R1):
                raise UnsupportedEvidence("VEK key is not ECDSA P-384")
            hit = (cert, pub)
            with self._lock:
                if len(self._items) > 4096:
                    self._items.clear()
                self._items[key] = hit
        return hit


_VEKS = _VekCache()


def _check_vcek_hwid(cert: x509.Certificate, report: SnpReport) -> None:
    """A VCEK names the chip it was issued to (hwID); it must be the report's ``chip_id``."""
    hwid = _ext_raw(cert, OID_HWID)
    if hwid is None:
        raise ChainInvalid("VCEK has no hwID extension")
    if len(hwid) == 66 and hwid[:2] == b"\x04\x40":  # tolerate a DER-wrapped OCTET STRING
        hwid = hwid[2:]
    expected = report.chip_id[: len(hwid)]
    if not hwid or hwid != expected or any(report.chip_id[len(hwid) :]):
        raise HardwareIdMismatch("VCEK hwID differs from the report's chip_id")


def _report_details(
    report: SnpReport, cert: x509.Certificate, product: str, is_vlek: bool, reported: TcbVersion
) -> dict[str, object]:
    """The verified report's informational fields, as :attr:`Claims.details`."""
    turin = product == "Turin"
    details: dict[str, object] = {
        "product": product,
        "report_version": report.version,
        "signing_key": "VLEK" if is_vlek else "VCEK",
        "vmpl": report.vmpl,
        "guest_svn": report.guest_svn,
        "policy": report.policy,
        "policy_flags": report.policy_flags(),
        "reported_tcb": vars(reported),
        "current_tcb": vars(TcbVersion.from_u64(report.current_tcb, turin)),
        "committed_tcb": vars(TcbVersion.from_u64(report.committed_tcb, turin)),
        "launch_tcb": vars(TcbVersion.from_u64(report.launch_tcb, turin)),
        "id_key_digest": report.id_key_digest,
        "author_key_digest": report.author_key_digest,
        "family_id": report.family_id,
        "image_id": report.image_id,
        "report_id": report.report_id,
        "platform_info": report.platform_info,
        "firmware": "%d.%d.%d" % report.current_version,
    }
    if is_vlek:
        csp = _ext_raw(cert, OID_CSP_ID)
        details["csp_id"] = csp.decode("latin-1", "replace") if csp else None
    return details


def verify_report(raw_report: bytes, vek_der: bytes, roots: AmdRoots, at: int) -> Claims:
    """Verify a SEV-SNP report against its VEK and pinned roots; return its Claims."""
    report = parse_report(raw_report)
    if report.signature_algo != SIG_ALGO_ECDSA_P384_SHA384:
        raise UnsupportedEvidence(f"SNP signature algorithm {report.signature_algo} (expected 1, ECDSA P-384)")
    if report.signing_key not in (SIGNING_KEY_VCEK, SIGNING_KEY_VLEK):
        raise UnsupportedEvidence("SNP report is unsigned (signing key selector 7)")
    cert, pub = _VEKS.get(vek_der)
    is_vlek = "VLEK" in cert.subject.rfc4514_string().upper()
    if is_vlek != (report.signing_key == SIGNING_KEY_VLEK):
        raise ChainInvalid(
            f"report is signed by a {'VLEK' if report.signing_key else 'VCEK'} but the certificate is a "
            f"{'VLEK' if is_vlek else 'VCEK'}"
        )
    product, label, not_before, not_after = roots.verify_vek_chain(vek_der, cert, at)
    if report.cpuid is not None:
        cpu_product = product_from_cpuid(report.cpuid)
        if cpu_product is not None and cpu_product != product:
            raise HardwareIdMismatch(f"report CPUID says {cpu_product}, the VEK is for {product}")

    try:
        pub.verify(
            encode_dss_signature(report.signature_r, report.signature_s),
            report.signed_bytes,
            ec.ECDSA(hashes.SHA384()),
        )
    except InvalidSignature:
        raise SignatureInvalid("SEV-SNP report signature does not verify under the VEK") from None

    turin = product == "Turin"
    reported = TcbVersion.from_u64(report.reported_tcb, turin)
    certified = vek_tcb(cert, turin)
    if reported != certified:
        raise TcbMismatch(f"reported_tcb {reported} differs from the VEK's TCB {certified}")

    if not is_vlek:
        _check_vcek_hwid(cert, report)

    registers = {"MEASUREMENT": report.measurement, "HOST_DATA": report.host_data}
    details = _report_details(report, cert, product, is_vlek, reported)
    return Claims(
        platform=Platform.SEV_SNP,
        measurements=registers,
        measurement_digest=measurement_digest(Platform.SEV_SNP, registers),
        report_data=report.report_data,
        # AMD publishes no TCB status: a report whose TCB the VEK certifies is rated UP_TO_DATE; a
        # minimum TCB per platform is a policy question (see DESIGN notes in the module docstring).
        tcb_status=TcbStatus.UP_TO_DATE,
        advisory_ids=(),
        debug=report.debug,
        # only a VCEK endorses the chip_id (its hwID, checked above); a VLEK names no chip, so a VLEK report's
        # chip_id, masked or not, is no identity (docs/revocation.md)
        hardware_ids=HardwareIds(chip_id=None if is_vlek else report.chip_id),
        not_before=not_before,
        not_after=not_after,
        root=label,
        details=details,
        tee_attributes={"vmpl": report.vmpl, "guest_policy": report.policy_flags(), "product": product,
                        "tcb": {k: v for k, v in vars(reported).items() if v is not None}},
    )
