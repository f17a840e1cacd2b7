"""DKG state machine, in process over LocalBroadcast: honest runs and every misbehaviour the brief names.

Misbehaving dealers are real sessions with one overridden dealing hook (they sign with their real keys);
honest members never share state: each decodes and checks every message itself. Results are checked
against py_ecc (an independent BLS12-381 implementation) and against derot.crypto.threshold.
"""

import random

import pytest
from py_ecc.bls.point_compression import compress_G2, modular_squareroot_in_FQ2
from py_ecc.optimized_bls12_381 import FQ2, b2, is_inf, multiply, normalize
from py_ecc.optimized_bls12_381 import G2 as ECC_G2

from derot.constants import DST_CERT
from derot.crypto import threshold
from derot.crypto.hazmat import batch
from derot.crypto.bls import G2, R
from derot.crypto.bls import G1
from derot.crypto.dkg import (
    DkgConfig,
    DkgFailed,
    DkgSession,
    FailReason,
    MessageKind,
    Phase,
    RejectReason,
)
from derot.crypto.dkg import proofs
from derot.crypto.dkg.local import LocalBroadcast, committee_of, generate_identities, make_sessions
from derot.crypto.dkg.messages import Complaint, DealBody, Message, ResponseBody
from derot.crypto.hazmat.poly import interpolate_at

NETWORK = (31337).to_bytes(32, "big") + bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")


def setup(n, t, *, classes=None, absent=(), epoch=1):
    identities = dict(enumerate(generate_identities(n), start=1))
    config = DkgConfig(NETWORK, epoch, committee_of(list(identities.values()), t))
    present = {i: idt for i, idt in identities.items() if i not in absent}
    return config, make_sessions(config, present, classes=classes)


def py_ecc_public_key(x: int) -> G2:
    z1, z2 = compress_G2(multiply(ECC_G2, x))
    return G2.from_bytes(z1.to_bytes(48, "big") + z2.to_bytes(48, "big"))


def check_results(sessions, t, *, oracle=True):
    """Every member agrees; shares match share keys; any t shares give the group secret, fewer do not."""
    results = {name: s.result for name, s in sessions.items()}
    first = next(iter(results.values()))
    for r in results.values():
        assert (r.transcript_hash, r.qualified, r.used, r.sig, r.kd) == (
            first.transcript_hash, first.qualified, first.used, first.sig, first.kd)
        assert r.shares is not None
        assert G2.generator() * r.shares.sig == r.sig.share_keys[r.index]
        assert G2.generator() * r.shares.kd == r.kd.share_keys[r.index]
    assert first.sig.group_key != first.kd.group_key
    holders = sorted(results.values(), key=lambda r: r.index)
    for secret in ("sig", "kd"):
        key = getattr(first, secret).group_key
        subsets = [random.sample(holders, t) for _ in range(2)]
        values = {interpolate_at({r.index: getattr(r.shares, secret) for r in subset}) for subset in subsets}
        assert len(values) == 1
        x = values.pop()
        assert G2.generator() * x == key
        if oracle:
            assert py_ecc_public_key(x) == key
        if t > 1:
            fewer = {r.index: getattr(r.shares, secret) for r in holders[: t - 1]}
            assert G2.generator() * interpolate_at(fewer) != key
    return first


# --------------------------------------------------------------------------------------------------
# honest runs


@pytest.mark.parametrize("n, t", [(4, 3), (7, 5), (16, 11)])
def test_honest_dkg_completes_without_waiting(n, t):
    config, sessions = setup(n, t)
    net = LocalBroadcast(sessions)
    net.run()
    assert net.deadlines == 0 and net.rejections == []
    result = check_results(sessions, t, oracle=n <= 7)
    assert result.qualified == result.used == tuple(range(1, n + 1))
    assert result.excluded == {}
    assert all(s.phase is Phase.FINISHED for s in sessions.values())
    # the key works as a threshold signing key (derot.crypto.threshold, certificate DST)
    msg = b"certificate bytes"
    signers = random.sample(range(1, n + 1), t)
    partials = {i: threshold.sign(sessions[i].result.shares.sig, msg, DST_CERT) for i in signers}
    assert threshold.verify(result.sig.group_key, msg, threshold.combine(partials), DST_CERT)


def test_two_runs_give_independent_keys():
    _, a = setup(4, 3)
    _, b = setup(4, 3)
    LocalBroadcast(a).run()
    LocalBroadcast(b).run()
    assert a[1].result.sig.group_key != b[1].result.sig.group_key


# --------------------------------------------------------------------------------------------------
# complaints: self-verifying, never a revealed share


