"""BLS12-381 group operations: the one small interface every other derot module uses.

Backend choice (measured on the 2-core reference VM, see ``bench/crypto.py``): ``pyblst`` (blst) is
1.3–3× faster than ``py-arkworks-bls12381`` on every single operation derot performs on a hot path
(G1/G2 scalar multiplication, hash-to-G1, pairing, decompression), so it backs :class:`G1` and
:class:`G2`. blst exposes neither affine (uncompressed) coordinates nor variable-time arithmetic, so
arkworks is used for exactly two things: the EIP-2537 affine encodings (not on a hot path) and the
batched commitment arithmetic in :mod:`derot.crypto.hazmat.batch`.

Invariants:
- every :class:`G1`/:class:`G2` value is a point of the prime-order subgroup (decoding checks it);
- scalars are Python ``int`` in ``[0, R)``; operations reduce their inputs modulo ``R``;
- decoding rejects the identity unless the caller passes ``allow_identity=True``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from typing import ClassVar

import py_arkworks_bls12381 as _ark
from pyblst import BlstP1Element as _P1
from pyblst import BlstP2Element as _P2
from pyblst import final_verify as _final_verify
from pyblst import miller_loop as _miller_loop

from derot.errors import DerotError

#: Order of the prime-order subgroups G1, G2 and GT (the scalar field modulus).
R = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
#: Base field modulus.
P = 0x1A0111EA397FE69A4B1BA7B6434BACD764774B84F38512BF6730D2A0F6B0F6241EABFFFEB153FFFFB9FEFFFFFFFFAAAB

G1_COMPRESSED_SIZE = 48
G2_COMPRESSED_SIZE = 96
G1_EIP2537_SIZE = 128
G2_EIP2537_SIZE = 256

_G1_GEN = bytes.fromhex(
    "97f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac586c55e83ff97a1aeffb3af00adb22c6bb"
)
_G2_GEN = bytes.fromhex(
    "93e02b6052719f607dacd3a088274f65596bd0d09920b61ab5da61bbdc7f5049334cf11213945d57e5ac7d055d042b7e"
    "024aa2b2f08f0a91260805272dc51051c6e47ad4fa403b02b4510b647ae3d1770bac0326a805bbefd48056c8c121bdb8"
)


class PointDecodeError(DerotError, ValueError):
    """Bytes that are not a valid encoding of a subgroup point (or the identity where it is refused)."""

    reason = "malformed_point"


# --------------------------------------------------------------------------------------------------
# scalars


def random_scalar() -> int:
    """A uniformly random non-zero scalar from the OS CSPRNG."""
    while True:
        k = secrets.randbelow(R)
        if k:
            return k


_BYTES = (bytes, bytearray, memoryview)


def require_bytes(data, what: str, error: type[Exception]) -> bytes:
    """``data`` as bytes, checked to *be* a byte string first: ``bytes(128)`` is 128 zero bytes, so an int
    (or anything else) passed by mistake must never reach a ``bytes(...)`` conversion."""
    if not isinstance(data, _BYTES):
        raise error(f"{what}: expected bytes, got {type(data).__name__}")
    return bytes(data)


def scalar_from_wide_bytes(data: bytes) -> int:
    """Reduce at least 48 bytes (384 bits) modulo R; the bias is below 2^-128 (RFC 9380 §5)."""
    data = require_bytes(data, "wide scalar", TypeError)
    if len(data) < 48:
        raise ValueError("need at least 48 bytes to reduce a scalar without bias")
    return int.from_bytes(data, "big") % R


def scalar_to_bytes(k: int) -> bytes:
    """32-byte big-endian encoding of a scalar."""
    return (k % R).to_bytes(32, "big")


def scalar_from_bytes(data: bytes) -> int:
    """Decode a 32-byte big-endian scalar; refuses values >= R (non-canonical encodings)."""
    data = require_bytes(data, "scalar", TypeError)
    if len(data) != 32:
        raise ValueError(f"scalar must be 32 bytes, got {len(data)}")
    k = int.from_bytes(data, "big")
    if k >= R:
        raise ValueError("scalar is not reduced modulo the group order")
    return k


def inv(k: int) -> int:
    """Multiplicative inverse modulo R; ``k`` must be non-zero modulo R."""
    k %= R
    if k == 0:
        raise ZeroDivisionError("zero has no inverse modulo R")
    return pow(k, -1, R)


# --------------------------------------------------------------------------------------------------
# points


class _Point:
    """Shared behaviour of G1 and G2. Immutable; hashable by compressed encoding."""

    __slots__ = ("_e",)
    _blst: ClassVar[type]
    _ark: ClassVar[type]
    _gen_bytes: ClassVar[bytes]
    SIZE: ClassVar[int]
    EIP2537_SIZE: ClassVar[int]
    _generator: ClassVar[_Point | None]
    _identity: ClassVar[_Point | None]

    def __init__(self, element) -> None:
        self._e = element

    # constructors -------------------------------------------------------------------------------
    @classmethod
    def generator(cls):
        if cls._generator is None:
            cls._generator = cls(cls._blst().uncompress(cls._gen_bytes))
        return cls._generator

    @classmethod
    def identity(cls):
        if cls._identity is None:
            cls._identity = cls(cls._blst())
        return cls._identity

    @classmethod
    def from_bytes(cls, data: bytes, *, allow_identity: bool = False):
        """Decode the compressed (ZCash) encoding, checking curve and subgroup membership."""
        data = require_bytes(data, cls.__name__, PointDecodeError)
        if len(data) != cls.SIZE:
            raise PointDecodeError(f"{cls.__name__}: expected {cls.SIZE} bytes, got {len(data)}")
        try:
            element = cls._blst().uncompress(data)
        except ValueError as exc:
            raise PointDecodeError(f"{cls.__name__}: invalid encoding ({exc})") from None
        point = cls(element)
        if not allow_identity and point.is_identity():
            raise PointDecodeError(f"{cls.__name__}: identity point not allowed here")
        return point

    @classmethod
    def from_eip2537(cls, data: bytes, *, allow_identity: bool = False):
        """Decode the EIP-2537 affine encoding (64-byte padded field elements), with subgroup check."""
        data = require_bytes(data, cls.__name__, PointDecodeError)
        if len(data) != cls.EIP2537_SIZE:
            raise PointDecodeError(f"{cls.__name__}: expected {cls.EIP2537_SIZE} bytes, got {len(data)}")
        if not any(data):
            if not allow_identity:
                raise PointDecodeError(f"{cls.__name__}: identity point not allowed here")
            return cls.identity()
        raw = bytearray()
        for off in range(0, len(data), 64):
            limb = data[off : off + 64]
            if any(limb[:16]):
                raise PointDecodeError(f"{cls.__name__}: non-zero padding at offset {off}")
            if int.from_bytes(limb[16:], "big") >= P:
                raise PointDecodeError(f"{cls.__name__}: field element at offset {off} is not reduced")
            raw += limb[16:]
        try:
            ark_point = cls._ark.from_xy_bytes_be(bytes(raw))
        except Exception as exc:  # arkworks raises plain Exception subclasses
            raise PointDecodeError(f"{cls.__name__}: not a subgroup point ({exc})") from None
        return cls.from_bytes(bytes(ark_point.to_compressed_bytes()), allow_identity=allow_identity)

    @classmethod
    def msm(cls, points: Sequence, scalars: Sequence[int]):
        """Σ scalars[i]·points[i]."""
        if len(points) != len(scalars):
            raise ValueError("msm: points and scalars differ in length")
        acc = cls._blst()
        for point, k in zip(points, scalars):
            k %= R
            if k:
                acc = acc + point._e.scalar_mul(k)
        return cls(acc)

    @classmethod
    def sum(cls, points: Iterable):
        acc = cls._blst()
        for point in points:
            acc = acc + point._e
        return cls(acc)

    # encodings ----------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Compressed (ZCash) encoding: 48 bytes for G1, 96 for G2."""
        return bytes(self._e.compress())

    def to_eip2537(self) -> bytes:
        """EIP-2537 affine encoding: each field element left-padded to 64 bytes; identity is all zero."""
        if self.is_identity():
            return bytes(self.EIP2537_SIZE)
        ark_point = self._ark.from_compressed_bytes_unchecked(self.to_bytes())
        raw = bytes(ark_point.to_xy_bytes_be())  # Fp2 as (c0, c1), as EIP-2537 wants
        return b"".join(bytes(16) + raw[off : off + 48] for off in range(0, len(raw), 48))

    # group law ----------------------------------------------------------------------------------
    def is_identity(self) -> bool:
        return self._e == self._blst()

    def __add__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return type(self)(self._e + other._e)

    def __neg__(self):
        return type(self)(-self._e)

    def __sub__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return type(self)(self._e + (-other._e))

    def __mul__(self, k: int):
        if not isinstance(k, int):
            return NotImplemented
        k %= R
        if k == 0:
            return self.identity()
        return type(self)(self._e.scalar_mul(k))

    __rmul__ = __mul__

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and self._e == other._e

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.to_bytes()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_bytes().hex()[:16]}…)"


