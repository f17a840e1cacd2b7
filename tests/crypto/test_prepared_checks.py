"""Pairing checks with prepared pairs (a gateway computes the fixed Miller loops while it waits for shares):
they must decide exactly as the unprepared checks do. The oracles are the unsplit pairing product, the
module docstring's two unfolded vetKD equations, and keys and signatures made directly from the secret."""

from __future__ import annotations

import random

import pytest

from derot.constants import DST_CERT, DST_KD
from derot.crypto import kd
from derot.crypto import threshold as th
from derot.crypto.bls import G1, G2, PreparedPairs, pairing_check


def _pairs_with_product_one(rng: random.Random) -> list[tuple[G1, G2]]:
    """e(a·G1, b·G2) · e(c·G1, d·G2) · e(−(ab + cd)·G1, G2) = 1."""
    a, b, c, d = (rng.randrange(1, 2**64) for _ in range(4))
    g1, g2 = G1.generator(), G2.generator()
    return [(g1 * a, g2 * b), (g1 * c, g2 * d), (-(g1 * (a * b + c * d)), g2)]


@pytest.mark.parametrize("case", range(24))
def test_a_prepared_split_decides_as_the_whole_product(case):
    seed = random.randrange(2**32)
    print("seed", seed)
    rng = random.Random(seed)
    pairs = _pairs_with_product_one(rng)
    holds = case % 2 == 0
    if not holds:  # perturb one pair: the product is no longer 1
        k = rng.randrange(len(pairs))
        p, q = pairs[k]
        pairs[k] = (p + G1.generator(), q)
    if case % 3 == 0:  # identity pairs contribute 1 and are skipped, wherever they sit
        pairs.insert(rng.randrange(len(pairs) + 1), (G1.identity(), G2.generator()))
    rng.shuffle(pairs)
    cut = rng.randrange(len(pairs) + 1)
    prepared, rest = PreparedPairs(pairs[:cut]), pairs[cut:]
    assert pairing_check(pairs) is holds
    assert pairing_check(rest, prepared) is holds


def test_prepared_pairs_of_identities_only_leave_the_check_to_the_others():
    g1, g2 = G1.generator(), G2.generator()
    only_identity = PreparedPairs([(G1.identity(), g2)])
    assert pairing_check([(g1 * 3, g2), (-(g1 * 3), g2)], only_identity)
    assert not pairing_check([(g1 * 3, g2), (-(g1 * 4), g2)], only_identity)
    assert pairing_check([], PreparedPairs([(g1, g2 * 5), (-(g1 * 5), g2)]))
    assert not pairing_check([], PreparedPairs([(g1, g2)]))


def _unfolded(key: kd.EncryptedKey, public_key: G2, hashed: G1, tpk: G1) -> bool:
    """The two equations of derot.crypto.kd's docstring, checked separately."""
    g1, g2 = G1.generator(), G2.generator()
    return (pairing_check([(key.c1, g2), (-g1, key.c2)])
            and pairing_check([(key.c3, g2), (-tpk, key.c2), (-hashed, public_key)]))


def test_the_key_check_agrees_with_the_unfolded_equations_on_honest_and_tampered_keys():
    seed = random.randrange(2**32)
    print("seed", seed)
    rng = random.Random(seed)
    secret = rng.randrange(1, 2**255)
    public_key = G2.generator() * secret
    hashed = G1.hash_to_curve(rng.randbytes(40), DST_KD)
    tpk = kd.TransportKey.generate().public
    honest = kd.derive_share(secret, hashed, tpk)
    g1, g2 = G1.generator(), G2.generator()
    tampered = [
        kd.EncryptedKey(honest.c1 + g1, honest.c2, honest.c3),
        kd.EncryptedKey(honest.c1, honest.c2 + g2, honest.c3),
        kd.EncryptedKey(honest.c1, honest.c2, honest.c3 + g1),
        kd.EncryptedKey(honest.c1 * 2, honest.c2 * 2, honest.c3),  # consistent c1/c2, wrong c3
        kd.derive_share(secret + 1, hashed, tpk),  # another share's answer
    ]
    assert _unfolded(honest, public_key, hashed, tpk)
    assert kd.KeyCheck(public_key, hashed, tpk)(honest)
    for key in tampered:
        assert not _unfolded(key, public_key, hashed, tpk)
        assert not kd.KeyCheck(public_key, hashed, tpk)(key)
        assert not kd.verify_encrypted(key, public_key, hashed, tpk)


def test_weighted_shares_sum_to_the_key_made_from_the_secret(committee_kd):
    """weigh/total over any t shares is the Lagrange combination: it decrypts to x·H, the oracle being the
    secret itself."""
    secret_at, n, t = committee_kd
    hashed = G1.hash_to_curve(b"app", DST_KD)
    transport = kd.TransportKey.generate()
    shares = {i: kd.derive_share(secret_at(i), hashed, transport.public) for i in range(1, n + 1)}
    from derot.crypto.hazmat.poly import lagrange_coefficients

    for subset in ((1, 2, 3), (2, 4, 5), (5, 1, 3)):
        weights = lagrange_coefficients(subset)
        combined = kd.total([kd.weigh(shares[i], weights[i]) for i in subset])
        assert combined == kd.combine_encrypted({i: shares[i] for i in subset})
        assert kd.decrypt(combined, transport, G2.generator() * secret_at(0), hashed) == hashed * secret_at(0)


@pytest.fixture
def committee_kd():
    rng = random.Random()
    coefficients = [rng.randrange(1, 2**255) for _ in range(3)]
    return (lambda x: sum(c * x**k for k, c in enumerate(coefficients))), 5, 3


def test_the_signature_check_agrees_with_verify():
    secret = random.randrange(1, 2**255)
    public_key = G2.generator() * secret
    message = b"a certificate digest"
    good = th.sign(secret, message, DST_CERT)
    check = th.SignatureCheck(public_key, message, DST_CERT)
    assert check(good) and th.verify(public_key, message, good, DST_CERT)
    for bad in (good + G1.generator(), th.sign(secret + 1, message, DST_CERT), G1.identity(),
                th.sign(secret, message + b"!", DST_CERT)):
        assert not check(bad)
        assert not th.verify(public_key, message, bad, DST_CERT)
