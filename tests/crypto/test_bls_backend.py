"""The BLS12-381 backend agrees with the py_ecc reference oracle, and decoding refuses bad points."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from py_ecc.bls.hash_to_curve import hash_to_G1 as oracle_hash_to_g1
from py_ecc.bls.point_compression import compress_G1, compress_G2, decompress_G1
from py_ecc.optimized_bls12_381 import G1 as O_G1
from py_ecc.optimized_bls12_381 import G2 as O_G2
from py_ecc.optimized_bls12_381 import FQ12, add, multiply, neg, normalize, pairing
from hashlib import sha256

from derot.crypto.bls import G1, G2, P, R, PointDecodeError, pairing_check

scalars = st.integers(min_value=1, max_value=R - 1)


def oracle_g1_bytes(point) -> bytes:
    return compress_G1(point).to_bytes(48, "big")


def oracle_g2_bytes(point) -> bytes:
    z1, z2 = compress_G2(point)
    return z1.to_bytes(48, "big") + z2.to_bytes(48, "big")


def test_generators_match_oracle():
    assert G1.generator().to_bytes() == oracle_g1_bytes(O_G1)
    assert G2.generator().to_bytes() == oracle_g2_bytes(O_G2)


@settings(max_examples=40, deadline=None)
@given(scalars)
def test_g1_scalar_mul_matches_oracle(k):
    assert (G1.generator() * k).to_bytes() == oracle_g1_bytes(multiply(O_G1, k))


@settings(max_examples=12, deadline=None)
@given(scalars)
def test_g2_scalar_mul_matches_oracle(k):
    assert (G2.generator() * k).to_bytes() == oracle_g2_bytes(multiply(O_G2, k))


@settings(max_examples=40, deadline=None)
@given(scalars, scalars)
def test_g1_add_sub_neg_match_oracle(a, b):
    pa, pb = multiply(O_G1, a), multiply(O_G1, b)
    ga, gb = G1.generator() * a, G1.generator() * b
    assert (ga + gb).to_bytes() == oracle_g1_bytes(add(pa, pb))
    assert (ga - gb).to_bytes() == oracle_g1_bytes(add(pa, neg(pb)))
    assert (-ga).to_bytes() == oracle_g1_bytes(neg(pa))


@settings(max_examples=15, deadline=None)
@given(st.binary(max_size=200), st.binary(min_size=1, max_size=80))
def test_hash_to_g1_matches_oracle(msg, dst):
    assert G1.hash_to_curve(msg, dst).to_bytes() == oracle_g1_bytes(oracle_hash_to_g1(msg, dst, sha256))


def test_hash_to_g1_rfc9380_vectors(vectors_dir):
    suite = json.loads((vectors_dir / "rfc9380" / "hash_to_g1_sha256_sswu_ro.json").read_text())
    assert len(suite["vectors"]) == 5
    for vector in suite["vectors"]:
        point = G1.hash_to_curve(vector["msg"].encode(), suite["dst"].encode())
        expected = bytes.fromhex(vector["P"])
        eip = point.to_eip2537()
        assert eip[16:64] + eip[80:128] == expected, vector["msg"][:10]


@settings(max_examples=2, deadline=None)
@given(scalars, scalars)
def test_pairing_matches_oracle(a, b):
    """e(a·G1, b·G2) == e(ab·G1, G2) in the backend, and the oracle agrees the relation holds."""
    assert pairing_check([(G1.generator() * a, G2.generator() * b), (-(G1.generator() * (a * b)), G2.generator())])
    assert not pairing_check([(G1.generator() * a, G2.generator() * b), (-(G1.generator() * (a * b + 1)), G2.generator())])
    lhs = pairing(multiply(O_G2, b), multiply(O_G1, a))
    rhs = pairing(O_G2, multiply(O_G1, a * b % R))
    assert lhs == rhs and lhs != FQ12.one()


@settings(max_examples=30, deadline=None)
@given(scalars)
def test_compressed_round_trip_and_oracle_decode(k):
    p1, p2 = G1.generator() * k, G2.generator() * k
    assert G1.from_bytes(p1.to_bytes()) == p1
    assert G2.from_bytes(p2.to_bytes()) == p2
    assert normalize(decompress_G1(int.from_bytes(p1.to_bytes(), "big"))) == normalize(multiply(O_G1, k))


@settings(max_examples=20, deadline=None)
@given(scalars)
def test_eip2537_encoding_matches_oracle_coordinates(k):
    p1 = G1.generator() * k
    x, y = normalize(multiply(O_G1, k))
    enc = p1.to_eip2537()
    assert enc == bytes(16) + x.n.to_bytes(48, "big") + bytes(16) + y.n.to_bytes(48, "big")
    assert G1.from_eip2537(enc) == p1
    p2 = G2.generator() * k
    assert G2.from_eip2537(p2.to_eip2537()) == p2


def test_g2_eip2537_coordinate_order_matches_oracle():
    x, y = normalize(multiply(O_G2, 7))
    limbs = [x.coeffs[0], x.coeffs[1], y.coeffs[0], y.coeffs[1]]  # EIP-2537: c0 then c1
    assert (G2.generator() * 7).to_eip2537() == b"".join(bytes(16) + int(c).to_bytes(48, "big") for c in limbs)


def test_decoding_refuses_identity_unless_allowed():
    with pytest.raises(PointDecodeError, match="identity"):
        G1.from_bytes(G1.identity().to_bytes())
    assert G1.from_bytes(G1.identity().to_bytes(), allow_identity=True).is_identity()
    with pytest.raises(PointDecodeError, match="identity"):
        G2.from_eip2537(bytes(256))


def _non_subgroup_g1_point() -> bytes:
    """A point on E(Fp) that is not in the order-R subgroup (found by trying x = 0, 1, 2 …)."""
    for x in range(1, 100):
        rhs = (x**3 + 4) % P
        y = pow(rhs, (P + 1) // 4, P)
        if y * y % P == rhs:
            # the cofactor of G1 is large, so a curve point is outside the subgroup unless the oracle
            # shows R·P = O:
            from py_ecc.optimized_bls12_381 import FQ, is_inf, multiply as omul
            if not is_inf(omul((FQ(x), FQ(y), FQ(1)), R)):
                flag = 0x80 | (0x20 if y > P - y else 0)
                raw = x.to_bytes(48, "big")
                return bytes([raw[0] | flag]) + raw[1:]
    raise AssertionError("no point found")


def test_decoding_refuses_points_outside_the_subgroup():
    with pytest.raises(PointDecodeError, match="invalid encoding"):
        G1.from_bytes(_non_subgroup_g1_point())


@pytest.mark.parametrize("data", [b"", b"\x00" * 47, b"\xff" * 48, b"\x80" + b"\x00" * 46 + b"\x01"])
def test_decoding_refuses_garbage(data):
    with pytest.raises(PointDecodeError):
        G1.from_bytes(data)


def test_eip2537_refuses_bad_padding_and_unreduced_elements():
    enc = bytearray((G1.generator() * 5).to_eip2537())
    enc[0] = 1
    with pytest.raises(PointDecodeError, match="padding"):
        G1.from_eip2537(bytes(enc))
    enc = bytearray(bytes(16) + (P + 1).to_bytes(48, "big") + bytes(64))
    with pytest.raises(PointDecodeError, match="not reduced"):
        G1.from_eip2537(bytes(enc))
