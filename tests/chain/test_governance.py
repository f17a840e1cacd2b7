"""Governance end to end on a real anvil: propose → vote → queue → execute, quorum, timelock, council limits."""

from __future__ import annotations

import os

import pytest
from eth_utils import keccak
from web3.logs import DISCARD

from derot.chain import actions as A
from derot.devnet.anvil import mine, warp
from derot.chain.governance import ProposalState, Support
from derot.devnet.governance import pass_proposal
from derot.chain.registry import DelegateOracleAt
from derot.chain.tx import TransactionFailed, send
from derot.chain.types import NodeStatus, RevocationKind
from derot.constants import Platform, TcbStatus

FMSPC = bytes.fromhex("00906ed50000")


def test_full_path_revokes_an_fmspc(chain):
    gov, reg = chain.gov, chain.registry
    pid = gov.propose(chain.whale, [A.Revoke(RevocationKind.FMSPC, FMSPC)], "Revoke a leaked FMSPC")
    assert gov.state(pid) is ProposalState.PENDING
    mine(chain.w3, gov.voting_delay() + 1)
    assert gov.state(pid) is ProposalState.ACTIVE
    gov.vote(chain.whale, pid, Support.FOR, reason="leaked")
    gov.vote(chain.mid, pid, Support.AGAINST)
    mine(chain.w3, gov.voting_period())
    assert gov.state(pid) is ProposalState.SUCCEEDED
    gov.queue(chain.whale, pid)
    assert gov.state(pid) is ProposalState.QUEUED
    assert not reg.is_revoked(RevocationKind.FMSPC, FMSPC)
    warp(chain.w3, gov.timelock_delay() + 1)
    receipt = gov.execute(chain.stranger, pid)  # anyone may execute
    assert gov.state(pid) is ProposalState.EXECUTED
    assert reg.is_revoked(RevocationKind.FMSPC, FMSPC)
    assert reg.revocations(RevocationKind.FMSPC) == {FMSPC}
    revoked = reg.contract.events.Revoked().process_receipt(receipt, errors=DISCARD)
    assert [(e.args.kind, bytes(e.args.id), e.args.by) for e in revoked] == [
        (RevocationKind.FMSPC, FMSPC, chain.deployment.timelock)
    ]
    proposal = gov.proposal(pid)
    assert proposal.votes_for == 600 * 10**18 and proposal.votes_against == 360 * 10**18
    assert "Revoke FMSPC 00906ed50000" in proposal.summary()


def test_below_quorum_is_defeated_and_cannot_be_queued(chain):
    gov = chain.gov
    pid = gov.propose(chain.small, [A.AllowPlatform(int(Platform.SGX))], "small holder alone")
    mine(chain.w3, gov.voting_delay() + 1)
    gov.vote(chain.small, pid, Support.FOR)  # 3% of the supply, quorum is 4%
    mine(chain.w3, gov.voting_period())
    assert gov.state(pid) is ProposalState.DEFEATED
    with pytest.raises(TransactionFailed, match="GovernorUnexpectedProposalState"):
        gov.queue(chain.small, pid)
    assert not chain.registry.platform_rules().get(Platform.SGX)


