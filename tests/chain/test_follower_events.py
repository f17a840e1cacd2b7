"""Every event DerotRegistry can emit maps to the state it changes, without error, whatever it names.

The follower re-reads only what an update's events name (``derot.chain.follower.changes_named``). One event
that names something unexpected used to raise inside every node's follower (``EpochTimeoutSet``: no epoch), and
an event the follower ignores would leave the nodes' view wrong. So this walks the contract's ABI: each event,
with each argument set to a value of its type, must map without error, and to a non-empty change unless it is
listed here as changing nothing a node's state holds.
"""

from __future__ import annotations

import pytest

from derot.chain.artifacts import load_artifact
from derot.chain.follower import RegistryEvent, changes_named

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
