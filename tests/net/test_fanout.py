"""The gateway's hedged fan-out: t members first, everyone else on a failure, a bad share or a slow answer."""

import asyncio

import pytest

from derot.crypto.threshold import NotEnoughShares
from derot.net.fanout import collect
from derot.net.status import Refusal


def _calls(behaviour: dict[int, tuple[float, object]], started: list[int]):
    """member -> (delay, answer or exception)."""

    def factory(index):
        async def call():
            started.append(index)
            delay, outcome = behaviour[index]
            await asyncio.sleep(delay)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        return call

    return {i: factory(i) for i in behaviour}


def _combine_first(answers):
    return None if "bad" in answers.values() else tuple(sorted(answers))


def _combine_all(answers):
    good = {i: a for i, a in answers.items() if a != "bad"}
    bad = tuple(i for i, a in answers.items() if a == "bad")
    if len(good) < 3:
        raise NotEnoughShares(3, len(good), bad)
    used = tuple(sorted(good)[:3])
    return used, used, bad


def run(behaviour, **kwargs):
    started: list[int] = []
    result = asyncio.run(collect(_calls(behaviour, started), 3, _combine_first, _combine_all, deadline=2.0,
                                 eager=3, **kwargs))
    return result, started


def test_live_honest_committee_asks_only_t_members():
    result, started = run({i: (0.001, f"share{i}") for i in range(1, 6)})
    assert started == [1, 2, 3] and result.result == (1, 2, 3)


def test_a_dead_member_makes_the_gateway_ask_everyone():
    behaviour = {i: (0.001, f"share{i}") for i in range(1, 6)}
    behaviour[2] = (0.0, Refusal("unavailable", "connection refused"))
    result, started = run(behaviour)
    assert sorted(started) == [1, 2, 3, 4, 5]
    assert 2 not in result.used and result.failures[2] == "unavailable"


def test_a_call_that_ends_cancelled_is_a_failed_member_not_a_cancelled_request():
    """A call task that ends cancelled while the request goes on (grpc raises CancelledError when the channel
    is closed under a call) must fail that member only; ``task.result()`` used to carry the CancelledError
    out of the fan-out and cancel the client's whole request."""
    behaviour = {i: (0.001, f"share{i}") for i in range(1, 6)}
    behaviour[2] = (0.0, asyncio.CancelledError())
    result, started = run(behaviour)
    assert sorted(started) == [1, 2, 3, 4, 5]
    assert 2 not in result.used and result.failures[2] == "unavailable"


def test_a_slow_member_is_hedged_to_the_next_one_after_the_delay():
    behaviour = {i: (0.001, f"share{i}") for i in range(1, 6)}
    behaviour[3] = (1.0, "share3")
    result, started = run(behaviour, hedge_after=0.02)
    assert started == [1, 2, 3, 4] and 3 not in result.used  # one overdue call starts one more, not everyone
    assert result.seconds < 0.5


def test_each_member_is_hedged_after_its_own_delay():
    """Member 2 is known fast (hedge 20 ms) but stalls; member 3 is known slow (hedge 1 s) and answers in
    300 ms. Only the stalled fast member is hedged, at its own delay; the slow one is waited for."""
    behaviour = {i: (0.001, f"share{i}") for i in range(1, 6)}
    behaviour[2] = (5.0, "share2")
    behaviour[3] = (0.3, "share3")
    delays = {1: 1.0, 2: 0.02, 3: 1.0, 4: 1.0, 5: 1.0}
    result, started = run(behaviour, hedge_after=delays.__getitem__)
    assert started == [1, 2, 3, 4]
    assert set(result.used) == {1, 3, 4}
    assert 0.25 < result.seconds < 0.9


def test_over_the_hedge_budget_a_slow_member_is_hedged_at_the_late_delay():
    behaviour = {i: (0.001, f"share{i}") for i in range(1, 6)}
    behaviour[3] = (1.5, "share3")
    asked: list[int] = []
    result, started = run(behaviour, hedge_after=0.02, may_hedge=lambda: asked.append(1) or False, late_hedge=0.3)
    assert asked == [1]  # the budget was asked once, said no; at 0.3 s the hedge needs no budget
    assert started == [1, 2, 3, 4] and 3 not in result.used
    assert 0.3 <= result.seconds < 1.2


def test_over_the_hedge_budget_without_a_late_delay_the_slow_member_is_waited_for():
    behaviour = {i: (0.001, f"share{i}") for i in range(1, 6)}
    behaviour[3] = (0.3, "share3")
    result, started = run(behaviour, hedge_after=0.02, may_hedge=lambda: False)
    assert started == [1, 2, 3] and set(result.used) == {1, 2, 3}


def test_within_the_hedge_budget_the_hedge_is_early():
    behaviour = {i: (0.001, f"share{i}") for i in range(1, 6)}
    behaviour[3] = (1.5, "share3")
    result, started = run(behaviour, hedge_after=0.02, may_hedge=lambda: True, late_hedge=1.0)
    assert started == [1, 2, 3, 4] and result.seconds < 0.5


def test_a_hedge_that_stalls_too_is_hedged_in_turn():
    behaviour = {i: (5.0, f"share{i}") for i in range(1, 7)}  # 2, 3 and 4 stall
    for fast in (1, 5, 6):
        behaviour[fast] = (0.001, f"share{fast}")
    result, started = run(behaviour, hedge_after=0.02)
    # 2 and 3 overdue at 20 ms start 4 and 5; 4 overdue at 40 ms starts 6
    assert started == [1, 2, 3, 4, 5, 6]
    assert set(result.used) == {1, 5, 6}
    assert result.seconds < 1.0


def test_a_bad_share_is_excluded_after_asking_everyone():
    behaviour = {i: (0.001, f"share{i}") for i in range(1, 6)}
    behaviour[2] = (0.001, "bad")
    result, started = run(behaviour)
    assert sorted(started) == [1, 2, 3, 4, 5]
    assert 2 not in result.used and result.failures[2] == "invalid_share"


def test_agreeing_refusals_are_reported_as_such():
    behaviour = {1: (0.0, "share1")}
    behaviour.update({i: (0.0, Refusal("fmspc_revoked", "FMSPC x is revoked")) for i in range(2, 6)})
    with pytest.raises(Refusal) as info:
        run(behaviour)
    assert info.value.reason == "fmspc_revoked"


def test_too_few_answers_names_every_failure():
    behaviour = {1: (0.0, "share1"), 2: (0.0, "share2")}
    behaviour.update({i: (0.0, Refusal("unavailable", "down")) for i in range(3, 6)})
    with pytest.raises(Refusal) as info:
        run(behaviour)
    assert info.value.reason == "not_enough_shares" and "3:unavailable" in info.value.detail
