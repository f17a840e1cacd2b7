"""Every event DerotRegistry can emit maps to the state it changes, without error, whatever it names.

The follower re-reads only what an update's events name (``derot.chain.follower.changes_named``). One event
that names something unexpected used to raise inside every node's follower (``EpochTimeoutSet``: no epoch), and
an event the follower ignores would leave the nodes' view wrong. So this walks the contract's ABI: each event,
with each argument set to a value of its type, must map without error, and to a non-empty change unless it is
listed here as changing nothing a node's state holds.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
from eth_utils import to_checksum_address

from derot.chain.artifacts import load_artifact
from derot.chain.follower import RegistryEvent, changes_named
from derot.chain.state import _changed_nodes
from derot.chain.types import NodeRecord, NodeStatus

#: events that change nothing in RegistryState (the epoch timeout is read when an epoch is expired, not held)
CHANGES_NOTHING_HELD = {"EpochTimeoutSet"}


def _value(abi_type: str):
    if abi_type.endswith("[]"):
        return [_value(abi_type[:-2])]
    if abi_type == "address":
        return "0x" + "11" * 20
    if abi_type == "bool":
        return True
    if abi_type == "string":
        return "host:1"
    if abi_type == "bytes":
        return b"\x01" * 6
    if abi_type.startswith("bytes"):
        return b"\x01" * int(abi_type[5:])
    if abi_type.startswith(("uint", "int")):
        return 1
    raise AssertionError(f"no sample value for ABI type {abi_type}")


EVENTS = [item for item in load_artifact("DerotRegistry")["abi"] if item.get("type") == "event"]


@pytest.mark.parametrize("abi", EVENTS, ids=[e["name"] for e in EVENTS])
def test_every_registry_event_maps_to_its_change(abi):
    args = {i["name"]: _value(i["type"]) for i in abi["inputs"]}
    event = RegistryEvent(abi["name"], args, 1, bytes(32), bytes(32), 0)
    changes = changes_named([event])
    changed = any(bool(v) for v in changes.values())
    assert changed != (abi["name"] in CHANGES_NOTHING_HELD), (abi["name"], changes)


def test_the_abi_has_the_events_the_follower_was_written_for():
    names = {e["name"] for e in EVENTS}
    assert {"EpochStarted", "EpochActivated", "Revoked", "Unrevoked", "NodeStatusChanged", "AppRegistered",
            "EpochTimeoutSet"} <= names


OPERATOR = "0x" + "11" * 20


def _status_event(status: int) -> RegistryEvent:
    return RegistryEvent("NodeStatusChanged", {"operator": OPERATOR, "status": status, "by": "0x" + "22" * 20},
                         1, bytes(32), bytes(32), 0)


def test_a_status_event_is_applied_as_it_is_unless_its_status_is_unknown():
    """A known status goes to ``node_statuses`` (no re-read); a status this code does not know is never
    guessed: that node is re-read instead."""
    known = changes_named([_status_event(NodeStatus.SUSPENDED)])
    assert known["node_statuses"] == [(to_checksum_address(OPERATOR), NodeStatus.SUSPENDED)] and not known["nodes"]
    unknown = changes_named([_status_event(9)])
    assert unknown["node_statuses"] == [] and unknown["nodes"] == {to_checksum_address(OPERATOR)}


class _Registry:
    """Answers every getNode with one record, counting the calls."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.functions = SimpleNamespace(getNode=lambda op: op)

    def _call_many(self, operators, at):
        self.asked.extend(operators)
        return [(int(NodeStatus.PENDING), b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, b"\x04" * 32, "h:1")
                for _ in operators]


def test_a_status_event_for_a_node_not_held_reads_the_node_instead_of_making_it_up():
    known = to_checksum_address("0x" + "33" * 20)
    record = NodeRecord(known, NodeStatus.PENDING, b"\x05" * 32, b"\x06" * 32, "k:1", b"\x07" * 32, bytes(32))
    state = SimpleNamespace(nodes={known: record})
    stranger = to_checksum_address(OPERATOR)
    registry = _Registry()
    statuses = [(known, NodeStatus.APPROVED), (stranger, NodeStatus.APPROVED), (known, NodeStatus.SUSPENDED)]
    nodes = _changed_nodes(registry, state, set(), statuses, bytes(32))
    assert registry.asked == [stranger]  # read, at the block: its status there is the chain's, not the event's
    assert nodes[stranger].status is NodeStatus.PENDING and nodes[stranger].endpoint == "h:1"
    assert nodes[known] == dataclasses.replace(record, status=NodeStatus.SUSPENDED)  # the last event wins
