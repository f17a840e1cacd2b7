"""Epochs: DKG and reshare activation by t agreeing reports, conflicts, key checks, committee rules."""

from __future__ import annotations

import os

import pytest
from web3.logs import DISCARD

from derot.chain import actions as A
from derot.chain.tx import TransactionFailed, revert_reason, send
from derot.chain.types import EpochPhase
from derot.crypto.bls import G2, random_scalar


def call_error(call, tx) -> str:
    """The decoded revert reason of an eth_call (or "no revert")."""
    try:
        call.call(tx)
    except Exception as exc:
        return revert_reason(exc)
    return "no revert"


def members(chain, k):
    return tuple(n.address for n in chain.nodes[:k])


def test_session_epoch_is_active_with_reported_keys(chain):
    reg = chain.registry
    assert reg.current_epoch() == 1 and reg.pending_epoch() == 0
    epoch = reg.epoch(1)
    assert epoch.phase is EpochPhase.ACTIVE and epoch.threshold == 2
    assert epoch.group_key_sig == chain.pk and epoch.group_key_kd == chain.kd
    assert epoch.members == members(chain, 3) and epoch.index_of(chain.nodes[2].address) == 3
    assert reg.contract.functions.memberIndex(1, chain.nodes[1].address).call() == 2


def test_dkg_activates_only_when_t_reports_agree_and_conflicts_are_recorded(chain):
    reg = chain.registry
    chain.enact([A.StartDkg(members(chain, 5), 3)])
    epoch_id = reg.epoch_count()
    assert reg.pending_epoch() == epoch_id and reg.epoch(epoch_id).phase is EpochPhase.DKG
    pk, kd, transcript = G2.generator() * random_scalar(), G2.generator() * random_scalar(), os.urandom(32)
    other = G2.generator() * random_scalar()
    n = chain.nodes
    reg.report_epoch(n[0], epoch_id, pk, kd, transcript)
    receipt = reg.report_epoch(n[1], epoch_id, other, kd, transcript)  # a conflicting report
    conflicts = reg.contract.events.EpochReportConflict().process_receipt(receipt, errors=DISCARD)
    assert [c.args.member for c in conflicts] == [n[1].address]
    assert reg.report_of(epoch_id, n[1].address) != reg.report_of(epoch_id, n[0].address)
    reg.report_epoch(n[2], epoch_id, pk, kd, transcript)
    assert reg.epoch(epoch_id).phase is EpochPhase.DKG  # 2 agree, t = 3
    assert reg.current_epoch() == 1
    reg.report_epoch(n[3], epoch_id, pk, kd, transcript)  # third agreeing report: activation
    epoch = reg.epoch(epoch_id)
    assert epoch.phase is EpochPhase.ACTIVE and epoch.group_key_sig == pk and epoch.transcript_hash == transcript
    assert reg.current_epoch() == epoch_id and reg.pending_epoch() == 0
    assert reg.epoch(1).phase is EpochPhase.RETIRED
    assert reg.report_count(epoch_id, reg.report_of(epoch_id, n[0].address)) == 3
    # a late report is still recorded, and a late conflicting one is flagged
    receipt = reg.report_epoch(n[4], epoch_id, other, kd, transcript)
    assert reg.contract.events.EpochReportConflict().process_receipt(receipt, errors=DISCARD)
    assert reg.epoch(epoch_id).group_key_sig == pk


def test_reports_are_checked(chain):
    reg = chain.registry
    chain.enact([A.StartDkg(members(chain, 3), 2)])
    epoch_id = reg.epoch_count()
    pk = G2.generator() * random_scalar()
    with pytest.raises(TransactionFailed, match="NotMember"):
        reg.report_epoch(chain.nodes[4], epoch_id, pk, pk, bytes(32))
    identity = G2.identity().to_eip2537()
    with pytest.raises(TransactionFailed, match=r"InvalidGroupKey\(0\)"):
        send(chain.w3, chain.nodes[0], reg.contract.functions.reportEpoch(epoch_id, identity, pk.to_eip2537(), bytes(32), [], []))
    off_curve = bytearray(pk.to_eip2537())
    off_curve[-1] ^= 1
    with pytest.raises(TransactionFailed, match=r"InvalidGroupKey\(1\)"):
        send(chain.w3, chain.nodes[0],
             reg.contract.functions.reportEpoch(epoch_id, pk.to_eip2537(), bytes(off_curve), bytes(32), [], []))
    with pytest.raises(TransactionFailed, match=r"InvalidGroupKey\(0\)"):
        send(chain.w3, chain.nodes[0], reg.contract.functions.reportEpoch(epoch_id, pk.to_eip2537()[:-1], pk.to_eip2537(), bytes(32), [], []))
    reg.report_epoch(chain.nodes[0], epoch_id, pk, pk, bytes(32))
    with pytest.raises(TransactionFailed, match="AlreadyReported"):
        reg.report_epoch(chain.nodes[0], epoch_id, pk, pk, bytes(32))
    with pytest.raises(TransactionFailed, match="EpochClosed"):
        reg.report_epoch(chain.nodes[0], 99, pk, pk, bytes(32))


