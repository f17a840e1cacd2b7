"""The DKG wire format (``protocol/derot/v1/dkg.proto``, version 1): envelopes, bodies, signatures.

Every message is a :class:`Message` envelope whose ``body`` holds one bundle; the Ed25519 signature
covers (version, network, epoch, session id, kind, sender, SHA-256(body)), so a bundle hash plus the
dealer's signature is transferable evidence of what the dealer signed (used by echoes).

Decoding is strict: protobuf parse errors, non-canonical encodings, unknown enum values and wrong
sizes or counts raise :class:`DkgMessageRejected` with reason ``MALFORMED`` and a detail naming the
field (and item) at fault. Parsed bodies are frozen dataclasses holding bytes and ints only; turning
commitment bytes into curve points is the session's job.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf.message import DecodeError

from derot import _proto
from derot.crypto import box
from derot.crypto.hazmat.batch import AFFINE_SIZE
from derot.crypto.bls import R
from derot.crypto.dkg.errors import DkgMessageRejected, RejectReason

VERSION = 1
SIGNATURE_DOMAIN = b"DEROT-V1-DKG-MESSAGE\x00"
SHARE_AAD_DOMAIN = b"DEROT-V1-DKG-SHARE\x00"
HASH_SIZE = 32
SIGNATURE_SIZE = 64
SCALAR_SIZE = 32
#: A sealed share: box overhead + sig_share(32) ‖ kd_share(32).
SHARE_BOX_SIZE = box.OVERHEAD + 2 * SCALAR_SIZE

_pb = _proto.load("dkg_pb2")


class MessageKind(IntEnum):
    DEAL = 1
    RESPONSE = 2
    JUSTIFICATION = 3


class ComplaintReason(IntEnum):
    DECRYPTION_FAILED = 1
    INVALID_SHARE = 2


def _malformed(detail: str) -> DkgMessageRejected:
    return DkgMessageRejected(RejectReason.MALFORMED, detail)


def _parse(cls, data: bytes, what: str):
    try:
        parsed = cls.FromString(bytes(data))
    except DecodeError as exc:
        raise _malformed(f"{what}: protobuf parse error ({exc})") from None
    if parsed.SerializeToString() != bytes(data):
        raise _malformed(f"{what}: not the canonical encoding (unknown fields, reordered or repeated fields)")
    return parsed


def signed_payload(
    version: int, network: bytes, epoch: int, session_id: bytes, kind: int, sender: int, body_hash: bytes
) -> bytes:
    """The bytes an Ed25519 signature covers (see dkg.proto)."""
    return (
        SIGNATURE_DOMAIN
        + struct.pack(">IH", version, len(network))
        + network
        + struct.pack(">Q", epoch)
        + session_id
        + struct.pack(">BI", kind, sender)
        + body_hash
    )


def verify_signature(public_key: bytes, signature: bytes, payload: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, payload)
    except InvalidSignature:
        return False
    return True


def share_aad(network: bytes, epoch: int, session_id: bytes, dealer: int, recipient: int) -> bytes:
    """Associated data of the box carrying ``dealer``'s shares for ``recipient``."""
    return (
        SHARE_AAD_DOMAIN
        + struct.pack(">H", len(network))
        + network
        + struct.pack(">Q", epoch)
        + session_id
        + struct.pack(">II", dealer, recipient)
    )


# --------------------------------------------------------------------------------------------------
# envelope


