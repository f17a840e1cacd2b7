"""Feed notices: the registry's revocation set and its active epoch as of one confirmed block, signed by
the committee and published on MQTT (docs/design.md §7).

Wire form of a notice (version 1): ``abi.encode`` of one tuple, so a contract can decode it like a
certificate::

    (bytes32 magic, uint8 version, uint8 kind, uint256 chainId, address registry,
     uint64 blockNumber, bytes32 blockHash, uint64 blockTimestamp, uint64 epoch, bytes body)

- ``magic`` is ``"DEROT-NOTICE"`` zero-padded; ``kind`` is :class:`NoticeKind`; ``epoch`` is the registry's
  current (ACTIVE) epoch at the block, whose ``sig`` key signs the notice;
- ``blockNumber`` is the notice's *sequence*: a subscriber refuses a notice older than one it holds;
- ``body`` is ``abi.encode`` of the kind's tuple (:class:`RevocationSet`, :class:`EpochInfo`); every list
  is sorted strictly ascending (bytes compare lexicographically), so one registry state has exactly one
  encoding.

Only the canonical encoding decodes: :meth:`Notice.decode` re-encodes and compares, and names the byte
offset where the input goes wrong.

Signature: BLS (G1) by the epoch's ``sig`` key over ``digest = keccak256(encoding)`` with ``DST_CERT``, the
DST docs/design.md §3 assigns to "certificates and signed notices" (so ``DerotRegistry.hashToG1`` and the
EIP-2537 pairing check can verify a notice on-chain too). The two message sets are disjoint without a
second DST: word 1 of a canonical certificate is its ``uint8 version`` (31 zero bytes, then the version), word 1 of
a notice is the magic, so no byte string is both and their keccak256 digests never coincide.

MQTT payload (:class:`SignedNotice`): ``notice encoding ‖ 48-byte compressed signature``. Topics are
``derot/{chainId}/{registry lowercase hex}/revocations`` and ``.../epochs``; messages are retained, QoS 1.
Brokers are named by URL (:class:`BrokerAddress`): ``mqtt://[user[:password]@]host[:port]`` or ``mqtts://``.

This module is the format only: it must stay importable by the app SDK (no web3, no server code).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import ClassVar
from urllib.parse import unquote, urlsplit

import eth_abi
from eth_utils import keccak, to_checksum_address

from derot.constants import DST_CERT
from derot.crypto import threshold as th
from derot.crypto.bls import G1, G2, PointDecodeError
from derot.errors import DerotError

NOTICE_VERSION = 2  # 2: revocation sets carry Intel PPIDs, PCK certificates and GPU devices
MAGIC = b"DEROT-NOTICE".ljust(32, b"\0")
HEADER_ABI_TYPE = "(bytes32,uint8,uint8,uint256,address,uint64,bytes32,uint64,uint64,bytes)"
#: outer offset word + 10 head words + the body's length word
MIN_ENCODED_SIZE = 12 * 32
SIGNATURE_SIZE = 48
_UINT64 = 1 << 64


class NoticeKind(enum.IntEnum):
    REVOCATIONS = 1
    EPOCHS = 2

    @property
    def topic_suffix(self) -> str:
        return self.name.lower()


class NoticeDecodeError(DerotError, ValueError):
    """Bytes that are not a canonical signed notice; ``offset`` is where they go wrong, when known."""

    reason = "malformed_notice"

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset
        super().__init__(message if offset is None else f"{message} (at byte offset {offset})")


def topic(chain_id: int, registry: str, kind: NoticeKind) -> str:
    """``derot/{chainId}/{registry}/{revocations|epochs}``, the registry in lowercase hex."""
    return f"derot/{int(chain_id)}/{to_checksum_address(registry).lower()}/{NoticeKind(kind).topic_suffix}"


def _sorted_unique(name: str, items, check=None) -> tuple:
    values = tuple(items)
    for i, value in enumerate(values):
        if check is not None:
            check(name, i, value)
        if i and not values[i - 1] < value:
            raise ValueError(f"{name}[{i}] is not strictly greater than {name}[{i - 1}] (sorted, no duplicates)")
    return values


def _length(low: int, high: int):
    def check(name: str, i: int, value) -> None:
        if not isinstance(value, bytes) or not low <= len(value) <= high:
            size = str(low) if low == high else f"{low}..{high}"
            raise ValueError(f"{name}[{i}] must be {size} bytes")

    return check


# ---------------------------------------------------------------------------------------------
# bodies


@dataclass(frozen=True)
class PlatformStatus:
    """A platform rule: enabled flag and TCB floor (``derot.constants.TcbStatus`` value)."""

    platform: int
    enabled: bool
    tcb_floor: int


@dataclass(frozen=True)
class RevocationSet:
    """Everything the registry revokes or restricts at one block, each list sorted strictly ascending."""

    KIND: ClassVar[NoticeKind] = NoticeKind.REVOCATIONS
    ABI_TYPE: ClassVar[str] = ("(bytes6[],bytes[],bytes[],bytes32[],bytes32[],bytes32[],(uint8,bool,uint8)[],"
                               "bytes16[],bytes32[],bytes[])")
    #: display name of each identifier list, for change listings (ABI order, the platforms between the groups)
    LABELS: ClassVar[dict[str, str]] = {
        "fmspcs": "FMSPC", "chip_ids": "chip id", "gpu_fwids": "GPU FWID", "measurements": "measurement",
        "cert_serials": "certificate serial", "evidence_hashes": "evidence hash",
        "ppids": "Intel PPID", "pck_certs": "Intel PCK certificate", "gpu_devices": "GPU device",
    }

    fmspcs: tuple[bytes, ...] = ()
    chip_ids: tuple[bytes, ...] = ()
    gpu_fwids: tuple[bytes, ...] = ()
    measurements: tuple[bytes, ...] = ()
    cert_serials: tuple[bytes, ...] = ()
    evidence_hashes: tuple[bytes, ...] = ()
    platforms: tuple[PlatformStatus, ...] = ()
    ppids: tuple[bytes, ...] = ()
    pck_certs: tuple[bytes, ...] = ()
    gpu_devices: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        sizes = {"fmspcs": (6, 6), "chip_ids": (1, 64), "gpu_fwids": (1, 64), "measurements": (32, 32),
                 "cert_serials": (32, 32), "evidence_hashes": (32, 32), "ppids": (16, 16), "pck_certs": (32, 32),
                 "gpu_devices": (1, 32)}
        for name, (low, high) in sizes.items():
            object.__setattr__(self, name, _sorted_unique(name, getattr(self, name), _length(low, high)))
        platforms = tuple(self.platforms)
        for i, rule in enumerate(platforms):
            if not isinstance(rule, PlatformStatus) or not (0 <= rule.platform < 256 and 0 <= rule.tcb_floor < 256):
                raise ValueError(f"platforms[{i}] must be a PlatformStatus with uint8 platform and tcb_floor")
        _sorted_unique("platforms", (r.platform for r in platforms))
        object.__setattr__(self, "platforms", platforms)

    @classmethod
    def of(cls, *, platforms=None, **sets) -> RevocationSet:
        """From unordered collections (frozensets, a ``{platform: PlatformRule}`` mapping): sorts them."""
        rules = tuple(
            PlatformStatus(int(p), bool(rule.enabled), int(rule.tcb_floor))
            for p, rule in sorted((platforms or {}).items(), key=lambda item: int(item[0]))
        )
        return cls(**{name: tuple(sorted(bytes(v) for v in values)) for name, values in sets.items()},
                   platforms=rules)

    def identifier_lists(self) -> dict[str, tuple[bytes, ...]]:
        return {name: getattr(self, name) for name in self.LABELS}

    def to_abi(self) -> tuple:
        lists = list(self.identifier_lists().values())
        return (*lists[:6], [(r.platform, r.enabled, r.tcb_floor) for r in self.platforms], *lists[6:])

    @classmethod
    def from_abi(cls, values) -> RevocationSet:
        values = list(values)
        rules = values.pop(6)
        lists = {name: tuple(bytes(v) for v in items) for name, items in zip(cls.LABELS, values)}
        return cls(**lists, platforms=tuple(PlatformStatus(p, e, f) for p, e, f in rules))


@dataclass(frozen=True)
class EpochInfo:
    """The active epoch: threshold, members in index order (member i has index i+1), group keys."""

    KIND: ClassVar[NoticeKind] = NoticeKind.EPOCHS
    ABI_TYPE: ClassVar[str] = "(uint32,address[],bytes,bytes,bytes32,uint64)"

    threshold: int
    members: tuple[str, ...]
    group_key_sig: G2
    group_key_kd: G2
    transcript_hash: bytes
    activated_block: int

    def __post_init__(self) -> None:
        members = tuple(to_checksum_address(m) for m in self.members)
        if len({m.lower() for m in members}) != len(members):
            raise ValueError("members must be distinct")
        if not 1 <= self.threshold <= len(members):
            raise ValueError(f"threshold {self.threshold} is not in 1..{len(members)} (the number of members)")
        if not isinstance(self.group_key_sig, G2) or not isinstance(self.group_key_kd, G2):
            raise ValueError("group keys must be G2 points")
        if not isinstance(self.transcript_hash, bytes) or len(self.transcript_hash) != 32:
            raise ValueError("transcript_hash must be 32 bytes")
        if not 0 <= self.activated_block < _UINT64:
            raise ValueError("activated_block must be a uint64")
        object.__setattr__(self, "members", members)

    def to_abi(self) -> tuple:
        return (self.threshold, list(self.members), self.group_key_sig.to_bytes(), self.group_key_kd.to_bytes(),
                self.transcript_hash, self.activated_block)

    @classmethod
    def from_abi(cls, values) -> EpochInfo:
        threshold, members, group_key_sig, group_key_kd, transcript, activated = values
        keys = []
        for name, raw in (("group_key_sig", group_key_sig), ("group_key_kd", group_key_kd)):
            try:
                keys.append(G2.from_bytes(bytes(raw)))
            except PointDecodeError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return cls(threshold, tuple(members), keys[0], keys[1], bytes(transcript), activated)


Content = RevocationSet | EpochInfo
_BODIES: dict[NoticeKind, type] = {NoticeKind.REVOCATIONS: RevocationSet, NoticeKind.EPOCHS: EpochInfo}


# ---------------------------------------------------------------------------------------------
# the notice


@dataclass(frozen=True)
class Notice:
    """One registry fact as of a confirmed block. Invariant: ``decode(encode(n)) == n``."""

    chain_id: int
    registry: str
    block_number: int
    block_hash: bytes
    block_timestamp: int
    epoch: int
    content: Content

    def __post_init__(self) -> None:
        if not isinstance(self.content, (RevocationSet, EpochInfo)):
            raise ValueError("content must be a RevocationSet or an EpochInfo")
        if not 0 <= self.chain_id < 1 << 256:
            raise ValueError("chain_id must be a uint256")
        for name in ("block_number", "block_timestamp", "epoch"):
            if not 0 <= getattr(self, name) < _UINT64:
                raise ValueError(f"{name} must be a uint64")
        if not isinstance(self.block_hash, bytes) or len(self.block_hash) != 32:
            raise ValueError("block_hash must be 32 bytes")
        try:
            object.__setattr__(self, "registry", to_checksum_address(self.registry))
        except (TypeError, ValueError):
            raise ValueError(f"registry is not an address: {self.registry!r}") from None

    @property
    def kind(self) -> NoticeKind:
        return self.content.KIND

    @property
    def topic(self) -> str:
        return topic(self.chain_id, self.registry, self.kind)

    def encode(self) -> bytes:
        body = eth_abi.encode([self.content.ABI_TYPE], [self.content.to_abi()])
        header = (MAGIC, NOTICE_VERSION, int(self.kind), self.chain_id, self.registry, self.block_number,
                  self.block_hash, self.block_timestamp, self.epoch, body)
        return eth_abi.encode([HEADER_ABI_TYPE], [header])

    @cached_property
    def digest(self) -> bytes:
        """keccak256 of the encoding: the message the committee signs (with ``DST_CERT``)."""
        return keccak(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> Notice:
        """Parse the canonical encoding; anything else raises :class:`NoticeDecodeError`."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise NoticeDecodeError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < MIN_ENCODED_SIZE:
            raise NoticeDecodeError(f"notice is {len(data)} bytes, shorter than the minimum {MIN_ENCODED_SIZE}",
                                    len(data))
        if data[32:64] != MAGIC:
            raise NoticeDecodeError("not a derot notice: the magic word is wrong", 32)
        version, kind = int.from_bytes(data[64:96], "big"), int.from_bytes(data[96:128], "big")
        if version != NOTICE_VERSION:
            raise NoticeDecodeError(f"unsupported notice version {version} (this code reads {NOTICE_VERSION})", 64)
        if kind not in _BODIES.keys():
            raise NoticeDecodeError(f"unknown notice kind {kind}", 96)
        try:
            (header,) = eth_abi.decode([HEADER_ABI_TYPE], data)
        except Exception as exc:  # eth_abi raises several DecodingError subclasses and ValueErrors
            raise NoticeDecodeError(f"not an ABI-encoded notice: {exc}") from None
        _magic, _version, _kind, chain_id, registry, number, block_hash, timestamp, epoch, body = header
        body_type = _BODIES[NoticeKind(kind)]
        body_start = 32 + int.from_bytes(data[32 + 9 * 32 : 32 + 10 * 32], "big") + 32
        try:
            (values,) = eth_abi.decode([body_type.ABI_TYPE], bytes(body))
        except Exception as exc:
            raise NoticeDecodeError(f"{NoticeKind(kind).topic_suffix} body is not ABI-encoded: {exc}",
                                    body_start) from None
        try:
            notice = cls(chain_id, registry, number, bytes(block_hash), timestamp, epoch, body_type.from_abi(values))
        except ValueError as exc:
            raise NoticeDecodeError(f"{NoticeKind(kind).topic_suffix} notice: {exc}") from None
        canonical = notice.encode()
        if canonical != data:
            offset = next((i for i, (a, b) in enumerate(zip(canonical, data)) if a != b),
                          min(len(canonical), len(data)))
            raise NoticeDecodeError("not the canonical encoding", offset)
        return notice

    def sign(self, secret: int) -> G1:
        """``secret · H_cert(digest)``: a member's partial signature (``secret = x_i``), or a whole one."""
        return th.partial_sign(secret, self.digest, DST_CERT)

    def describe(self) -> dict:
        """A JSON-friendly view (hex for bytes)."""
        content = {}
        for f in fields(self.content):
            value = getattr(self.content, f.name)
            if isinstance(value, G2):
                value = value.to_bytes().hex()
            elif isinstance(value, bytes):
                value = value.hex()
            elif isinstance(value, tuple):
                value = [v.hex() if isinstance(v, bytes) else (vars(v) if isinstance(v, PlatformStatus) else v)
                         for v in value]
            content[f.name] = value
        return {"kind": self.kind.topic_suffix, "chain_id": self.chain_id, "registry": self.registry,
                "block_number": self.block_number, "block_hash": self.block_hash.hex(),
                "block_timestamp": self.block_timestamp, "epoch": self.epoch, "content": content}