class WrongShareToFive(DkgSession):
    """Puts a wrong sig share in member 5's box."""

    def _deal_share(self, recipient, polynomials):
        sig, kd = super()._deal_share(recipient, polynomials)
        return ((sig + 1) % R, kd) if recipient == 5 else (sig, kd)


class UndecodableShareToFive(DkgSession):
    """Puts a value ≥ r (not a scalar) in member 5's box."""

    def _deal_share(self, recipient, polynomials):
        sig, kd = super()._deal_share(recipient, polynomials)
        return (sig, R + 7) if recipient == 5 else (sig, kd)


def capture(kind):
    seen = []

    def intercept(sender, recipient, message, data):
        if message.kind is kind and (sender, message.body_hash) not in {(s, m.body_hash) for s, m in seen}:
            seen.append((sender, message))
        return data

    return seen, intercept


def complaints_of(responses, n):
    return {s: ResponseBody.decode(m.body, dealers=frozenset(range(1, n + 1))).complaints for s, m in responses}


@pytest.mark.parametrize("cls", [WrongShareToFive, UndecodableShareToFive])
def test_bad_share_is_proven_and_disqualifies(cls):
    config, sessions = setup(7, 5, classes={3: cls})
    responses, intercept = capture(MessageKind.RESPONSE)
    net = LocalBroadcast(sessions, intercept=intercept)
    net.run()
    complaints = complaints_of(responses, 7)
    assert [c.dealer for c in complaints[5]] == [3]
    assert all(not complaints[s] for s in complaints if s != 5)
    assert net.deadlines == 0  # a proven complaint needs no answer: nobody waited
    honest = {i: s for i, s in sessions.items() if i != 3}
    result = check_results(honest, 5)
    assert 3 not in result.qualified
    assert result.excluded[3] == "proven complaint by member 5: its box holds no valid share"


class FalseComplainer(DkgSession):
    """Member 6 complains about honest dealer 2: with a made-up key, or with its real key."""

    honest_key = False

    def _complaints(self):
        deal = next(iter(self._deals[2].values()))
        if self.honest_key:
            return [self._complaint(2, deal)]
        fake = G1.generator() * 12345
        proof = proofs.prove_dleq(12345, G1.generator() * self._epoch_secret, deal.deal_key, fake,
                                  self._session_id, 2, 6)
        return [Complaint(2, deal.message.body_hash, fake.to_bytes(), proof)]


@pytest.mark.parametrize("honest_key", [False, True])
def test_a_false_complaint_frames_nobody(honest_key):
    cls = type("C", (FalseComplainer,), {"honest_key": honest_key})
    config, sessions = setup(7, 5, classes={6: cls})
    net = LocalBroadcast(sessions)
    net.run()
    result = check_results(sessions, 5)
    assert result.qualified == tuple(range(1, 8)) and result.excluded == {}


class KeyThief(DkgSession):
    """Dealer 4 waits for honest dealer 1's bundle, then deals with 1's deal key and proof (so that a
    complaint against 4 would disclose the key of 1's box)."""

    def _end_announce(self):
        self._set_phase(Phase.DEAL)
        return []

    def receive(self, data):
        out = super().receive(data)
        if 1 in self._deals and not getattr(self, "dealt", False):
            self.dealt = True
            body = DealBody.decode(self._make_deal(), threshold=self._t, recipients=self.config.recipients.n)
            stolen = next(iter(self._deals[1].values())).body
            body = DealBody(body.commitments, stolen.deal_key, stolen.deal_key_proof, body.boxes).encode()
            out.append(Message.sign(self._identity.signing_key, network=self.config.network, epoch=self.config.epoch,
                                    session_id=self._session_id, kind=MessageKind.DEAL, sender=4, body=body))
        return out


def test_a_copied_deal_key_is_refused():
    config, sessions = setup(5, 3, classes={4: KeyThief})
    net = LocalBroadcast(sessions)
    net.run()
    refused = {(r.recipient, r.reason) for r in net.rejections if r.sender == 4}
    assert {(i, RejectReason.BAD_PROOF) for i in (1, 2, 3, 5)} == refused
    assert sessions[1].result.excluded == {4: "silent: no deal bundle"}


# --------------------------------------------------------------------------------------------------
# equivocation


class Equivocator(DkgSession):
    """Signs two different deal bundles; keeps the first for itself."""

    def _end_announce(self):
        self._set_phase(Phase.DEAL)
        self.bundles = (self._emit(MessageKind.DEAL, self.dealer_index, self._make_deal()),)
        second = Message.sign(self._identity.signing_key, network=self.config.network, epoch=self.config.epoch,
                              session_id=self._session_id, kind=MessageKind.DEAL, sender=self.dealer_index,
                              body=self._make_deal())
        self.bundles += (second,)
        return list(self.bundles)


