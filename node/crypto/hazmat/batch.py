"""Feldman commitment arithmetic for the DKG, batched, on raw curve points (arkworks, variable time).

Why raw points. A recipient in an n = 64 DKG checks 2·n·t ≈ 5,500 commitment points. A subgroup check
costs ~80 µs per G2 point (blst or arkworks), ~0.45 s per member: too slow. So commitments are decoded
with an on-curve and canonical-encoding check only (~1 µs), and the subgroup question is answered by
the interpretation below instead of per point.

Interpretation (soundness argument). ``#E'(Fp2) = h2·r`` with ``gcd(h2, r) = 1`` (:data:`H2` is the G2
cofactor), so ``E'(Fp2) = G2 ⊕ T`` with ``T = {P : [h2]P = O}`` and the projection
``π(P) = [h2·(h2⁻¹ mod r)]P`` is a group homomorphism onto G2 that is the identity on G2 and kills T.
A received commitment ``C`` *means* ``π(C)``. Then:

- Every quantity the DKG derives from commitments (``Σ_k C_k·x^k``, sums over dealers, Lagrange
  combinations) is a Z-linear combination of them, and ``π`` commutes with it: ``π(Σ a_i C_i) =
  Σ a_i π(C_i)``. Scalars are only defined modulo r, but any integer representative gives the same
  projection; and whatever endomorphism tricks a backend uses inside a multiplication (GLV), every
  endomorphism commutes with the integer multiplication ``π``. So we compute on raw points and project
  (or compare projections) only at the end.
- ``π(X) = π(Y)`` ⇔ ``X − Y ∈ T`` ⇔ ``[h2](X − Y) = O``: :func:`equal_modulo_torsion`. If the raw points
  are already equal, so are the projections (the fast, honest path).
- Batched share check (:func:`shares_match`): with secret random 128-bit weights ``ρ_i``, test
  ``(Σ ρ_i s_i)·G2 == Σ ρ_i E_i`` on raw points. If it holds, the right side lies in G2, so applying
  ``π`` gives ``Σ ρ_i (π(E_i) − s_i·G2) = O`` in the prime-order group G2; for any ``i`` with
  ``π(E_i) ≠ s_i·G2`` that happens for at most one value of ``ρ_i`` mod r given the others, i.e. with
  probability ≤ 2⁻¹²⁸. A batch that fails is re-checked item by item with the exact projected test,
  so a dealer whose commitments carry torsion but whose shares are right is not blamed.
- A random linear combination does NOT prove subgroup membership of the points (T has elements of order
  13 and 23, which a random weight kills with probability 1/13 or 1/23). That is why the projection
  semantics, not a batched subgroup check, carries the argument.
- Outputs leave this module through :func:`to_g2`, which returns ``π(X)`` as a :class:`derot.crypto.bls.G2`
  (blst, subgroup-checked); in an honest run ``X`` already is in G2 and the check costs one decode.

Invariants: arkworks points handled here are on E'(Fp2) (never off-curve); :func:`to_g2` output is in G2.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from py_arkworks_bls12381 import G2Point, Scalar

from derot.crypto.bls import G2, R, PointDecodeError, inv, require_bytes
from derot.errors import DerotError

#: Size of a G2 point on the DKG wire: affine x.c0 ‖ x.c1 ‖ y.c0 ‖ y.c1, 48 bytes each, big-endian.
AFFINE_SIZE = 192
#: Cofactor of G2 in E'(Fp2): ``#E'(Fp2) = H2·R`` (IETF draft-irtf-cfrg-pairing-friendly-curves, BLS12-381).
H2 = 0x5D543A95414E7F1091D50792876A202CD91DE4547085ABAA68A205B2E5A7DDFA628F1CB4D9E82EF21537E293A6691AE1616EC6E786F0C70CF1C38E31C7238E5
_H2_INV = inv(H2 % R)
#: Bits of the secret batch weights; a wrong share slips through a batch with probability ≤ 2^-WEIGHT_BITS.
WEIGHT_BITS = 128

_IDENTITY = G2Point.identity()


class CommitmentDecodeError(DerotError, ValueError):
    """Bytes that are not a canonical affine encoding of a non-identity point on E'(Fp2)."""

    reason = "malformed_commitment"


# --------------------------------------------------------------------------------------------------
# encodings


