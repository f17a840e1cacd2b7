"""Resharing: new n, new t, members joining and leaving, group keys unchanged, old shares useless."""

import random

import pytest

from derot.constants import DST_CERT
from derot.crypto import threshold
from derot.crypto.bls import G2, random_scalar
from derot.crypto.dkg import (
    Committee,
    DkgConfig,
    DkgConfigError,
    DkgFailed,
    DkgSession,
    FailReason,
    KeyShares,
    Member,
    Phase,
    RejectReason,
)
from derot.crypto.dkg.local import LocalBroadcast, committee_of, generate_identities, make_sessions
from derot.crypto.dkg.messages import Message, MessageKind
from derot.crypto.hazmat.poly import interpolate_at

NETWORK = b"\x00" * 31 + b"\x01" + b"\x22" * 20


def run(config, nodes, old_results=None, classes=None):
    """Run one epoch over the given {node: identity}; returns ({node: session}, LocalBroadcast)."""
    old_shares = {k: r.shares for k, r in (old_results or {}).items() if r.shares is not None}
    sessions = make_sessions(config, nodes, old_shares=old_shares, classes=classes)
    net = LocalBroadcast(sessions)
    net.run()
    return sessions, net


def secret_of(results, secret, t):
    """Interpolate from a random t-subset of the holders' shares (checks two subsets agree)."""
    holders = [r for r in results.values() if r.shares is not None]
    values = set()
    for _ in range(2):
        subset = random.sample(holders, t)
        values.add(interpolate_at({r.index: getattr(r.shares, secret) for r in subset}))
    assert len(values) == 1
    return values.pop()


def check_epoch(results, t):
    first = next(iter(results.values()))
    for r in results.values():
        assert (r.transcript_hash, r.qualified, r.used, r.sig, r.kd) == (
            first.transcript_hash, first.qualified, first.used, first.sig, first.kd)
        if r.shares is not None:
            assert G2.generator() * r.shares.sig == r.sig.share_keys[r.index]
            assert G2.generator() * r.shares.kd == r.kd.share_keys[r.index]
    return first


@pytest.fixture(scope="module")
def epochs():
    """Epoch 1: nodes 1-5, 3-of-5. Epoch 2: nodes 1-7, 4-of-7. Epoch 3: nodes 1, 2, 5, 7 re-seated as
    1-4, 3-of-4; node 4 is gone (silent), nodes 3 and 6 deal and leave."""
    ids = dict(enumerate(generate_identities(7), start=1))
    c1 = committee_of([ids[k] for k in range(1, 6)], 3)
    s1, _ = run(DkgConfig(NETWORK, 1, c1), {k: ids[k] for k in range(1, 6)})
    r1 = {k: s.result for k, s in s1.items()}

    c2 = committee_of([ids[k] for k in range(1, 8)], 4)
    cfg2 = DkgConfig(NETWORK, 2, c2, previous=r1[1].as_previous_epoch())
    s2, net2 = run(cfg2, ids, r1)
    r2 = {k: s.result for k, s in s2.items()}

    c3 = committee_of([ids[1], ids[2], ids[5], ids[7]], 3)
    cfg3 = DkgConfig(NETWORK, 3, c3, previous=r2[1].as_previous_epoch())
    present = {k: ids[k] for k in (1, 2, 3, 5, 6, 7)}
    s3, net3 = run(cfg3, present, r2)
    r3 = {k: s.result for k, s in s3.items()}
    return ids, (r1, r2, r3), (net2, net3)


def test_grow_5_to_7_keeps_the_group_keys(epochs):
    _, (r1, r2, _), (net2, _) = epochs
    before, after = check_epoch(r1, 3), check_epoch(r2, 4)
    assert net2.deadlines == 0 and net2.rejections == []
    assert (after.sig.group_key, after.kd.group_key) == (before.sig.group_key, before.kd.group_key)
    assert after.threshold == 4 and sorted(after.sig.share_keys) == list(range(1, 8))
    assert after.used == (1, 2, 3)  # the first t_old qualified dealers
    for secret in ("sig", "kd"):
        assert secret_of(r2, secret, 4) == secret_of(r1, secret, 3)
    assert r2[6].shares is not None and r2[7].shares is not None  # joiners got shares
    assert r2[1].shares.sig != r1[1].shares.sig  # continuing members got fresh shares


def test_shrink_7_to_4_with_a_member_gone(epochs):
    _, (r1, r2, r3), (_, net3) = epochs
    after = check_epoch(r3, 3)
    assert net3.deadlines >= 1  # waited for node 4, who never dealt
    assert after.qualified == (1, 2, 3, 5, 6, 7) and after.excluded == {4: "silent: no deal bundle"}
    assert after.used == (1, 2, 3, 5)
    assert (after.sig.group_key, after.kd.group_key) == (r1[1].sig.group_key, r1[1].kd.group_key)
    assert sorted(after.sig.share_keys) == [1, 2, 3, 4]
    assert {k: r3[k].index for k in (1, 2, 5, 7)} == {1: 1, 2: 2, 5: 3, 7: 4}  # re-seated
    assert r3[3].shares is None and r3[6].shares is None and r3[3].index is None  # left after dealing
    for secret in ("sig", "kd"):
        assert secret_of(r3, secret, 3) == secret_of(r1, secret, 3)


