"""The DKG wire format (``protocol/derot/v1/dkg.proto``, version 2): envelopes, bodies, signatures.

Every message is a :class:`Message` envelope whose ``body`` holds one bundle; the Ed25519 signature
covers (version, network, epoch, session id, kind, sender, SHA-256(body)), so a body hash plus the
sender's signature is transferable evidence of what the sender signed (used by share boxes, which carry
the recipient's signed ANNOUNCE, and by digest sync).

Decoding is strict: protobuf parse errors, non-canonical encodings, unknown enum values and wrong
sizes or counts raise :class:`DkgMessageRejected` with reason ``MALFORMED`` and a detail naming the
field (and item) at fault. Parsed bodies are frozen dataclasses holding bytes and ints only; turning
bytes into curve points is the session's job.
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
from derot.crypto.dkg.errors import DkgMessageRejected, RejectReason
from derot.crypto.dkg.proofs import POINT_SIZE, PROOF_SIZE, TAG_SIZE
from derot.crypto.hazmat.batch import AFFINE_SIZE

VERSION = 2
SIGNATURE_DOMAIN = b"DEROT-V1-DKG-MESSAGE\x00"
SHARE_AAD_DOMAIN = b"DEROT-V1-DKG-SHARE\x00"
HASH_SIZE = 32
SIGNATURE_SIZE = 64
SCALAR_SIZE = 32
#: A sealed share: sig_share(32) ‖ kd_share(32) ‖ GCM tag.
SHARE_BOX_SIZE = 2 * SCALAR_SIZE + TAG_SIZE

_pb = _proto.load("dkg_pb2")


class MessageKind(IntEnum):
    ANNOUNCE = 1
    DEAL = 2
    RESPONSE = 3


@dataclass(frozen=True, order=True)
class Digest:
    """The name of a signed message for digest sync: (kind, sender, SHA-256(body))."""

    kind: MessageKind
    sender: int
    body_hash: bytes


def _malformed(detail: str) -> DkgMessageRejected:
    return DkgMessageRejected(RejectReason.MALFORMED, detail)


def _parse(cls, data: bytes, what: str):
    if not isinstance(data, (bytes, bytearray, memoryview)):  # bytes(128) would be 128 zero bytes
        raise _malformed(f"{what}: expected bytes, got {type(data).__name__}")
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
    def digest(self) -> Digest:
        return Digest(self.kind, self.sender, self.body_hash)

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


def _sized(data: bytes, size: int, what: str) -> bytes:
    if len(data) != size:
        raise _malformed(f"{what}: {len(data)} bytes, expected {size}")
    return bytes(data)


@dataclass(frozen=True)
class AnnounceBody:
    """A recipient's per-run encryption key ``E = e·G1`` (48 compressed bytes)."""

    encryption_key: bytes

    def encode(self) -> bytes:
        return _pb.AnnounceBody(encryption_key=self.encryption_key).SerializeToString()

    @classmethod
    def decode(cls, body: bytes) -> AnnounceBody:
        pb = _parse(_pb.AnnounceBody, body, "AnnounceBody")
        return cls(_sized(pb.encryption_key, POINT_SIZE, "AnnounceBody.encryption_key"))


@dataclass(frozen=True)
class ShareBox:
    """One recipient's sealed shares and the signed key they were sealed to; all empty if none."""

    recipient_key: bytes
    recipient_signature: bytes
    ciphertext: bytes

    @property
    def empty(self) -> bool:
        return not self.ciphertext


EMPTY_BOX = ShareBox(b"", b"", b"")


