"""Threshold BLS: any t of n partials combine to the one group signature; t-1 do not; bad partials are dropped."""

import itertools
import random

import pytest

from derot.constants import DST_CERT
from derot.crypto import threshold as th
from derot.crypto.bls import G1, G2, R
from derot.crypto.hazmat.poly import Polynomial


def deal(n, t):
    f = Polynomial.random(t - 1)
    shares = {i: f(i) for i in range(1, n + 1)}
    return f.coefficients[0], shares, {i: G2.generator() * s for i, s in shares.items()}


MSG = b"certificate digest"


def test_every_t_subset_gives_the_same_signature():
    secret, shares, _ = deal(5, 3)
    group_key = G2.generator() * secret
    partials = {i: th.partial_sign(s, MSG, DST_CERT) for i, s in shares.items()}
    expected = th.sign(secret, MSG, DST_CERT)
    for subset in itertools.combinations(partials, 3):
        sig = th.combine({i: partials[i] for i in subset})
        assert sig == expected
        assert th.verify(group_key, MSG, sig, DST_CERT)


def test_t_minus_one_partials_do_not_verify():
    secret, shares, _ = deal(5, 3)
    group_key = G2.generator() * secret
    partials = {i: th.partial_sign(s, MSG, DST_CERT) for i, s in shares.items()}
    for subset in itertools.combinations(partials, 2):
        assert not th.verify(group_key, MSG, th.combine({i: partials[i] for i in subset}), DST_CERT)


def test_partial_verify_against_share_keys():
    _, shares, keys = deal(4, 3)
    partial = th.partial_sign(shares[2], MSG, DST_CERT)
    assert th.partial_verify(keys[2], MSG, partial, DST_CERT)
    assert not th.partial_verify(keys[3], MSG, partial, DST_CERT)
    assert not th.partial_verify(keys[2], MSG + b"!", partial, DST_CERT)
    assert not th.partial_verify(keys[2], MSG, partial, b"OTHER-DST")


@pytest.mark.parametrize("bad_position", [0, 1, 2])
def test_corrupted_partial_is_dropped_and_result_verifies(bad_position):
    secret, shares, keys = deal(5, 3)
    group_key = G2.generator() * secret
    order = [4, 1, 5, 2, 3]
    partials = {i: th.partial_sign(shares[i], MSG, DST_CERT) for i in order}
    victim = order[bad_position]
    partials[victim] = partials[victim] + G1.generator()  # corrupted
    result = th.combine_verified(partials, 3, group_key, keys, MSG, DST_CERT)
    assert victim in result.bad and victim not in result.used
    assert len(result.used) == 3
    assert result.signature == th.sign(secret, MSG, DST_CERT)


def test_not_enough_valid_partials_names_the_bad_ones():
    secret, shares, keys = deal(5, 3)
    partials = {i: th.partial_sign(shares[i], MSG, DST_CERT) for i in (1, 2, 3)}
    partials[2] = G1.hash_to_curve(b"garbage", DST_CERT)
    with pytest.raises(th.NotEnoughShares) as info:
        th.combine_verified(partials, 3, G2.generator() * secret, keys, MSG, DST_CERT)
    assert info.value.bad == (2,) and info.value.valid == 2


def test_partial_from_unknown_index_is_treated_as_bad():
    secret, shares, keys = deal(5, 3)
    partials = {i: th.partial_sign(shares[i], MSG, DST_CERT) for i in (1, 2, 3)}
    partials[9] = partials.pop(3)  # relabelled: Lagrange would be wrong
    partials[4] = th.partial_sign(shares[4], MSG, DST_CERT)
    result = th.combine_verified(partials, 3, G2.generator() * secret, keys, MSG, DST_CERT)
    assert result.bad == (9,) and sorted(result.used) == [1, 2, 4]


def test_combine_refuses_duplicate_or_zero_indices():
    with pytest.raises(ValueError):
        th.combine({0: G1.generator()})


def test_random_thresholds_property():
    rng = random.Random(7)
    for _ in range(5):
        n = rng.randint(3, 9)
        t = rng.randint(n // 2 + 1, n)
        secret, shares, _ = deal(n, t)
        subset = rng.sample(sorted(shares), t)
        msg = rng.randbytes(32)
        sig = th.combine({i: th.partial_sign(shares[i], msg, DST_CERT) for i in subset})
        assert th.verify(G2.generator() * secret, msg, sig, DST_CERT)
        assert secret < R
