"""The gateway's planned combine (derot.service.signing): the answers of the members asked first are weighted as
they arrive, so only a sum and the check are left after the last one. Whatever set of answers comes first
(a planned one, or another after failures, hedges and bad shares), the result must be the one the secret
gives: ``x·H`` for a derived key, ``x·H(m)`` for a signature, computed here from the secrets directly."""

from __future__ import annotations

import asyncio
import random

import pytest

from derot import _proto
from derot.constants import DST_CERT, DST_KD
from derot.crypto import kd
from derot.crypto import threshold as th
from derot.crypto.bls import G1
from derot.net import status
from derot.net.status import Refusal
from derot.service import faults
from derot.service.config import LimitsSection
from derot.service.metrics import Metrics
from derot.service.signing import FanOut, Linear, _Plan, invalid_members

pb = _proto.load("node_pb2")
BEHAVIOURS = ("fast", "slow", "down", "refuses", "lies")


def _seeded(committee):
    """A printed seed's generator, a random gateway's keys and a behaviour per peer (:func:`_schedule`)."""
    seed = random.randrange(2**32)
    print("seed", seed)
    rng = random.Random(seed)
    gateway = rng.randrange(1, committee.n + 1)
    return rng, committee.keys(gateway), _schedule(rng, committee, gateway)


def _schedule(rng: random.Random, committee, gateway: int) -> dict[int, str]:
    """A behaviour per peer, leaving at least t honest members (the gateway is one)."""
    while True:
        plan = {i: rng.choice(BEHAVIOURS) for i in range(1, committee.n + 1) if i != gateway}
        if 1 + sum(b in ("fast", "slow") for b in plan.values()) >= committee.threshold:
            return plan


def _members(plan: dict[int, str], answer):
    """Answer functions per member following ``plan``; ``answer(index, message)`` is the honest answer."""

    def member(index: int):
        async def reply(method, message):
            behaviour = plan[index]
            if behaviour == "refuses":
                raise Refusal(status.OVERLOADED, "busy")
            honest = answer(index, message)
            if behaviour == "lies":
                return honest(lie=True)
            await asyncio.sleep(0.03 if behaviour == "slow" else 0.001)
            return honest(lie=False)
        return reply

    return {i: member(i) for i, b in plan.items() if b != "down"}


def _fanout(peering) -> FanOut:
    return FanOut(peering, Metrics(), LimitsSection(hedge_after=0.01, hedge_floor=0.005, peer_deadline=5.0))


@pytest.mark.parametrize("case", range(12))
def test_derived_keys_are_the_secrets_whatever_answers_first(committee, local_peering, case):
    rng, keys, plan = _seeded(committee)
    hashed = G1.hash_to_curve(rng.randbytes(32), DST_KD)
    transport = kd.TransportKey.generate()

    def answer(index, message):
        share = kd.derive_share(committee.kd(index), hashed, transport.public)

        def encoded(lie: bool):
            bad = kd.EncryptedKey(share.c1, share.c2, faults.corrupt_point(share.c3)) if lie else share
            return pb.DeriveShareResponse(index=index, epoch=keys.epoch, encrypted_share=bad.encode())
        return encoded

    fanout = _fanout(local_peering(_members(plan, answer)))

    def every(answers):
        combined = kd.combine_verified(answers, keys.threshold, keys.kd.group_key, keys.kd.share_keys, hashed,
                                       transport.public)
        return combined.key, combined.used, combined.bad

    collected = asyncio.run(fanout.collect(
        committee.state(), keys, own=lambda weight: kd.derive_share(keys.shares.kd * weight, hashed, transport.public),
        method="DeriveShare", message=pb.DeriveShareRequest(epoch=keys.epoch),
        decode=lambda reply: kd.EncryptedKey.decode(reply.encrypted_share),
        linear=Linear(weigh=kd.weigh, total=kd.total,
                      checker=lambda: kd.KeyCheck(keys.kd.group_key, hashed, transport.public)),
        every=every))

    key = kd.decrypt(collected.result, transport, keys.kd.group_key, hashed)
    assert key == hashed * committee.kd(0), plan
    assert not {i for i in collected.used if plan.get(i) in ("lies", "down", "refuses")}, (plan, collected)
    assert set(invalid_members(collected)) <= {i for i, b in plan.items() if b == "lies"}


