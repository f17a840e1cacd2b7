"""The registry fixes of issue 17 (findings 2, 4-9), each against the real contracts on anvil. Every test
here fails on the contracts before the fix."""

from __future__ import annotations

import os

import pytest

from derot.chain import actions as A
from derot.chain.governance import ProposalState, Support
from derot.chain.registry import APP_PAGE
from derot.chain.state import read_state
from derot.chain.tx import TransactionFailed, send
from derot.certs import Reason
from derot.constants import Platform
from derot.crypto.bls import G2, random_scalar
from derot.devnet.anvil import mine, warp

CALL_GAS_CAP = 30_000_000  # anvil's and many providers' eth_call gas limit; geth's default is 50M


def start_epoch(chain, members=None, threshold: int = 2) -> int:
    members = members or tuple(n.address for n in chain.nodes[:3])
    chain.enact([A.StartDkg(members, threshold)], "new DKG")
    return chain.registry.pending_epoch()


def state_now(chain):
    block = chain.w3.eth.get_block("latest")
    return read_state(chain.registry, bytes(block["hash"]), block["number"], block["timestamp"])


# finding 4: suspended and removed members cannot report --------------------------------------------
def test_only_approved_members_report(chain):
    reg = chain.registry
    epoch = start_epoch(chain)
    reg.apply(chain.council, [A.SuspendNode(chain.nodes[2].address)])
    chain.enact([A.RemoveNode(chain.nodes[1].address)], "remove a member")
    pk, kd, transcript = G2.generator() * random_scalar(), G2.generator() * random_scalar(), os.urandom(32)
    for node in chain.nodes[1:3]:
        with pytest.raises(TransactionFailed, match="MemberNotApproved"):
            reg.report_epoch(node, epoch, pk, kd, transcript)
    reg.report_epoch(chain.nodes[0], epoch, pk, kd, transcript)
    assert reg.epoch(epoch).phase.name == "DKG"  # one approved report of t = 2: not active


# finding 7: re-reporting and an epoch deadline --------------------------------------------------------
def test_a_member_can_replace_its_report(chain):
    reg = chain.registry
    epoch = start_epoch(chain)
    pk, kd = G2.generator() * random_scalar(), G2.generator() * random_scalar()
    stale, good = os.urandom(32), os.urandom(32)
    reg.report_epoch(chain.nodes[0], epoch, pk, kd, stale)
    reg.report_epoch(chain.nodes[0], epoch, pk, kd, good)  # recomputed: replaces the stale report
    with pytest.raises(TransactionFailed, match="AlreadyReported"):
        reg.report_epoch(chain.nodes[0], epoch, pk, kd, good)
    stale_hash = reg.report_of(epoch, chain.nodes[0].address)
    assert reg.report_count(epoch, stale_hash) == 1
    reg.report_epoch(chain.nodes[1], epoch, pk, kd, good)
    record = reg.epoch(epoch)
    assert record.phase.name == "ACTIVE" and record.transcript_hash == good


def test_a_stuck_epoch_expires(chain):
    reg = chain.registry
    epoch = start_epoch(chain)
    timeout = reg.epoch_timeout()
    assert timeout == chain.deployment.params["epoch_timeout"]
    with pytest.raises(TransactionFailed, match="EpochNotExpired"):
        reg.expire_epoch(chain.stranger)
    mine(chain.w3, timeout)
    reg.expire_epoch(chain.stranger)  # anyone
    assert reg.epoch(epoch).phase.name == "ABORTED" and reg.pending_epoch() == 0
    assert reg.current_epoch() == 1  # the active epoch is untouched


# finding 6: the council cancels a queued proposal, but never its own replacement ------------------------
def queue(chain, actions) -> tuple[int, bytes]:
    """A proposal passed by the whale alone (> 4 % quorum) and queued; returns (proposal id, operation id)."""
    gov = chain.gov
    description = f"whale alone {os.urandom(4).hex()}"
    proposal = gov.propose(chain.whale, actions, description)
    mine(chain.w3, gov.voting_delay() + 1)
    gov.vote(chain.whale, proposal, Support.FOR)
    mine(chain.w3, gov.voting_period() + 1)
    gov.queue(chain.whale, proposal)
    operation = gov.timelock_operation(proposal)
    assert gov.timelock.functions.isOperationPending(operation).call()
    return proposal, operation


def test_council_cancels_a_queued_proposal(chain):
    gov, timelock = chain.gov, chain.gov.timelock
    proposal, operation = queue(chain, [A.AllowPlatform(int(Platform.SGX))])
    gov.council_cancel(chain.council, proposal)
    assert gov.state(proposal) is ProposalState.CANCELED
    assert not timelock.functions.isOperationPending(operation).call()
    with pytest.raises(TransactionFailed):
        gov.execute(chain.whale, proposal)
    assert not chain.registry.platform_rules().get(Platform.SGX, None)
    # cancelling is all it can do: it cannot schedule
    with pytest.raises(TransactionFailed, match="AccessControlUnauthorizedAccount"):
        send(chain.w3, chain.council, timelock.functions.schedule(
            chain.registry.address, 0, b"", bytes(32), os.urandom(32), gov.timelock_delay()))


