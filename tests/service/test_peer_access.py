"""Who may use the Peer service (issue 9 item 3), bounded DKG buffers, and registry updates that never wait on
peer I/O (item 4)."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from derot.chain.types import EpochPhase, NodeRecord, NodeStatus
from derot.net import status, tls
from derot.net.status import Refusal
from derot.service.orchestrator import EpochOrchestrator
from derot.service.peering import Peering
from derot.service.view import NodeView
from derot.limits import LIMITS


def with_node(state, record: NodeRecord):
    return dataclasses.replace(state, nodes={**state.nodes, record.operator: record})


def registrant(i: int, status_: NodeStatus = NodeStatus.PENDING, endpoint: str = "public=10.255.255.1:9;peer=10.255.255.1:9"):
    return NodeRecord("0x" + f"{0xF00 + i:040x}", status_, bytes([i]) * 32, bytes([i]) * 32, endpoint,
                      (0xF00 + i).to_bytes(32, "big"), bytes(32))


def refusal(fn, *args, **kwargs) -> Refusal:
    with pytest.raises(Refusal) as refused:
        fn(*args, **kwargs)
    return refused.value


def test_only_approved_members_of_the_current_or_pending_epoch_may_use_the_peer_service(committee):
    state = committee.state()
    member = state.committee.members[0]
    Peering.authorize(member, state)  # allowed

    outsider = registrant(1, NodeStatus.APPROVED)
    state = with_node(state, outsider)
    assert refusal(Peering.authorize, outsider.operator, state).metadata == {"status": "not_in_epoch"}
    Peering.authorize(outsider.operator, state, evidence_only=True)  # may fetch a member's evidence

    for status_ in (NodeStatus.REMOVED, NodeStatus.SUSPENDED):
        node = dataclasses.replace(state.nodes[member], status=status_)
        changed = with_node(state, node)
        refused = refusal(Peering.authorize, member, changed)
        assert refused.reason == status.NOT_A_MEMBER and refused.metadata == {"status": status_.name.lower()}
        assert refusal(Peering.authorize, member, changed, evidence_only=True).reason == status.NOT_A_MEMBER

    unapproved = registrant(2)
    state = with_node(state, unapproved)
    assert refusal(Peering.authorize, unapproved.operator, state).metadata == {"status": "pending"}
    assert refusal(Peering.authorize, unapproved.operator, state, evidence_only=True).metadata == {"status": "pending"}
    bootstrap = dataclasses.replace(state, current_epoch=0)  # no epoch yet: the future committee checks itself
    Peering.authorize(unapproved.operator, bootstrap, evidence_only=True)
    assert refusal(Peering.authorize, unapproved.operator, bootstrap).metadata == {"status": "pending"}
    assert refusal(Peering.authorize, "0x" + "99" * 20, state).detail.endswith("is not registered")


def orchestrator(view: NodeView) -> EpochOrchestrator:
    """receive_dkg needs only the view; nothing else is touched before a run starts."""
    return EpochOrchestrator(view=view, store=None, peering=None, evidence=None, registry=None, w3=None,
                             account=None, network=b"", identity=None, metrics=None, phase_timeout=10.0,
                             faults_active=frozenset(), tasks=None, retirement=None)


def test_dkg_messages_are_buffered_only_for_the_pending_epoch_and_bounded_per_sender(committee):
    state = committee.state()
    view = NodeView(state, None)
    epochs = orchestrator(view)
    assert refusal(epochs.receive_dkg, 7, b"x", state.committee.members[0]).reason == status.WRONG_EPOCH

    pending = dataclasses.replace(state.committee, id=2, phase=EpochPhase.DKG, group_key_sig=None, group_key_kd=None)
    view.state = dataclasses.replace(state, epochs={**state.epochs, 2: pending}, pending_epoch=2)
    sender, other = state.committee.members[:2]
    for _ in range(LIMITS.dkg_backlog_per_sender):
        epochs.receive_dkg(2, b"m" * 100, sender)
    assert refusal(epochs.receive_dkg, 2, b"m", sender).reason == status.OVERLOADED
    epochs.receive_dkg(2, b"m", other)  # another sender still has room
    assert refusal(epochs.receive_dkg, 3, b"m", other).reason == status.WRONG_EPOCH  # a future epoch: no buffer
    assert epochs._early[0] == 2 and len(epochs._early[1].messages) == LIMITS.dkg_backlog_per_sender + 1


def test_the_dkg_backlog_of_an_epoch_is_bounded_in_bytes_across_senders():
    """The per-epoch byte bound: members each within their message count still cannot fill memory together."""
    from derot.service.orchestrator import DkgBacklog

    backlog, message = DkgBacklog(), bytes(1 << 20)
    senders = [f"0x{i:040x}" for i in range(8)]
    kept = 0
    with pytest.raises(Refusal) as refused:
        for k in range(LIMITS.dkg_backlog_bytes // len(message) + 1):
            backlog.add(senders[k % len(senders)], message)
            kept += 1
    assert refused.value.reason == status.OVERLOADED and "full" in refused.value.detail
    assert kept == LIMITS.dkg_backlog_bytes // len(message) and backlog.size <= LIMITS.dkg_backlog_bytes
    assert max(backlog.per_sender.values()) < LIMITS.dkg_backlog_per_sender  # the byte bound refused, not the count
    backlog.drain()
    backlog.add(senders[0], message)  # drained (the session started): room again


def test_a_registry_update_never_waits_for_silent_registrants_and_unpins_a_removed_node_at_once(committee):
    me = tls.generate_identity()
    state = committee.state()
    silent = [registrant(i) for i in range(36)]  # unroutable endpoints: every certificate fetch times out
    for node in silent:
        state = with_node(state, node)

    async def scenario():
        peering = Peering(me, state.committee.members[0], peer_deadline=1.0)
        started = time.perf_counter()
        peering.on_state(state)
        first = time.perf_counter() - started
        peering._pin({n.tls_key_hash: me.cert_pem for n in state.nodes.values()})  # as if fetched
        removed = dataclasses.replace(state.nodes[state.committee.members[1]], status=NodeStatus.REMOVED)
        started = time.perf_counter()
        peering.on_state(with_node(state, removed))
        second = time.perf_counter() - started
        pinned = peering.pinned
        await peering.close()
        return first, second, pinned, removed

    first, second, pinned, removed = asyncio.run(scenario())
    print(f"on_state with 36 silent registrants: {first * 1000:.1f} ms, then {second * 1000:.1f} ms")
    assert first < 0.5 and second < 0.5
    assert removed.tls_key_hash not in pinned
    assert state.nodes[state.committee.members[2]].tls_key_hash in pinned
