"""Revoking one compromised machine on a devnet (issue 16), end to end with devnet evidence.

One TDX machine's PPID is revoked by the SecurityCouncil and one SNP chip by a governance vote. Within one
confirmed block the same machine's evidence is refused by name on every node, while another machine of the
same family keeps working; the certificates issued to the revoked machines before the revocation fail
verification afterwards, on-chain (with the gas) and off-chain (registry state, a node's GetStatus).
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import pytest

from derot.app.client import RequestFailed, RootOfTrustClient
from derot.app.sdk import App, TrustAnchor
from derot.attest.trust import TrustConfig
from derot.attest.verify import verify_evidence
from derot.certs import Reason
from derot.chain.actions import Revoke
from derot.chain.state import read_state
from derot.constants import KeyType, Platform, RevocationKind
from derot.devnet.anvil import rpc
from derot.devnet.network import COUNCIL

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def net(devnet_starter):
    network = devnet_starter("revoke", nodes=3, threshold=2)
    yield network
    network.down()


@pytest.fixture(scope="module")
def harness(net, harness_for):
    return harness_for(net)


def _machine(harness, platform):
    """An app on one fixed devnet machine (its hardware ids stay the same across requests) and those ids."""
    device = harness.device(platform)
    anchor = TrustAnchor.from_chain(harness.net.rpc_url, harness.net.registry)
    claims = verify_evidence(device.evidence(bytes(64)), TrustConfig.devnet(harness.roots), at=int(time.time()))
    return App(harness.client(), device, anchor, harness.app_id), claims.hardware_ids


def _certificate(app):
    key = app.get_key()
    return app.get_certificate(key.keys.public_key(KeyType.SECP256K1), KeyType.SECP256K1)


def _wait_all_nodes_confirmed(net, block: int, timeout: float = 60.0) -> None:
    """Wait until every node's follower treats ``block`` as confirmed (what each node reports itself)."""
    deadline = time.monotonic() + timeout * max(1.0, len(net.node_processes) / 3)
    for proc in net.node_processes:
        client = RootOfTrustClient([proc.public_endpoint], attempts=1)
        try:
            while client.network_info().confirmed_block < block:
                assert time.monotonic() < deadline, f"node {proc.index} never confirmed block {block}"
                time.sleep(0.1)
        finally:
            client.close()


@contextmanager
def _chain_frozen(net):
    """Blocks come only from transactions and from the test's own ``mine(n)`` (anvil automine), so the block at
    which the nodes refuse is known exactly; interval mining resumes afterwards."""
    rpc(net.rpc_url, "evm_setAutomine", [True])
    try:
        yield lambda n: [rpc(net.rpc_url, "evm_mine", []) for _ in range(n)]
    finally:
        rpc(net.rpc_url, "evm_setIntervalMining", [max(1, int(net.block_time))])


def _refused_at_the_first_confirmed_block(net, app, revoked_at: int, reason: str, ident: bytes) -> None:
    """Every node, once it has applied block ``revoked_at`` (the first confirmed block holding the revocation,
    the chain's head being ``revoked_at + confirmations`` and no later block mined), refuses ``app`` by name."""
    w3 = net.w3()
    assert w3.eth.block_number == revoked_at + net.confirmations
    _wait_all_nodes_confirmed(net, revoked_at)
    for node in range(1, len(net.node_processes) + 1):  # every node refuses it on its own
        client = RootOfTrustClient([net.node_processes[node - 1].public_endpoint], attempts=1)
        try:
            with pytest.raises(RequestFailed) as info:
                App(client, app.device, app.anchor, app.app_id).get_key()
        finally:
            client.close()
        assert info.value.reason == reason and ident.hex() in info.value.refusal.detail, info.value
    assert w3.eth.block_number == revoked_at + net.confirmations, "a later block was mined: not exact"


def _verdicts(net, issued) -> list[tuple[Reason, Reason, str]]:
    """(on-chain, off-chain, a node's GetStatus) for each certificate, at one block."""
    registry, w3 = net.registry_client(), net.w3()
    block = w3.eth.get_block("latest")
    state = read_state(registry, bytes(block["hash"]), block["number"], block["timestamp"])
    out = []
    for cert in issued:
        status = RootOfTrustClient([net.node_processes[0].public_endpoint]).certificate_status(
            cert.encoded, cert.signature.to_bytes())
        out.append((registry.verify_certificate(cert.encoded, cert.signature, block=block["number"]),
                    state.verify_certificate(cert.encoded, cert.signature_eip2537).reason, status.reason))
    return out