def test_council_cannot_veto_its_own_replacement(chain):
    gov, timelock = chain.gov, chain.gov.timelock
    proposal, operation = queue(chain, [A.SetCouncil(chain.small.address)])
    assert timelock.functions.councilProof(operation).call()
    with pytest.raises(TransactionFailed, match="CancelNotAllowed"):
        send(chain.w3, chain.council, timelock.functions.cancel(operation), what="council cancels")
    warp(chain.w3, gov.timelock_delay() + 1)
    gov.execute(chain.whale, proposal)
    assert chain.registry.security_council() == chain.small.address


# finding 5: the council cannot halt the committee by suspending it -----------------------------------
def test_council_cannot_suspend_the_committee_below_its_threshold(chain):
    reg = chain.registry
    reg.apply(chain.council, [A.SuspendNode(chain.nodes[4].address)])  # not a member: fine
    reg.apply(chain.council, [A.SuspendNode(chain.nodes[0].address)])  # 2 of 3 approved remain, t = 2
    with pytest.raises(TransactionFailed, match="CouncilWouldHalt"):
        reg.apply(chain.council, [A.SuspendNode(chain.nodes[1].address)])
    chain.enact([A.SuspendNode(chain.nodes[1].address)], "governance may")
    assert reg.node(chain.nodes[1].address).status.name == "SUSPENDED"


# finding 8: one key rule for the contract and the SDK --------------------------------------------------
def test_sdk_and_contract_agree_when_only_group_key_kd_changes(chain):
    reg = chain.registry
    old = chain.cert(epoch=1)
    sig = old.sign(chain.sk)
    assert reg.verify_certificate(old.encode(), sig) is Reason.OK
    assert state_now(chain).verify_certificate(old.encode(), sig.to_eip2537()).reason is Reason.OK
    epoch = start_epoch(chain)
    new_kd, transcript = G2.generator() * random_scalar(), os.urandom(32)
    for node in chain.nodes[:2]:
        reg.report_epoch(node, epoch, chain.pk, new_kd, transcript)  # same PK_sig, new PK_kd
    onchain = reg.verify_certificate(old.encode(), sig)
    offchain = state_now(chain).verify_certificate(old.encode(), sig.to_eip2537()).reason
    assert onchain is Reason.EPOCH_KEY_RETIRED and offchain is onchain
    fresh = chain.cert(epoch=epoch)
    fresh_sig = fresh.sign(chain.sk)
    assert reg.verify_certificate(fresh.encode(), fresh_sig) is Reason.OK
    assert state_now(chain).verify_certificate(fresh.encode(), fresh_sig.to_eip2537()).reason is Reason.OK


# finding 9: isAppAllowed with an EOA delegate, two-step ownership --------------------------------------
def test_eoa_delegate_means_not_allowed(chain):
    reg = chain.registry
    reg.set_app_delegate(chain.app_owner, chain.app_id, chain.stranger.address)
    assert reg.is_app_allowed(chain.app_id, Platform.TDX, chain.measurement) is False


def test_app_ownership_moves_in_two_steps(chain):
    reg = chain.registry
    app = chain.app_id
    reg.transfer_app_ownership(chain.app_owner, app, chain.stranger.address)
    assert reg.app(app).owner == chain.app_owner.address  # nothing moved yet
    assert reg.pending_app_owner(app) == chain.stranger.address
    with pytest.raises(TransactionFailed, match="NotPendingAppOwner"):
        reg.accept_app_ownership(chain.small, app)
    reg.raise_key_version(chain.app_owner, app, 2)  # the owner keeps its powers until then
    reg.accept_app_ownership(chain.stranger, app)
    assert reg.app(app).owner == chain.stranger.address and reg.pending_app_owner(app) is None
    with pytest.raises(TransactionFailed, match="NotAppOwner"):
        reg.raise_key_version(chain.app_owner, app, 3)


# finding 2: the measurement flood is refused at the cap ------------------------------------------------
def test_measurement_flood_is_refused_at_the_cap(chain):
    reg = chain.registry
    cap = reg.contract.functions.MAX_APP_MEASUREMENTS().call()
    app = reg.register_app(chain.stranger, os.urandom(32))
    for _ in range(cap):
        reg.set_app_measurement(chain.stranger, app, Platform.TDX, os.urandom(32), True)
    with pytest.raises(TransactionFailed, match="TooManyMeasurements"):
        reg.set_app_measurement(chain.stranger, app, Platform.TDX, os.urandom(32), True)
    assert len(reg.app(app).measurements) == cap
    # a full app costs so little that a whole page of full apps fits far below the call gas cap
    one = chain.w3.eth.estimate_gas({"to": reg.address, "data": reg.contract.encode_abi("getApp", [app])})
    print(f"getApp with {cap} measurements: {one:,} gas; a page of {APP_PAGE}: ~{one * APP_PAGE:,}")
    assert one * APP_PAGE < CALL_GAS_CAP // 2
    # removing one makes room again
    gone = next(iter(reg.app(app).measurements))[1]
    reg.set_app_measurement(chain.stranger, app, Platform.TDX, gone, False)
    reg.set_app_measurement(chain.stranger, app, Platform.TDX, os.urandom(32), True)