def decode_point(data: bytes) -> G2Point:
    """Decode 192 affine bytes: checks length, canonical coordinates (< p), on-curve, not identity.

    Deliberately no subgroup check (see the module docstring).
    """
    data = require_bytes(data, "G2 point", CommitmentDecodeError)
    if len(data) != AFFINE_SIZE:
        raise CommitmentDecodeError(f"G2 point must be {AFFINE_SIZE} bytes, got {len(data)}")
    if not any(data):
        raise CommitmentDecodeError("G2 point is the identity")
    try:
        return G2Point.from_xy_bytes_unchecked_be(bytes(data))
    except Exception as exc:  # arkworks raises ValueError or plain exceptions from Rust
        raise CommitmentDecodeError(f"not a point on the curve ({exc})") from None


def encode_point(point: G2Point) -> bytes:
    return bytes(point.to_xy_bytes_be())


def from_g2(point: G2) -> G2Point:
    """The arkworks form of a subgroup point (trusted input: no checks repeated)."""
    return G2Point.from_compressed_bytes_unchecked(point.to_bytes())


def to_g2(point: G2Point) -> G2:
    """``π(point)`` as a subgroup-checked :class:`G2` (the identity is allowed)."""
    try:
        return G2.from_bytes(bytes(point.to_compressed_bytes()), allow_identity=True)
    except PointDecodeError:  # a torsion component: project it away
        return G2.from_bytes(bytes(project(point).to_compressed_bytes()), allow_identity=True)


def generator_times(k: int) -> G2Point:
    """``k·G2`` (blst's constant-time multiplication, then converted)."""
    return from_g2(G2.generator() * k)


def commitments(coefficients: Sequence[int]) -> list[bytes]:
    """Wire encodings of the Feldman commitments ``a_k·G2`` of a polynomial."""
    return [encode_point(generator_times(a)) for a in coefficients]


# --------------------------------------------------------------------------------------------------
# linear arithmetic on raw points


def evaluate(points: Sequence[G2Point], x: int) -> G2Point:
    """``Σ_k points[k]·x^k`` by Horner's rule (cheap for the small member indices x)."""
    sx = Scalar(x % R)
    acc = points[-1]
    for point in reversed(points[:-1]):
        acc = acc * sx + point
    return acc


def point_sum(points: Sequence[G2Point]) -> G2Point:
    acc = _IDENTITY
    for point in points:
        acc = acc + point
    return acc


def linear_combination(points: Sequence[G2Point], scalars: Sequence[int]) -> G2Point:
    """``Σ scalars[i]·points[i]`` (multi-scalar multiplication)."""
    if len(points) != len(scalars):
        raise ValueError("points and scalars differ in length")
    if not points:
        return _IDENTITY
    return G2Point.multiexp_unchecked(list(points), [Scalar(s % R) for s in scalars])


def _times_integer(point: G2Point, k: int) -> G2Point:
    """``[k]point`` for any non-negative integer, using only the group law (valid off the subgroup)."""
    acc = _IDENTITY
    for bit in bin(k)[2:]:
        acc = acc + acc
        if bit == "1":
            acc = acc + point
    return acc


def equal_modulo_torsion(a: G2Point, b: G2Point) -> bool:
    """``π(a) == π(b)``; one comparison when the raw points agree, ~2.6 ms otherwise."""
    if a == b:
        return True
    return _times_integer(a - b, H2) == _IDENTITY


def project(point: G2Point) -> G2Point:
    """``π(point)``: the point itself when it is in G2, else ``[h2⁻¹ mod r]([h2]point)``."""
    if point.is_in_subgroup():
        return point
    return _times_integer(point, H2) * Scalar(_H2_INV)


# --------------------------------------------------------------------------------------------------
# share checks


def share_matches(evaluation: G2Point, share: int) -> bool:
    """Exact Feldman check ``share·G2 == π(evaluation)``."""
    return equal_modulo_torsion(evaluation, generator_times(share))


def shares_match(evaluations: Sequence[G2Point], shares: Sequence[int]) -> bool:
    """Batched ``share_i·G2 == π(evaluation_i)`` for all i; false positives ≤ 2⁻¹²⁸ (module docstring).

    The weights come from the OS CSPRNG and are never revealed, so a dealer cannot aim for them. A
    ``False`` does not say which item is wrong; check with :func:`share_matches` one by one.
    """
    if len(evaluations) != len(shares):
        raise ValueError("evaluations and shares differ in length")
    if not evaluations:
        return True
    weights = [secrets.randbits(WEIGHT_BITS) for _ in shares]
    combined_share = sum(w * s for w, s in zip(weights, shares)) % R
    lhs = generator_times(combined_share)
    rhs = G2Point.multiexp_unchecked(list(evaluations), [Scalar(w) for w in weights])
    return lhs == rhs
