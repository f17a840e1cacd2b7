"""Sealing: AES-256-GCM encryption of the node's secrets at rest.

The sealing key comes from the TEE's sealing facility in production, or on a devnet from a key file
(32 random bytes, created with mode 0600) or a passphrase stretched with scrypt.

Sealed blob layout: ``version(1) ‖ nonce(12) ‖ ciphertext ‖ tag(16)``. The AAD is the blob's slot
name (e.g. ``share/epoch=3``), so a blob copied into another slot does not unseal.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from derot.errors import DerotError

SEAL_VERSION = 1
KEY_SIZE = 32
NONCE_SIZE = 12
#: scrypt cost: n=2^15, r=8 (~32 MiB, ~0.1 s): stretches a passphrase once per process start.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1


class UnsealError(DerotError):
    """A sealed blob does not open: wrong sealing key or passphrase, wrong slot, or tampering."""

    reason = "unseal_failed"


@dataclass(frozen=True, repr=False)
class Sealer:
    """Seals and unseals blobs under one 256-bit key. ``repr`` never shows the key."""

    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) != KEY_SIZE:
            raise ValueError("sealing key must be 32 bytes")

    def seal(self, slot: str, plaintext: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_SIZE)
        return bytes([SEAL_VERSION]) + nonce + AESGCM(self.key).encrypt(nonce, plaintext, slot.encode())

    def unseal(self, slot: str, blob: bytes) -> bytes:
        if len(blob) < 1 + NONCE_SIZE + 16 or blob[0] != SEAL_VERSION:
            raise UnsealError(f"{slot}: not a sealed blob of version {SEAL_VERSION}")
        nonce, body = blob[1 : 1 + NONCE_SIZE], blob[1 + NONCE_SIZE :]
        try:
            return AESGCM(self.key).decrypt(nonce, body, slot.encode())
        except InvalidTag:
            raise UnsealError(f"{slot}: authentication failed (wrong sealing key or passphrase?)") from None

    def __repr__(self) -> str:
        return "Sealer(<key hidden>)"


def key_from_file(path: Path, *, create: bool = False) -> bytes:
    """Read a 32-byte sealing key file; with ``create``, make one (mode 0600) if it does not exist."""
    path = Path(path)
    if not path.exists():
        if not create:
            raise FileNotFoundError(f"sealing key file {path} does not exist (run `derot node init`)")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_SIZE))
    key = path.read_bytes()
    if len(key) != KEY_SIZE:
        raise ValueError(f"sealing key file {path} must hold exactly {KEY_SIZE} bytes")
    return key


def key_from_passphrase(passphrase: str, salt: bytes) -> bytes:
    """Stretch a passphrase with scrypt (the salt is stored, in clear, beside the sealed data)."""
    if not passphrase:
        raise ValueError("empty sealing passphrase")
    return Scrypt(salt=salt, length=KEY_SIZE, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(passphrase.encode())
