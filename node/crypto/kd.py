"""vetKD-style key derivation: the committee derives an app's key without any node seeing it.

For ``m = appId(32) ‖ u32 keyVersion ‖ u16 len(context) ‖ context`` and ``H = H_kd(m)`` in G1:

- the app draws a transport key ``tsk`` and sends ``tpk = tsk·G1``;
- node i answers ``(c1, c2, c3) = (r·G1, r·G2, r·tpk + x_i·H)`` with a fresh random ``r``;
- anyone checks a share against ``PK_i``: ``e(c1, G2) = e(G1, c2)`` and
  ``e(c3, G2) = e(tpk, c2)·e(H, PK_i)``;
- anyone Lagrange-combines ``t`` shares into one 192-byte :class:`EncryptedKey` that verifies the
  same way against the group key ``PK_kd`` (the gateway learns nothing: it never holds ``tsk``);
- the app recovers ``k = C3 − tsk·C1 = x·H`` and checks ``e(k, G2) = e(H, PK_kd)``.

``m`` holds no vendor, chip or measurement, so an app gets the same ``k`` on every TEE it may run on.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from derot.constants import DST_KD
from derot.crypto.bls import G1, G2, PointDecodeError, PreparedPairs, pairing_check, random_scalar, require_bytes
from derot.crypto.hazmat.poly import lagrange_coefficients
from derot.crypto.threshold import combine_with_fallback
from derot.errors import DerotError
from derot.limits import LIMITS

APP_ID_SIZE = 32


class KeyVerificationError(DerotError):
    """A derived key (or the encrypted key it came from) does not verify under the group key."""

    reason = "key_verification_failed"


def kd_message(app_id: bytes, key_version: int, context: bytes = b"") -> bytes:
    """``appId(32) ‖ u32 keyVersion ‖ u16 len(context) ‖ context`` (docs/design.md §3)."""
    if len(app_id) != APP_ID_SIZE:
        raise ValueError(f"appId must be {APP_ID_SIZE} bytes, got {len(app_id)}")
    if not 0 <= key_version <= 0xFFFFFFFF:
        raise ValueError("keyVersion must fit in u32")
    if len(context) > LIMITS.max_context:
        raise ValueError(f"context longer than {LIMITS.max_context} bytes")
    return bytes(app_id) + struct.pack(">IH", key_version, len(context)) + bytes(context)


def kd_point(app_id: bytes, key_version: int, context: bytes = b"") -> G1:
    """``H = H_kd(m)`` under the key-derivation DST."""
    return G1.hash_to_curve(kd_message(app_id, key_version, context), DST_KD)


@dataclass(frozen=True)
class TransportKey:
    """The app's ephemeral transport key pair. ``secret`` never leaves the app (repr hides it)."""

    secret: int
    public: G1

    @classmethod
    def generate(cls) -> TransportKey:
        tsk = random_scalar()
        return cls(tsk, G1.generator() * tsk)

    def __repr__(self) -> str:
        return f"TransportKey(public={self.public!r})"


@dataclass(frozen=True)
class EncryptedKey:
    """``(c1, c2, c3)``: a node's encrypted key share, or the combined encrypted key (192 bytes)."""

    c1: G1
    c2: G2
    c3: G1

    SIZE = G1.SIZE + G2.SIZE + G1.SIZE

    def encode(self) -> bytes:
        return self.c1.to_bytes() + self.c2.to_bytes() + self.c3.to_bytes()

    @classmethod
    def decode(cls, data: bytes) -> EncryptedKey:
        """Parse 192 bytes; raises :class:`PointDecodeError` naming the bad component (or a non-bytes input)."""
        data = require_bytes(data, "encrypted key", PointDecodeError)
        if len(data) != cls.SIZE:
            raise PointDecodeError(f"encrypted key must be {cls.SIZE} bytes, got {len(data)}")
        c1 = G1.from_bytes(data[:48])
        c2 = G2.from_bytes(data[48:144])
        c3 = G1.from_bytes(data[144:], allow_identity=True)
        return cls(c1, c2, c3)


def derive_share(share: int, hashed: G1, tpk: G1) -> EncryptedKey:
    """Node i's answer ``(r·G1, r·G2, r·tpk + x_i·H)`` with fresh ``r``."""
    r = random_scalar()
    return EncryptedKey(G1.generator() * r, G2.generator() * r, tpk * r + hashed * share)