def split_equivocation(sessions, dealer, group_a):
    def split(sender, recipient, message, data):
        if sender == dealer and message.kind is MessageKind.DEAL:
            first = message.body_hash == sessions[dealer].bundles[0].body_hash
            return data if (recipient in group_a) == first else None
        return data

    return split


@pytest.mark.parametrize("relay, sync", [(True, False), (False, True)])
def test_split_equivocation_reaches_everyone(relay, sync):
    """Bundle A reaches members 1-3, bundle B members 5-7: relay or digest sync gives everyone both."""
    config, sessions = setup(7, 5, classes={4: Equivocator})
    LocalBroadcast(sessions, intercept=split_equivocation(sessions, 4, {1, 2, 3}), relay=relay, sync=sync).run()
    honest = {i: s for i, s in sessions.items() if i != 4}
    result = check_results(honest, 5)
    assert result.qualified == (1, 2, 3, 5, 6, 7)
    assert result.excluded[4] == "equivocation: signed two different deal bundles"


def test_equivocating_dealer_seen_directly():
    config, sessions = setup(7, 5, classes={4: Equivocator})
    LocalBroadcast(sessions).run()
    honest = {i: s for i, s in sessions.items() if i != 4}
    result = check_results(honest, 5)
    assert 4 not in result.qualified
    assert result.excluded[4] == "equivocation: signed two different deal bundles"


# --------------------------------------------------------------------------------------------------
# missing keys and boxes


def test_a_member_without_a_key_gets_no_box_and_blames_nobody():
    """Member 7 never announces: every dealer leaves its box empty; nobody is excluded; 7 has no share."""
    config, sessions = setup(7, 5)

    def drop_seven(sender, recipient, message, data):
        return None if sender == 7 and message.kind is MessageKind.ANNOUNCE else data

    LocalBroadcast(sessions, intercept=drop_seven).run()
    others = {i: s for i, s in sessions.items() if i != 7}
    result = check_results(others, 5)
    assert result.excluded == {} and result.holders == (1, 2, 3, 4, 5, 6)
    assert sessions[7].result.shares is None and sessions[7].result.transcript_hash == result.transcript_hash


class Withholder(DkgSession):
    """Dealer 2 leaves member 5's box empty although it holds 5's key."""

    def _recipient_announcement(self, recipient):
        return None if recipient == 5 else super()._recipient_announcement(recipient)


def test_a_dealer_withholding_a_box_is_excluded():
    config, sessions = setup(7, 5, classes={2: Withholder})
    LocalBroadcast(sessions).run()
    result = check_results(sessions, 5)  # 5 still gets every used dealer's box: it keeps its share
    assert result.excluded == {2: "withheld member 5's box, which 6 dealers sealed to its key"}


# --------------------------------------------------------------------------------------------------
# silence and failure


def test_silent_dealer_excluded_at_the_deadline():
    config, sessions = setup(7, 5, absent={6})
    net = LocalBroadcast(sessions)
    with pytest.raises(RuntimeError, match="after 0 deadlines"):
        net.run(max_deadlines=0)
    assert all(s.phase is Phase.ANNOUNCE for s in sessions.values())  # nobody moves on without the deadline
    net.run(start=False)
    assert net.deadlines == 3  # announce (no key from 6), deal (no bundle from 6), response (none from 6)
    result = check_results(sessions, 5)
    assert result.qualified == (1, 2, 3, 4, 5, 7)
    assert result.excluded == {6: "silent: no deal bundle"}
    assert set(result.sig.share_keys) == set(range(1, 8))  # 6 keeps its seat and its share key
    assert result.holders == (1, 2, 3, 4, 5, 7)  # but no dealer sealed it a box: it had no key


def test_too_few_qualified_fails_with_a_clear_error():
    config, sessions = setup(4, 3, absent={2, 4})
    LocalBroadcast(sessions).run()
    for s in sessions.values():
        assert s.done and s.failure is not None
        with pytest.raises(DkgFailed) as info:
            s.result
        assert info.value.reason is FailReason.TOO_FEW_QUALIFIED
        assert "2 qualified dealers, need 3" in str(info.value)
        assert "2: silent" in info.value.detail and "4: silent" in info.value.detail


def test_result_before_the_end_is_an_error():
    _, sessions = setup(4, 3)
    with pytest.raises(RuntimeError, match="not finished"):
        sessions[1].result


# --------------------------------------------------------------------------------------------------
# torsion components in commitments (see derot.crypto.hazmat.batch)


