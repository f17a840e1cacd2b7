"""DKG state machine, in process over LocalBroadcast: honest runs and every misbehaviour the brief names.

Misbehaving dealers are real sessions with one overridden dealing hook (they sign with their real keys);
honest members never share state: each decodes and checks every message itself. Results are checked
against py_ecc (an independent BLS12-381 implementation) and against derot.crypto.threshold.
"""

import random
import secrets

import pytest
from py_ecc.bls.point_compression import compress_G2, modular_squareroot_in_FQ2
from py_ecc.optimized_bls12_381 import FQ2, b2, is_inf, multiply, normalize
from py_ecc.optimized_bls12_381 import G2 as ECC_G2

from derot.constants import DST_CERT
from derot.crypto import threshold
from derot.crypto.hazmat import batch
from derot.crypto.bls import G2, R
from derot.crypto.dkg import (
    ComplaintReason,
    DkgConfig,
    DkgFailed,
    DkgSession,
    FailReason,
    MessageKind,
    Phase,
)
from derot.crypto.dkg.local import LocalBroadcast, committee_of, generate_identities, make_sessions
from derot.crypto.dkg.messages import DealBody, ResponseBody
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
# complaints and justifications


class WrongShareToFive(DkgSession):
    """Puts a wrong sig share in member 5's box; reveals the right one when 5 complains."""

    def _deal_share(self, recipient):
        sig, kd = super()._deal_share(recipient)
        return ((sig + 1) % R, kd) if recipient == 5 else (sig, kd)


class WrongShareAndWrongReveal(WrongShareToFive):
    """Stands by its wrong share in the justification."""

    def _reveal_share(self, recipient):
        return self._deal_share(recipient)


class UndecodableShareToFive(DkgSession):
    """Puts a value ≥ r (not a scalar) in member 5's box."""

    def _deal_share(self, recipient):
        sig, kd = super()._deal_share(recipient)
        return (sig, R + 7) if recipient == 5 else (sig, kd)


def capture(kind):
    seen = []

    def intercept(sender, recipient, message, data):
        if message.kind is kind and (sender, message.body_hash) not in {(s, m.body_hash) for s, m in seen}:
            seen.append((sender, message))
        return data

    return seen, intercept


@pytest.mark.parametrize(
    "cls, reason",
    [(WrongShareToFive, ComplaintReason.INVALID_SHARE), (UndecodableShareToFive, ComplaintReason.DECRYPTION_FAILED)],
)
def test_bad_share_complained_then_justified(cls, reason):
    config, sessions = setup(7, 5, classes={3: cls})
    responses, intercept = capture(MessageKind.RESPONSE)
    net = LocalBroadcast(sessions, intercept=intercept)
    net.run()
    complaints = {s: ResponseBody.decode(m.body, dealers=frozenset(range(1, 8))).complaints for s, m in responses}
    assert [(c.dealer, c.reason) for c in complaints[5]] == [(3, reason)]
    assert all(not complaints[s] for s in complaints if s != 5)
    assert net.deadlines == 0  # the justification arrived, nobody waited
    result = check_results(sessions, 5)
    assert 3 in result.qualified
    assert sessions[5].progress.justifications_expected == 1


def test_wrong_justification_disqualifies():
    config, sessions = setup(7, 5, classes={3: WrongShareAndWrongReveal})
    LocalBroadcast(sessions).run()
    honest = {i: s for i, s in sessions.items() if i != 3}
    result = check_results(honest, 5)
    assert 3 not in result.qualified
    assert result.excluded[3] == "complaint by member 5 not answered with a valid share"


def test_missing_justification_disqualifies_at_the_deadline():
    config, sessions = setup(7, 5, classes={3: WrongShareToFive})

    def drop_justifications(sender, recipient, message, data):
        return None if message.kind is MessageKind.JUSTIFICATION else data

    net = LocalBroadcast(sessions, intercept=drop_justifications)
    net.run()
    assert net.deadlines == 1
    honest = {i: s for i, s in sessions.items() if i != 3}
    result = check_results(honest, 5)
    assert result.qualified == (1, 2, 4, 5, 6, 7)
    assert "member 5" in result.excluded[3]


# --------------------------------------------------------------------------------------------------
# equivocation


class Equivocator(DkgSession):
    """Signs two different deal bundles; keeps the first for itself."""

    def start(self):
        self._started = True
        self.bundles = (self._make_deal(), self._make_deal())
        self._ingest(self.bundles[0])
        return list(self.bundles)