@dataclass(frozen=True)
class DealBody:
    """``commitments[s]`` = t affine G2 encodings for secret s; the deal key and its proof; one box per
    recipient, in index order."""

    commitments: tuple[tuple[bytes, ...], tuple[bytes, ...]]
    deal_key: bytes
    deal_key_proof: bytes
    boxes: tuple[ShareBox, ...]

    def encode(self) -> bytes:
        return _pb.DealBundle(
            sig_commitments=self.commitments[0],
            kd_commitments=self.commitments[1],
            deal_key=self.deal_key,
            deal_key_proof=self.deal_key_proof,
            boxes=[_pb.DkgShareBox(recipient_key=b.recipient_key, recipient_signature=b.recipient_signature,
                                   ciphertext=b.ciphertext) for b in self.boxes],
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
                _sized(point, AFFINE_SIZE, f"DealBundle.{name}[{k}]")
            commitments.append(points)
        deal_key = _sized(pb.deal_key, POINT_SIZE, "DealBundle.deal_key")
        proof = _sized(pb.deal_key_proof, PROOF_SIZE, "DealBundle.deal_key_proof")
        if len(pb.boxes) != recipients:
            raise _malformed(f"DealBundle.boxes: {len(pb.boxes)} boxes, expected n = {recipients}")
        boxes = []
        for k, b in enumerate(pb.boxes):
            box = ShareBox(bytes(b.recipient_key), bytes(b.recipient_signature), bytes(b.ciphertext))
            if box != EMPTY_BOX:
                what = f"DealBundle.boxes[{k}]"
                _sized(box.recipient_key, POINT_SIZE, f"{what}.recipient_key")
                _sized(box.recipient_signature, SIGNATURE_SIZE, f"{what}.recipient_signature")
                _sized(box.ciphertext, SHARE_BOX_SIZE, f"{what}.ciphertext")
            boxes.append(box)
        return cls((commitments[0], commitments[1]), deal_key, proof, tuple(boxes))


@dataclass(frozen=True)
class Complaint:
    """Proof that ``dealer``'s bundle ``bundle_hash`` sealed no valid share for the complainer."""

    dealer: int
    bundle_hash: bytes
    shared_secret: bytes
    proof: bytes


@dataclass(frozen=True)
class ResponseBody:
    held: tuple[Digest, ...]
    complaints: tuple[Complaint, ...]

    def encode(self) -> bytes:
        return _pb.ResponseBundle(
            held=[_pb.DkgDigest(kind=int(d.kind), sender=d.sender, body_hash=d.body_hash) for d in self.held],
            complaints=[_pb.DkgComplaint(dealer=c.dealer, bundle_hash=c.bundle_hash,
                                         shared_secret=c.shared_secret, proof=c.proof)
                        for c in self.complaints],
        ).SerializeToString()

    @classmethod
    def decode(cls, body: bytes, *, dealers: frozenset[int]) -> ResponseBody:
        pb = _parse(_pb.ResponseBundle, body, "ResponseBundle")
        if len(pb.held) > 2 * len(dealers):
            raise _malformed(f"ResponseBundle.held: {len(pb.held)} digests, at most {2 * len(dealers)}")
        held = []
        for k, d in enumerate(pb.held):
            what = f"ResponseBundle.held[{k}]"
            if d.kind != MessageKind.DEAL or d.sender not in dealers:
                raise _malformed(f"{what}: not a deal of a dealer of this run")
            held.append(Digest(MessageKind.DEAL, d.sender, _sized(d.body_hash, HASH_SIZE, f"{what}.body_hash")))
        keys = [(d.sender, d.body_hash) for d in held]
        if keys != sorted(set(keys)):
            raise _malformed("ResponseBundle.held: not sorted or repeated")
        complaints = []
        for k, c in enumerate(pb.complaints):
            what = f"ResponseBundle.complaints[{k}]"
            if c.dealer not in dealers:
                raise _malformed(f"{what}.dealer: {c.dealer} is not a dealer of this run")
            complaints.append(Complaint(
                c.dealer,
                _sized(c.bundle_hash, HASH_SIZE, f"{what}.bundle_hash"),
                _sized(c.shared_secret, POINT_SIZE, f"{what}.shared_secret"),
                _sized(c.proof, PROOF_SIZE, f"{what}.proof"),
            ))
        order = [c.dealer for c in complaints]
        if order != sorted(set(order)):
            raise _malformed("ResponseBundle.complaints: not sorted by dealer or repeated")
        return cls(tuple(held), tuple(complaints))
