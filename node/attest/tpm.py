"""TPM 2.0 structures a vTPM quote is made of (TPM 2.0 Library, Part 2 "Structures"), parsed with bounds.

All TPM integers are big-endian. Parsed here:

- ``TPMS_ATTEST`` of a ``TPM2_Quote`` (magic ``TPM_GENERATED_VALUE`` 0xff544347, type ``TPM_ST_ATTEST_QUOTE``
  0x8018): qualifiedSigner, extraData (the caller's qualifying data, at most 64 bytes), clock info, firmware
  version, then ``TPMS_QUOTE_INFO`` = PCR selection list + pcrDigest;
- ``TPMT_SIGNATURE`` (RSASSA / RSAPSS / ECDSA with their hash);
- ``TPMT_PUBLIC`` of an RSA or ECC key (the attestation key a vTPM reports with ``TPM2_ReadPublic``).

:func:`verify_quote_signature` checks a quote under an RSA attestation key (RSASSA-PKCS1-v1_5 or PSS with the
signature's hash); :func:`pcr_digest` recomputes pcrDigest from PCR values (hash of their concatenation, in
selection order). Every malformed input raises :class:`EvidenceParseError` naming the field and offset.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from derot.attest.errors import EvidenceParseError, SignatureInvalid, UnsupportedEvidence

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018
MAX_ATTEST_SIZE = 1024
MAX_EXTRA_DATA = 64  # sizeof(TPMU_HA) for SHA-512: the largest qualifying data a TPM accepts
MAX_PCR_BANKS = 16
NUM_PCRS = 24

ALG_RSA, ALG_SHA1, ALG_SHA256, ALG_SHA384, ALG_SHA512 = 0x0001, 0x0004, 0x000B, 0x000C, 0x000D
ALG_NULL, ALG_RSASSA, ALG_RSAPSS, ALG_ECDSA, ALG_ECC = 0x0010, 0x0014, 0x0016, 0x0018, 0x0023

HASHES = {ALG_SHA1: ("sha1", 20), ALG_SHA256: ("sha256", 32), ALG_SHA384: ("sha384", 48), ALG_SHA512: ("sha512", 64)}
_CRYPTO_HASHES = {ALG_SHA1: hashes.SHA1, ALG_SHA256: hashes.SHA256, ALG_SHA384: hashes.SHA384, ALG_SHA512: hashes.SHA512}


class TpmSignatureInvalid(SignatureInvalid):
    """The TPM quote's signature does not verify under the attestation key."""

    reason = "tpm_quote_signature_invalid"


class PcrDigestMismatch(SignatureInvalid):
    """The PCR values given do not hash to the signed quote's pcrDigest (or do not match its selection)."""

    reason = "pcr_digest_mismatch"