@pytest.mark.parametrize("case", range(12))
def test_signatures_are_the_secrets_whatever_answers_first(committee, local_peering, case):
    rng, keys, plan = _seeded(committee)
    digest = rng.randbytes(32)

    def answer(index, message):
        partial = th.sign(committee.sig(index), digest, DST_CERT)
        return lambda lie: pb.PartialSignResponse(
            index=index, partial_signature=(faults.corrupt_point(partial) if lie else partial).to_bytes())

    fanout = _fanout(local_peering(_members(plan, answer)))
    collected = asyncio.run(fanout.threshold_sign(
        committee.state(), keys, digest=digest, dst=DST_CERT,
        own=lambda weight: th.sign(keys.shares.sig * weight, digest, DST_CERT),
        method="PartialSign", message=pb.PartialSignRequest()))

    assert collected.result == th.sign(committee.sig(0), digest, DST_CERT), plan
    assert not {i for i in collected.used if plan.get(i) in ("lies", "down", "refuses")}, (plan, collected)


def _counting(committee, own_index: int):
    """A Linear over partial signatures of b"m", and this node's ``own(weight)``, counting weightings, own
    answers made and check constructions."""
    counts = {"weigh": 0, "own": 0, "checker": 0}
    group_key = committee.public(committee.sig).group_key

    def weigh(partial, weight):
        counts["weigh"] += 1
        return partial * weight

    def checker():
        counts["checker"] += 1
        return th.SignatureCheck(group_key, b"m", DST_CERT)

    def own(weight):
        counts["own"] += 1
        return th.sign(committee.sig(own_index) * weight, b"m", DST_CERT)

    return Linear(weigh=weigh, total=G1.sum, checker=checker), own, counts


def _partials(committee):
    return {i: th.sign(committee.sig(i), b"m", DST_CERT) for i in range(1, committee.n + 1)}


def _signature(committee):
    return th.sign(committee.sig(0), b"m", DST_CERT)


def test_the_planned_set_is_weighted_on_arrival_and_only_summed_at_the_end(committee):
    linear, own, counts = _counting(committee, 2)
    partials = _partials(committee)
    plan = _Plan(linear, (2, 4, 5), 2, own)
    answers = {2: plan.mine()}
    for i in (4, 5):
        assert plan.arrived(i, partials[i]) is partials[i]  # the plain answer is kept for the fallback
        answers[i] = partials[i]
    plan.check()
    assert counts == {"weigh": 2, "own": 1, "checker": 1}  # this node's answer was made weighted
    assert plan.first(answers) == _signature(committee)
    assert counts == {"weigh": 2, "own": 1, "checker": 1}  # nothing weighted after the last answer


def test_another_first_set_is_weighted_with_its_own_coefficients(committee):
    linear, own, counts = _counting(committee, 1)
    partials = _partials(committee)
    plan = _Plan(linear, (1, 2, 3), 1, own)
    answers = {1: plan.mine()}
    for i in (2, 4):  # 3 failed; 4 was asked instead
        plan.arrived(i, partials[i])
        answers[i] = partials[i]
    assert plan.first(answers) == _signature(committee)
    assert counts["weigh"] == 1 + 2 and counts["own"] == 2  # this node's answer made again with its new weight
    # the verifying combine sees every member's plain answer, this node's included
    seen = {}
    plan.plain(lambda every: seen.update(every))({**answers, 5: partials[5]})
    assert seen == {1: partials[1], 2: partials[2], 4: partials[4], 5: partials[5]}


def test_a_bad_answer_in_the_planned_set_fails_the_optimistic_check(committee):
    linear, own, _ = _counting(committee, 1)
    partials = _partials(committee)
    plan = _Plan(linear, (1, 2, 3), 1, own)
    answers = {1: plan.mine(), 2: partials[2], 3: faults.corrupt_point(partials[3])}
    for i in (2, 3):
        plan.arrived(i, answers[i])
    assert plan.first(answers) is None  # the caller then verifies each share


def test_without_a_plan_every_answer_is_weighted_when_combined(committee):
    linear, own, counts = _counting(committee, 3)
    partials = _partials(committee)
    plan = _Plan(linear, (), 3, own)
    answers = {3: plan.mine()}
    assert answers[3] == partials[3]  # plain
    for i in (1, 5):
        plan.arrived(i, partials[i])
        answers[i] = partials[i]
    assert counts["weigh"] == 0
    assert plan.first(answers) == _signature(committee)
    assert counts["weigh"] == 2 and counts["own"] == 2
    seen = {}
    plan.plain(lambda every: seen.update(every))(answers)
    assert seen == {3: partials[3], 1: partials[1], 5: partials[5]}