@dataclass(frozen=True)
class SignedNotice:
    """What goes on the wire: the notice's encoding followed by the 48-byte compressed signature."""

    notice: Notice
    signature: G1

    def encode(self) -> bytes:
        return self.notice.encode() + self.signature.to_bytes()

    @classmethod
    def decode(cls, payload: bytes) -> SignedNotice:
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise NoticeDecodeError(f"expected bytes, got {type(payload).__name__}")
        payload = bytes(payload)
        if len(payload) < MIN_ENCODED_SIZE + SIGNATURE_SIZE:
            raise NoticeDecodeError(
                f"payload is {len(payload)} bytes, shorter than the minimum {MIN_ENCODED_SIZE + SIGNATURE_SIZE}",
                len(payload),
            )
        split = len(payload) - SIGNATURE_SIZE
        notice = Notice.decode(payload[:split])
        try:
            signature = G1.from_bytes(payload[split:])
        except PointDecodeError as exc:
            raise NoticeDecodeError(f"signature: {exc}", split) from None
        return cls(notice, signature)

    def verify(self, group_key: G2) -> bool:
        """``e(σ, G2) == e(H_cert(digest), PK_sig)``."""
        return th.verify(group_key, self.notice.digest, self.signature, DST_CERT)


@dataclass(frozen=True)
class BrokerAddress:
    """An MQTT broker named by ``mqtt://[user[:password]@]host[:port]`` (``mqtts://`` for TLS). ``str()``
    never shows the password."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"broker URL must be mqtt://host[:port] or mqtts://host[:port], got {str(parts.scheme)!r}"
                             f" scheme and host {parts.hostname!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("broker URL takes no path, query or fragment (the topics are fixed)")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"broker URL port: {exc}") from None
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname, port or (8883 if tls else 1883), tls,
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None)

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"

    def client(self, **kwargs):
        """An ``aiomqtt.Client`` for this broker (use it with ``async with``)."""
        import ssl

        import aiomqtt

        return aiomqtt.Client(self.host, self.port, username=self.username, password=self.password,
                              tls_context=ssl.create_default_context() if self.tls else None, **kwargs)
