"""The derot certificate (docs/design.md §4): a frozen value, its canonical ABI encoding and its digest.

Wire form: ``abi.encode(Certificate)`` of the Solidity struct in ``contracts/src/lib/CertificateCodec.sol``,
i.e. the 19-field tuple encoded as one ABI parameter (the first word is the offset 0x20), so a contract
reads it with ``abi.decode(cert, (Certificate))``. Only the canonical encoding is accepted: decoding
re-encodes and compares, which is exactly the set the on-chain decoder accepts. Both directions are written
out word by word for speed (a certificate is encoded and decoded several times per request); the tests hold
them to ``eth_abi`` as the oracle.

Version 2 adds ``bytes32[] hardware``: ``keccak256(uint8 RevocationKind ‖ id)`` of every hardware identity
the evidence was verified with (``derot.attest.identity.hardware_keys``), sorted ascending, at most
:data:`MAX_HARDWARE`, so a certificate stops verifying once its machine is revoked (docs/revocation.md).

Version 3 adds ``uint8 gpuCount`` and ``uint32 gpuModels``: how many NVIDIA GPUs were attested together with
the CPU evidence (each verified and nonce-bound to the request), and the OR of their
:class:`~derot.constants.GpuModel` bits (0 for a GPU whose model derot does not recognise), so a relying
contract can require a GPU, or a model (docs/gpu.md).

The BLS signature is a G1 point over :attr:`Certificate.digest` (keccak256 of the encoding) with
``derot.constants.DST_CERT``, made by the epoch's ``sig`` key.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property, lru_cache

from eth_utils import keccak, to_checksum_address

from derot.constants import CERT_VERSION, DST_CERT
from derot.crypto.bls import G1
from derot.errors import DerotError

#: The ABI type of the certificate tuple, in field order.
CERT_ABI_TYPE = (
    "(uint8,uint256,address,uint64,bytes32,bytes32,uint32,uint8,bytes,"
    "uint8,bytes32,bytes32,uint8,uint64,uint64,uint64,bytes32[],uint8,uint32)"
)
_INT_BITS = {
    "version": 8,
    "chain_id": 256,
    "epoch": 64,
    "key_version": 32,
    "key_type": 8,
    "platform": 8,
    "tcb_status": 8,
    "not_before": 64,
    "not_after": 64,
    "policy_block": 64,
    "gpu_count": 8,
    "gpu_models": 32,
}
_BYTES32 = ("serial", "app_id", "measurement", "evidence_hash")
#: Smallest possible encoding: outer offset + 19 head words + subjectKey and hardware length words.
MIN_ENCODED_SIZE = 0x2C0
#: The tuple's head: one word per field (the dynamic ones hold their tail's offset from the tuple's start).
_HEAD_SIZE = 19 * 32
#: The most hardware keys a certificate holds (``CertificateCodec.MAX_HARDWARE``).
MAX_HARDWARE = 32


class CertificateDecodeError(DerotError, ValueError):
    """Bytes that are not the canonical encoding of a certificate; ``offset`` is where they go wrong."""

    reason = "malformed_certificate"

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset
        super().__init__(message if offset is None else f"{message} (at byte offset {offset})")


@dataclass(frozen=True)
class Certificate:
    """A certificate. Integer fields are plain ints (``Platform``/``TcbStatus``/``KeyType`` values are
    ints too); unknown enum values are representable, so any canonical encoding decodes."""

    version: int
    chain_id: int
    registry: str
    epoch: int
    serial: bytes
    app_id: bytes
    key_version: int
    key_type: int
    subject_key: bytes
    platform: int
    measurement: bytes
    evidence_hash: bytes
    tcb_status: int
    not_before: int
    not_after: int
    policy_block: int
    hardware: tuple[bytes, ...] = ()
    gpu_count: int = 0
    gpu_models: int = 0

    def __post_init__(self) -> None:
        for name, bits in _INT_BITS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < 1 << bits:
                raise ValueError(f"certificate field {name} must be a uint{bits}, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in _BYTES32:
            value = getattr(self, name)
            if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
                raise ValueError(f"certificate field {name} must be 32 bytes")
            object.__setattr__(self, name, bytes(value))
        if not isinstance(self.subject_key, (bytes, bytearray)):
            raise ValueError("certificate field subject_key must be bytes")
        object.__setattr__(self, "subject_key", bytes(self.subject_key))
        hardware = tuple(bytes(h) if isinstance(h, (bytes, bytearray)) else h for h in self.hardware)
        if len(hardware) > MAX_HARDWARE or not all(isinstance(h, bytes) and len(h) == 32 for h in hardware):
            raise ValueError(f"certificate field hardware must be at most {MAX_HARDWARE} 32-byte keys")
        object.__setattr__(self, "hardware", hardware)
        try:
            object.__setattr__(self, "registry", _checksummed(self.registry))
        except (ValueError, TypeError):
            raise ValueError(f"certificate field registry is not an address: {self.registry!r}") from None

    # encoding -----------------------------------------------------------------------------------
    def encode(self) -> bytes:
        """The canonical wire form: ``abi.encode`` of the tuple (computed once per instance: it is frozen)."""
        return self._encoding

    @cached_property
    def _encoding(self) -> bytes:
        # abi.encode of the tuple, word by word: the fields are already range-checked, so eth_abi's generic
        # validation (about 150 µs a certificate, paid by the gateway and by every contributor) adds nothing
        key, hardware = self.subject_key, self.hardware
        padded_key = key + bytes(-len(key) % 32)
        head = b"".join((
            _word(self.version), _word(self.chain_id), bytes(12) + bytes.fromhex(self.registry[2:]),
            _word(self.epoch), self.serial, self.app_id, _word(self.key_version), _word(self.key_type),
            _word(_HEAD_SIZE), _word(self.platform), self.measurement, self.evidence_hash, _word(self.tcb_status),
            _word(self.not_before), _word(self.not_after), _word(self.policy_block),
            _word(_HEAD_SIZE + 32 + len(padded_key)), _word(self.gpu_count), _word(self.gpu_models),
        ))
        return b"".join((_word(0x20), head, _word(len(key)), padded_key, _word(len(hardware)), *hardware))

    @classmethod
    def decode(cls, data: bytes) -> Certificate:
        """Parse the canonical encoding; anything else raises :class:`CertificateDecodeError`."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CertificateDecodeError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        version = other_version(data)
        if version is not None:
            raise CertificateDecodeError(f"certificate version {version}, this decoder reads version {CERT_VERSION}", 0x20)
        if len(data) < MIN_ENCODED_SIZE:
            raise CertificateDecodeError(
                f"certificate is {len(data)} bytes, shorter than the minimum {MIN_ENCODED_SIZE}", len(data)
            )
        try:
            cert = cls(**_fields_at_their_places(data))
        except ValueError as exc:
            raise CertificateDecodeError(str(exc)) from None
        canonical = cert.encode()
        if canonical != data:
            offset = next(
                (i for i, (a, b) in enumerate(zip(canonical, data)) if a != b), min(len(canonical), len(data))
            )
            raise CertificateDecodeError("not the canonical encoding", offset)
        return cert

    # signing ------------------------------------------------------------------------------------
    @cached_property
    def digest(self) -> bytes:
        """keccak256 of the encoding: the message the committee signs."""
        return keccak(self.encode())

    def hash_point(self) -> G1:
        """H_cert(digest) in G1 (RFC 9380, DST_CERT)."""
        return G1.hash_to_curve(self.digest, DST_CERT)

    def sign(self, secret: int) -> G1:
        """Single-key signature ``secret · H_cert(digest)`` (a committee combines partials instead)."""
        return self.hash_point() * secret