def test_execute_before_the_timelock_fails(chain):
    gov = chain.gov
    pid = gov.propose(chain.whale, [A.AllowPlatform(int(Platform.SGX))], "enable sgx")
    mine(chain.w3, gov.voting_delay() + 1)
    gov.vote(chain.whale, pid, Support.FOR)
    mine(chain.w3, gov.voting_period())
    gov.queue(chain.whale, pid)
    with pytest.raises(TransactionFailed, match="TimelockUnexpectedOperationState"):
        gov.execute(chain.whale, pid)
    warp(chain.w3, gov.timelock_delay() // 2)
    with pytest.raises(TransactionFailed, match="TimelockUnexpectedOperationState"):
        gov.execute(chain.whale, pid)
    warp(chain.w3, gov.timelock_delay())
    gov.execute(chain.whale, pid)
    assert chain.registry.platform_rules()[Platform.SGX].enabled


def test_voting_before_the_delay_or_twice_fails(chain):
    gov = chain.gov
    pid = gov.propose(chain.whale, [A.AllowPlatform(int(Platform.SGX))], "too early")
    with pytest.raises(TransactionFailed, match="GovernorUnexpectedProposalState"):
        gov.vote(chain.whale, pid)
    mine(chain.w3, gov.voting_delay() + 1)
    gov.vote(chain.whale, pid)
    with pytest.raises(TransactionFailed, match="GovernorAlreadyCastVote"):
        gov.vote(chain.whale, pid)


def test_council_revokes_at_once(chain):
    reg = chain.registry
    chip = os.urandom(64)
    ppid = os.urandom(16)
    fwid = os.urandom(48)
    measurement = os.urandom(32)
    block = chain.w3.eth.block_number
    reg.apply(
        chain.council,
        [
            A.Revoke(RevocationKind.FMSPC, FMSPC),
            A.Revoke(RevocationKind.CHIP_ID, chip),
            A.Revoke(RevocationKind.PPID, ppid),
            A.Revoke(RevocationKind.GPU_FWID, fwid),
            A.Revoke(RevocationKind.MEASUREMENT, measurement),
            A.DisablePlatform(int(Platform.SEV_SNP)),
            A.SetTcbFloor(int(Platform.TDX), int(TcbStatus.UP_TO_DATE)),
            A.FreezeApp(chain.app_id),
            A.SuspendNode(chain.nodes[4].address),
            A.DisallowNodeMeasurement(int(Platform.TDX), measurement),
        ],
    )
    assert chain.w3.eth.block_number == block + 10  # one transaction each, no proposal, no delay
    assert reg.revocations(RevocationKind.CHIP_ID) == {chip}  # exact bytes
    assert reg.revocations(RevocationKind.PPID) == {ppid}
    assert reg.revocations(RevocationKind.GPU_FWID) == {fwid}
    assert reg.revocations(RevocationKind.MEASUREMENT) == {measurement}
    assert reg.is_revoked(RevocationKind.FMSPC, FMSPC)
    rules = reg.platform_rules()
    assert not rules[Platform.SEV_SNP].enabled and rules[Platform.TDX].tcb_floor is TcbStatus.UP_TO_DATE
    assert reg.app(chain.app_id).frozen
    assert reg.node(chain.nodes[4].address).status is NodeStatus.SUSPENDED


def _owner_only_actions(chain):
    reg = chain.registry
    members = tuple(n.address for n in chain.nodes[:3])
    reg.apply(
        chain.council,
        [A.Revoke(RevocationKind.FMSPC, FMSPC), A.FreezeApp(chain.app_id), A.SuspendNode(chain.nodes[4].address)],
    )
    return [
        A.AddNode(chain.nodes[4].address),
        A.RemoveNode(chain.nodes[0].address),
        A.StartDkg(members, 2),
        A.StartReshare(members, 3),
        A.AllowPlatform(int(Platform.SGX)),
        A.Unrevoke(RevocationKind.FMSPC, FMSPC),
        A.AllowNodeMeasurement(int(Platform.TDX), os.urandom(32)),
        A.UnfreezeApp(chain.app_id),
        A.SetCouncil(chain.stranger.address),
        A.SetEpochTimeout(1),
        A.SetSnpPolicy(3, 0, 0),
        A.SetSnpMinTcb(0, 0),
    ]


def test_council_can_never_allow_or_add(chain):
    reg = chain.registry
    actions = _owner_only_actions(chain)
    # every non-council action of the vocabulary is covered
    covered = {type(a).function for a in actions}
    assert covered == {cls.function for cls in A.ACTIONS.values() if not cls.council_allowed}
    for action in actions:
        with pytest.raises(TransactionFailed, match=r"NotOwnerOrCouncil|OwnableUnauthorizedAccount"):
            reg.apply(chain.council, [action])
    # lowering a TCB floor is an allowance too
    reg.apply(chain.council, [A.SetTcbFloor(int(Platform.TDX), int(TcbStatus.UP_TO_DATE))])
    with pytest.raises(TransactionFailed, match="CouncilCannotLower"):
        reg.apply(chain.council, [A.SetTcbFloor(int(Platform.TDX), int(TcbStatus.OUT_OF_DATE))])
    with pytest.raises(TransactionFailed, match="OwnableUnauthorizedAccount"):
        send(chain.w3, chain.council, reg.contract.functions.transferOwnership(chain.council.address))
    with pytest.raises(TransactionFailed, match="OwnableUnauthorizedAccount"):
        send(chain.w3, chain.council, reg.contract.functions.renounceOwnership())
    # and governance can do all of them
    chain.enact([a for a in actions if not isinstance(a, (A.StartDkg, A.StartReshare, A.RemoveNode))])
    assert not reg.is_revoked(RevocationKind.FMSPC, FMSPC)
    assert reg.security_council() == chain.stranger.address
    assert reg.node(chain.nodes[4].address).status is NodeStatus.APPROVED
    assert not reg.app(chain.app_id).frozen


def test_every_state_changing_registry_function_is_classified(chain):
    """Self-service functions (operators, members, app owners) or a typed governance action: nothing else."""
    self_service = {
        "registerNode", "updateNode", "reportEpoch", "registerApp", "setAppMeasurement", "raiseKeyVersion",
        "setAppAllowDebug", "setAppDelegate", "transferAppOwnership", "acceptAppOwnership", "setAppTeeExceptions",
        "setAppGpuPolicy",
        "expireEpoch",  # anyone, and only once the pending epoch's timeout has passed
    }
    ownable = {"transferOwnership", "renounceOwnership"}
    writes = {
        item["name"]
        for item in chain.registry.contract.abi
        if item["type"] == "function" and item["stateMutability"] not in ("view", "pure")
    }
    governed = {cls.function for cls in A.ACTIONS.values()}
    assert writes == self_service | ownable | governed


def test_non_owner_cannot_touch_an_app(chain):
    reg = chain.registry
    app = chain.app_id
    for who in (chain.stranger, chain.council):
        for call in (
            lambda a: reg.set_app_measurement(a, app, Platform.TDX, os.urandom(32), True),
            lambda a: reg.raise_key_version(a, app, 9),
            lambda a: reg.set_app_allow_debug(a, app, True),
            lambda a: reg.set_app_delegate(a, app, a.address),
            lambda a: reg.transfer_app_ownership(a, app, a.address),
        ):
            with pytest.raises(TransactionFailed, match="NotAppOwner"):
                call(who)
    assert reg.app(app).owner == chain.app_owner.address
    # the owner can, and keyVersion only goes up
    reg.raise_key_version(chain.app_owner, app, 2)
    with pytest.raises(TransactionFailed, match="KeyVersionNotRaised"):
        reg.raise_key_version(chain.app_owner, app, 2)
    reg.transfer_app_ownership(chain.app_owner, app, chain.stranger.address)
    reg.accept_app_ownership(chain.stranger, app)
    with pytest.raises(TransactionFailed, match="NotAppOwner"):
        reg.raise_key_version(chain.app_owner, app, 3)


def test_app_registration_is_permissionless_and_unsquattable(chain):
    reg = chain.registry
    salt = os.urandom(32)
    app_id = reg.register_app(chain.stranger, salt)
    assert app_id == keccak(bytes(12) + bytes.fromhex(chain.stranger.address[2:]) + salt)
    assert reg.app(app_id).owner == chain.stranger.address and reg.app(app_id).key_version == 1
    with pytest.raises(TransactionFailed, match="AppExists"):
        reg.register_app(chain.stranger, salt)
    assert reg.register_app(chain.small, salt) != app_id  # same salt, other owner: other app


def test_app_delegate_decides(chain):
    from derot.devnet.compile import load_artifact
    from derot.chain.tx import deploy_contract

    reg = chain.registry
    delegate = deploy_contract(chain.w3, chain.app_owner, load_artifact("AllowlistDelegate"), chain.app_owner.address)
    digest = os.urandom(32)
    assert not reg.is_app_allowed(chain.app_id, Platform.SEV_SNP, digest)
    assert reg.is_app_allowed(chain.app_id, Platform.TDX, chain.measurement)
    reg.set_app_delegate(chain.app_owner, chain.app_id, delegate.address)
    assert not reg.is_app_allowed(chain.app_id, Platform.TDX, chain.measurement)  # the delegate decides now
    before = chain.w3.eth.get_block("latest")["hash"]
    send(chain.w3, chain.app_owner, delegate.functions.setAllowed(int(Platform.SEV_SNP), digest, True))
    assert reg.is_app_allowed(chain.app_id, Platform.SEV_SNP, digest)
    # the policy engine's oracle answers as of its snapshot block
    record = reg.app(chain.app_id)
    assert record.delegate == delegate.address
    head = chain.w3.eth.get_block("latest")["hash"]
    assert DelegateOracleAt(chain.w3, head).is_app_allowed(record, Platform.SEV_SNP, digest)
    assert not DelegateOracleAt(chain.w3, before).is_app_allowed(record, Platform.SEV_SNP, digest)
    reverting = reg.app(chain.app_id).__class__(**{**record.__dict__, "delegate": chain.deployment.token})
    assert not DelegateOracleAt(chain.w3, head).is_app_allowed(reverting, Platform.SEV_SNP, digest)
    reg.apply(chain.council, [A.FreezeApp(chain.app_id)])
    assert not reg.is_app_allowed(chain.app_id, Platform.SEV_SNP, digest)


def test_actions_round_trip_through_calldata_and_proposals(chain):
    reg = chain.registry
    members = tuple(n.address for n in chain.nodes[:3])
    samples = [
        A.AddNode(chain.nodes[4].address), A.RemoveNode(chain.nodes[4].address), A.SuspendNode(members[0]),
        A.StartDkg(members, 2), A.StartReshare(members, 3), A.AbortEpoch(), A.AllowPlatform(1),
        A.DisablePlatform(3), A.SetTcbFloor(1, 7), A.Revoke(RevocationKind.CHIP_ID, os.urandom(64)),
        A.Unrevoke(RevocationKind.MEASUREMENT, os.urandom(32)), A.AllowNodeMeasurement(1, os.urandom(32)),
        A.DisallowNodeMeasurement(1, os.urandom(32)), A.FreezeApp(chain.app_id), A.UnfreezeApp(chain.app_id),
        A.SetCouncil(chain.stranger.address),
        A.SetEpochTimeout(1),
    ]
    for action in samples:
        target, data = action.encode(reg)
        assert A.decode_action(reg, target, data) == action
    pid = chain.gov.propose(chain.whale, samples[:4], "many actions")
    shown = chain.gov.proposal(pid)
    assert shown.actions == tuple(samples[:4]) and shown.state is ProposalState.PENDING
    assert [p.id for p in chain.gov.proposals()][-1] == pid


def test_proposal_with_reverting_action_fails_at_execute(chain):
    pid = chain.gov.propose(chain.whale, [A.AddNode(chain.stranger.address)], "not a registered node")
    with pytest.raises(TransactionFailed, match="BadNodeStatus"):
        pass_proposal(chain.gov, pid, chain.voters)
    assert chain.gov.state(pid) is ProposalState.QUEUED
