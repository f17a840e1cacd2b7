"""Fail closed on a stale chain view (issue 9 item 5, issue 17): the node's view refuses with chain_stale and
reports not healthy once the followed block is older than [chain].max_staleness by the wall clock."""

from __future__ import annotations

import pytest

from derot.chain.freshness import FreshnessClock
from derot.net import status
from derot.net.status import Refusal
from derot.service.config import ConfigError, load_config
from derot.service.view import NodeView


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class State:
    """The two attributes NodeView reads of a RegistryState."""

    class committee:  # noqa: N801 - mirrors RegistryState.committee
        id = 3


class Keys:
    epoch = 3


def test_view_refuses_and_is_unhealthy_once_stale():
    clock = Clock(1_000_000.0)
    freshness = FreshnessClock(30, clock=clock)
    view = NodeView(State(), Keys(), freshness)
    with pytest.raises(Refusal) as refused:  # nothing verified yet
        view.serving()
    assert refused.value.reason == status.CHAIN_STALE
    freshness.observe(100, int(clock.now) - 5)
    assert view.serving() and view.healthy
    clock.now += 30  # 35 s behind: stale, with no RPC answer needed to notice
    assert not view.healthy
    with pytest.raises(Refusal) as refused:
        view.serving()
    assert refused.value.reason == "chain_stale" and "35s" in refused.value.detail
    assert refused.value.retryable
    freshness.observe(101, int(clock.now) - 1)
    assert view.healthy and view.serving()


def test_chain_trust_settings_are_validated(tmp_path):
    def config(text: str):
        path = tmp_path / "node.toml"
        path.write_text(text)
        return load_config(path, env={})

    good = config('[chain]\nrpc_url = "http://a:8545"\nrpc_urls = "http://b:8545, http://c:8545"\nrpc_quorum = 2\n'
                  'finality = "depth"\nfinality_depth = 12\nmax_staleness = 60\n')
    assert good.rpc_endpoints == ("http://a:8545", "http://b:8545", "http://c:8545")
    assert good.chain.rpc_quorum == 2 and good.chain.max_staleness == 60.0
    for bad in ('rpc_quorum = 2', 'finality = "soon"', 'finality_depth = 0', 'max_staleness = 0'):
        with pytest.raises(ConfigError):
            config(f"[chain]\n{bad}\n")


def test_a_chain_clock_ahead_of_ours_still_goes_stale_when_it_stops():
    """A devnet after timelock warps runs minutes ahead: the block's timestamp alone would never look old."""
    clock = Clock(5_000.0)
    freshness = FreshnessClock(30, clock=clock)
    freshness.observe(7, int(clock.now) + 600)
    assert not freshness.status().stale
    clock.now += 20
    freshness.observe(7, int(clock.now) + 600)  # the same block again: the view did not advance
    clock.now += 11
    assert freshness.status().stale and freshness.status().lag_seconds == pytest.approx(31)
    freshness.observe(8, int(clock.now) + 601)
    assert not freshness.status().stale


def test_a_view_stalled_by_disagreeing_endpoints_refuses_with_chain_unverified():
    """Issue 17: RPC endpoints that disagree stop the view; once stale the node says why (chain_unverified,
    retryable on another node) instead of the generic chain_stale. Before it is stale it keeps serving."""
    clock = Clock(1_000_000.0)
    freshness = FreshnessClock(30, clock=clock)
    view = NodeView(State(), Keys(), freshness)
    freshness.observe(100, int(clock.now) - 5)
    freshness.unverified = True  # what the node sets while its follower's polls fail with chain_unverified
    assert view.serving()  # the last verified view is still fresh: served
    clock.now += 30
    with pytest.raises(Refusal) as refused:
        view.serving()
    assert refused.value.reason == status.CHAIN_UNVERIFIED and refused.value.retryable
    assert "disagree" in refused.value.detail and not view.healthy
    freshness.unverified = False  # the endpoints agree again but the view has not advanced yet
    with pytest.raises(Refusal) as refused:
        view.serving()
    assert refused.value.reason == status.CHAIN_STALE
