"""On-chain TEE policy (issue 13) and DKG exclusion reasons (issue 12), on a real anvil.

- per app: TEE waivers (setAppTeeExceptions) and the GPU policy (setAppGpuPolicy), app owner only, reserved
  bits refused, read back into ``AppRecord`` by the registry client and by the incremental follower path;
- governance's SEV-SNP policy (setSnpPolicy, setSnpMinTcb): owner (timelock) only, never the council or an
  app owner, read into the ``GovernanceSnapshot`` fields ``policy_tee`` uses;
- reportEpoch's exclusions: emitted per reporter, not part of the agreed report hash.
"""

from __future__ import annotations

import os

import pytest

from derot.chain import actions as A
from derot.chain import tee_policy
from derot.chain.actions_snp import SetSnpMinTcb, SetSnpPolicy
from derot.chain.exclusions import ExclusionReason, encode
from derot.chain.state import apply_changes, read_state
from derot.chain.tx import TransactionFailed, revert_reason, send
from derot.chain.types import EpochPhase
from derot.constants import GpuModel
from derot.crypto.bls import G2, random_scalar


def _call_error(call, sender) -> str:
    try:
        call.call({"from": sender})
    except Exception as exc:
        return revert_reason(exc)
    return "no revert"


def _state(chain):
    block = chain.w3.eth.get_block("latest")
    return read_state(chain.registry, bytes(block["hash"]), block["number"], block["timestamp"])


def test_app_owner_sets_tee_waivers_and_they_reach_the_app_record(chain):
    reg = chain.registry
    assert reg.app(chain.app_id).tee_exceptions == frozenset()
    before = _state(chain)
    receipt = reg.set_app_tee_exceptions(chain.app_owner, chain.app_id, ["td_migratable", "snp_policy:smt", "gpu_rim"])
    events = reg.contract.events.AppTeeExceptionsSet().process_receipt(receipt)
    expected = (1 << 1) | (1 << 8) | (1 << 6)
    assert [(bytes(e.args.appId), e.args.teeExceptions) for e in events] == [(chain.app_id, expected)]
    assert reg.app(chain.app_id).tee_exceptions == {"td_migratable", "snp_policy:smt", "gpu_rim"}
    # the incremental path (what the follower does on an event naming the app) sees it too
    block = chain.w3.eth.get_block("latest")
    after = apply_changes(reg, before, bytes(block["hash"]), block["number"], block["timestamp"], apps={chain.app_id})
    assert after.snapshot.apps[chain.app_id].tee_exceptions == {"td_migratable", "snp_policy:smt", "gpu_rim"}
    reg.set_app_tee_exceptions(chain.app_owner, chain.app_id, [])
    assert reg.app(chain.app_id).tee_exceptions == frozenset()


def test_tee_waivers_refuse_strangers_governance_and_reserved_bits(chain):
    reg, fns = chain.registry, chain.registry.contract.functions
    for who in (chain.stranger, chain.council):
        with pytest.raises(TransactionFailed, match="NotAppOwner"):
            reg.set_app_tee_exceptions(who, chain.app_id, ["sept_ve"])
    # every bit outside the waivable set is refused by the contract, whatever the client says
    for bit in (7, 17, 31):
        with pytest.raises(TransactionFailed, match="BadPolicy"):
            send(chain.w3, chain.app_owner, fns.setAppTeeExceptions(chain.app_id, 1 << bit))
    assert all(send(chain.w3, chain.app_owner, fns.setAppTeeExceptions(chain.app_id, 1 << b))
               for b in tee_policy.TEE_EXCEPTION_BITS.values())
    with pytest.raises(TransactionFailed, match="UnknownApp"):
        reg.set_app_tee_exceptions(chain.app_owner, os.urandom(32), ["sept_ve"])
    with pytest.raises(tee_policy.PolicyEncodingError, match="td_attributes_reserved"):
        reg.set_app_tee_exceptions(chain.app_owner, chain.app_id, ["td_attributes_reserved"])


