"""App keys derived from the vetKD root secret ``k`` (a G1 point).

``ikm = compress(k)`` (48 bytes) feeds HKDF-SHA256 with salt ``DEROT-V1-APPKEY`` and one label
(``info``) per key type, so the keys of different types are independent:

=============  ==========================  ===========================================
key type       label                       construction
=============  ==========================  ===========================================
secp256k1      ``DEROT-V1-APPKEY-SECP256K1``  48 bytes → scalar ``1 + (v mod (n−1))``
Ed25519        ``DEROT-V1-APPKEY-ED25519``    32-byte seed (RFC 8032 private key)
X25519         ``DEROT-V1-APPKEY-X25519``     32 bytes (RFC 7748 clamps on use)
P-256          ``DEROT-V1-APPKEY-P256``       48 bytes → scalar ``1 + (v mod (n−1))``
=============  ==========================  ===========================================

Scalars are reduced from 384 bits onto a 256-bit group order, so the bias is below 2^-128.
Public key encodings (a certificate's ``subjectKey``): secp256k1 and P-256 as 33-byte compressed
SEC1 points, Ed25519 and X25519 as their 32-byte raw forms.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_keys import keys as eth_keys

from derot.constants import KeyType
from derot.crypto.bls import G1

SALT = b"DEROT-V1-APPKEY"
LABELS = {
    KeyType.SECP256K1: b"DEROT-V1-APPKEY-SECP256K1",
    KeyType.ED25519: b"DEROT-V1-APPKEY-ED25519",
    KeyType.X25519: b"DEROT-V1-APPKEY-X25519",
    KeyType.P256: b"DEROT-V1-APPKEY-P256",
}
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _hkdf(ikm: bytes, key_type: KeyType, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=SALT, info=LABELS[key_type]).derive(ikm)


def _scalar(ikm: bytes, key_type: KeyType, order: int) -> int:
    return 1 + int.from_bytes(_hkdf(ikm, key_type, 48), "big") % (order - 1)


@dataclass(frozen=True, repr=False)
class AppKeys:
    """The four keys of one (appId, keyVersion, context). Holds private keys: never log it."""

    secp256k1: eth_keys.PrivateKey
    ed25519: ed25519.Ed25519PrivateKey
    x25519: x25519.X25519PrivateKey
    p256: ec.EllipticCurvePrivateKey

    @property
    def ethereum_address(self) -> str:
        """EIP-55 checksummed address of the secp256k1 key."""
        return self.secp256k1.public_key.to_checksum_address()

    def public_key(self, key_type: KeyType) -> bytes:
        """The public key in its certificate ``subjectKey`` encoding (see module docstring)."""
        if key_type == KeyType.SECP256K1:
            return self.secp256k1.public_key.to_compressed_bytes()
        if key_type == KeyType.ED25519:
            return self.ed25519.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if key_type == KeyType.X25519:
            return self.x25519.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if key_type == KeyType.P256:
            return self.p256.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
            )
        raise ValueError(f"unknown key type {key_type!r}")

    def __repr__(self) -> str:
        return f"AppKeys(ethereum_address={self.ethereum_address})"


def derive_app_keys(root: G1) -> AppKeys:
    """Derive every app key type from the verified vetKD output ``k``."""
    if root.is_identity():
        raise ValueError("the identity point is not a valid derived key")
    ikm = root.to_bytes()
    return AppKeys(
        secp256k1=eth_keys.PrivateKey(_scalar(ikm, KeyType.SECP256K1, SECP256K1_N).to_bytes(32, "big")),
        ed25519=ed25519.Ed25519PrivateKey.from_private_bytes(_hkdf(ikm, KeyType.ED25519, 32)),
        x25519=x25519.X25519PrivateKey.from_private_bytes(_hkdf(ikm, KeyType.X25519, 32)),
        p256=ec.derive_private_key(_scalar(ikm, KeyType.P256, P256_N), ec.SECP256R1()),
    )
