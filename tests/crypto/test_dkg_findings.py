"""The five findings of issue 12, each as the attack that broke Revision 1, against the real state machines.

1. A missed deal revealed an honest member's share (no echo = complaint = share in the clear).
2. One member split the honest views by sending a complaint to a subset only.
3. Deals were sealed to long-term identity keys (no forward secrecy).
4. Every distinct signed bundle was validated and stored (flooding).
5. One late member stalled the epoch (no exclusion, no retry).
Plus restart safety: a member restored from its snapshot resumes and never deals twice.
"""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from derot.crypto.bls import R
from derot.crypto.dkg import (
    DkgConfig,
    DkgMessageRejected,
    DkgSession,
    Identity,
    Message,
    MessageKind,
    Phase,
    RejectReason,
)
from derot.crypto.dkg.local import LocalBroadcast, committee_of, generate_identities, make_sessions
from derot.crypto.dkg.messages import ResponseBody

NETWORK = b"findings"


def setup(n, t, *, classes=None, epoch=1, identities=None):
    identities = identities or dict(enumerate(generate_identities(n), start=1))
    config = DkgConfig(NETWORK, epoch, committee_of(list(identities.values()), t))
    return identities, config, make_sessions(config, identities, classes=classes)


def agree(sessions):
    results = [s.result for s in sessions]
    assert len({(r.transcript_hash, r.qualified, r.sig, r.kd) for r in results}) == 1
    return results[0]


def all_complaints(messages, n):
    out = []
    for m in messages:
        if m.kind is MessageKind.RESPONSE:
            out += ResponseBody.decode(m.body, dealers=frozenset(range(1, n + 1))).complaints
    return out


# --------------------------------------------------------------------------------------------------
# 1. a missed deal reveals nothing


@pytest.mark.parametrize("sync", [True, False])
def test_missed_deals_reveal_no_share(sync, coalition):
    """Member 5 receives no deal directly. Revision 1: every dealer revealed f_i(5) in the clear; with
    t−1 corrupted members the secret followed. Now 5 fetches the bundles (digest sync) or ends without a
    share; nothing about its share is ever published."""
    identities, config, sessions = setup(7, 5)

    def no_deals_for_five(sender, recipient, message, data):
        return None if recipient == 5 and message.kind is MessageKind.DEAL else data

    net = LocalBroadcast(sessions, intercept=no_deals_for_five, sync=sync)
    net.run()
    sent = [m for _, m in net.sent]
    assert all_complaints(sent, 7) == []  # a missing bundle is never complained about
    view, breaks = coalition
    corrupted = {1, 2, 3, 4}  # t − 1 = 4 members' full state, plus every message
    points = view(config, sent, {k: sessions[k]._epoch_secret for k in corrupted})
    assert all(5 not in opened for opened in points.values())
    result = sessions[1].result
    assert breaks(result, config, points, corrupted, corrupted) == set()
    others = agree([s for k, s in sessions.items() if k != 5])
    if sync:
        assert sessions[5].result.transcript_hash == others.transcript_hash
        assert sessions[5].result.shares is not None


def test_reshare_newcomer_missing_the_deals_reveals_nothing(coalition):
    """Revision 1 published a new member's new share when it missed the deal phase of a reshare."""
    ids = dict(enumerate(generate_identities(6), start=1))
    _, c1, first = setup(5, 3, identities={k: ids[k] for k in range(1, 6)})
    LocalBroadcast(first).run()
    previous = first[1].result.as_previous_epoch()
    config = DkgConfig(NETWORK, 2, committee_of([ids[k] for k in range(1, 7)], 4), previous=previous)
    sessions = make_sessions(config, ids, old_shares={k: s.result.shares for k, s in first.items()})

    def no_deals_for_six(sender, recipient, message, data):
        return None if recipient == 6 and message.kind is MessageKind.DEAL else data

    net = LocalBroadcast(sessions, intercept=no_deals_for_six)
    net.run()
    sent = [m for _, m in net.sent]
    assert all_complaints(sent, 6) == []
    view, breaks = coalition
    corrupted = {1, 2}  # old and new members: t_old − 1 old shares, fewer than t' new ones
    points = view(config, sent, {k: sessions[k]._epoch_secret for k in corrupted})
    result = sessions[1].result
    assert result.sig.group_key == previous.sig.group_key
    assert breaks(result, config, points, corrupted, corrupted, old_known={1, 2}) == set()
    assert all(6 not in opened for opened in points.values())


