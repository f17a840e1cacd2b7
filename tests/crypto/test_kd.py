"""vetKD-style key derivation and app keys."""

import itertools

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives import hashes
from eth_keys import keys as eth_keys

from derot.constants import KeyType
from derot.crypto import kd
from derot.crypto.appkeys import SECP256K1_N, derive_app_keys
from derot.crypto.bls import G1, G2, PointDecodeError
from derot.crypto.hazmat.poly import Polynomial, interpolate_at, lagrange_coefficients
from derot.crypto.threshold import NotEnoughShares

APP = bytes(range(32))


def deal(n, t, secret=None):
    f = Polynomial.random(t - 1, secret)
    shares = {i: f(i) for i in range(1, n + 1)}
    return f.coefficients[0], shares, {i: G2.generator() * s for i, s in shares.items()}


def derive(shares, keys, group_key, subset, app=APP, version=1, context=b""):
    tk = kd.TransportKey.generate()
    hashed = kd.kd_point(app, version, context)
    answers = {i: kd.derive_share(shares[i], hashed, tk.public) for i in subset}
    combined = kd.combine_verified(answers, len(subset), group_key, keys, hashed, tk.public)
    return derive_app_keys(kd.decrypt(combined.key, tk, group_key, hashed))


def reshare(shares, old_t, new_n, new_t):
    """Resharing by the docs/design.md §3 rule, done by hand: x'_j = Σ_{i∈S} λ_i g_i(j)."""
    dealers = sorted(shares)[:old_t]
    lambdas = lagrange_coefficients(dealers)
    polys = {i: Polynomial.random(new_t - 1, shares[i]) for i in dealers}
    return {j: sum(lambdas[i] * polys[i](j) for i in dealers) for j in range(1, new_n + 1)}


def test_kd_message_layout():
    m = kd.kd_message(APP, 7, b"ctx")
    assert m == APP + (7).to_bytes(4, "big") + (3).to_bytes(2, "big") + b"ctx"
    with pytest.raises(ValueError):
        kd.kd_message(APP[:31], 1)
    with pytest.raises(ValueError):
        kd.kd_message(APP, 2**32)


def test_same_key_from_every_t_subset_and_after_resharing():
    secret, shares, keys = deal(5, 3)
    group_key = G2.generator() * secret
    addresses = {derive(shares, keys, group_key, s).ethereum_address for s in itertools.combinations(shares, 3)}
    assert len(addresses) == 1

    new_shares = reshare(shares, 3, 7, 4)
    assert interpolate_at({j: new_shares[j] for j in (2, 4, 6, 7)}) == secret
    new_keys = {j: G2.generator() * s for j, s in new_shares.items()}
    after = derive(new_shares, new_keys, group_key, (7, 1, 3, 5))
    assert {after.ethereum_address} == addresses


def test_different_app_version_or_context_gives_different_keys():
    secret, shares, keys = deal(4, 3)
    group_key = G2.generator() * secret
    base = derive(shares, keys, group_key, (1, 2, 3)).ethereum_address
    assert derive(shares, keys, group_key, (1, 2, 3), app=bytes(32)).ethereum_address != base
    assert derive(shares, keys, group_key, (1, 2, 3), version=2).ethereum_address != base
    assert derive(shares, keys, group_key, (1, 2, 3), context=b"x").ethereum_address != base


def test_share_check_accepts_honest_and_rejects_tampered_shares():
    _, shares, keys = deal(4, 3)
    tk = kd.TransportKey.generate()
    hashed = kd.kd_point(APP, 1)
    share = kd.derive_share(shares[1], hashed, tk.public)
    assert kd.verify_encrypted(share, keys[1], hashed, tk.public)
    assert not kd.verify_encrypted(share, keys[2], hashed, tk.public)
    tampered = [
        kd.EncryptedKey(share.c1 + G1.generator(), share.c2, share.c3),
        kd.EncryptedKey(share.c1, share.c2 + G2.generator(), share.c3),
        kd.EncryptedKey(share.c1, share.c2, share.c3 + G1.generator()),
    ]
    for bad in tampered:
        assert not kd.verify_encrypted(bad, keys[1], hashed, tk.public)
    other_tpk = kd.TransportKey.generate().public
    assert not kd.verify_encrypted(share, keys[1], hashed, other_tpk)


def test_gateway_drops_a_tampered_share():
    secret, shares, keys = deal(5, 3)
    group_key = G2.generator() * secret
    tk = kd.TransportKey.generate()
    hashed = kd.kd_point(APP, 1)
    answers = {i: kd.derive_share(shares[i], hashed, tk.public) for i in (2, 5, 1, 4)}
    answers[5] = kd.EncryptedKey(answers[5].c1, answers[5].c2, answers[5].c3 + G1.generator())
    combined = kd.combine_verified(answers, 3, group_key, keys, hashed, tk.public)
    assert combined.bad == (5,) and 5 not in combined.used
    assert kd.decrypt(combined.key, tk, group_key, hashed) == hashed * secret
    answers.pop(4)
    with pytest.raises(NotEnoughShares):
        kd.combine_verified(answers, 3, group_key, keys, hashed, tk.public)