class G1(_Point):
    """A point of the order-R subgroup of E(Fp). Signatures and derived keys live here."""

    __slots__ = ()
    _blst = _P1
    _ark = _ark.G1Point
    _gen_bytes = _G1_GEN
    SIZE = G1_COMPRESSED_SIZE
    EIP2537_SIZE = G1_EIP2537_SIZE
    _generator = None
    _identity = None

    @classmethod
    def hash_to_curve(cls, msg: bytes, dst: bytes) -> G1:
        """RFC 9380 hash_to_curve with suite BLS12381G1_XMD:SHA-256_SSWU_RO_ and the given DST."""
        msg, dst = require_bytes(msg, "message", TypeError), require_bytes(dst, "DST", TypeError)
        if not 0 < len(dst) <= 255:
            raise ValueError("DST must be 1..255 bytes")
        return cls(_P1().hash_to_group(msg, dst))


class G2(_Point):
    """A point of the order-R subgroup of E'(Fp2). Group public keys and commitments live here."""

    __slots__ = ()
    _blst = _P2
    _ark = _ark.G2Point
    _gen_bytes = _G2_GEN
    SIZE = G2_COMPRESSED_SIZE
    EIP2537_SIZE = G2_EIP2537_SIZE
    _generator = None
    _identity = None