@dataclass(frozen=True)
class Message:
    """One signed DKG message, as broadcast. ``encode()`` gives the wire bytes."""

    network: bytes
    epoch: int
    session_id: bytes
    kind: MessageKind
    sender: int
    body: bytes
    signature: bytes
    version: int = VERSION

    @cached_property
    def body_hash(self) -> bytes:
        return hashlib.sha256(self.body).digest()

    @property
    def payload(self) -> bytes:
        return signed_payload(
            self.version, self.network, self.epoch, self.session_id, self.kind, self.sender, self.body_hash
        )

    @classmethod
    def sign(
        cls,
        key: Ed25519PrivateKey,
        *,
        network: bytes,
        epoch: int,
        session_id: bytes,
        kind: MessageKind,
        sender: int,
        body: bytes,
    ) -> Message:
        unsigned = cls(network, epoch, session_id, MessageKind(kind), sender, body, b"")
        return cls(network, epoch, session_id, MessageKind(kind), sender, body, key.sign(unsigned.payload))

    def verify(self, public_key: bytes) -> bool:
        return verify_signature(public_key, self.signature, self.payload)

    def encode(self) -> bytes:
        return _pb.DkgMessage(
            version=self.version,
            network=self.network,
            epoch=self.epoch,
            session_id=self.session_id,
            kind=int(self.kind),
            sender=self.sender,
            body=self.body,
            signature=self.signature,
        ).SerializeToString()

    @classmethod
    def decode(cls, data: bytes) -> Message:
        """Parse wire bytes; checks everything that needs no session context."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise _malformed(f"expected bytes, got {type(data).__name__}")
        pb = _parse(_pb.DkgMessage, data, "DkgMessage")
        if pb.version != VERSION:
            raise DkgMessageRejected(
                RejectReason.UNSUPPORTED_VERSION, f"message version {pb.version}, this node speaks {VERSION}"
            )
        if not 1 <= len(pb.network) <= 255:
            raise _malformed(f"DkgMessage.network: {len(pb.network)} bytes, expected 1..255")
        if len(pb.session_id) != HASH_SIZE:
            raise _malformed(f"DkgMessage.session_id: {len(pb.session_id)} bytes, expected {HASH_SIZE}")
        if pb.kind not in MessageKind._value2member_map_:
            raise _malformed(f"DkgMessage.kind: unknown kind {pb.kind}")
        if pb.sender == 0:
            raise _malformed("DkgMessage.sender: index 0 is not a member index")
        if len(pb.signature) != SIGNATURE_SIZE:
            raise _malformed(f"DkgMessage.signature: {len(pb.signature)} bytes, expected {SIGNATURE_SIZE}")
        return cls(
            bytes(pb.network), pb.epoch, bytes(pb.session_id), MessageKind(pb.kind), pb.sender,
            bytes(pb.body), bytes(pb.signature), pb.version,
        )


# --------------------------------------------------------------------------------------------------
# bodies


def _scalar(data: bytes, what: str) -> int:
    if len(data) != SCALAR_SIZE:
        raise _malformed(f"{what}: {len(data)} bytes, expected {SCALAR_SIZE}")
    value = int.from_bytes(data, "big")
    if value >= R:
        raise _malformed(f"{what}: scalar not reduced modulo r")
    return value


@dataclass(frozen=True)
class DealBody:
    """``commitments[s]`` = t affine G2 encodings for secret s; one share box per recipient, index order."""

    commitments: tuple[tuple[bytes, ...], tuple[bytes, ...]]
    encrypted_shares: tuple[bytes, ...]

    def encode(self) -> bytes:
        return _pb.DealBundle(
            sig_commitments=self.commitments[0],
            kd_commitments=self.commitments[1],
            encrypted_shares=self.encrypted_shares,
        ).SerializeToString()

    @classmethod
    def decode(cls, body: bytes, *, threshold: int, recipients: int) -> DealBody:
        pb = _parse(_pb.DealBundle, body, "DealBundle")
        commitments = []
        for name in ("sig_commitments", "kd_commitments"):
            points = tuple(bytes(p) for p in getattr(pb, name))
            if len(points) != threshold:
                raise _malformed(f"DealBundle.{name}: {len(points)} points, expected t = {threshold}")
            for k, point in enumerate(points):
                if len(point) != AFFINE_SIZE:
                    raise _malformed(f"DealBundle.{name}[{k}]: {len(point)} bytes, expected {AFFINE_SIZE}")
            commitments.append(points)
        shares = tuple(bytes(s) for s in pb.encrypted_shares)
        if len(shares) != recipients:
            raise _malformed(f"DealBundle.encrypted_shares: {len(shares)} boxes, expected n = {recipients}")
        for k, sealed in enumerate(shares):
            if len(sealed) != SHARE_BOX_SIZE:
                raise _malformed(
                    f"DealBundle.encrypted_shares[{k}]: {len(sealed)} bytes, expected {SHARE_BOX_SIZE}"
                )
        return cls((commitments[0], commitments[1]), shares)


@dataclass(frozen=True)
class Echo:
    dealer: int
    bundle_hash: bytes
    dealer_signature: bytes


@dataclass(frozen=True)
class Complaint:
    dealer: int
    reason: ComplaintReason


@dataclass(frozen=True)
class ResponseBody:
    echoes: tuple[Echo, ...]
    complaints: tuple[Complaint, ...]

    def encode(self) -> bytes:
        return _pb.ResponseBundle(
            echoes=[_pb.DkgEcho(dealer=e.dealer, bundle_hash=e.bundle_hash, dealer_signature=e.dealer_signature)
                    for e in self.echoes],
            complaints=[_pb.DkgComplaint(dealer=c.dealer, reason=int(c.reason)) for c in self.complaints],
        ).SerializeToString()

    @classmethod
    def decode(cls, body: bytes, *, dealers: frozenset[int]) -> ResponseBody:
        pb = _parse(_pb.ResponseBundle, body, "ResponseBundle")
        echoes = []
        for k, e in enumerate(pb.echoes):
            what = f"ResponseBundle.echoes[{k}]"
            if e.dealer not in dealers:
                raise _malformed(f"{what}.dealer: {e.dealer} is not a dealer of this run")
            if len(e.bundle_hash) != HASH_SIZE:
                raise _malformed(f"{what}.bundle_hash: {len(e.bundle_hash)} bytes, expected {HASH_SIZE}")
            if len(e.dealer_signature) != SIGNATURE_SIZE:
                raise _malformed(f"{what}.dealer_signature: {len(e.dealer_signature)} bytes, expected 64")
            echoes.append(Echo(e.dealer, bytes(e.bundle_hash), bytes(e.dealer_signature)))
        keys = [(e.dealer, e.bundle_hash) for e in echoes]
        if keys != sorted(set(keys)):
            raise _malformed("ResponseBundle.echoes: not sorted by (dealer, bundle_hash) or repeated")
        complaints = []
        for k, c in enumerate(pb.complaints):
            what = f"ResponseBundle.complaints[{k}]"
            if c.dealer not in dealers:
                raise _malformed(f"{what}.dealer: {c.dealer} is not a dealer of this run")
            if c.reason not in ComplaintReason._value2member_map_:
                raise _malformed(f"{what}.reason: unknown reason {c.reason}")
            complaints.append(Complaint(c.dealer, ComplaintReason(c.reason)))
        order = [c.dealer for c in complaints]
        if order != sorted(set(order)):
            raise _malformed("ResponseBundle.complaints: not sorted by dealer or repeated")
        return cls(tuple(echoes), tuple(complaints))


@dataclass(frozen=True)
class Reveal:
    """A share revealed in the clear by its dealer: ``shares[s] = f_s(recipient)``."""

    recipient: int
    shares: tuple[int, int]


@dataclass(frozen=True)
class JustificationBody:
    reveals: tuple[Reveal, ...]

    def encode(self) -> bytes:
        return _pb.JustificationBundle(
            shares=[
                _pb.DkgRevealedShare(
                    recipient=r.recipient,
                    sig_share=r.shares[0].to_bytes(SCALAR_SIZE, "big"),
                    kd_share=r.shares[1].to_bytes(SCALAR_SIZE, "big"),
                )
                for r in self.reveals
            ]
        ).SerializeToString()

    @classmethod
    def decode(cls, body: bytes, *, recipients: frozenset[int]) -> JustificationBody:
        pb = _parse(_pb.JustificationBundle, body, "JustificationBundle")
        reveals = []
        for k, r in enumerate(pb.shares):
            what = f"JustificationBundle.shares[{k}]"
            if r.recipient not in recipients:
                raise _malformed(f"{what}.recipient: {r.recipient} is not a recipient of this run")
            shares = (_scalar(r.sig_share, f"{what}.sig_share"), _scalar(r.kd_share, f"{what}.kd_share"))
            reveals.append(Reveal(r.recipient, shares))
        order = [r.recipient for r in reveals]
        if order != sorted(set(order)):
            raise _malformed("JustificationBundle.shares: not sorted by recipient or repeated")
        return cls(tuple(reveals))