def test_list_views_are_paged(chain):
    """Revocations and node measurements come in pages (the client reads PAGE at a time), and the pages add
    up to the whole list across a page boundary."""
    from derot.chain.registry import PAGE
    from derot.chain.types import RevocationKind

    reg = chain.registry
    fns = reg.contract.functions
    before = reg.revocations(RevocationKind.FMSPC)
    added = {os.urandom(6) for _ in range(PAGE + 3)}
    reg.apply(chain.council, [A.Revoke(RevocationKind.FMSPC, f) for f in added])
    count = fns.revocationCount(int(RevocationKind.FMSPC)).call()
    assert count == len(before) + len(added)
    pages = [set(map(bytes, fns.revocationsPage(int(RevocationKind.FMSPC), start, PAGE).call()))
             for start in range(0, count, PAGE)]
    assert len(pages) == 2 and len(pages[0]) == PAGE and set().union(*pages) == before | added
    assert reg.revocations(RevocationKind.FMSPC) == before | added
    assert fns.revocationsPage(int(RevocationKind.FMSPC), count + 5, PAGE).call() == []
    digests = [os.urandom(32) for _ in range(3)]
    chain.enact([A.AllowNodeMeasurement(int(Platform.TDX), d) for d in digests], "node images")
    assert fns.nodeMeasurementCount().call() >= 3
    platforms, page = fns.nodeMeasurementsPage(1, 2).call()
    assert len(page) == 2 and set(map(bytes, page)) <= set(digests)
    assert {(Platform.TDX, d) for d in digests} <= reg.node_measurements()


# finding 9: the precompiles get all the gas; a short budget reverts, it never refuses a valid input -------------
def _sweep(call, low: int, high: int, step: int) -> dict[int, str]:
    """``call(gas)`` for gas limits from ``low`` to ``high``: the answer, or the revert's error name."""
    from web3.exceptions import ContractCustomError, ContractLogicError, Web3RPCError

    out = {}
    for gas in range(low, high + 1, step):
        try:
            out[gas] = str(call(gas))
        except ContractCustomError as exc:
            out[gas] = f"revert:{exc.data[:10] if isinstance(exc.data, str) else exc.data}"
        except (ContractLogicError, Web3RPCError) as exc:
            out[gas] = f"revert:{exc}"[:80]
    return out


def _selector(signature: str) -> str:
    from web3 import Web3

    return "revert:0x" + Web3.keccak(text=signature)[:4].hex()


def test_a_short_gas_budget_never_turns_a_valid_signature_into_malformed(chain):
    """With fixed stipends (the old contract) a call whose gas runs short of the pairing's price answered
    MALFORMED_SIGNATURE for a valid signature; with forwarded gas it reverts InsufficientGas, so a repricing
    can only make calls cost more, never answer wrongly."""
    reg = chain.registry
    cert = chain.cert()
    sig = cert.sign(chain.sk).to_eip2537()
    fn = reg.contract.functions.verifyCertificate(cert.encode(), sig)
    needed = fn.estimate_gas()
    answers = _sweep(lambda gas: Reason(fn.call({"gas": gas})[1]).name, needed - 140_000, needed + 20_000, 1_000)
    answered = {a for a in answers.values() if not a.startswith("revert:")}
    assert answered == {"OK"}, answers  # whatever the budget: the right answer, or no answer at all
    assert _selector("InsufficientGas()") in answers.values(), answers  # the short budgets were reached
    assert answers[needed + 20_000] == "OK"


def test_a_short_gas_budget_never_makes_a_valid_report_look_like_a_bad_key(chain):
    """reportEpoch checks both group keys with the G2MSM precompile; short of gas it reverts InsufficientGas,
    never InvalidGroupKey (the old stipend made a repricing revert every report as a bad key)."""
    reg = chain.registry
    epoch = start_epoch(chain)
    pk, kd = G2.generator() * random_scalar(), G2.generator() * random_scalar()
    fn = reg.contract.functions.reportEpoch(epoch, pk.to_eip2537(), kd.to_eip2537(), os.urandom(32), [], [])
    sender = {"from": chain.nodes[0].address}
    needed = fn.estimate_gas(sender)
    answers = _sweep(lambda gas: fn.call({**sender, "gas": gas}), needed - 200_000, needed + 20_000, 2_000)
    assert _selector("InsufficientGas()") in answers.values(), answers
    assert not any(_selector("InvalidGroupKey(uint256)") == a for a in answers.values()), answers
    assert answers[needed + 20_000] == "[]"