def test_reshare_keeps_the_keys_and_old_certificates(chain):
    reg = chain.registry
    cert = chain.cert()
    sig = cert.sign(chain.sk)
    chain.enact([A.StartReshare(members(chain, 5), 3)])
    epoch_id = reg.epoch_count()
    assert reg.epoch(epoch_id).phase is EpochPhase.RESHARE and reg.epoch(epoch_id).previous == 1
    transcript = os.urandom(32)
    wrong = G2.generator() * random_scalar()
    for node in chain.nodes[:3]:  # t members agree on NEW keys: a reshare must not activate
        reg.report_epoch(node, epoch_id, wrong, chain.kd, transcript)
    assert reg.epoch(epoch_id).phase is EpochPhase.RESHARE and reg.current_epoch() == 1
    chain.enact([A.StartReshare(members(chain, 5), 3)])  # restart: the stuck reshare is aborted
    assert reg.epoch(epoch_id).phase is EpochPhase.ABORTED
    epoch_id = reg.epoch_count()
    for node in chain.nodes[2:5]:
        reg.report_epoch(node, epoch_id, chain.pk, chain.kd, transcript)
    epoch = reg.epoch(epoch_id)
    assert epoch.phase is EpochPhase.ACTIVE and epoch.key_store == reg.epoch(1).key_store
    assert reg.epoch(1).phase is EpochPhase.RETIRED
    assert reg.verify_certificate(cert.encode(), sig).name == "OK"  # issued in epoch 1, still valid
    new_cert = chain.cert()
    assert new_cert.epoch == epoch_id and reg.verify_certificate(new_cert.encode(), new_cert.sign(chain.sk)).ok


def test_fresh_dkg_retires_old_certificates(chain):
    reg = chain.registry
    cert = chain.cert()
    sig = cert.sign(chain.sk)
    chain.enact([A.StartDkg(members(chain, 3), 2)])
    epoch_id = reg.epoch_count()
    sk2 = random_scalar()
    for node in chain.nodes[:2]:
        reg.report_epoch(node, epoch_id, G2.generator() * sk2, chain.kd, bytes(32))
    assert reg.current_epoch() == epoch_id
    assert reg.verify_certificate(cert.encode(), sig).name == "EPOCH_KEY_RETIRED"
    new_cert = chain.cert()
    assert reg.verify_certificate(new_cert.encode(), new_cert.sign(sk2)).ok


@pytest.mark.parametrize("size, threshold", [(3, 1), (3, 4), (4, 2), (1, 0)])
def test_threshold_bounds_are_enforced_on_chain(chain, size, threshold):
    call = chain.registry.contract.functions.startDkg(list(members(chain, size)), threshold)
    assert call_error(call, {"from": chain.deployment.timelock}) == f"BadCommittee({size}, {threshold})"


def test_committee_members_must_be_approved_and_distinct(chain):
    fn = chain.registry.contract.functions.startDkg
    timelock = {"from": chain.deployment.timelock}
    stranger, first, fourth = chain.stranger.address, chain.nodes[0].address, chain.nodes[3].address
    assert call_error(fn([*members(chain, 2), stranger], 2), timelock) == f"MemberNotApproved({stranger.lower()})"
    assert call_error(fn([*members(chain, 2), first], 2), timelock) == f"DuplicateMember({first.lower()})"
    chain.registry.apply(chain.council, [A.SuspendNode(fourth)])
    assert call_error(fn(list(members(chain, 4)), 3), timelock) == f"MemberNotApproved({fourth.lower()})"
    assert fn(list(members(chain, 3)), 2).call(timelock) == chain.registry.epoch_count() + 1


def test_council_can_abort_a_pending_epoch(chain):
    chain.enact([A.StartDkg(members(chain, 3), 2)])
    epoch_id = chain.registry.epoch_count()
    chain.registry.apply(chain.council, [A.AbortEpoch()])
    assert chain.registry.epoch(epoch_id).phase is EpochPhase.ABORTED
    assert chain.registry.current_epoch() == 1
    with pytest.raises(TransactionFailed, match="EpochClosed"):
        chain.registry.report_epoch(chain.nodes[0], epoch_id, chain.pk, chain.kd, bytes(32))


def test_racing_reports_activate_even_when_estimated_before_the_other_landed(chain):
    """Found on a healthy devnet: members report at about the same time, so each one's gas is estimated against
    a state where its report does not activate the epoch; mined in one block, the t-th of them does activate
    (KeyStore deployment, epoch storage). Its gas must cover that path, or it reverts out of gas and the node
    logs a failed report. Here 1 of t = 3 reports is in, two more are estimated, then mined together."""
    import threading
    import time

    reg, w3 = chain.registry, chain.w3
    chain.enact([A.StartDkg(members(chain, 4), 3)])
    epoch_id = reg.epoch_count()
    pk, kd, transcript = G2.generator() * random_scalar(), G2.generator() * random_scalar(), os.urandom(32)
    reg.report_epoch(chain.nodes[0], epoch_id, pk, kd, transcript)
    racers = chain.nodes[1:3]
    nonces = {n.address: w3.eth.get_transaction_count(n.address) for n in racers}
    outcomes: dict[str, object] = {}

    def report(node):
        try:
            outcomes[node.address] = reg.report_epoch(node, epoch_id, pk, kd, transcript)
        except Exception as exc:  # noqa: BLE001 - reported below
            outcomes[node.address] = exc

    w3.provider.make_request("evm_setAutomine", [False])
    try:
        threads = [threading.Thread(target=report, args=(n,)) for n in racers]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while any(w3.eth.get_transaction_count(a, "pending") == nonce for a, nonce in nonces.items()):
            assert time.monotonic() < deadline and all(t.is_alive() for t in threads), outcomes
            time.sleep(0.05)
        w3.provider.make_request("evm_mine", [])
    finally:
        w3.provider.make_request("evm_setAutomine", [True])
    for t in threads:
        t.join(120)
    receipts = [outcomes[n.address] for n in racers]
    assert all(not isinstance(r, Exception) for r in receipts), receipts
    assert receipts[0]["blockNumber"] == receipts[1]["blockNumber"]
    print("gas used by the two racing reports:", [r["gasUsed"] for r in receipts])
    epoch = reg.epoch(epoch_id)
    assert epoch.phase is EpochPhase.ACTIVE and epoch.group_key_sig == pk
