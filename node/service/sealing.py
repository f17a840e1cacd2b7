"""Sealing: AES-256-GCM encryption of the node's secrets at rest.

Where the 256-bit sealing key comes from (``[seal].method``; docs/tee-guests.md says what each protects):
- ``snp``: the AMD secure processor's derived key (``SNP_GET_DERIVED_KEY`` on ``/dev/sev-guest``),
  rooted in this chip's VCEK and bound to the guest's launch measurement and policy, then HKDF-SHA256
  with a derot label. Only the same guest image on the same chip gets it; it is never stored.
- ``passphrase``: stretched with scrypt (salt beside the data). On TDX, which has no sealing key, this
  is the alternative: the operator or an attested key broker supplies it at start (see the docs).
- ``keyfile``: 32 random bytes in a 0600 file in a 0700 folder. It sits beside the database it seals,
  so it protects only against a copy of the database alone (a backup, a leaked file), not against
  anyone who can read the data folder. Devnets use it.

Sealed blob layout: ``version(1) ‖ nonce(12) ‖ ciphertext ‖ tag(16)``. The AAD is the blob's slot
name (e.g. ``share/epoch=3``), so a blob copied into another slot does not unseal.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from derot.errors import DerotError

SEAL_VERSION = 1
KEY_SIZE = 32
NONCE_SIZE = 12
#: scrypt cost: n=2^15, r=8 (~32 MiB, ~0.1 s): stretches a passphrase once per process start.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
SEAL_METHODS = ("keyfile", "passphrase", "snp")
#: HKDF info for the SEV-SNP derived key: the firmware key is never used directly
SNP_SEAL_INFO = b"DEROT-V1-SEAL-SNP"


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
    from derot.service.storage import private_dir

    path = Path(path)
    if not path.exists():
        if not create:
            raise FileNotFoundError(f"sealing key file {path} does not exist (run `derot node init`)")
        private_dir(path.parent)
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


def key_from_snp(device=None, *, bind_tcb: bool = False, tcb_version: int = 0) -> bytes:
    """The sealing key from this SEV-SNP guest's secure processor (``device``: a
    :class:`derot.app.tee.SnpDevice`, default ``/dev/sev-guest``).

    The firmware key is rooted in the chip's VCEK and mixes in the launch MEASUREMENT and the guest
    POLICY, at the guest's own VMPL: another image, a debug policy or another chip gets another key.
    ``bind_tcb`` also mixes in ``tcb_version`` (a firmware rollback then loses the key, and so does
    an update unless the old TCB is still named). Raises :class:`derot.app.tee.TeeError` subclasses."""
    from derot.app.tee.configfs import DEFAULT_ROOT
    from derot.app.tee.sev_guest import FIELD_MEASUREMENT, FIELD_POLICY, FIELD_TCB, SnpDevice

    device = device if device is not None else SnpDevice(extended=False, configfs_root=DEFAULT_ROOT)
    fields = FIELD_MEASUREMENT | FIELD_POLICY | (FIELD_TCB if bind_tcb else 0)
    raw = device.derived_key(fields=fields, tcb_version=tcb_version if bind_tcb else 0)
    return HKDF(hashes.SHA256(), KEY_SIZE, salt=None, info=SNP_SEAL_INFO).derive(raw)