def test_council_revokes_one_tdx_machine_and_governance_one_snp_chip(harness, capsys):
    net = harness.net
    tdx_a, ids_a = _machine(harness, Platform.TDX)
    tdx_b, ids_b = _machine(harness, Platform.TDX)
    snp_a, snp_ids_a = _machine(harness, Platform.SEV_SNP)
    snp_b, snp_ids_b = _machine(harness, Platform.SEV_SNP)
    assert ids_a.fmspc == ids_b.fmspc and ids_a.ppid != ids_b.ppid  # one family, two machines
    assert snp_ids_a.chip_id != snp_ids_b.chip_id
    issued = [_certificate(app) for app in (tdx_a, tdx_b, snp_a)]
    for cert, ids in zip(issued, (ids_a, ids_b, snp_ids_a)):
        assert len(cert.certificate.hardware) == (3 if ids.ppid else 1)
    assert _verdicts(net, issued) == [(Reason.OK, Reason.OK, "ok")] * 3
    registry = net.registry_client()
    gas_before = registry.contract.functions.verifyCertificate(issued[0].encoded, issued[0].signature_eip2537).estimate_gas()

    with _chain_frozen(net) as mine:
        # the SecurityCouncil revokes machine A's PPID at once; refused once that block is confirmed
        receipt = registry.apply(net.accounts[COUNCIL], [Revoke(RevocationKind.PPID, ids_a.ppid)])
        revoked_at = receipt["blockNumber"]
        mine(net.confirmations)
        _refused_at_the_first_confirmed_block(net, tdx_a, revoked_at, "ppid_revoked", ids_a.ppid)
        assert tdx_b.get_key().ethereum_address == snp_b.get_key().ethereum_address  # the others keep working
        gas_after = registry.contract.functions.verifyCertificate(issued[0].encoded,
                                                                  issued[0].signature_eip2537).estimate_gas()
        assert _verdicts(net, issued) == [(Reason.HARDWARE_REVOKED, Reason.HARDWARE_REVOKED, "hardware_revoked"),
                                          (Reason.OK, Reason.OK, "ok"), (Reason.OK, Reason.OK, "ok")]

        # governance votes to revoke SNP chip A (propose, vote, queue, execute); the execute block is the last
        net.enact([Revoke(RevocationKind.CHIP_ID, snp_ids_a.chip_id)], "revoke one compromised SNP chip")
        executed_at = net.w3().eth.block_number
        mine(net.confirmations)
        _refused_at_the_first_confirmed_block(net, snp_a, executed_at, "chip_revoked", snp_ids_a.chip_id)
        assert snp_b.get_key().ethereum_address == tdx_b.get_key().ethereum_address
        assert [v[0] for v in _verdicts(net, issued)] == [Reason.HARDWARE_REVOKED, Reason.OK, Reason.HARDWARE_REVOKED]
    with capsys.disabled():
        print(f"\nverifyCertificate estimate_gas, TDX certificate with 3 hardware keys: {gas_before:,} before, "
              f"{gas_after:,} after its PPID was revoked")


def _node_ppid(net, proc) -> bytes:
    """The PPID of a node's own machine, from the evidence it registered (fetched like `gov state` does)."""
    from derot.cli.gov_members import grpc_fetch
    from derot.attest.evidence import Evidence

    node = net.registry_client().node(proc.operator)
    evidence = grpc_fetch()(node)
    claims = verify_evidence(Evidence.decode(evidence), TrustConfig.devnet(_roots(net)), at=int(time.time()))
    return claims.hardware_ids.ppid


def _roots(net):
    from derot.attest.devnet import DevnetRoots

    return DevnetRoots.load(net.directory / "roots")


def _gov_state(net, capsys) -> str:
    from derot.cli.main import main

    capsys.readouterr()
    code = main(["gov", "--rpc", net.rpc_url, "--deployment", str(net.directory / "deployment.json"), "state",
                 "--members", "--devnet", str(net.directory / "roots")])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def test_a_member_on_a_revoked_machine_is_named_by_gov_state_and_refused_by_its_peers(harness, capsys):
    net = harness.net
    victim = net.node_processes[2]
    out = _gov_state(net, capsys)
    assert out.count("machine not revoked") == len(net.node_processes), out
    ppid = _node_ppid(net, victim)
    receipt = net.registry_client().apply(net.accounts[COUNCIL], [Revoke(RevocationKind.PPID, ppid)])
    net.wait_for_block(receipt["blockNumber"] + net.confirmations)
    out = _gov_state(net, capsys)
    line = next(row for row in out.splitlines() if victim.operator in row and "member" in row)
    assert "MACHINE REVOKED [ppid_revoked]" in line and ppid.hex() in line, out
    assert out.count("machine not revoked") == len(net.node_processes) - 1, out
    # the next reshare with the same members: peers refuse to deal to it, naming the member and the PPID
    _wait_all_nodes_confirmed(net, receipt["blockNumber"])
    from derot.chain.actions import StartReshare

    members = tuple(p.operator for p in net.node_processes)
    net.enact([StartReshare(members, 2)], "reshare including a revoked machine")
    deadline = time.monotonic() + 90
    peers = [p for p in net.node_processes if p is not victim]

    def names_the_victim(text: str) -> bool:  # a JSON log line naming the refused member and the reason
        return any("not dealing to a member" in line and victim.operator in line and "ppid_revoked" in line
                   for line in text.splitlines())

    while True:
        logs = [(p.directory / "node.log").read_text() for p in peers]
        if all(names_the_victim(log) for log in logs):
            break
        assert time.monotonic() < deadline, "peers did not refuse the reshare naming the revoked member"
        time.sleep(0.5)
    # the epoch activates on the holders' reports; the victim holds no share, so it reports nothing
    registry = net.registry_client()
    epoch = registry.pending_epoch() or registry.current_epoch()
    net.wait_for_epoch(epoch, timeout=120)
    # activation needs only `threshold` reports: the other holders may still be reporting
    deadline = time.monotonic() + 90
    while not all(any(registry.report_of(epoch, p.operator)) for p in peers):
        assert time.monotonic() < deadline, "a holder never reported the reshare"
        time.sleep(0.5)
    assert not any(registry.report_of(epoch, victim.operator)), "a member without a share reported the result"
