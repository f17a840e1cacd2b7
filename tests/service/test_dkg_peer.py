"""The node side of the DKG over the Peer service: SyncDkg is members-only and bounded both ways, and a message
naming another attempt's session is kept (bounded) for the next attempt, never lost or mistaken for an attack."""

from __future__ import annotations

import dataclasses

import pytest

from derot import _proto
from derot.chain.types import EpochPhase, NodeStatus
from derot.crypto.dkg import DkgConfig
from derot.crypto.dkg.local import committee_of, generate_identities
from derot.limits import LIMITS
from derot.net import status
from derot.net.status import Refusal
from derot.service.api import ServiceApi
from derot.service.dkg_runner import MAX_SYNC_MESSAGES, DkgRunner, open_session
from derot.service.orchestrator import MAX_SYNC_DIGESTS, EpochOrchestrator, EpochRun, EpochState
from derot.service.view import NodeView

pb = _proto.load("node_pb2")


def refusal(fn, *args) -> Refusal:
    with pytest.raises(Refusal) as refused:
        fn(*args)
    return refused.value


def pending_state(committee):
    """The committee's state with epoch 2 pending (a DKG among the same members)."""
    state = committee.state()
    pending = dataclasses.replace(state.committee, id=2, phase=EpochPhase.DKG, group_key_sig=None, group_key_kd=None)
    return dataclasses.replace(state, epochs={**state.epochs, 2: pending}, pending_epoch=2)


def orchestrator(view: NodeView) -> EpochOrchestrator:
    return EpochOrchestrator(view=view, store=None, peering=None, evidence=None, registry=None, w3=None,
                             account=None, network=b"", identity=None, metrics=None, phase_timeout=10.0,
                             faults_active=frozenset(), tasks=None, retirement=None)


def api_of(view: NodeView, epochs: EpochOrchestrator) -> ServiceApi:
    return ServiceApi(limits=None, metrics=None, view=view, gateway=None, contributor=None, epochs=epochs,
                      chain_id=1, registry="0x" + "00" * 20)


def running(epochs: EpochOrchestrator, epoch: int, attempt: int = 0):
    """A real session of ``epoch`` (3-of-4, attempt ``attempt``) behind a real runner in a RUNNING EpochRun;
    returns the run and the identities, so a test can author messages of any member."""
    identities = generate_identities(4)
    config = DkgConfig(b"peer-test", epoch, committee_of(identities, 3), attempt=attempt)
    session, _ = open_session(config, identities[0], None, load=lambda: None)
    run = EpochRun(epoch)
    run.runner = DkgRunner(session, phase_timeout=10.0, broadcast=lambda messages: None)
    run.advance(EpochState.RUNNING)
    session.start()
    epochs._runs[epoch] = run
    return run, identities, config


def announce_of(config: DkgConfig, identity) -> bytes:
    session, _ = open_session(config, identity, None, load=lambda: None)
    (message,) = session.start()
    return message.encode()


def test_sync_dkg_is_for_members_of_the_current_or_pending_epoch_only(committee):
    state = pending_state(committee)
    view = NodeView(state, None)
    api = api_of(view, orchestrator(view))
    api.sync_dkg(2, [], state.committee.members[0])  # a member: answered (nothing held yet)

    outsider = dataclasses.replace(state.nodes[state.committee.members[0]], operator="0x" + "ab" * 20)
    approved = dataclasses.replace(state, nodes={**state.nodes, outsider.operator: outsider})
    assert refusal(api.sync_dkg, 2, [], outsider.operator).reason == status.NOT_A_MEMBER  # not registered
    view.state = approved
    assert refusal(api.sync_dkg, 2, [], outsider.operator).metadata == {"status": "not_in_epoch"}
    for status_ in (NodeStatus.PENDING, NodeStatus.SUSPENDED, NodeStatus.REMOVED):
        node = dataclasses.replace(state.nodes[state.committee.members[1]], status=status_)
        view.state = dataclasses.replace(state, nodes={**state.nodes, node.operator: node})
        refused = refusal(api.sync_dkg, 2, [], node.operator)
        assert refused.reason == status.NOT_A_MEMBER and refused.metadata == {"status": status_.name.lower()}


def test_sync_dkg_answers_what_the_caller_lacks_and_bounds_the_question(committee):
    view = NodeView(pending_state(committee), None)
    epochs = orchestrator(view)
    assert epochs.sync_dkg(2, []) == []  # no run yet: nothing to give
    run, identities, config = running(epochs, 2)
    own = run.runner.session.inventory()
    held = run.runner.session.message(own[0])
    assert epochs.sync_dkg(2, []) == [held]

    digest = pb.DkgSyncDigest(kind=int(own[0].kind), sender=own[0].sender, body_hash=own[0].body_hash)
    assert epochs.sync_dkg(2, [digest]) == []  # the caller holds it already
    junk = pb.DkgSyncDigest(kind=99, sender=1, body_hash=b"x")  # an unknown kind is ignored, not an error
    assert epochs.sync_dkg(2, [junk]) == [held]
    assert refusal(epochs.sync_dkg, 2, [junk] * (MAX_SYNC_DIGESTS + 1)).reason == status.REQUEST_TOO_LARGE

    for identity in identities[1:]:  # the answer holds everything the runner holds, within its bounds
        run.runner.receive(announce_of(config, identity))
    answer = epochs.sync_dkg(2, [])  # four announces, and the deal the last one let it make
    assert len(answer) == len(run.runner.session.inventory()) == 5 <= MAX_SYNC_MESSAGES


def test_a_message_of_another_attempt_is_kept_for_the_next_runner_and_bounded(committee):
    state = pending_state(committee)
    view = NodeView(state, None)
    epochs = orchestrator(view)
    run, identities, config = running(epochs, 2)
    sender = state.committee.members[1]
    next_attempt = dataclasses.replace(config, attempt=1)
    data = announce_of(next_attempt, identities[1])
    epochs.receive_dkg(2, data, sender)
    assert run.backlog.messages == [data]  # kept for attempt 1's runner (drained when it starts)

    refused = refusal(epochs.receive_dkg, 2, b"\x01garbage", sender)
    assert refused.reason == "dkg_malformed"  # any other refusal is the sender's problem, named
    assert run.backlog.messages == [data]

    for _ in range(LIMITS.dkg_backlog_per_sender - 1):
        epochs.receive_dkg(2, data, sender)
    assert refusal(epochs.receive_dkg, 2, data, sender).reason == status.OVERLOADED
    epochs.receive_dkg(2, announce_of(next_attempt, identities[2]), state.committee.members[2])
    assert len(run.backlog.drain()) == LIMITS.dkg_backlog_per_sender + 1