def test_new_shares_sign_under_the_unchanged_key(epochs):
    _, (r1, _, r3), _ = epochs
    msg = b"certificate after two reshares"
    partials = {r.index: threshold.sign(r.shares.sig, msg, DST_CERT) for r in r3.values() if r.shares}
    chosen = dict(random.sample(sorted(partials.items()), 3))
    assert threshold.verify(r1[1].sig.group_key, msg, threshold.combine(chosen), DST_CERT)


def test_old_and_new_shares_do_not_combine(epochs):
    _, (r1, r2, _), _ = epochs
    key = r1[1].sig.group_key
    mixed = {1: r1[1].shares.sig, 2: r1[2].shares.sig, 3: r2[3].shares.sig, 4: r2[4].shares.sig}
    assert G2.generator() * interpolate_at(mixed) != key
    pure = {i: r2[i].shares.sig for i in (1, 2, 3, 4)}
    assert G2.generator() * interpolate_at(pure) == key
    msg = b"mixing epochs"
    partials = {i: threshold.sign(share, msg, DST_CERT) for i, share in mixed.items()}
    assert not threshold.verify(key, msg, threshold.combine(partials), DST_CERT)


# --------------------------------------------------------------------------------------------------
# misbehaviour and failures


@pytest.fixture(scope="module")
def first_epoch():
    ids = dict(enumerate(generate_identities(6), start=1))
    c1 = committee_of([ids[k] for k in range(1, 6)], 3)
    s1, _ = run(DkgConfig(NETWORK, 1, c1), {k: ids[k] for k in range(1, 6)})
    return ids, {k: s.result for k, s in s1.items()}


class WrongConstant(DkgSession):
    """A reshare dealer that deals a fresh secret instead of its old share."""

    def _end_announce(self):
        self._set_phase(Phase.DEAL)
        self._old_shares = KeyShares(random_scalar(), random_scalar())
        # its own state would refuse it, so it only broadcasts it
        return [Message.sign(self._identity.signing_key, network=self.config.network, epoch=self.config.epoch,
                             session_id=self._session_id, kind=MessageKind.DEAL, sender=self.dealer_index,
                             body=self._make_deal())]


def test_dealer_not_committing_to_its_old_share_is_refused(first_epoch):
    ids, r1 = first_epoch
    c2 = committee_of([ids[k] for k in range(1, 6)], 3)
    cfg = DkgConfig(NETWORK, 2, c2, previous=r1[1].as_previous_epoch())
    sessions, net = run(cfg, {k: ids[k] for k in range(1, 6)}, r1, classes={2: WrongConstant})
    refused = {(r.sender, r.reason) for r in net.rejections}
    assert refused == {(2, RejectReason.WRONG_SHARE_KEY)}
    honest = {k: s.result for k, s in sessions.items() if k != 2}
    after = check_epoch(honest, 3)
    assert 2 not in after.qualified and after.used == (1, 3, 4)
    assert after.sig.group_key == r1[1].sig.group_key


def test_reshare_with_too_few_old_dealers_fails(first_epoch):
    ids, r1 = first_epoch
    c2 = committee_of([ids[k] for k in (1, 2, 6)], 2)
    cfg = DkgConfig(NETWORK, 2, c2, previous=r1[1].as_previous_epoch())
    present = {k: ids[k] for k in (1, 2, 6)}  # old members 3, 4, 5 are gone: 2 dealers < t_old = 3
    sessions, _ = run(cfg, present, r1)
    for s in sessions.values():
        with pytest.raises(DkgFailed) as info:
            s.result
        assert info.value.reason is FailReason.TOO_FEW_QUALIFIED
        assert "2 qualified dealers, need 3" in info.value.detail


def test_configuration_errors(first_epoch):
    ids, r1 = first_epoch
    prev = r1[1].as_previous_epoch()
    cfg = DkgConfig(NETWORK, 2, committee_of([ids[k] for k in range(1, 6)], 3), previous=prev)
    with pytest.raises(DkgConfigError, match="needs its old key shares"):
        DkgSession(cfg, ids[1])
    with pytest.raises(DkgConfigError, match="does not match its public share key"):
        DkgSession(cfg, ids[1], r1[2].shares)
    with pytest.raises(DkgConfigError, match="not a member"):
        DkgSession(cfg, ids[6])
    fresh = DkgConfig(NETWORK, 2, committee_of([ids[k] for k in range(1, 6)], 3))
    with pytest.raises(DkgConfigError, match="only used by a reshare dealer"):
        DkgSession(fresh, ids[1], r1[1].shares)
    members = tuple(ids[k].member(k) for k in range(1, 5))
    with pytest.raises(DkgConfigError, match="threshold 2 is outside"):
        Committee(members, 2)
    with pytest.raises(DkgConfigError, match="threshold 5 is outside"):
        Committee(members, 5)
    with pytest.raises(DkgConfigError, match="distinct and ascending"):
        Committee((members[1], members[0], *members[2:]), 3)
    with pytest.raises(DkgConfigError, match="share an identity key"):
        Committee((*members[:3], Member(9, members[0].signing_key, ids[5].box_public)), 3)
    with pytest.raises(DkgConfigError, match="network id"):
        DkgConfig(b"", 1, Committee(members, 3))
