"""A randomized adversarial scheduler over the real DKG state machines: 500 seeded runs.

Each run draws n in 4..10 (mostly small), t, up to f = n − t byzantine members with behaviours
(equivocate, deal bad shares, complain falsely, withhold boxes, send selectively, stay silent, deal
late, flood), restarts (snapshot → restore) of honest members, and a network that drops, duplicates,
delays and reorders. Honest members are on time: their messages may be dropped or delayed, but the
relay and digest sync (which only honest members answer) deliver them before each deadline; byzantine
messages may also arrive after any deadline. After the run, late messages drain and a last sync runs.

In every run: (1) all honest members finish, and the run succeeds (the faults stay within f);
(2) they agree on the transcript hash, QUAL, keys; every honest member holds a share matching its share
key; (3) a coalition holding the full state of t−1 members (every byzantine one plus curious honest
ones) and every message sent cannot compute either secret.

The schedule is a function of the seed (printed on failure: replay with DEROT_DKG_SEED=<seed>); keys
and polynomials come from the OS RNG, so a replay has the same schedule with fresh keys.
"""

from __future__ import annotations

import os
import random
from collections import deque

import pytest

from derot.crypto.bls import G2, R
from derot.crypto.dkg import DkgConfig, DkgMessageRejected, DkgSession, Message, MessageKind, Phase
from derot.crypto.dkg.local import committee_of, generate_identities, make_sessions
from derot.crypto.dkg.messages import Complaint

NETWORK = b"adversarial-scheduler"
RUNS = int(os.environ.get("DEROT_DKG_RUNS", "500"))


# --------------------------------------------------------------------------------------------------
# byzantine members: real sessions with real keys, one hook changed


class Byzantine(DkgSession):
    victims: frozenset = frozenset()
    target_dealer: int | None = None


class Equivocator(Byzantine):
    def _end_announce(self):
        self._set_phase(Phase.DEAL)
        first = self._emit(MessageKind.DEAL, self.dealer_index, self._make_deal())
        second = Message.sign(self._identity.signing_key, network=self.config.network, epoch=self.config.epoch,
                              session_id=self._session_id, kind=MessageKind.DEAL, sender=self.dealer_index,
                              body=self._make_deal())
        return [first, second]


class BadDealer(Byzantine):
    def _deal_share(self, recipient, polynomials):
        sig, kd = super()._deal_share(recipient, polynomials)
        return ((sig + 1) % R, kd) if recipient in self.victims else (sig, kd)


class FalseComplainer(Byzantine):
    def _complaints(self):
        out = {c.dealer: c for c in super()._complaints()}
        held = self._deals.get(self.target_dealer, {})
        if len(held) == 1 and self.target_dealer not in out:
            deal = next(iter(held.values()))
            if deal.my_secret is not None:  # its real key: the box opens to a good share
                out[self.target_dealer] = self._complaint(self.target_dealer, deal)
            else:  # no box for it: a made-up key
                out[self.target_dealer] = Complaint(self.target_dealer, deal.message.body_hash, bytes(48), bytes(64))
        return [out[i] for i in sorted(out)]


class BoxWithholder(Byzantine):
    def _recipient_announcement(self, recipient):
        return None if recipient in self.victims else super()._recipient_announcement(recipient)


class Flooder(Byzantine):
    def _end_announce(self):
        self._set_phase(Phase.DEAL)
        out = [self._emit(MessageKind.DEAL, self.dealer_index, self._make_deal())]
        for _ in range(4):  # extra validly signed bundles: at most two are kept anywhere
            out.append(Message.sign(self._identity.signing_key, network=self.config.network,
                                    epoch=self.config.epoch, session_id=self._session_id, kind=MessageKind.DEAL,
                                    sender=self.dealer_index, body=self._make_deal()))
        return out


BEHAVIOURS = {
    "equivocate": Equivocator,
    "bad_share": BadDealer,
    "false_complaint": FalseComplainer,
    "withhold_box": BoxWithholder,
    "selective": Byzantine,
    "silent": Byzantine,
    "late_deal": Byzantine,
    "flood": Flooder,
}


