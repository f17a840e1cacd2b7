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
            if isinstance(outcome, Exception):
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


def test_a_slow_member_is_hedged_after_the_delay():
    behaviour = {i: (0.001, f"share{i}") for i in range(1, 6)}
    behaviour[3] = (1.0, "share3")
    result, started = run(behaviour, hedge_after=0.02)
    assert sorted(started) == [1, 2, 3, 4, 5] and 3 not in result.used
    assert result.seconds < 0.5


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
