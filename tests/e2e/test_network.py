"""A 5-node 3-of-5 network as separate processes over real gRPC, anvil and devnet TEEs.

The tests run in order on one network: portability across vendors, certificates on and off chain,
refusals, restarts, node failures during a request stream, a governance revocation, and a reshare
after a node is removed by vote.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import grpc
import pytest

from derot import _proto
from derot.app.client import RequestFailed
from derot.chain.actions import RemoveNode, Revoke, SetEpochTimeout, StartReshare
from derot.chain.types import RevocationKind
from derot.constants import KeyType, Platform
from derot.crypto import kd
from derot.net import tls
from derot.net.status import refusal_from_rpc_error
from derot.service.config import load_config
from derot.service.node import NodeIdentity
from derot.service.setup import open_store

pytestmark = pytest.mark.slow
pb = _proto.load("node_pb2")


def test_every_node_checked_every_other_nodes_membership_evidence_before_the_vote(network):
    """The devnet votes only after each node's ``derot_member_evidence_checked`` counts every other registrant:
    the gauge counts one verdict per registrant, and all of them are verified."""
    from derot.devnet.processes import metric

    for proc in network.node_processes:
        checked = {v: metric(proc.metrics_port, f'derot_member_evidence_checked{{verdict="{v}"}}')
                   for v in ("verified", "refused")}
        assert checked == {"verified": network.nodes - 1, "refused": 0}, (proc.index, checked)


def test_running_nodes_never_loaded_web3(network):
    """After a DKG and its on-chain report, no node process has loaded web3's stack (derot.chain.client):
    ``import web3`` maps aiohttp's C extensions, so their absence from the process's memory map shows it."""
    for proc in network.node_processes:
        with open(f"/proc/{proc.pid}/maps") as maps:
            loaded = {line.split()[-1] for line in maps if "/aiohttp/" in line or "/web3/" in line}
        assert not loaded, (proc.index, sorted(loaded)[:3])


def test_same_key_from_tdx_and_snp(harness):
    tdx = harness.app(Platform.TDX).get_key()
    snp = harness.app(Platform.SEV_SNP).get_key()
    assert tdx.ethereum_address == snp.ethereum_address
    assert tdx.keys.public_key(KeyType.ED25519) == snp.keys.public_key(KeyType.ED25519)
    assert len(tdx.contributors) == 3
    # a different app gets a different key (same TEE, same measurement)
    other = harness.app(Platform.TDX)
    other.app_id = bytes(32)
    with pytest.raises(RequestFailed) as info:
        other.get_key()
    assert info.value.reason == "app_unknown"


def test_certificate_verifies_offchain_and_onchain(harness):
    app = harness.app(Platform.TDX)
    key = app.get_key()
    cert = app.get_certificate(key.keys.public_key(KeyType.SECP256K1), KeyType.SECP256K1)
    assert cert.certificate.platform == Platform.TDX and cert.certificate.app_id == harness.app_id
    registry = harness.net.registry_client()
    assert registry.verify_certificate(cert.encoded, cert.signature) == 0
    from derot.chain.state import read_state

    w3 = harness.net.w3()
    block = w3.eth.get_block("latest")
    state = read_state(registry, block["hash"], block["number"], block["timestamp"])
    assert state.verify_certificate(cert.encoded, cert.signature_eip2537).ok
    tampered = bytearray(cert.encoded)
    tampered[-1] ^= 1
    assert registry.verify_certificate(bytes(tampered), cert.signature) != 0
    # a node answers GetStatus from its own view
    status = harness.client().certificate_status(cert.encoded, cert.signature.to_bytes())
    assert status.valid and status.reason == "ok"


def _raw_request(harness, platform=Platform.TDX, timestamp=None, **overrides):
    """A well-formed DeriveKey request built by hand (what an app SDK sends); ``overrides`` change
    fields after the evidence was made, ``timestamp`` changes what the evidence binds."""
    from derot.attest.binding import RequestBinding

    tpk = kd.TransportKey.generate().public.to_bytes()
    timestamp, nonce = timestamp or int(time.time()), os.urandom(16)
    binding = RequestBinding(harness.anchor.network, harness.app_id, 1, b"", tpk, b"", timestamp, nonce)
    evidence = harness.device(platform).evidence(binding.report_data()).encode()
    fields = dict(evidence=evidence, app_id=harness.app_id, key_version=1, transport_public_key=tpk,
                  timestamp=timestamp, nonce=nonce)
    fields.update(overrides)
    return pb.DeriveKeyRequest(request=pb.AppRequest(**fields))


def _call(harness, method, request, node=1):
    client = harness.client([node], attempts=1)
    stub = client._stub(client.endpoints[0])
    try:
        return getattr(stub, method)(request, timeout=10)
    except grpc.RpcError as exc:
        return refusal_from_rpc_error(exc)
    finally:
        client.close()


def test_bad_requests_are_refused_with_reasons_and_nodes_keep_serving(harness):
    garbage = _call(harness, "DeriveKey", _raw_request(harness, evidence=b"\x00garbage"))
    assert garbage.reason == "evidence_malformed"
    short = _call(harness, "DeriveKey", _raw_request(harness, app_id=b"\x01" * 31))
    assert short.reason == "malformed_request"
    oversized = _call(harness, "DeriveKey", _raw_request(harness, context=b"x" * 300_000))
    assert oversized.reason == "request_too_large"
    request = _raw_request(harness)
    first = _call(harness, "DeriveKey", request)
    assert len(first.encrypted_key) == 192
    replay = _call(harness, "DeriveKey", request, node=2)
    assert replay.reason == "replayed"
    stale = _raw_request(harness, timestamp=int(time.time()) - 3600)
    assert _call(harness, "DeriveKey", stale).reason == "request_stale"
    unbound = _raw_request(harness, nonce=os.urandom(16))
    assert _call(harness, "DeriveKey", unbound).reason == "report_data_mismatch"
    future_version = _raw_request(harness, key_version=7)
    assert _call(harness, "DeriveKey", future_version).reason == "key_version_mismatch"
    # still serving
    assert harness.app(Platform.TDX).get_key().ethereum_address


def test_nested_collateral_bomb_does_not_kill_any_node(harness):
    """Finding 1 of the node-under-attack issue: 100,000 nested arrays in the collateral JSON of an
    unauthenticated DeriveKey segfaulted every node. Each node must refuse it by name and keep serving."""
    from derot.attest.evidence import Evidence

    bomb = ("[" * 100_000 + "]" * 100_000).encode()
    evidence = Evidence(Platform.TDX, quote=b"\x04\x00" + bytes(100), collateral=bomb).encode()
    for node in range(1, len(harness.net.node_processes) + 1):
        refusal = _call(harness, "DeriveKey", _raw_request(harness, evidence=evidence), node=node)
        assert refusal.reason in ("collateral_invalid", "evidence_malformed", "malformed_request"), refusal
    for proc in harness.net.node_processes:
        state = Path(f"/proc/{proc.pid}/status").read_text()
        assert "\nState:\tZ" not in state, f"node {proc.index} died"
    assert harness.app(Platform.TDX).get_key().ethereum_address


def _peer_stub(harness, node_index: int, as_node: int | None, identity=None):
    """A Peer stub to ``node_index`` presenting node ``as_node``'s registered TLS key (or ``identity``)."""
    net = harness.net
    target = net.node_processes[node_index - 1]
    if identity is None:
        store = open_store(load_config(net.node_processes[as_node - 1].config_path))
        identity = NodeIdentity(store).tls
        store.close()
    server_cert = tls.fetch_certificate("127.0.0.1", target.public_port)
    creds = grpc.ssl_channel_credentials(server_cert, identity.key_pem, identity.cert_pem)
    channel = grpc.secure_channel(f"127.0.0.1:{target.peer_port}", creds, options=tls.channel_options())
    return channel, _proto.load("node_pb2_grpc").PeerStub(channel)


