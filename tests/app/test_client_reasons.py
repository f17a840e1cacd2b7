"""The headline reason of a failed call: what a gateway said beats a gateway being unreachable."""

from __future__ import annotations

from derot.app.client import decisive
from derot.net.status import Refusal


def test_a_gateway_refusal_beats_transport_failures():
    refusals = [Refusal("unavailable", "node 1 down"), Refusal("not_enough_shares", "2 of 3"),
                Refusal("unavailable", "node 4 down"), Refusal("deadline_exceeded", "node 5 slow")]
    assert decisive(refusals).reason == "not_enough_shares"


def test_only_transport_failures_stay_unavailable():
    assert decisive([Refusal("deadline_exceeded", "x"), Refusal("unavailable", "y")]).reason == "unavailable"
    assert decisive([]).reason == "unavailable"


def test_the_last_gateway_refusal_wins():
    refusals = [Refusal("overloaded", "a"), Refusal("unavailable", "b"), Refusal("not_enough_shares", "c")]
    assert decisive(refusals).detail == "c"