# --------------------------------------------------------------------------------------------------
# the scheduler


class Scheduler:
    def __init__(self, rng: random.Random, config, sessions, byzantine: dict, identities, old_shares):
        self.rng = rng
        self.config = config
        self.sessions = sessions
        self.byzantine = byzantine  # name -> behaviour
        self.honest = [name for name in sessions if name not in byzantine]
        self.identities = identities
        self.old_shares = old_shares
        self.queue: deque = deque()
        self.late: list = []  # byzantine deliveries held back past the next deadline
        self.sent: list[Message] = []
        self.p_drop = rng.choice([0.0, 0.1, 0.3])
        self.p_dup = rng.choice([0.0, 0.1])
        self.p_restart = rng.choice([0.0, 0.0, 0.02])
        self.audience = {name: set(rng.sample(list(sessions), rng.randrange(1, len(sessions))))
                         for name in byzantine}

    def post(self, sender, messages):
        for m in messages:
            self.sent.append(m)
            behaviour = self.byzantine.get(sender)
            if behaviour == "silent":
                continue
            for name in self.sessions:
                if name == sender:
                    continue
                if behaviour == "selective" and name not in self.audience[sender]:
                    continue
                if behaviour == "equivocate" and m.kind is MessageKind.DEAL:
                    is_first = m.digest in self.sessions[sender]._messages
                    if (name in self.audience[sender]) != is_first:
                        continue
                self._schedule(sender, name, m)

    def _schedule(self, sender, name, m):
        rng = self.rng
        late = sender in self.byzantine and (
            (self.byzantine[sender] == "late_deal" and m.kind is MessageKind.DEAL) or rng.random() < 0.1)
        if late:
            self.late.append((sender, name, m))
            return
        if rng.random() < self.p_drop:
            return
        self.queue.append((sender, name, m))
        if rng.random() < self.p_dup:
            self.queue.append((sender, name, m))

    def deliver(self, sender, name, m):
        session = self.sessions[name]
        try:
            out = session.receive(m.encode())
        except DkgMessageRejected:
            return
        if name in self.honest:  # honest members relay what they accept for the first time
            self.post_relay(name, m)
            self._maybe_restart(name)
        self.post(name, out)

    def post_relay(self, name, m):
        for other in self.sessions:
            if other != name and self.rng.random() >= self.p_drop:
                self.queue.append((name, other, m))

    def _maybe_restart(self, name):
        if self.rng.random() < self.p_restart:
            old = self.sessions[name]
            self.sessions[name] = DkgSession.restore(old.config, self.identities[name],
                                                     self.old_shares.get(name), old.snapshot())

    def drain(self):
        while self.queue:
            k = self.rng.randrange(len(self.queue))
            self.queue.rotate(-k)
            self.deliver(*self.queue.popleft())

    def sync(self):
        """Honest members pull from honest peers what they lack (digest sync); byzantine ones never answer."""
        pulled = 0
        for name in self.sessions:
            for peer in self.honest:
                if peer == name:
                    continue
                for digest in self.sessions[name].wanted(self.sessions[peer].inventory()):
                    data = self.sessions[peer].message(digest)
                    if data is not None:
                        self.queue.append((peer, name, Message.decode(data)))
                        pulled += 1
        return pulled

    def quiet(self):
        while True:
            self.drain()
            if not self.sync():
                return

    def run(self):
        for name in self.sessions:
            self.post(name, self.sessions[name].start())
        for _ in range(8):
            self.quiet()
            pending = [name for name in self.sessions if not self.sessions[name].done]
            if not pending:
                break
            for name in pending:
                self.post(name, self.sessions[name].on_deadline())
            self.queue.extend(self.late)
            self.late = []
        self.queue.extend(self.late)
        self.late = []
        self.quiet()