class _BE:
    """A big-endian cursor; every read is bounds-checked (absolute offsets in errors)."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str):
        if not isinstance(data, (bytes, bytearray)):
            raise EvidenceParseError(f"{what}: expected bytes", 0)
        self.data, self.pos, self.what = bytes(data), 0, what

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise EvidenceParseError(f"{self.what}: truncated {field}: need {n} bytes, "
                                     f"{len(self.data) - self.pos} left", self.pos)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "big")

    def u32(self, field: str) -> int:
        return int.from_bytes(self.take(4, field), "big")

    def u64(self, field: str) -> int:
        return int.from_bytes(self.take(8, field), "big")

    def tpm2b(self, field: str, limit: int) -> bytes:
        start = self.pos
        size = self.u16(f"{field} size")
        if size > limit:
            raise EvidenceParseError(f"{self.what}: {field} is {size} bytes, at most {limit} allowed", start)
        return self.take(size, field)

    def fail(self, message: str, offset: int | None = None) -> EvidenceParseError:
        return EvidenceParseError(f"{self.what}: {message}", self.pos if offset is None else offset)

    def done(self) -> None:
        if self.pos != len(self.data):
            raise self.fail(f"{len(self.data) - self.pos} trailing bytes")


@dataclass(frozen=True)
class PcrSelection:
    """One bank of a TPML_PCR_SELECTION: its hash algorithm and the selected PCR indices, ascending."""

    hash_alg: int
    pcrs: tuple[int, ...]


@dataclass(frozen=True)
class QuoteAttest:
    """A parsed TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE. ``raw`` is exactly the signed bytes."""

    raw: bytes
    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    selections: tuple[PcrSelection, ...]
    pcr_digest: bytes


def parse_quote_attest(raw: bytes) -> QuoteAttest:
    """Parse the TPMS_ATTEST a TPM2_Quote signs; refuses any other attestation type and trailing bytes."""
    r = _BE(raw, "TPMS_ATTEST")
    if len(r.data) > MAX_ATTEST_SIZE:
        raise r.fail(f"{len(r.data)} bytes exceeds {MAX_ATTEST_SIZE}", 0)
    if r.u32("magic") != TPM_GENERATED_VALUE:
        raise r.fail("magic is not TPM_GENERATED_VALUE (0xff544347)", 0)
    kind = r.u16("type")
    if kind != TPM_ST_ATTEST_QUOTE:
        raise r.fail(f"type 0x{kind:04x} is not TPM_ST_ATTEST_QUOTE (0x8018)", 4)
    signer = r.tpm2b("qualifiedSigner", 2 + 64)
    extra = r.tpm2b("extraData", MAX_EXTRA_DATA)
    clock, reset, restart = r.u64("clock"), r.u32("resetCount"), r.u32("restartCount")
    safe = r.u8("safe")
    firmware = r.u64("firmwareVersion")
    count_at = r.pos
    count = r.u32("pcrSelect count")
    if count > MAX_PCR_BANKS:
        raise r.fail(f"{count} PCR banks selected, at most {MAX_PCR_BANKS}", count_at)
    selections = tuple(_pcr_selection(r) for _ in range(count))
    digest = r.tpm2b("pcrDigest", 64)
    r.done()
    return QuoteAttest(bytes(raw), signer, extra, clock, reset, restart, bool(safe), firmware, selections, digest)


def _pcr_selection(r: _BE) -> PcrSelection:
    start = r.pos
    alg = r.u16("pcrSelection hash")
    if alg not in HASHES:
        raise r.fail(f"PCR bank hash algorithm 0x{alg:04x} is not supported", start)
    size = r.u8("sizeofSelect")
    if size > 4:
        raise r.fail(f"sizeofSelect {size} exceeds 4 bytes", start + 2)
    bits = r.take(size, "pcrSelect")
    pcrs = tuple(8 * i + b for i, byte in enumerate(bits) for b in range(8) if byte >> b & 1)
    return PcrSelection(alg, pcrs)


@dataclass(frozen=True)
class TpmSignature:
    """A TPMT_SIGNATURE: ``sig_alg`` (RSASSA/RSAPSS/ECDSA), ``hash_alg`` and the signature bytes
    (RSA: the modulus-sized signature; ECDSA: r and s as big-endian integers encoded in ``signature`` as r||s)."""

    sig_alg: int
    hash_alg: int
    signature: bytes


def parse_signature(raw: bytes) -> TpmSignature:
    r = _BE(raw, "TPMT_SIGNATURE")
    alg = r.u16("sigAlg")
    hash_alg = r.u16("hash")
    if hash_alg not in HASHES:
        raise r.fail(f"signature hash 0x{hash_alg:04x} is not supported", 2)
    if alg in (ALG_RSASSA, ALG_RSAPSS):
        sig = r.tpm2b("signature", 512)
    elif alg == ALG_ECDSA:
        sig_r = r.tpm2b("signatureR", 66)
        sig_s = r.tpm2b("signatureS", 66)
        width = max(len(sig_r), len(sig_s))
        sig = sig_r.rjust(width, b"\0") + sig_s.rjust(width, b"\0")
    else:
        raise r.fail(f"signature algorithm 0x{alg:04x} is not supported", 0)
    r.done()
    return TpmSignature(alg, hash_alg, sig)


@dataclass(frozen=True)
class TpmPublic:
    """A TPMT_PUBLIC of an RSA signing key (the only kind a vTPM attestation key is here)."""

    raw: bytes
    name_alg: int
    object_attributes: int
    scheme: int
    scheme_hash: int
    key_bits: int
    exponent: int
    modulus: bytes

    def name(self) -> bytes:
        """The TPM object name: nameAlg || H_nameAlg(TPMT_PUBLIC)."""
        return struct.pack(">H", self.name_alg) + hashlib.new(HASHES[self.name_alg][0], self.raw).digest()

    def public_key(self) -> rsa.RSAPublicKey:
        return rsa.RSAPublicNumbers(self.exponent, int.from_bytes(self.modulus, "big")).public_key()


def parse_public(raw: bytes) -> TpmPublic:
    """Parse an RSA TPMT_PUBLIC (as in TPM2B_PUBLIC's body, or ReadPublic's outPublic without the size)."""
    r = _BE(raw, "TPMT_PUBLIC")
    kind = r.u16("type")
    if kind != ALG_RSA:
        raise UnsupportedEvidence(f"attestation key type 0x{kind:04x} is not RSA")
    name_alg = r.u16("nameAlg")
    if name_alg not in HASHES:
        raise r.fail(f"nameAlg 0x{name_alg:04x} is not supported", 2)
    attributes = r.u32("objectAttributes")
    r.tpm2b("authPolicy", 64)
    symmetric = r.u16("symmetric")
    if symmetric != ALG_NULL:
        raise r.fail("a signing key must have a NULL symmetric algorithm", r.pos - 2)
    scheme = r.u16("scheme")
    scheme_hash = r.u16("scheme hash") if scheme != ALG_NULL else ALG_NULL
    key_bits = r.u16("keyBits")
    exponent = r.u32("exponent") or 65537
    modulus = r.tpm2b("unique", 512)
    if len(modulus) * 8 != key_bits or key_bits < 2048:
        raise r.fail(f"RSA modulus of {len(modulus)} bytes for keyBits {key_bits} (at least 2048 required)")
    r.done()
    return TpmPublic(bytes(raw), name_alg, attributes, scheme, scheme_hash, key_bits, exponent, modulus)


def pcr_digest(values: list[bytes] | tuple[bytes, ...], hash_alg: int = ALG_SHA256) -> bytes:
    """pcrDigest of a quote: H(PCR values concatenated, in selection order)."""
    return hashlib.new(HASHES[hash_alg][0], b"".join(values)).digest()


def verify_quote_signature(key: rsa.RSAPublicKey, message: bytes, signature: bytes, *,
                           sig_alg: int = ALG_RSASSA, hash_alg: int = ALG_SHA256) -> None:
    """Raise :class:`TpmSignatureInvalid` unless ``signature`` is the AK's signature over ``message``."""
    algorithm = _CRYPTO_HASHES[hash_alg]()
    pad = padding.PKCS1v15() if sig_alg == ALG_RSASSA else padding.PSS(
        mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO)
    try:
        key.verify(signature, message, pad, algorithm)
    except InvalidSignature:
        raise TpmSignatureInvalid("the TPM quote signature does not verify under the attestation key") from None