@pytest.fixture(scope="module")
def torsion_point():
    rng = random.Random(381)
    p = 0x1A0111EA397FE69A4B1BA7B6434BACD764774B84F38512BF6730D2A0F6B0F6241EABFFFEB153FFFFB9FEFFFFFFFFAAAB
    while True:
        x = FQ2([rng.randrange(p), rng.randrange(p)])
        y = modular_squareroot_in_FQ2(x**3 + b2)
        if y is not None:
            break
    t = multiply((x, y, FQ2.one()), R)  # in the h2-torsion, not O
    assert not is_inf(t)
    tx, ty = normalize(t)
    return batch.decode_point(b"".join(int(c).to_bytes(48, "big") for c in (*tx.coeffs, *ty.coeffs)))


def test_dealer_with_torsion_in_its_commitments(torsion_point):
    """Right shares, commitments off the subgroup: nobody complains, the keys are the projections."""

    class TorsionDealer(DkgSession):
        def _commitments(self, polynomial):
            return [batch.encode_point(batch.decode_point(c) + torsion_point) if k != 1 else c
                    for k, c in enumerate(super()._commitments(polynomial))]

    config, sessions = setup(5, 3, classes={2: TorsionDealer})
    responses, intercept = capture(MessageKind.RESPONSE)
    LocalBroadcast(sessions, intercept=intercept).run()
    deal = next(iter(sessions[2]._deals[2].values())).body
    constant_term = deal.commitments[0][0]
    assert not batch.decode_point(constant_term).is_in_subgroup()  # the torsion really is on the wire
    assert all(not ResponseBody.decode(m.body, dealers=frozenset(range(1, 6))).complaints for _, m in responses)
    result = check_results(sessions, 3)
    assert 2 in result.qualified


# --------------------------------------------------------------------------------------------------
# delivery order


@pytest.mark.parametrize("seed", range(4))
def test_any_delivery_order_gives_the_same_result(seed):
    """Random delivery order: responses may arrive before the deals they are about."""
    config, sessions = setup(6, 4, classes={2: WrongShareToFive})
    net = LocalBroadcast(sessions, shuffle=random.Random(seed))
    net.run()
    assert net.deadlines == 0 and net.rejections == []
    result = check_results({i: s for i, s in sessions.items() if i != 2}, 4, oracle=False)
    assert result.qualified == (1, 3, 4, 5, 6)


def test_responses_before_the_last_deal_are_kept():
    config, sessions = setup(4, 3)
    announces = {i: s.start()[0] for i, s in sessions.items()}
    deals = {}
    for i, s in sessions.items():
        for j, a in announces.items():
            if j != i:
                deals.update({m.sender: m for m in s.receive(a.encode()) if m.kind is MessageKind.DEAL})
    responses = []
    for i in (2, 3, 4):  # everyone but member 1 gets every deal and responds
        for j in (1, 2, 3, 4):
            if j != i:
                responses += sessions[i].receive(deals[j].encode())
    target = sessions[1]
    for j in (2, 3):
        target.receive(deals[j].encode())
    for response in responses:  # arrive while member 1 still waits for dealer 4
        assert target.receive(response.encode()) == []
    assert target.phase is Phase.DEAL and target.progress.responses == 3
    (own_response,) = target.receive(deals[4].encode())  # deal phase over → response → all held → finish
    assert own_response.kind is MessageKind.RESPONSE
    assert target.phase is Phase.FINISHED
    for i in (2, 3, 4):
        for response in [*responses, own_response]:
            if response.sender != i:
                sessions[i].receive(response.encode())
    check_results(sessions, 3, oracle=False)


# --------------------------------------------------------------------------------------------------
# the phase table


def test_phases_change_only_along_the_table():
    from derot.crypto.dkg import TRANSITIONS, PhaseTransitionError

    order = [Phase.ANNOUNCE, Phase.DEAL, Phase.RESPONSE, Phase.FINISHED]
    assert {p: set(TRANSITIONS[p]) for p in order} == {
        Phase.ANNOUNCE: {Phase.DEAL}, Phase.DEAL: {Phase.RESPONSE}, Phase.RESPONSE: {Phase.FINISHED},
        Phase.FINISHED: set()}
    _, sessions = setup(4, 3)
    session = sessions[1]
    for wrong in (Phase.RESPONSE, Phase.FINISHED, Phase.ANNOUNCE):
        with pytest.raises(PhaseTransitionError, match="announce ->"):
            session._set_phase(wrong)
    assert session.phase is Phase.ANNOUNCE
    LocalBroadcast(sessions).run()
    with pytest.raises(PhaseTransitionError, match="finished -> deal"):
        session._set_phase(Phase.DEAL)
    assert session.on_deadline() == [] and session.phase is Phase.FINISHED
