"""Batched commitment arithmetic on raw points, checked against blst (derot.crypto.bls/poly) and py_ecc.

The torsion tests build a point of E'(Fp2) outside G2 with py_ecc's own Fp2 arithmetic (an independent
implementation), and show that the projection semantics of derot.crypto.hazmat.batch hold.
"""

import math
import random
import secrets

import pytest
from py_arkworks_bls12381 import G2Point
from py_ecc.bls.point_compression import modular_squareroot_in_FQ2
from py_ecc.optimized_bls12_381 import FQ2, b2, is_inf, is_on_curve, multiply, normalize

from derot.crypto.hazmat import batch
from derot.crypto.bls import G2, R, random_scalar
from derot.crypto.hazmat.poly import Polynomial, eval_commitment

P = 0x1A0111EA397FE69A4B1BA7B6434BACD764774B84F38512BF6730D2A0F6B0F6241EABFFFEB153FFFFB9FEFFFFFFFFAAAB


def _affine_bytes(pt) -> bytes:
    x, y = normalize(pt)
    return b"".join(int(c).to_bytes(48, "big") for c in (*x.coeffs, *y.coeffs))


@pytest.fixture(scope="module")
def curve_point():
    """A random point of E'(Fp2) (almost surely not in G2), found and checked with py_ecc."""
    rng = random.Random(2537)
    while True:
        x = FQ2([rng.randrange(P), rng.randrange(P)])
        y = modular_squareroot_in_FQ2(x**3 + b2)
        if y is not None:
            q = (x, y, FQ2.one())
            assert is_on_curve(q, b2)
            return q


@pytest.fixture(scope="module")
def torsion(curve_point):
    """T = [r]Q: a non-identity point with [h2]T = O, i.e. in the h2-torsion, outside G2 (py_ecc checks)."""
    t = multiply(curve_point, R)
    assert not is_inf(t)
    assert is_inf(multiply(t, batch.H2))
    point = batch.decode_point(_affine_bytes(t))
    assert not point.is_in_subgroup()
    return point


def random_point() -> G2Point:
    return batch.generator_times(random_scalar())


# --------------------------------------------------------------------------------------------------
# encodings


def test_affine_encoding_agrees_with_blst_and_eip2537():
    for _ in range(5):
        k = random_scalar()
        expected = G2.generator() * k
        raw = batch.encode_point(batch.generator_times(k))
        eip = expected.to_eip2537()  # the lead's independent path: 64-byte padded limbs
        assert raw == b"".join(eip[off + 16 : off + 64] for off in range(0, 256, 64))
        assert batch.to_g2(batch.decode_point(raw)) == expected


@pytest.mark.parametrize("length", [0, 96, 191, 193])
def test_decode_refuses_wrong_length(length):
    with pytest.raises(batch.CommitmentDecodeError, match="192 bytes"):
        batch.decode_point(bytes(length))


def test_decode_refuses_identity():
    with pytest.raises(batch.CommitmentDecodeError, match="identity"):
        batch.decode_point(bytes(192))


def test_decode_refuses_off_curve():
    raw = bytearray(batch.encode_point(random_point()))
    raw[-1] ^= 1
    with pytest.raises(batch.CommitmentDecodeError, match="not a point"):
        batch.decode_point(bytes(raw))


@pytest.mark.parametrize("limb", range(4))
def test_decode_refuses_non_canonical_coordinates_and_flags(limb):
    point = random_point()
    raw = batch.encode_point(point)
    value = int.from_bytes(raw[48 * limb : 48 * limb + 48], "big")
    if value + P < 2**384:
        bad = raw[: 48 * limb] + (value + P).to_bytes(48, "big") + raw[48 * limb + 48 :]
        with pytest.raises(batch.CommitmentDecodeError):
            batch.decode_point(bad)
    for flag in (0x80, 0x40, 0x20):
        bad = bytearray(raw)
        bad[48 * limb] |= flag
        with pytest.raises(batch.CommitmentDecodeError):
            batch.decode_point(bytes(bad))


# --------------------------------------------------------------------------------------------------
# arithmetic against the blst backend


