"""Sealed boxes: X25519 + HKDF-SHA256 + AES-256-GCM with caller-supplied associated data.

Format of a box: ``enc (32 bytes, ephemeral X25519 public key) ‖ AES-256-GCM ciphertext ‖ tag (16 bytes)``.

- A fresh ephemeral key is drawn for every box (ECIES / HPKE base-mode shape), so a sender's compromise
  later does not open boxes it sent earlier.
- ``key ‖ nonce = HKDF-SHA256(ikm = X25519(eph, recipient), salt = "", info = LABEL ‖ enc ‖ recipient_pub)``,
  44 bytes. Each derived key encrypts exactly one message, so the nonce never repeats under a key.
- The associated data is authenticated, not encrypted: callers bind their context into it (the DKG binds
  network, epoch, session, dealer and recipient), and a box opens only under exactly the same AAD.

``cryptography``'s RFC 9180 HPKE API was considered; it takes no associated data (only ``info``), and the
DKG's normative design binds its context as AEAD associated data.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from derot.errors import DerotError

LABEL = b"DEROT-V1-BOX-X25519-HKDF-SHA256-AES256GCM"
ENC_SIZE = 32
TAG_SIZE = 16
OVERHEAD = ENC_SIZE + TAG_SIZE

_KEY_SIZE = 32
_NONCE_SIZE = 12


class BoxOpenError(DerotError):
    """The box does not open: wrong recipient key, wrong AAD, truncated or tampered bytes."""

    reason = "box_open_failed"


def _key_and_nonce(shared: bytes, enc: bytes, recipient_public: bytes) -> tuple[bytes, bytes]:
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=_KEY_SIZE + _NONCE_SIZE,
        salt=None,
        info=LABEL + enc + recipient_public,
    ).derive(shared)
    return okm[:_KEY_SIZE], okm[_KEY_SIZE:]


def seal(recipient_public: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt ``plaintext`` to the X25519 public key ``recipient_public`` (32 raw bytes).

    Raises ``ValueError`` if the public key is malformed or of low order (all-zero shared secret).
    """
    recipient = X25519PublicKey.from_public_bytes(bytes(recipient_public))
    ephemeral = X25519PrivateKey.generate()
    enc = ephemeral.public_key().public_bytes_raw()
    shared = ephemeral.exchange(recipient)  # raises ValueError on a low-order recipient key
    key, nonce = _key_and_nonce(shared, enc, bytes(recipient_public))
    return enc + AESGCM(key).encrypt(nonce, bytes(plaintext), bytes(aad))


def open_box(recipient: X25519PrivateKey, box: bytes, aad: bytes) -> bytes:
    """Decrypt a box made by :func:`seal` for ``recipient``; raises :class:`BoxOpenError` on any failure."""
    box = bytes(box)
    if len(box) < OVERHEAD:
        raise BoxOpenError(f"box is {len(box)} bytes, shorter than the {OVERHEAD}-byte minimum")
    enc = box[:ENC_SIZE]
    try:
        shared = recipient.exchange(X25519PublicKey.from_public_bytes(enc))
    except ValueError as exc:  # low-order ephemeral key
        raise BoxOpenError(f"invalid ephemeral key at offset 0 ({exc})") from None
    recipient_public = recipient.public_key().public_bytes_raw()
    key, nonce = _key_and_nonce(shared, enc, recipient_public)
    try:
        return AESGCM(key).decrypt(nonce, box[ENC_SIZE:], bytes(aad))
    except InvalidTag:
        raise BoxOpenError("authentication failed (wrong key, wrong associated data, or tampered box)") from None