class KeyCheck:
    """Checks one encrypted key (a share against ``PK_i``, or a combined key against ``PK_kd``) with pairings.

    Both equations of the module docstring are folded into one product with a random weight ``ρ``:
    ``e(ρ·c1 + c3, G2) · e(−(ρ·G1 + tpk), c2) · e(−H, PK) = 1`` — three Miller loops and one final
    exponentiation instead of five and two. A forgery passes with probability about 1/R. What does not depend
    on the key (``ρ·G1 + tpk`` and the Miller loop of ``e(−H, PK)``) is computed when the check is made, so a
    gateway makes it while it waits for the shares. Made for one key: ``ρ`` is drawn per check.
    """

    __slots__ = ("_rho", "_rhs", "_fixed")

    def __init__(self, public_key: G2, hashed: G1, tpk: G1):
        self._rho = random_scalar()
        self._rhs = -(G1.generator() * self._rho + tpk)
        self._fixed = PreparedPairs([(-hashed, public_key)])

    def __call__(self, key: EncryptedKey) -> bool:
        lhs = key.c1 * self._rho + key.c3
        return pairing_check([(lhs, G2.generator()), (self._rhs, key.c2)], self._fixed)


def verify_encrypted(key: EncryptedKey, public_key: G2, hashed: G1, tpk: G1) -> bool:
    """Check a share against ``PK_i`` (or a combined key against ``PK_kd``): :class:`KeyCheck`."""
    return KeyCheck(public_key, hashed, tpk)(key)


def weigh(key: EncryptedKey, weight: int) -> EncryptedKey:
    """``weight·key`` component-wise: a share's term in a Lagrange combination."""
    return EncryptedKey(key.c1 * weight, key.c2 * weight, key.c3 * weight)


def total(terms: Sequence[EncryptedKey]) -> EncryptedKey:
    """The component-wise sum of weighted shares (:func:`weigh`)."""
    return EncryptedKey(G1.sum(k.c1 for k in terms), G2.sum(k.c2 for k in terms), G1.sum(k.c3 for k in terms))


def combine_encrypted(shares: Mapping[int, EncryptedKey]) -> EncryptedKey:
    """Lagrange-combine shares ``{index: share}`` component-wise (uses every share given)."""
    lambdas = lagrange_coefficients(shares)
    return total([weigh(shares[i], lambdas[i]) for i in lambdas])


@dataclass(frozen=True)
class CombinedKey:
    """A verified combined encrypted key and the share indices found invalid on the way."""

    key: EncryptedKey
    used: tuple[int, ...]
    bad: tuple[int, ...]


def combine_verified(
    shares: Mapping[int, EncryptedKey],
    threshold: int,
    group_key: G2,
    share_keys: Mapping[int, G2],
    hashed: G1,
    tpk: G1,
) -> CombinedKey:
    """Gateway path (:func:`derot.crypto.threshold.combine_with_fallback`): combine the first ``threshold``
    shares and verify once; on failure check each share against its ``PK_i`` and drop the bad ones."""

    def share_ok(i: int, share: EncryptedKey) -> bool:
        key = share_keys.get(i)
        return key is not None and verify_encrypted(share, key, hashed, tpk)

    combined, used, bad = combine_with_fallback(
        shares, threshold, combine=combine_encrypted,
        verify_combined=lambda key: verify_encrypted(key, group_key, hashed, tpk), verify_share=share_ok,
    )
    return CombinedKey(combined, used, bad)


def decrypt(key: EncryptedKey, transport: TransportKey, group_key: G2, hashed: G1) -> G1:
    """App side: ``k = c3 − tsk·c1``, verified with ``e(k, G2) = e(H, PK_kd)``.

    Raises :class:`KeyVerificationError` if the key does not verify (wrong ``tsk``, wrong group key,
    or a tampered encrypted key). The returned point is the app's root secret: never log it.
    """
    k = key.c3 - key.c1 * transport.secret
    if k.is_identity() or not pairing_check([(k, G2.generator()), (-hashed, group_key)]):
        raise KeyVerificationError("derived key does not verify against the group key")
    return k

