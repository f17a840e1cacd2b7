"""Per-peer latency estimates (derot.service.latency): EWMA, clamped hedge delays, ordering, ageing, and
the adversarial cases (a peer that stalls after answering fast; a peer whose answers are cancelled)."""

from __future__ import annotations

import random

import pytest

from derot.service.latency import HedgeBudget, HedgePolicy, PeerLatency


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tracker(**policy) -> tuple[PeerLatency, Clock]:
    clock = Clock()
    return PeerLatency(HedgePolicy(**policy), clock=clock), clock


def test_an_unknown_peer_gets_the_initial_delay_and_the_first_sample_sets_the_estimate():
    lat, _ = tracker(initial=0.05, factor=2.0, floor=0.01, cap=0.5)
    assert lat.estimate("a") is None and lat.hedge_after("a") == 0.05
    lat.observe("a", 0.08)
    assert lat.estimate("a") == pytest.approx(0.08)
    assert lat.hedge_after("a") == pytest.approx(0.16)


def test_the_estimate_is_an_ewma_of_the_samples():
    seed = random.randrange(2**32)
    print("seed", seed)
    rng = random.Random(seed)
    lat, _ = tracker(alpha=0.25)
    samples = [rng.uniform(0.001, 0.3) for _ in range(50)]
    expected = samples[0]
    for s in samples[1:]:
        expected = 0.75 * expected + 0.25 * s
    for s in samples:
        lat.observe("a", s)
    assert lat.estimate("a") == pytest.approx(expected)


def test_the_hedge_delay_is_clamped_to_floor_and_cap():
    lat, _ = tracker(floor=0.01, cap=0.5, factor=3.0)
    lat.observe("near", 0.0005)
    lat.observe("far", 2.0)
    assert lat.hedge_after("near") == 0.01
    assert lat.hedge_after("far") == 0.5


def test_order_is_unknown_first_then_fastest_with_ties_kept_in_the_given_order():
    lat, _ = tracker(resolution=0.005)
    lat.observe("a", 0.150)
    lat.observe("b", 0.010)
    lat.observe("c", 0.011)  # within the resolution of b: equally fast
    lat.observe("d", 0.075)
    assert lat.order(["a", "b", "c", "d", "e"]) == ["e", "b", "c", "d", "a"]
    assert lat.order(["c", "d", "a", "b"]) == ["c", "b", "d", "a"]  # the caller's rotation decides ties


def test_a_peer_that_answered_fast_then_stalls_is_hedged_after_its_own_short_delay_and_demoted():
    lat, _ = tracker(floor=0.01, cap=0.5, factor=2.0)
    for _ in range(20):
        lat.observe("liar", 0.005)
        lat.observe("honest", 0.040)
    assert lat.hedge_after("liar") == pytest.approx(0.010)  # the stall costs at most 10 ms per request
    assert lat.order(["honest", "liar"]) == ["liar", "honest"]
    lat.abandoned("liar", 0.095)  # hedged away; the request finished 95 ms in and cancelled it
    assert lat.estimate("liar") == pytest.approx(0.095)
    assert lat.order(["liar", "honest"]) == ["honest", "liar"]
    for _ in range(10):  # it keeps stalling: each stall raises its delay, never beyond the cap
        lat.abandoned("liar", lat.hedge_after("liar") * 1.5)
    assert lat.hedge_after("liar") == 0.5


def test_a_call_cancelled_before_it_was_overdue_says_nothing():
    lat, _ = tracker(initial=0.05)
    lat.abandoned("a", 0.001)  # others answered first: no sample, the peer stays unknown (not "1 ms fast")
    assert lat.estimate("a") is None
    lat.observe("b", 0.100)
    lat.abandoned("b", 0.150)  # below its hedge delay (200 ms): no change
    assert lat.estimate("b") == pytest.approx(0.100)


def test_a_penalized_peer_is_asked_last_until_its_sample_ages_out():
    lat, clock = tracker(cap=0.5, ttl=30.0)
    lat.observe("a", 0.001)
    lat.observe("b", 0.100)
    lat.penalize("a")
    assert lat.estimate("a") == 0.5 and lat.order(["a", "b"]) == ["b", "a"]
    clock.now += 31.0
    assert lat.estimate("a") is None and lat.order(["b", "a"]) == ["b", "a"]  # both unknown: given order
    lat.observe("b", 0.100)
    assert lat.order(["b", "a"]) == ["a", "b"]  # unknown first: measured again


def test_an_inconsistent_policy_is_refused():
    with pytest.raises(ValueError):
        HedgePolicy(floor=0.5, cap=0.1)
    with pytest.raises(ValueError):
        HedgePolicy(factor=0.5)


def test_the_hedge_budget_allows_a_burst_then_its_share_of_fan_outs():
    budget = HedgeBudget(0.1, 3)
    assert [budget.take() for _ in range(4)] == [True, True, True, False]  # the burst
    allowed = 0
    for _ in range(100):  # 100 fan-outs, each wanting a hedge: one in ten gets it
        budget.deposit()
        allowed += budget.take()
    assert allowed == 10
    for _ in range(1000):  # a quiet spell refills the burst, no more
        budget.deposit()
    assert [budget.take() for _ in range(4)] == [True, True, True, False]


@pytest.mark.parametrize("budget,burst", [(-0.1, 10), (1.5, 10), (0.1, 0.5)])
def test_an_inconsistent_hedge_budget_is_refused(budget, burst):
    with pytest.raises(ValueError):
        HedgePolicy(budget=budget, burst=burst)