def test_wrong_transport_secret_fails_verification():
    secret, shares, keys = deal(4, 3)
    group_key = G2.generator() * secret
    tk = kd.TransportKey.generate()
    hashed = kd.kd_point(APP, 1)
    combined = kd.combine_encrypted({i: kd.derive_share(shares[i], hashed, tk.public) for i in (1, 2, 3)})
    with pytest.raises(kd.KeyVerificationError):
        kd.decrypt(combined, kd.TransportKey.generate(), group_key, hashed)
    with pytest.raises(kd.KeyVerificationError):
        kd.decrypt(combined, tk, G2.generator() * (secret + 1), hashed)
    assert kd.decrypt(combined, tk, group_key, hashed) == hashed * secret


def test_encrypted_key_encoding_round_trip_and_garbage():
    secret, shares, _ = deal(3, 2)
    tk = kd.TransportKey.generate()
    share = kd.derive_share(shares[1], kd.kd_point(APP, 1), tk.public)
    assert kd.EncryptedKey.decode(share.encode()) == share
    assert len(share.encode()) == 192
    with pytest.raises(PointDecodeError):
        kd.EncryptedKey.decode(share.encode()[:-1])
    with pytest.raises(PointDecodeError):
        kd.EncryptedKey.decode(b"\xff" * 192)


def test_app_keys_are_well_formed_and_labelled_independently():
    root = G1.hash_to_curve(b"root", b"TEST")
    keys = derive_app_keys(root)
    again = derive_app_keys(root)
    assert keys.ethereum_address == again.ethereum_address
    assert keys.ethereum_address.startswith("0x") and keys.ethereum_address != keys.ethereum_address.lower()
    # the checksum address is the one eth_keys computes from the public key
    pub = eth_keys.PublicKey.from_compressed_bytes(keys.public_key(KeyType.SECP256K1))
    assert pub.to_checksum_address() == keys.ethereum_address
    assert 1 <= int.from_bytes(keys.secp256k1.to_bytes(), "big") < SECP256K1_N
    # each key signs and verifies with its library
    msg = b"hello"
    ed25519.Ed25519PublicKey.from_public_bytes(keys.public_key(KeyType.ED25519)).verify(keys.ed25519.sign(msg), msg)
    p256_pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), keys.public_key(KeyType.P256))
    p256_pub.verify(keys.p256.sign(msg, ec.ECDSA(hashes.SHA256())), msg, ec.ECDSA(hashes.SHA256()))
    # labels separate the key types: no two raw public keys coincide, and a different root changes all
    raw = {keys.public_key(t)[-32:] for t in KeyType}
    assert len(raw) == 4
    other = derive_app_keys(G1.hash_to_curve(b"root2", b"TEST"))
    assert all(other.public_key(t) != keys.public_key(t) for t in KeyType)
    assert "PrivateKey" not in repr(keys) and keys.ethereum_address in repr(keys)


def test_same_key_after_a_real_dkg_reshare():
    """The DKG's own reshare (5 → 7 members, 3-of-5 → 4-of-7) keeps the app key."""
    from derot.crypto.dkg import DkgConfig
    from derot.crypto.dkg.local import LocalBroadcast, committee_of, generate_identities, make_sessions

    ids = generate_identities(7)
    names = {i: ident for i, ident in enumerate(ids, start=1)}
    config = DkgConfig(b"test", 1, committee_of(ids[:5], 3))
    first = make_sessions(config, {i: names[i] for i in range(1, 6)})
    LocalBroadcast(first).run()
    before = {first[i].result.index: first[i].result.shares.kd for i in first}
    pub = first[1].result.kd
    address = derive(before, pub.share_keys, pub.group_key, (1, 2, 3)).ethereum_address

    reshare_config = DkgConfig(b"test", 2, committee_of(ids, 4), first[1].result.as_previous_epoch())
    second = make_sessions(reshare_config, names, old_shares={i: first[i].result.shares for i in first})
    LocalBroadcast(second).run()
    after = {second[i].result.index: second[i].result.shares.kd for i in second}
    new_pub = second[1].result.kd
    assert new_pub.group_key == pub.group_key
    assert derive(after, new_pub.share_keys, new_pub.group_key, (7, 2, 5, 6)).ethereum_address == address
    # old shares mixed with new ones do not give the key
    mixed = {1: before[1], 2: before[2], 6: after[6]}
    mixed_keys = {1: pub.share_keys[1], 2: pub.share_keys[2], 6: new_pub.share_keys[6]}
    with pytest.raises(NotEnoughShares):
        derive(mixed, mixed_keys, pub.group_key, (1, 2, 6))