@pytest.mark.parametrize("x", [1, 2, 7, 64, 1000, R - 1])
def test_evaluate_matches_blst_eval_commitment(x):
    poly = Polynomial.random(9)
    blst_commitments = poly.commit()
    raw = [batch.decode_point(c) for c in batch.commitments(poly.coefficients)]
    assert batch.to_g2(batch.evaluate(raw, x)) == eval_commitment(blst_commitments, x)
    assert batch.to_g2(batch.evaluate(raw, x)) == G2.generator() * poly(x)


def test_linear_combination_and_sum_match_blst():
    scalars = [random_scalar() for _ in range(6)]
    weights = [random_scalar() for _ in range(6)]
    points = [batch.generator_times(s) for s in scalars]
    expected = G2.generator() * (sum(w * s for w, s in zip(weights, scalars)) % R)
    assert batch.to_g2(batch.linear_combination(points, weights)) == expected
    assert batch.to_g2(batch.point_sum(points)) == G2.generator() * (sum(scalars) % R)


def test_batched_share_check_accepts_right_shares_and_catches_any_wrong_one():
    polys = [Polynomial.random(6) for _ in range(12)]
    x = 5
    evaluations = [batch.evaluate([batch.decode_point(c) for c in batch.commitments(p.coefficients)], x)
                   for p in polys]
    shares = [p(x) for p in polys]
    assert batch.shares_match(evaluations, shares)
    for _ in range(8):
        wrong = list(shares)
        victim = secrets.randbelow(len(wrong))
        wrong[victim] = (wrong[victim] + 1 + secrets.randbelow(R - 1)) % R
        assert not batch.shares_match(evaluations, wrong)
        assert [batch.share_matches(e, s) for e, s in zip(evaluations, wrong)] == [
            i != victim for i in range(len(wrong))
        ]


def test_batched_check_of_nothing_is_true():
    assert batch.shares_match([], [])


# --------------------------------------------------------------------------------------------------
# torsion: projection semantics


def test_cofactor_constant(curve_point):
    """[h2·r]Q = O for a random curve point while [h2]Q ≠ O and [r]Q ≠ O, and gcd(h2, r) = 1."""
    assert math.gcd(batch.H2, R) == 1
    q = batch.decode_point(_affine_bytes(curve_point))
    assert batch._times_integer(q, batch.H2 * R) == G2Point.identity()
    assert batch._times_integer(q, batch.H2) != G2Point.identity()
    assert batch._times_integer(q, R) != G2Point.identity()


def test_projection_removes_torsion(torsion):
    p = random_point()
    assert batch.equal_modulo_torsion(p + torsion, p)
    assert not batch.equal_modulo_torsion(p + torsion, p + batch.generator_times(1))
    assert batch.project(p + torsion) == p
    assert batch.project(p) == p
    assert batch.to_g2(p + torsion) == batch.to_g2(p)
    assert batch.to_g2(torsion).is_identity()


def test_linear_operations_commute_with_projection(torsion):
    poly = Polynomial.random(5)
    clean = [batch.decode_point(c) for c in batch.commitments(poly.coefficients)]
    dirty = [c + torsion if k % 2 == 0 else c for k, c in enumerate(clean)]
    for x in (1, 3, 13, 23, 64):
        assert batch.project(batch.evaluate(dirty, x)) == batch.evaluate(clean, x)
    weights = [random_scalar() for _ in clean]
    assert batch.project(batch.linear_combination(dirty, weights)) == batch.linear_combination(clean, weights)
    assert batch.to_g2(batch.point_sum(dirty)) == batch.to_g2(batch.point_sum(clean))


def test_share_check_with_torsion(torsion):
    """Right shares under torsion-carrying commitments: the raw batch fails, the exact check accepts;
    a wrong share is still refused."""
    poly = Polynomial.random(4)
    dirty = [batch.decode_point(c) + torsion for c in batch.commitments(poly.coefficients)]
    evaluation = batch.evaluate(dirty, 3)
    assert not batch.shares_match([evaluation], [poly(3)])
    assert batch.share_matches(evaluation, poly(3))
    assert not batch.share_matches(evaluation, poly(3) + 1)