#: each field's place in the tuple's head (the dataclass declares them in encoding order)
_FIELD_INDEX = {f.name: i for i, f in enumerate(fields(Certificate))}


def _fields_at_their_places(data: bytes) -> dict[str, object]:
    """Each field read from where the canonical layout puts it, following the two tail offsets within bounds.

    Only canonical bytes are accepted: :meth:`Certificate.decode` re-encodes what this returns and compares, so
    a stray offset, padding or trailer is refused there (eth_abi's decoder took about 200 µs a certificate)."""

    def word(i: int) -> bytes:
        return _head_word(data, i)

    def uint(i: int) -> int:
        return int.from_bytes(word(i), "big")

    def tail(name: str, head_index: int, item_size: int, max_items: int) -> tuple[int, int]:
        start = 0x20 + uint(head_index)
        if start + 32 > len(data):
            raise CertificateDecodeError(f"{name} offset points past the end")
        count = int.from_bytes(data[start:start + 32], "big")
        if count > max_items or start + 32 + count * item_size > len(data):
            raise CertificateDecodeError(f"{name} length {count} does not fit")
        return start + 32, count

    key_at, key_size = tail("subjectKey", 8, 1, len(data))
    hardware_at, hardware_count = tail("hardware", 16, 32, MAX_HARDWARE)
    return {
        "version": uint(0), "chain_id": uint(1), "registry": "0x" + word(2)[12:].hex(), "epoch": uint(3),
        "serial": word(4), "app_id": word(5), "key_version": uint(6), "key_type": uint(7),
        "subject_key": data[key_at:key_at + key_size], "platform": uint(9), "measurement": word(10),
        "evidence_hash": word(11), "tcb_status": uint(12), "not_before": uint(13), "not_after": uint(14),
        "policy_block": uint(15),
        "hardware": tuple(data[at:at + 32] for at in range(hardware_at, hardware_at + 32 * hardware_count, 32)),
        "gpu_count": uint(17), "gpu_models": uint(18),
    }


def _head_word(data: bytes, index: int) -> bytes:
    return data[0x20 + 32 * index:0x40 + 32 * index]


def head_uint(data: bytes, name: str) -> int:
    """The head word of field ``name`` in ``data`` read as an unsigned integer, without checking anything else:
    for a caller that compares ``data`` with a canonical encoding afterwards (0 past the end of short data)."""
    return int.from_bytes(_head_word(data, _FIELD_INDEX[name]), "big")


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _checksummed(address: object) -> str:
    """EIP-55 form of ``address``; strings are memoised (a node names one registry)."""
    return _checksummed_str(address) if isinstance(address, str) else to_checksum_address(address)


@lru_cache(maxsize=256)
def _checksummed_str(address: str) -> str:
    return to_checksum_address(address)


def other_version(data: bytes) -> int | None:
    """The version word of an encoding that names a version other than :data:`CERT_VERSION` (else ``None``);
    such bytes are not decoded, and verifiers answer WRONG_VERSION (``CertificateCodec.otherVersion``)."""
    if len(data) < 0x40 or int.from_bytes(data[:32], "big") != 0x20:
        return None
    version = int.from_bytes(data[32:64], "big")
    return None if version == CERT_VERSION else version
