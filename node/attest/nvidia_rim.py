"""NVIDIA golden measurements: reference integrity manifests (RIMs) for the GPU driver and VBIOS.

A RIM is an ISO/IEC 19770-2 SWID tag (``SoftwareIdentity``) signed with an enveloped XML-DSig signature
(ECDSA P-384 / SHA-384, exclusive of nothing: c14n 1.1). Its ``KeyInfo`` carries the signing chain, leaf
first, up to NVIDIA's RIM root ("NVIDIA CoRIM signing Root CA"), which derot pins. Each ``Resource`` of
type ``Measurement`` has an ``index`` (0-based), ``active`` and ``alternatives`` golden SHA-384 values
(``Hash0``.. attributes in the ``xmlenc#sha384`` namespace); RIM index ``i`` is SPDM measurement block
``i + 1`` (checked on nvtrust's Hopper report and test RIMs).

:func:`load_rim` bounds the size, parses with a non-resolving parser, checks the chain with
``cryptography`` (every link, CA constraints, validity at ``at``, ending at a pinned root), then verifies
the signature with signxml against the leaf and reads measurements only from the signed element.
:func:`compare` merges the driver and VBIOS RIMs (an index both make active is a conflict) and names
every mismatching block. :class:`RimStore` finds RIMs by id in an offline bundle directory, then a
configurable RIM service (``{url}/{rim_id}``), caching fetched RIMs on disk; a RIM is verified on every
use, so a cache or service cannot inject one.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import re
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from derot.attest.errors import AttestationError, ChainInvalid, EvidenceParseError, SignatureInvalid

SWID_NS = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
SHA384_NS = "http://www.w3.org/2001/04/xmlenc#sha384"
MAX_RIM_SIZE = 1 << 21
MAX_CHAIN = 6
MAX_ALTERNATIVES = 16
NVIDIA_RIM_SERVICE = "https://rim.attestation.nvidia.com/v1/rim"


@dataclass(frozen=True)
class RimMeasurement:
    index: int  # 0-based; SPDM block index - 1
    active: bool
    alternatives: tuple[bytes, ...]


@dataclass(frozen=True)
class Rim:
    """A verified RIM: its tag id, product and version as signed, and its measurements."""

    tag_id: str
    product: str
    version: str  # colloquialVersion: driver version or VBIOS version
    signer: str
    measurements: tuple[RimMeasurement, ...]
    not_before: int = 0  # the signing chain's validity window
    not_after: int = 0


@dataclass(frozen=True)
class RimResult:
    """Outcome of comparing a report with its RIMs. ``mismatches`` maps a block name to why."""

    driver: str | None
    vbios: str | None
    checked: int
    mismatches: Mapping[str, str]

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def to_json(self) -> dict:
        return {"driver_rim": self.driver, "vbios_rim": self.vbios, "checked": self.checked, "ok": self.ok,
                "mismatches": dict(self.mismatches)}


def _parse_xml(data: bytes):
    from lxml import etree

    if len(data) > MAX_RIM_SIZE:
        raise EvidenceParseError(f"RIM: {len(data)} bytes exceeds {MAX_RIM_SIZE}", MAX_RIM_SIZE)
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise EvidenceParseError(f"RIM: not well-formed XML ({exc})", 0) from None


def _key_info_chain(root) -> list[x509.Certificate]:
    elems = list(root.iter(f"{{{DS_NS}}}X509Certificate"))
    if not 1 <= len(elems) <= MAX_CHAIN:
        raise ChainInvalid(f"RIM signature carries {len(elems)} certificates (expected 1..{MAX_CHAIN})")
    try:
        return [x509.load_der_x509_certificate(base64.b64decode("".join((e.text or "").split()))) for e in elems]
    except Exception as exc:  # noqa: BLE001 - malformed base64 or DER from the RIM
        raise EvidenceParseError(f"RIM: malformed KeyInfo certificate ({type(exc).__name__})", 0) from None


def _check_chain(certs: list[x509.Certificate], roots: list[x509.Certificate], at: int):
    """Leaf -> ... -> pinned RIM root; returns (leaf, not_before, not_after). Links, CA flags, validity at ``at``."""
    if certs[-1] not in roots:
        anchor = next((r for r in roots if r.subject == certs[-1].issuer), None)
        if anchor is None:
            raise ChainInvalid(f"RIM chain ends at {certs[-1].subject.rfc4514_string()!r}, not a pinned RIM root")
        certs = certs + [anchor]
    for cert, issuer in zip(certs, certs[1:]):
        try:
            if not issuer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                raise ChainInvalid(f"RIM chain: {issuer.subject.rfc4514_string()!r} is not a CA")
            cert.verify_directly_issued_by(issuer)
        except (x509.ExtensionNotFound, ValueError, TypeError, InvalidSignature) as exc:
            raise ChainInvalid(f"RIM chain: {cert.subject.rfc4514_string()!r} not issued by "
                               f"{issuer.subject.rfc4514_string()!r} ({type(exc).__name__})") from None
    for cert in certs:
        if not cert.not_valid_before_utc.timestamp() <= at <= cert.not_valid_after_utc.timestamp():
            raise ChainInvalid(f"RIM chain: {cert.subject.rfc4514_string()!r} is not valid at the verification time")
    return (certs[0], max(int(c.not_valid_before_utc.timestamp()) for c in certs),
            min(int(c.not_valid_after_utc.timestamp()) for c in certs))


def load_rim(data: bytes, roots: list[x509.Certificate], at: int) -> Rim:
    """Verify a signed RIM (module docstring) and return what it signs."""
    from signxml import SignatureConfiguration, XMLVerifier
    from signxml.algorithms import DigestAlgorithm, SignatureMethod
    from signxml.exceptions import InvalidInput, InvalidSignature as XmlInvalidSignature

    root = _parse_xml(data)
    leaf, not_before, not_after = _check_chain(_key_info_chain(root), roots, at)
    config = SignatureConfiguration(
        verification_time=datetime.datetime.fromtimestamp(at, datetime.timezone.utc), expect_references=1,
        signature_methods=frozenset({SignatureMethod.ECDSA_SHA384}), digest_algorithms=frozenset({DigestAlgorithm.SHA384}),
    )
    try:
        result = XMLVerifier().verify(root, x509_cert=leaf, expect_config=config, validate_schema=False)
    except (XmlInvalidSignature, InvalidInput) as exc:
        raise SignatureInvalid(f"RIM signature does not verify: {exc}") from None
    signed = result.signed_xml
    if signed is None or signed.tag != f"{{{SWID_NS}}}SoftwareIdentity":
        raise SignatureInvalid("RIM: the signature does not cover the SoftwareIdentity")
    meta = signed.find(f"{{{SWID_NS}}}Meta")
    return Rim(
        tag_id=signed.get("tagId", ""),
        product=signed.get("name", ""),
        version=meta.get("colloquialVersion", "") if meta is not None else "",
        signer=leaf.subject.rfc4514_string(),
        measurements=tuple(_measurements(signed)),
        not_before=not_before,
        not_after=not_after,
    )


def _measurements(signed) -> list[RimMeasurement]:
    out, seen = [], set()
    for r in signed.iter(f"{{{SWID_NS}}}Resource"):
        if r.get("type") != "Measurement":
            continue
        try:
            index, count = int(r.get("index")), int(r.get("alternatives", "1"))
            if index in seen or not 0 <= index < 256 or not 1 <= count <= MAX_ALTERNATIVES:
                raise ValueError
            values = tuple(bytes.fromhex(r.get(f"{{{SHA384_NS}}}Hash{i}")) for i in range(count))
        except (TypeError, ValueError):
            raise EvidenceParseError(f"RIM: malformed measurement resource {r.get('name')!r}", 0) from None
        seen.add(index)
        out.append(RimMeasurement(index, r.get("active", "").lower() == "true", values))
    return out


def compare(blocks: Mapping[int, bytes], driver: Rim | None, vbios: Rim | None) -> RimResult:
    """Every block a RIM makes active must equal one of its alternatives; each mismatch is named."""
    golden: dict[int, tuple[str, RimMeasurement]] = {}
    mismatches: dict[str, str] = {}
    for kind, rim in (("driver", driver), ("vbios", vbios)):
        for m in rim.measurements if rim else ():
            if not m.active:
                continue
            if m.index in golden:
                mismatches[f"MEASUREMENT[{m.index + 1}]"] = f"both the {golden[m.index][0]} and the {kind} RIM set it"
                continue
            golden[m.index] = (kind, m)
    for index, (kind, m) in sorted(golden.items()):
        name = f"MEASUREMENT[{index + 1}]"
        if name in mismatches:
            continue
        value = blocks.get(index + 1)
        if value is None:
            mismatches[name] = f"missing from the report ({kind} RIM expects it)"
        elif value not in m.alternatives:
            mismatches[name] = f"{value.hex()[:16]}... is none of the {kind} RIM's {len(m.alternatives)} golden values"
    return RimResult(driver.tag_id if driver else None, vbios.tag_id if vbios else None, len(golden), mismatches)


class RimStore:
    """RIMs by id: an offline bundle directory (``<rim_id>`` or ``<rim_id>.swidtag`` files), then a RIM
    service URL (fetched at most once per id per ``retry_after`` seconds, cached in ``cache_dir``)."""

    def __init__(self, *, bundle_dir: str | Path | None = None, service_url: str | None = None,
                 cache_dir: str | Path | None = None, timeout: float = 10.0, retry_after: int = 300):
        self.bundle_dir = Path(bundle_dir) if bundle_dir else None
        self.service_url = service_url.rstrip("/") if service_url else None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.timeout, self.retry_after = timeout, retry_after
        self._failed: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, rim_id: str, now: float) -> bytes | None:
        if not rim_id or len(rim_id) > 200 or not all(c.isalnum() or c in "._-" for c in rim_id):
            return None
        for d in (self.bundle_dir, self.cache_dir):
            for name in (rim_id, f"{rim_id}.swidtag"):
                if d is not None and (d / name).is_file():
                    return (d / name).read_bytes()[: MAX_RIM_SIZE + 1]
        if self.service_url is None or now - self._failed.get(rim_id, -1e18) < self.retry_after:
            return None
        return self._fetch(rim_id, now)

    def _fetch(self, rim_id: str, now: float) -> bytes | None:
        try:
            with urllib.request.urlopen(f"{self.service_url}/{rim_id}", timeout=self.timeout) as resp:  # noqa: S310
                body = resp.read(MAX_RIM_SIZE + 1)
            data = _unwrap_service_answer(body)
        except (OSError, ValueError):
            with self._lock:
                self._failed[rim_id] = now
            return None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_dir / f".{rim_id}.{hashlib.sha256(data).hexdigest()[:8]}.tmp"
            tmp.write_bytes(data)
            tmp.replace(self.cache_dir / rim_id)
        return data


def _unwrap_service_answer(body: bytes) -> bytes:
    """NVIDIA's RIM service answers JSON ``{"rim": <base64 SWID tag>, ...}``; a bare tag is accepted too."""
    if body.lstrip().startswith(b"<"):
        return body
    from derot import untrusted

    doc = untrusted.json_loads(body, what="RIM service answer")
    return base64.b64decode(doc["rim"])