def test_app_gpu_policy_is_owner_only_bounded_and_read_back(chain):
    reg, fns = chain.registry, chain.registry.contract.functions
    record = reg.app(chain.app_id)
    assert record.gpu_models == 0 and not record.gpu_required
    receipt = reg.set_app_gpu_policy(chain.app_owner, chain.app_id, ["H100", "gb200"], True)
    events = reg.contract.events.AppGpuPolicySet().process_receipt(receipt)
    assert [(e.args.gpuModels, e.args.gpuRequired) for e in events] == [(int(GpuModel.H100 | GpuModel.GB200), True)]
    record = reg.app(chain.app_id)
    assert record.gpu_models == GpuModel.H100 | GpuModel.GB200 and record.gpu_required
    # the rest of the app's slot is untouched
    assert record.key_version == 1 and not record.frozen and not record.allow_debug
    with pytest.raises(TransactionFailed, match="NotAppOwner"):
        reg.set_app_gpu_policy(chain.stranger, chain.app_id, [], False)
    with pytest.raises(TransactionFailed, match="BadPolicy"):
        send(chain.w3, chain.app_owner, fns.setAppGpuPolicy(chain.app_id, 32, False))
    with pytest.raises(tee_policy.PolicyEncodingError):
        reg.set_app_gpu_policy(chain.app_owner, chain.app_id, ["A100"], False)


def test_snp_policy_defaults_and_governance_sets_it(chain):
    reg = chain.registry
    state = _state(chain)
    assert state.snapshot.snp_max_vmpl == 0
    assert dict(state.snapshot.snp_guest_policy) == {"migrate_ma": False}  # the contract's default
    assert dict(state.snapshot.snp_min_tcb) == {}
    policy = A.parse_action(["set-snp-policy", "--max-vmpl", "1", "--require", "smt=0", "--require", "single_socket=1"])
    milan = A.parse_action(["set-snp-min-tcb", "Milan", "bootloader=3,tee=0,snp=8,microcode=115"])
    turin = A.parse_action(["set-snp-min-tcb", "turin", "fmc=1,bootloader=2,tee=0,snp=3,microcode=70"])
    chain.enact([policy, milan, turin])
    block = chain.w3.eth.get_block("latest")
    # both the full read and the event-driven re-read give the same snapshot
    incremental = apply_changes(reg, state, bytes(block["hash"]), block["number"], block["timestamp"], snp=True)
    for snap in (_state(chain).snapshot, incremental.snapshot):
        assert snap.snp_max_vmpl == 1
        assert dict(snap.snp_guest_policy) == {"smt": False, "single_socket": True}
        assert {k: dict(v) for k, v in snap.snp_min_tcb.items()} == {
            "Milan": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115},
            "Turin": {"bootloader": 2, "tee": 0, "snp": 3, "microcode": 70, "fmc": 1},
        }
    # a proposal decodes back to the same typed actions
    target, data = milan.encode(reg)
    assert A.decode_action(reg, target, data) == milan
    assert "Milan: bootloader=3" in milan.summary()


def test_snp_policy_is_governance_only(chain):
    reg, fns = chain.registry, chain.registry.contract.functions
    for who in (chain.council, chain.app_owner, chain.stranger, chain.nodes[0]):
        with pytest.raises(TransactionFailed, match="OwnableUnauthorizedAccount"):
            send(chain.w3, who, fns.setSnpPolicy(3, 0, 0))
        with pytest.raises(TransactionFailed, match="OwnableUnauthorizedAccount"):
            send(chain.w3, who, fns.setSnpMinTcb(0, 0))
    assert not SetSnpPolicy.council_allowed and not SetSnpMinTcb.council_allowed
    # bad values revert even for governance (checked here by an eth_call from the owner, the timelock)
    owner = reg.owner()
    for call in (fns.setSnpPolicy(4, 0, 0), fns.setSnpPolicy(0, 1 << 17, 0), fns.setSnpPolicy(0, 1 << 16, 1 << 18),
                 fns.setSnpMinTcb(3, 1)):
        assert _call_error(call, owner) == "BadPolicy()"
    assert _call_error(fns.setSnpPolicy(3, 1 << 16, 1 << 16), owner) == "no revert"  # a valid one