# --------------------------------------------------------------------------------------------------
# 2. a selective complainer cannot split the honest views


class CheatsSix(DkgSession):
    """Dealer 3 gives its accomplice 6 a bad share, so 6 holds a genuinely valid complaint."""

    def _deal_share(self, recipient, polynomials):
        sig, kd = super()._deal_share(recipient, polynomials)
        return ((sig + 1) % R, kd) if recipient == 6 else (sig, kd)


def selective_response(sender, recipient, message, data):
    """6 sends its response (with the valid complaint) to members 1 and 2 only."""
    if sender == 6 and message.kind is MessageKind.RESPONSE and recipient not in (1, 2):
        return None
    return data


@pytest.mark.parametrize("relay, sync", [(True, False), (False, True), (True, True)])
def test_selective_complaint_reaches_every_honest_member(relay, sync):
    _, config, sessions = setup(7, 5, classes={3: CheatsSix})
    LocalBroadcast(sessions, intercept=selective_response, relay=relay, sync=sync).run()
    honest = [s for k, s in sessions.items() if k not in (3, 6)]
    result = agree(honest)
    assert 3 not in result.qualified


def test_without_dissemination_the_views_split():
    """The attack is real: with neither relay nor sync, members 1 and 2 exclude dealer 3, the rest do not."""
    _, config, sessions = setup(7, 5, classes={3: CheatsSix})
    LocalBroadcast(sessions, intercept=selective_response).run()
    assert 3 not in sessions[1].result.qualified and 3 in sessions[4].result.qualified
    assert sessions[1].result.transcript_hash != sessions[4].result.transcript_hash


# --------------------------------------------------------------------------------------------------
# 3. forward secrecy: per-run keys, never the identity keys


def test_identity_box_keys_play_no_part():
    """Revision 1 sealed deals to the registered X25519 identity key; now a node whose X25519 key differs
    from the registered one runs the DKG all the same, because only per-run keys are used."""
    ids = dict(enumerate(generate_identities(4), start=1))
    config = DkgConfig(NETWORK, 1, committee_of(list(ids.values()), 3))
    swapped = {k: Identity(i.signing_key, X25519PrivateKey.generate()) for k, i in ids.items()}
    sessions = make_sessions(config, swapped)
    LocalBroadcast(sessions).run()
    agree(sessions.values())
    assert all(s.result.shares is not None for s in sessions.values())


def test_each_run_uses_fresh_keys_and_erases_them():
    ids, config, sessions = setup(4, 3)
    net = LocalBroadcast(sessions)
    net.run()
    _, config2, again = setup(4, 3, identities=ids, epoch=2)
    net2 = LocalBroadcast(again)
    net2.run()
    keys = lambda n: {m.body for _, m in n.sent if m.kind is MessageKind.ANNOUNCE}  # noqa: E731
    assert len(keys(net)) == len(keys(net2)) == 4 and not keys(net) & keys(net2)
    session = sessions[2]
    shares = session.result.shares
    session.erase()
    snapshot = session.snapshot()
    assert snapshot[2:34] == bytes(32)  # no epoch secret left in the persisted state
    assert all(d.my_secret is None for held in session._deals.values() for d in held.values())
    assert session.result.shares == shares  # the result stays; only the means to open more boxes is gone


# --------------------------------------------------------------------------------------------------
# 4. bounded bundles


