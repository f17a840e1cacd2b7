"""The gateway's latency-based hedge over the real threshold-signing path (FanOut with per-peer estimates):
the t−1 fastest peers are asked first; a peer that answered fast and then stalls costs a request at most its
own estimate-based hedge delay; a lying-fast peer's bad partials are still caught by the fallback, and it is
asked last afterwards."""

from __future__ import annotations

import asyncio
import time

import pytest

from derot import _proto
from derot.certs.notices import Notice, RevocationSet
from derot.constants import DST_CERT
from derot.crypto import threshold as th
from derot.service import faults
from derot.service.config import LimitsSection
from derot.service.metrics import Metrics
from derot.service.signing import FanOut, invalid_members

pb = _proto.load("node_pb2")
GATEWAY = 1


def signers(committee, delays: dict[int, float], liars: frozenset[int] = frozenset()):
    """SignNotice answers: member i answers after ``delays[i]`` seconds (read at call time, so a test can
    make a member stall later); a liar answers at once with a well-formed wrong partial."""

    def member(index: int):
        async def answer(method, message):
            notice = Notice.decode(message.notice)
            partial = notice.sign(committee.sig(index))
            if index in liars:
                return pb.SignNoticeResponse(index=index, partial_signature=faults.corrupt_point(partial).to_bytes())
            await asyncio.sleep(delays[index])
            return pb.SignNoticeResponse(index=index, partial_signature=partial.to_bytes())
        return answer

    return {i: member(i) for i in range(1, committee.n + 1)}


def sign(committee, fanout: FanOut, serial: int):
    snap = committee.state().snapshot
    notice = Notice(snap.chain_id, snap.registry, 100, serial.to_bytes(32, "big"), 1_790_001_200, 1,
                    RevocationSet.of())
    keys = committee.keys(GATEWAY)
    collected = asyncio.run(fanout.threshold_sign(
        committee.state(), keys, digest=notice.digest, dst=DST_CERT, own=lambda weight: notice.sign(keys.shares.sig * weight),
        method="SignNotice", message=pb.SignNoticeRequest(notice=notice.encode())))
    assert th.verify(committee.public(committee.sig).group_key, notice.digest, collected.result, DST_CERT)
    return collected


def first_asked(peering, before: int, count: int) -> list[int]:
    return [index for index, _ in peering.calls[before:before + count]]


def test_the_fastest_peers_are_asked_first(committee, local_peering):
    # slow peers 50x slower than the fast: a loaded machine's scheduling jitter (tens of ms beside another
    # test worker) must not be able to reorder them
    delays = {2: 0.300, 3: 0.002, 4: 0.200, 5: 0.004}
    peering = local_peering(signers(committee, delays))
    fanout = FanOut(peering, Metrics(), LimitsSection(peer_deadline=10.0))
    for serial in range(8):  # unknown peers are probed first, so every peer gets measured
        sign(committee, fanout, serial)
    before = len(peering.calls)
    collected = sign(committee, fanout, 99)
    assert sorted(first_asked(peering, before, 2)) == [3, 5]
    assert set(collected.used) == {1, 3, 5}


def test_a_peer_that_answers_fast_then_stalls_costs_at_most_its_own_hedge_delay(committee, local_peering):
    delays = {2: 0.002, 3: 0.003, 4: 0.050, 5: 0.060}
    peering = local_peering(signers(committee, delays))
    fanout = FanOut(peering, Metrics(), LimitsSection(peer_deadline=30.0))
    for serial in range(8):
        sign(committee, fanout, serial)
    operator2 = committee.state().committee.members[1]
    hedge = fanout.latency.hedge_after(operator2)
    operator4 = committee.state().committee.members[3]
    assert hedge < fanout.latency.hedge_after(operator4)  # learnt from its fast answers

    delays[2] = 30.0  # now it stalls (a request would wait for the 30 s peer deadline without a hedge)
    before = len(peering.calls)
    started = time.monotonic()
    collected = sign(committee, fanout, 100)
    took = time.monotonic() - started
    assert sorted(first_asked(peering, before, 2)) == [2, 3]
    assert 2 not in collected.used
    # hedged after its own delay to the next fastest (member 4, 50 ms); 0.5 s of slack for a loaded machine
    assert took < hedge + delays[4] + 0.5, took
    assert fanout.latency.estimate(operator2) > delays[4]  # demoted behind member 4: not asked first again
    before = len(peering.calls)
    sign(committee, fanout, 101)
    assert 2 not in first_asked(peering, before, 2)