class PreparedPairs:
    """Pairs whose Miller loops are computed once, for pairing checks that all include them (e.g. ``e(−H, PK)``
    while a gateway waits for the shares to check). Immutable once made."""

    __slots__ = ("pairs", "_acc")

    def __init__(self, pairs: Sequence[tuple[G1, G2]]):
        self.pairs = tuple((p, q) for p, q in pairs if not (p.is_identity() or q.is_identity()))
        acc = None
        for p, q in self.pairs:
            loop = _miller_loop(p._e, q._e)
            acc = loop if acc is None else acc * loop
        self._acc = acc


def pairing_check(pairs: Sequence[tuple[G1, G2]], prepared: PreparedPairs | None = None) -> bool:
    """True iff Π e(P_i, Q_i) == 1 in GT, over ``pairs`` and the ``prepared`` ones.

    Implemented as one Miller loop per pair (none for the prepared ones) and a single final exponentiation:
    Π_{i<k} e(P_i, Q_i) == e(-P_k, Q_k).
    """
    pairs = [(p, q) for p, q in pairs if not (p.is_identity() or q.is_identity())]
    if prepared is not None and prepared.pairs:
        if not pairs:
            return pairing_check(prepared.pairs)
        *head, (last_p, last_q) = pairs
        acc = prepared._acc
        for p, q in head:
            acc = acc * _miller_loop(p._e, q._e)
        return bool(_final_verify(acc, _miller_loop((-last_p)._e, last_q._e)))
    if not pairs:
        return True
    if len(pairs) == 1:
        return False  # a single pairing of non-identity points is never 1 (non-degenerate)
    *head, (last_p, last_q) = pairs
    acc = _miller_loop(head[0][0]._e, head[0][1]._e)
    for p, q in head[1:]:
        acc = acc * _miller_loop(p._e, q._e)
    return bool(_final_verify(acc, _miller_loop((-last_p)._e, last_q._e)))