def test_a_flood_of_bundles_costs_two_validations(monkeypatch):
    """Revision 1 validated, stored and echoed every distinct signed bundle. Now a member keeps two (the
    second proves equivocation) and refuses the rest before any signature check or decoding."""
    ids, config, sessions = setup(4, 3)
    net = LocalBroadcast(sessions)
    net.run()
    announces = [m for _, m in net.sent if m.kind is MessageKind.ANNOUNCE]
    real = next(m for _, m in net.sent if m.kind is MessageKind.DEAL and m.sender == 2)
    again = DkgSession(config, ids[2])  # dealer 2 signs a second, different, valid bundle
    for m in announces:
        if m.sender != 2:
            again.receive(m.encode())
    second = next(m for m in again.start() if m.kind is MessageKind.DEAL)
    target = DkgSession(config, ids[1])
    for m in announces:
        target.receive(m.encode())
    target.receive(real.encode())
    target.receive(second.encode())
    flood = [Message.sign(ids[2].signing_key, network=NETWORK, epoch=1, session_id=config.session_id,
                          kind=MessageKind.DEAL, sender=2, body=b"junk %d" % k) for k in range(1000)]
    verified = []
    original = Message.verify
    monkeypatch.setattr(Message, "verify", lambda self, key: verified.append(self.sender) or original(self, key))
    reasons = set()
    for m in flood:
        with pytest.raises(DkgMessageRejected) as info:
            target.receive(m.encode())
        reasons.add(info.value.reason)
    assert reasons == {RejectReason.OVER_BOUND} and verified == []
    assert len(target._deals[2]) == 2 and len(target.inventory()) == 7  # 4 keys, 2 of 2's bundles, its own
    assert target.wanted([m.digest for m in flood[:5]]) == []  # and digest sync never asks for them


# --------------------------------------------------------------------------------------------------
# 5. a late member does not stall the run


def test_an_absent_member_is_excluded_with_a_reason():
    ids, config, sessions = setup(7, 5)
    del sessions[6]
    net = LocalBroadcast(sessions)
    net.run()
    assert net.deadlines == 3  # one per phase, then it is over
    result = agree(sessions.values())
    assert result.excluded == {6: "silent: no deal bundle"}
    assert 6 not in result.holders and all(s.result.shares is not None for s in sessions.values())


def test_a_late_dealer_is_excluded_and_the_run_goes_on():
    """Member 6's bundle reaches the others only after they responded: nobody could have checked it in
    time, so it is excluded as late (Revision 1 waited for it or let it in unchecked)."""
    ids, config, sessions = setup(7, 5)
    held_back = []

    def hold_six(sender, recipient, message, data):
        if sender == 6 and message.kind is MessageKind.DEAL:
            held_back.append((recipient, data))
            return None
        return data

    net = LocalBroadcast(sessions, intercept=hold_six)
    net.run()
    for recipient, data in held_back:  # arrives after everyone finished
        sessions[recipient].receive(data)
    result = agree(sessions.values())
    assert result.excluded[6].startswith("late: only 1 responses list its bundle")
    assert all(s.result.shares is not None for s in sessions.values())


def test_a_retry_is_a_new_session():
    ids, config, sessions = setup(4, 3)
    retry = dataclasses.replace(config, attempt=1)
    assert retry.session_id != config.session_id
    old = sessions[2].start()[0]
    fresh = DkgSession(retry, ids[1])
    with pytest.raises(DkgMessageRejected) as info:
        fresh.receive(old.encode())
    assert info.value.reason is RejectReason.WRONG_SESSION


# --------------------------------------------------------------------------------------------------
# restart safety


@pytest.mark.parametrize("crash_after", [Phase.ANNOUNCE, Phase.DEAL, Phase.RESPONSE])
def test_a_restored_member_resumes_and_never_deals_twice(crash_after):
    ids, config, sessions = setup(5, 3)
    net = LocalBroadcast(sessions)
    for name, s in sessions.items():
        net.inject(name, s.start())

    def crash_when_ready():
        s = sessions[3]
        if s.phase is crash_after or list(Phase).index(s.phase) > list(Phase).index(crash_after):
            sessions[3] = DkgSession.restore(config, ids[3], None, s.snapshot())
            net.sessions[3] = sessions[3]
            return True
        return False

    crashed = crash_when_ready()
    while net._queue:
        net._deliver(*net._queue.popleft())
        crashed = crashed or crash_when_ready()
    net.run(start=False)
    bundles = {m.body_hash for sender, m in net.sent if sender == 3 and m.kind is MessageKind.DEAL}
    assert len(bundles) == 1
    result = agree(sessions.values())
    assert 3 in result.qualified and sessions[3].result.shares is not None
    with pytest.raises(RuntimeError, match="already called"):
        sessions[3].start()