def test_report_epoch_emits_each_reporters_exclusions_outside_the_agreed_hash(chain):
    reg = chain.registry
    members = tuple(n.address for n in chain.nodes[:5])
    chain.enact([A.StartDkg(members, 3)])
    epoch_id = reg.epoch_count()
    pk, kd, transcript = G2.generator() * random_scalar(), G2.generator() * random_scalar(), os.urandom(32)
    n = chain.nodes
    views = [
        encode({4: "silent: no deal bundle", 5: "equivocation: signed two different deal bundles"}),
        encode({4: "late: only 1 responses list its bundle, need 2"}, {5: "evidence_unavailable: did not show"}),
        encode({}),
    ]
    for node, view in zip(n[:3], views):
        reg.report_epoch(node, epoch_id, pk, kd, transcript, view)
    epoch = reg.epoch(epoch_id)
    assert epoch.phase is EpochPhase.ACTIVE  # different exclusion views still agree on keys and transcript
    assert reg.report_of(epoch_id, n[0].address) == reg.report_of(epoch_id, n[1].address)
    seen = reg.epoch_exclusions(epoch)
    assert [(e.reporter, dict(e.excluded)) for e in seen] == [
        (n[0].address, {4: ExclusionReason.SILENT, 5: ExclusionReason.EQUIVOCATION}),
        (n[1].address, {4: ExclusionReason.LATE, 5: ExclusionReason.EVIDENCE_UNAVAILABLE}),
    ]
    assert seen[0].to_json_dict()["excluded"] == {"4": "silent", "5": "equivocation"}
    # mismatched lists are refused
    with pytest.raises(TransactionFailed, match="BadPolicy"):
        send(chain.w3, n[3], reg.contract.functions.reportEpoch(epoch_id, pk.to_eip2537(), kd.to_eip2537(),
                                                                transcript, [1, 2], [1]))


def test_cli_sets_app_policy_and_gov_state_shows_snp_policy_and_exclusions(chain, tmp_path, monkeypatch, capsys):
    import json

    from derot.cli.main import main

    monkeypatch.setenv("DEROT_KEY", chain.app_owner.key.hex())
    where = ["--rpc", chain.anvil.url, "--registry", chain.registry.address, "--json"]
    app = chain.app_id.hex()
    assert main(["app", "set-exceptions", app, *where, "--allow-exception", "vmpl",
                 "--allow-exception", "snp_policy:smt"]) == 0
    assert json.loads(capsys.readouterr().out)["tee_exceptions"] == ["snp_policy:smt", "vmpl"]
    assert main(["app", "set-gpu-policy", app, *where, "--model", "h100", "--model", "H200", "--require-gpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gpu_models"] == ["H100", "H200"] and out["gpu_required"] is True
    assert main(["app", "show", app, *where]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["tee_exceptions"] == ["snp_policy:smt", "vmpl"] and shown["gpu_models"] == ["H100", "H200"]
    monkeypatch.setenv("DEROT_KEY", chain.stranger.key.hex())  # not the owner: refused, nothing changes
    assert main(["app", "set-exceptions", app, *where]) != 0
    capsys.readouterr()
    assert chain.registry.app(chain.app_id).tee_exceptions == {"snp_policy:smt", "vmpl"}

    chain.enact([A.parse_action(["set-snp-policy", "--max-vmpl", "2", "--require", "smt=0"])])
    reg, n = chain.registry, chain.nodes
    chain.enact([A.StartDkg(tuple(x.address for x in n[:4]), 3)])
    epoch_id = reg.epoch_count()
    pk, kd, transcript = G2.generator() * random_scalar(), G2.generator() * random_scalar(), os.urandom(32)
    reg.report_epoch(n[0], epoch_id, pk, kd, transcript, encode({3: "withheld member 2's box"}))
    path = tmp_path / "deployment.json"
    chain.deployment.save(path)
    monkeypatch.setenv("DEROT_RPC", chain.anvil.url)
    monkeypatch.setenv("DEROT_DEPLOYMENT", str(path))
    assert main(["gov", "state"]) == 0
    text = capsys.readouterr().out
    assert "SEV-SNP: VMPL at most 2; guest policy requires smt=0" in text
    assert f"epoch {epoch_id} exclusions reported by {n[0].address}: member 3 ({n[2].address}) withheld_box" in text
    assert main(["gov", "state", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["exclusions"] == [{"epoch": epoch_id, "reporter": n[0].address, "block": data["exclusions"][0]["block"],
                                   "excluded": {"3": "withheld_box"}, "operators": {"3": n[2].address}}]
    assert data["snp_policy"]["max_vmpl"] == 2