def test_a_saturated_gateway_hedges_within_its_budget_and_a_stalled_peer_still_costs_at_most_the_cap(
        committee, local_peering):
    """Past the hedge budget (every early hedge spent, as on a saturated gateway whose round trips all
    stretch) a peer that stalls is hedged at ``hedge_cap`` instead of its own short delay: no extra load from
    early hedges, and still a bounded cost."""
    delays = {2: 0.002, 3: 0.003, 4: 0.050, 5: 0.060}
    peering = local_peering(signers(committee, delays))
    fanout = FanOut(peering, Metrics(), LimitsSection(peer_deadline=30.0, hedge_cap=0.4))
    for serial in range(8):
        sign(committee, fanout, serial)
    fanout.hedges.tokens = 0.0  # the budget is spent
    delays[2] = 30.0
    started = time.monotonic()
    collected = sign(committee, fanout, 100)
    took = time.monotonic() - started
    assert 2 not in collected.used
    assert 0.4 <= took < 0.4 + delays[4] + 1.0, took  # hedged at the cap, not after its own ~5 ms
    fanout.hedges.tokens = fanout.hedges.burst  # with budget, the next stall is hedged early again
    delays[3] = 30.0
    started = time.monotonic()
    sign(committee, fanout, 101)
    assert time.monotonic() - started < 0.4, "a hedge within the budget waited for the cap"


def test_a_lying_fast_peer_is_caught_by_the_fallback_and_then_asked_last(committee, local_peering):
    delays = {2: 0.0, 3: 0.010, 4: 0.010, 5: 0.010}
    peering = local_peering(signers(committee, delays, liars=frozenset({2})))
    fanout = FanOut(peering, Metrics(), LimitsSection(peer_deadline=10.0))
    caught = 0
    for serial in range(6):
        collected = sign(committee, fanout, serial)  # always a valid signature (checked in sign)
        assert 2 not in collected.used
        caught += invalid_members(collected) == [2]
    assert caught >= 1
    before = len(peering.calls)
    collected = sign(committee, fanout, 50)
    assert 2 not in first_asked(peering, before, 2)
    assert invalid_members(collected) == []


def test_a_peer_without_keys_is_asked_last_but_request_refusals_reorder_nobody(committee, local_peering):
    """A member that refuses with no_active_epoch (it missed the DKG) would, answering fast, be asked first on
    every request and make every request ask everyone; it is asked last instead. A refusal about the request
    itself (a policy refusal every member gives) must not demote anyone: an attacker could reorder the peers."""
    from derot.net.status import Refusal

    delays = {2: 0.0, 3: 0.005, 4: 0.005, 5: 0.005}
    answers = signers(committee, delays)

    async def no_keys(method, message):
        raise Refusal("no_active_epoch", "this node serves no active epoch yet")

    answers[2] = no_keys
    peering = local_peering(answers)
    fanout = FanOut(peering, Metrics(), LimitsSection(peer_deadline=10.0))
    for serial in range(6):
        sign(committee, fanout, serial)
    operator = committee.state().committee.members
    assert fanout.latency.estimate(operator[1]) == fanout.latency.policy.cap
    before = len(peering.calls)
    sign(committee, fanout, 60)
    assert 2 not in first_asked(peering, before, 2)

    known = {i: fanout.latency.estimate(operator[i - 1]) for i in (3, 4, 5)}
    for i in (3, 4, 5):
        fanout.latency.observe(operator[i - 1], 0.005)  # the same peers, now all refusing a bad request
    async def policy_refusal(method, message):
        raise Refusal("measurement_not_allowed", "the measurement is not allowed for this app")

    refusing = local_peering({i: policy_refusal for i in (2, 3, 4, 5)})
    fanout.peering = refusing
    for serial in range(3):
        with pytest.raises(Refusal):
            sign(committee, fanout, 70 + serial)
    assert all(fanout.latency.estimate(operator[i - 1]) < fanout.latency.policy.cap for i in known)