def draw_run(seed: int):
    rng = random.Random(seed)
    n = rng.choice([4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 7, 8, 9, 10])
    t = rng.randint(n // 2 + 1, n)
    f = n - t
    reshare = rng.random() < 0.15
    return rng, n, t, f, reshare


_FIRST_EPOCHS: dict = {}


def first_epoch(n, t):
    """An honest DKG to reshare from (cached per size: its keys are not what the run tests)."""
    if (n, t) not in _FIRST_EPOCHS:
        from derot.crypto.dkg.local import LocalBroadcast

        identities = dict(enumerate(generate_identities(n), start=1))
        config = DkgConfig(NETWORK, 1, committee_of(list(identities.values()), t))
        sessions = make_sessions(config, identities)
        LocalBroadcast(sessions).run()
        _FIRST_EPOCHS[(n, t)] = (identities, {k: s.result for k, s in sessions.items()})
    return _FIRST_EPOCHS[(n, t)]


def run_seed(seed: int, coalition) -> None:
    rng, n, t, f, reshare = draw_run(seed)
    if reshare:
        identities, first = first_epoch(n, t)
        config = DkgConfig(NETWORK, 2 + seed, committee_of(list(identities.values()), t),
                           previous=next(iter(first.values())).as_previous_epoch())
        old_shares = {k: r.shares for k, r in first.items()}
    else:
        identities = dict(enumerate(generate_identities(n), start=1))
        config = DkgConfig(NETWORK, 1, committee_of(list(identities.values()), t))
        old_shares = {}
    names = list(identities)
    bad = rng.sample(names, rng.randint(0, f))
    behaviours = {name: rng.choice(list(BEHAVIOURS)) for name in bad}
    classes = {}
    for name, behaviour in behaviours.items():
        others = [k for k in names if k != name]
        attrs = {"victims": frozenset(rng.sample(others, rng.randint(1, len(others)))),
                 "target_dealer": rng.choice(others)}
        classes[name] = type(f"B_{behaviour}", (BEHAVIOURS[behaviour],), attrs)
    sessions = make_sessions(config, identities, old_shares=old_shares, classes=classes)
    scheduler = Scheduler(rng, config, sessions, behaviours, identities, old_shares)
    scheduler.run()
    context = f"seed {seed}: n={n} t={t} reshare={reshare} byzantine={behaviours}"

    honest = [scheduler.sessions[k] for k in names if k not in behaviours]
    assert all(s.done for s in honest), context
    failures = [s.failure for s in honest]
    assert failures == [None] * len(honest), f"{context}: {failures}"
    results = [s.result for s in honest]
    first_result = results[0]
    for r in results:
        assert (r.transcript_hash, r.qualified, r.used, r.sig, r.kd) == (
            first_result.transcript_hash, first_result.qualified, first_result.used,
            first_result.sig, first_result.kd), context
        assert r.shares is not None, f"{context}: member {r.index} has no share ({r.excluded})"
        assert G2.generator() * r.shares.sig == r.sig.share_keys[r.index], context
        assert G2.generator() * r.shares.kd == r.kd.share_keys[r.index], context
    if reshare:
        assert first_result.sig.group_key == config.previous.sig.group_key, context
    assert set(k for k in names if k not in behaviours) <= set(first_result.holders), context

    curious = rng.sample([k for k in names if k not in behaviours], max(0, t - 1 - len(behaviours)))
    corrupted = set(bad) | set(curious)
    assert len(corrupted) <= t - 1
    view, breaks = coalition
    secrets = {k: scheduler.sessions[k]._epoch_secret for k in corrupted}
    points = view(config, scheduler.sent, secrets)
    known = {k for k in corrupted}
    broken = breaks(first_result, config, points, corrupted, known, old_known=known if reshare else ())
    assert not broken, f"{context}: a coalition of {sorted(corrupted)} gets {broken}"


SEEDS = [int(os.environ["DEROT_DKG_SEED"])] if "DEROT_DKG_SEED" in os.environ else range(RUNS)


@pytest.mark.parametrize("seed", SEEDS)
def test_adversarial_schedule(seed, coalition):
    run_seed(seed, coalition)