def check_pcrs(attest: QuoteAttest, pcrs: list[bytes] | tuple[bytes, ...]) -> dict[int, bytes]:
    """Check that ``pcrs`` (one value per PCR 0..23 of the SHA-256 bank) are what the quote signed.

    The quote must select exactly the SHA-256 bank with all 24 PCRs, so every PCR an app may pin is covered.
    Returns {index: value}. Raises :class:`PcrDigestMismatch`.
    """
    if [(s.hash_alg, s.pcrs) for s in attest.selections] != [(ALG_SHA256, tuple(range(NUM_PCRS)))]:
        raise PcrDigestMismatch("the quote must select exactly PCRs 0-23 of the SHA-256 bank, it selects "
                                + ", ".join(f"{HASHES.get(s.hash_alg, ('?',))[0]}:{list(s.pcrs)}"
                                            for s in attest.selections))
    if len(pcrs) != NUM_PCRS or any(not isinstance(p, bytes) or len(p) != 32 for p in pcrs):
        raise PcrDigestMismatch(f"expected {NUM_PCRS} SHA-256 PCR values, got {len(pcrs)}")
    if pcr_digest(pcrs, ALG_SHA256) != attest.pcr_digest:
        raise PcrDigestMismatch("the PCR values do not hash to the quote's pcrDigest")
    return dict(enumerate(pcrs))
