"""Sealed boxes (X25519 + HKDF-SHA256 + AES-256-GCM with AAD): round trip, binding, tamper detection."""

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from derot.crypto import box

AAD = b"network|epoch|dealer=3|recipient=5"


@pytest.fixture
def recipient():
    return X25519PrivateKey.generate()


def public(key):
    return key.public_key().public_bytes_raw()


def test_round_trip_and_size(recipient):
    sealed = box.seal(public(recipient), b"s" * 64, AAD)
    assert len(sealed) == 64 + box.OVERHEAD
    assert box.open_box(recipient, sealed, AAD) == b"s" * 64


def test_fresh_ephemeral_each_time(recipient):
    a, b = box.seal(public(recipient), b"same", AAD), box.seal(public(recipient), b"same", AAD)
    assert a[: box.ENC_SIZE] != b[: box.ENC_SIZE] and a != b


def test_format_matches_its_specification(recipient):
    """Open a box with the primitives directly, following the format the module documents."""
    sealed = box.seal(public(recipient), b"plaintext", AAD)
    enc, ct = sealed[:32], sealed[32:]
    shared = recipient.exchange(X25519PublicKey.from_public_bytes(enc))
    okm = HKDF(hashes.SHA256(), 44, None, box.LABEL + enc + public(recipient)).derive(shared)
    assert AESGCM(okm[:32]).decrypt(okm[32:], ct, AAD) == b"plaintext"


@pytest.mark.parametrize("aad", [b"", AAD[:-1], AAD + b"x", AAD.replace(b"dealer=3", b"dealer=4")])
def test_wrong_aad_refused(recipient, aad):
    sealed = box.seal(public(recipient), b"secret", AAD)
    with pytest.raises(box.BoxOpenError, match="authentication failed"):
        box.open_box(recipient, sealed, aad)


def test_wrong_recipient_refused(recipient):
    sealed = box.seal(public(recipient), b"secret", AAD)
    with pytest.raises(box.BoxOpenError):
        box.open_box(X25519PrivateKey.generate(), sealed, AAD)


@pytest.mark.parametrize("offset", [0, 31, 32, 40, -16, -1])
def test_any_flipped_bit_refused(recipient, offset):
    sealed = bytearray(box.seal(public(recipient), b"secret share bytes", AAD))
    sealed[offset] ^= 0x01
    with pytest.raises(box.BoxOpenError):
        box.open_box(recipient, bytes(sealed), AAD)


@pytest.mark.parametrize("length", [0, 10, box.OVERHEAD - 1])
def test_truncated_refused(recipient, length):
    sealed = box.seal(public(recipient), b"secret", AAD)
    with pytest.raises(box.BoxOpenError, match="shorter"):
        box.open_box(recipient, sealed[:length], AAD)


def test_low_order_keys_refused(recipient):
    zero_point = bytes(32)  # u = 0 has order 4 on Curve25519: the shared secret is all zero
    with pytest.raises(ValueError):
        box.seal(zero_point, b"x", AAD)
    forged = zero_point + bytes(box.TAG_SIZE + 8)
    with pytest.raises(box.BoxOpenError, match="ephemeral key"):
        box.open_box(recipient, forged, AAD)