def rim_ids(product: str, driver_version: str | None, vbios_rim_id: str | None) -> tuple[str | None, str | None]:
    """NVIDIA's RIM ids: ``NV_GPU_DRIVER_<product>_<driver version>`` and the VBIOS id the caller derives
    from the report's project/SKU fields (passed through)."""
    driver = f"NV_GPU_DRIVER_{product}_{driver_version}" if driver_version else None
    return driver, vbios_rim_id


def _opaque_text(value) -> str:
    raw = bytes.fromhex(value) if isinstance(value, str) else bytes(value or b"")
    return raw.split(b"\0", 1)[0].decode("ascii", "replace").strip().upper()


def gpu_rim_ids(claims) -> tuple[str | None, str | None]:
    """NVIDIA's RIM ids for verified GPU claims: ``NV_GPU_DRIVER_<chip>_<driver version>`` and
    ``NV_GPU_VBIOS_<project>_<project SKU>_<chip SKU>_<VBIOS version without dots>`` (as nvtrust names them)."""
    d = claims.details
    cn = next((p.split("=", 1)[1] for p in str(d.get("device", "")).split(",") if p.startswith("CN=")), "")
    chip = next((w for w in cn.split() if re.fullmatch(r"G[A-Z][0-9][0-9A-Z]{2,4}", w)), "")  # GH100, GB20X
    driver = f"NV_GPU_DRIVER_{chip}_{d['driver_version']}" if chip and d.get("driver_version") else None
    opaque = d.get("opaque", {})
    parts = [_opaque_text(opaque.get(k)) for k in ("project", "project_sku", "chip_sku")]
    vbios = None
    if all(parts) and d.get("vbios_version"):
        vbios = "NV_GPU_VBIOS_" + "_".join(parts) + "_" + str(d["vbios_version"]).replace(".", "").upper()
    return driver, vbios