def test_wrong_epoch_is_refused_by_a_contributor(harness):
    channel, stub = _peer_stub(harness, 2, as_node=1)
    try:
        request = _raw_request(harness).request
        with pytest.raises(grpc.RpcError) as info:
            stub.DeriveShare(pb.DeriveShareRequest(request=request, epoch=99), timeout=10)
        assert refusal_from_rpc_error(info.value).reason == "wrong_epoch"
        ok = stub.DeriveShare(pb.DeriveShareRequest(request=_raw_request(harness).request, epoch=1), timeout=10)
        assert ok.index == 2 and len(ok.encrypted_share) == 192
    finally:
        channel.close()


def test_peer_with_unregistered_tls_key_is_refused(harness):
    channel, stub = _peer_stub(harness, 2, as_node=None, identity=tls.generate_identity())
    try:
        with pytest.raises(grpc.RpcError) as info:
            stub.GetNodeEvidence(pb.GetNodeEvidenceRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake is refused
    finally:
        channel.close()


def test_node_restart_keeps_its_shares(harness):
    net = harness.net
    proc = net.node_processes[1]
    net.stop_node(proc)
    net.start_node(proc)
    client = harness.client([2], attempts=30, backoff=0.5)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            info = client.network_info()
            if info.node_index == 2 and info.epoch == 1:
                break
        except RequestFailed:
            pass
        time.sleep(0.5)
    else:
        pytest.fail("node 2 did not come back with its epoch")
    key = harness.app(Platform.SEV_SNP, client=client).get_key()
    assert 2 in key.contributors  # the restarted node is the gateway and contributes its own share
    client.close()


def test_two_nodes_killed_during_a_request_stream(harness):
    net = harness.net
    app = harness.app(Platform.TDX, client=harness.client(attempts=10, backoff=0.1))
    expected = app.get_key().ethereum_address
    results, errors = [], []
    stop = threading.Event()

    def stream():
        while not stop.is_set():
            try:
                results.append(app.get_key().ethereum_address)
            except Exception as exc:  # recorded; the test fails on any
                errors.append(exc)

    def wait_for_answers(count: int) -> None:  # progress, not wall time: the machine may be heavily loaded
        deadline = time.monotonic() + 120
        while len(results) + len(errors) < count:
            assert time.monotonic() < deadline, f"the stream stalled at {len(results)} answers"
            time.sleep(0.05)

    worker = threading.Thread(target=stream)
    worker.start()
    wait_for_answers(2)
    net.stop_node(net.node_processes[3], kill=True)
    wait_for_answers(len(results) + 2)
    net.stop_node(net.node_processes[4], kill=True)
    after_kills = len(results)
    wait_for_answers(after_kills + 8)
    stop.set()
    worker.join(60)
    assert not errors, errors[:3]
    assert len(results) >= after_kills + 8 and set(results) == {expected}
    for proc in net.node_processes[3:]:
        net.start_node(proc)


def test_revocation_refuses_tdx_within_one_confirmed_block_while_snp_works(harness):
    net = harness.net
    fmspc = harness.device(Platform.TDX)._tee.fmspc
    snp_address = harness.app(Platform.SEV_SNP).get_key().ethereum_address
    net.enact([Revoke(RevocationKind.FMSPC, fmspc)], "revoke the TDX FMSPC")
    revoked_at = net.w3().eth.block_number
    assert net.wait_confirmed() >= revoked_at + net.confirmations  # the nodes applied the revocation's block
    with pytest.raises(RequestFailed) as info:
        harness.app(Platform.TDX).get_key()
    assert info.value.reason == "fmspc_revoked"
    assert "revoked" in info.value.refusal.detail
    assert harness.app(Platform.SEV_SNP).get_key().ethereum_address == snp_address


def test_a_vote_on_the_epoch_timeout_leaves_every_node_following_the_chain(harness):
    """``EpochTimeoutSet`` names no epoch; it once killed every node's chain follower (KeyError), so one
    ordinary governance vote froze the committee's view of the registry. Every node must apply the block."""
    net = harness.net
    timeout = net.registry_client().epoch_timeout()
    net.enact([SetEpochTimeout(timeout)], f"epoch timeout stays {timeout} blocks")
    net.wait_confirmed()
    assert harness.app(Platform.SEV_SNP).get_key().contributors


def test_node_removed_by_vote_reshare_keeps_keys(harness):
    net = harness.net
    registry = net.registry_client()
    before = registry.epoch(1)
    address = harness.app(Platform.SEV_SNP).get_key().ethereum_address
    members = tuple(p.operator for p in net.node_processes[:4])
    net.enact([RemoveNode(net.node_processes[4].operator), StartReshare(members, 3)], "remove node 5, reshare 3-of-4")
    epoch = registry.pending_epoch() or registry.current_epoch()
    net.wait_for_epoch(epoch, timeout=90)
    after = registry.epoch(epoch)
    assert epoch == 2 and len(after.members) == 4 and after.threshold == 3
    assert after.group_key_sig == before.group_key_sig and after.group_key_kd == before.group_key_kd
    net.wait_confirmed()
    net.wait_serving(epoch, [1, 2, 3, 4])
    key = harness.app(Platform.SEV_SNP, client=harness.client([1, 2, 3, 4])).get_key()
    assert key.ethereum_address == address and key.epoch == 2
    assert 5 not in key.contributors


def test_new_member_joins_by_reshare_and_serves(harness):
    """A node added by vote receives shares in a reshare (it fetches the old epoch's public keys from the
    old members) and serves the same app key. Its channel to each peer is closed under the first call of
    each method (fault ``close_channel_mid_call``, as when a concurrent call to that peer fails under load):
    grpc then raised CancelledError in the caller, which silently ended the newcomer's reshare task while it
    asked the old members for their keys, so it never joined."""
    from derot.chain.actions import AddNode

    net = harness.net
    registry = net.registry_client()
    address = harness.app(Platform.SEV_SNP, client=harness.client([1, 2, 3, 4])).get_key().ethereum_address
    newcomer = net.add_node(faults="close_channel_mid_call")
    members = tuple(p.operator for p in net.node_processes[:4]) + (newcomer.operator,)
    net.enact([AddNode(newcomer.operator), StartReshare(members, 3)], "add node 6, reshare 3-of-5")
    epoch = registry.pending_epoch() or registry.current_epoch()
    net.wait_for_epoch(epoch, timeout=90)
    assert registry.epoch(epoch).group_key_kd == registry.epoch(1).group_key_kd
    net.wait_confirmed()
    net.wait_serving(epoch, [1, 2, 3, 4, newcomer.index])
    key = harness.app(Platform.SEV_SNP, client=harness.client([newcomer.index])).get_key()
    assert key.ethereum_address == address
    assert 5 in key.contributors  # the newcomer holds index 5 in the new committee and contributed
    lines = (newcomer.directory / "node.log").read_text().splitlines()
    assert not [line for line in lines if '"background task' in line]  # none failed or was cancelled