def test_equivocating_dealer_is_exposed_by_echoes():
    """Bundle A reaches members 1-3, bundle B members 5-7: nobody holds both, the echoes expose it."""
    config, sessions = setup(7, 5, classes={4: Equivocator})
    group_a = {1, 2, 3}

    def split(sender, recipient, message, data):
        if sender == 4 and message.kind is MessageKind.DEAL:
            first = message is sessions[4].bundles[0]
            return data if (recipient in group_a) == first else None
        return data

    LocalBroadcast(sessions, intercept=split).run()
    honest = {i: s for i, s in sessions.items() if i != 4}
    result = check_results(honest, 5)
    assert result.qualified == (1, 2, 3, 5, 6, 7)
    assert result.excluded[4].startswith("equivocation: a second signed bundle echoed by member")


def test_equivocating_dealer_seen_directly():
    config, sessions = setup(7, 5, classes={4: Equivocator})
    LocalBroadcast(sessions).run()
    honest = {i: s for i, s in sessions.items() if i != 4}
    result = check_results(honest, 5)
    assert 4 not in result.qualified
    assert result.excluded[4] == "equivocation: signed two different deal bundles"


class LyingEchoer(DkgSession):
    """A responder that echoes a made-up hash for dealer 2 (it cannot forge 2's signature)."""

    def _sign(self, kind, sender, body):
        if kind is MessageKind.RESPONSE:
            from derot.crypto.dkg.messages import Echo
            parsed = ResponseBody.decode(body, dealers=frozenset(range(1, 8)))
            echoes = tuple(Echo(e.dealer, secrets.token_bytes(32), e.dealer_signature) if e.dealer == 2 else e
                           for e in parsed.echoes)
            body = ResponseBody(tuple(sorted(echoes, key=lambda e: (e.dealer, e.bundle_hash))),
                                parsed.complaints).encode()
        return super()._sign(kind, sender, body)


def test_a_lying_echo_does_not_frame_an_honest_dealer():
    config, sessions = setup(7, 5, classes={6: LyingEchoer})
    net = LocalBroadcast(sessions)
    net.run()
    result = check_results(sessions, 5)
    assert result.qualified == tuple(range(1, 8))  # 6's echo is a complaint about 2, which 2 answered
    assert net.deadlines == 0 and sessions[1].progress.justifications_expected == 1


# --------------------------------------------------------------------------------------------------
# silence and failure


def test_silent_dealer_excluded_at_the_deadline():
    config, sessions = setup(7, 5, absent={6})
    net = LocalBroadcast(sessions)
    with pytest.raises(RuntimeError, match="after 0 deadlines"):
        net.run(max_deadlines=0)
    assert all(s.phase is Phase.DEAL for s in sessions.values())  # nobody moves on without the deadline
    net.run(start=False)
    assert net.deadlines == 2  # deal phase (no bundle from 6), response phase (no response from 6)
    result = check_results(sessions, 5)
    assert result.qualified == (1, 2, 3, 4, 5, 7)
    assert result.excluded == {6: "silent: no deal bundle"}
    assert set(result.sig.share_keys) == set(range(1, 8))  # 6 keeps its seat and its share key


def test_too_few_qualified_fails_with_a_clear_error():
    config, sessions = setup(4, 3, absent={2, 4})
    LocalBroadcast(sessions).run()
    for s in sessions.values():
        assert s.done and s.phase is Phase.FAILED
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
    deal = next(iter(sessions[2]._deals[2].values())).message
    constant_term = DealBody.decode(deal.body, threshold=3, recipients=5).commitments[0][0]
    assert not batch.decode_point(constant_term).is_in_subgroup()  # the torsion really is on the wire
    assert all(not ResponseBody.decode(m.body, dealers=frozenset(range(1, 6))).complaints for _, m in responses)
    result = check_results(sessions, 3)
    assert 2 in result.qualified


# --------------------------------------------------------------------------------------------------
# delivery order


@pytest.mark.parametrize("seed", range(4))
def test_any_delivery_order_gives_the_same_result(seed):
    """Random delivery order: responses and justifications may arrive before the deals they are about."""
    config, sessions = setup(6, 4, classes={2: WrongShareToFive})
    net = LocalBroadcast(sessions, shuffle=random.Random(seed))
    net.run()
    assert net.deadlines == 0 and net.rejections == []
    result = check_results(sessions, 4, oracle=False)
    assert result.qualified == tuple(range(1, 7))


def test_responses_before_the_last_deal_are_kept():
    config, sessions = setup(4, 3)
    deals = {i: s.start()[0] for i, s in sessions.items()}
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