class RimVerifier:
    """Pinned RIM roots + a :class:`RimStore`; verified RIMs are cached by content digest and by id (a RIM
    id names one published manifest; its chain's validity is checked on every use)."""

    def __init__(self, roots: list[x509.Certificate], store: RimStore):
        self.roots, self.store = list(roots), store
        self._cache: dict[bytes, Rim] = {}
        self._by_id: dict[str, Rim] = {}  # verified RIMs by id: a store is read once per id
        self._lock = threading.Lock()

    def _rim(self, rim_id: str | None, at: int) -> tuple[Rim | None, str | None]:
        known = self._by_id.get(rim_id) if rim_id else None
        if known is not None and known.not_before <= at <= known.not_after:
            return known, None
        data = self.store.get(rim_id, at) if rim_id else None
        if data is None:
            return None, f"RIM {rim_id} not found" if rim_id else "RIM id unknown (report lacks its fields)"
        key = hashlib.sha256(data).digest()
        hit = self._cache.get(key)
        if hit is not None and not hit.not_before <= at <= hit.not_after:
            raise ChainInvalid(f"RIM {rim_id}: its signing chain is not valid at the verification time")
        if hit is None:
            hit = load_rim(data, self.roots, at)
            with self._lock:
                if len(self._cache) > 256:
                    self._cache.clear()
                self._cache[key] = hit
                if len(self._by_id) > 256:
                    self._by_id.clear()
                self._by_id[rim_id] = hit
        return hit, None

    def prefetch(self, claims, at: int) -> None:
        """Fetch and verify the RIMs of verified GPU claims ahead of :meth:`check` (a node does this on its fetch
        pool, so a slow RIM service never holds a verification worker). A failure is left for :meth:`check` to
        report: the store remembers it for ``retry_after`` seconds."""
        for rim_id in gpu_rim_ids(claims):
            if rim_id:
                try:
                    self._rim(rim_id, at)
                except AttestationError:
                    pass

    def check(self, claims, at: int) -> dict:
        """The RIM comparison of verified GPU claims, JSON-ready (``Claims.tee_attributes["rim"]``)."""
        driver_id, vbios_id = gpu_rim_ids(claims)
        driver, why_d = self._rim(driver_id, at)
        vbios, why_v = self._rim(vbios_id, at)
        blocks = {int(k[k.index("[") + 1 : -1]): v for k, v in claims.measurements.items()}
        out = compare(blocks, driver, vbios).to_json()
        out["unavailable"] = [w for w in (why_d, why_v) if w]
        out["ok"] = out["ok"] and not out["unavailable"]
        return out
