"""Operating a node: Prometheus metrics, gRPC health and reflection, logs free of secrets and JSON throughout,
graceful SIGTERM.

All against real node processes of a 3-node devnet with the embedded MQTT broker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from derot.app.client import RequestFailed
from derot.attest.binding import RequestBinding
from derot.constants import KeyType, Platform
from derot.crypto import kd
from derot.crypto.appkeys import derive_app_keys
from derot.net import tls
from derot.service.config import load_config
from derot.service.epoch import EpochKeys
from derot.service.setup import open_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small(devnet_starter):
    net = devnet_starter("ops", nodes=3, threshold=2, mqtt_url="embedded")
    yield net
    net.down()


@pytest.fixture(scope="module")
def app_harness(small, harness_for):
    return harness_for(small)


def _metrics(net, index: int) -> str:
    port = net.node_processes[index - 1].metrics_port
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def _value(text: str, name: str, **labels) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_prometheus_metrics(small, app_harness):
    app = app_harness.app(Platform.TDX, client=app_harness.client([1]))
    key = app.get_key()
    app.get_certificate(key.keys.public_key(KeyType.ED25519), KeyType.ED25519)
    app_harness.app(Platform.SEV_SNP, client=app_harness.client([1])).get_key()
    with pytest.raises(RequestFailed):
        bad = app_harness.app(Platform.TDX, client=app_harness.client([1], attempts=1))
        bad.app_id = os.urandom(32)
        bad.get_key()
    # the node counts a refusal after its answer has left, so the scrape may come first: wait for the count
    deadline = time.monotonic() + 30
    text = _metrics(small, 1)
    while _value(text, "derot_requests_total", method="DeriveKey", outcome="app_unknown") < 1 \
            and time.monotonic() < deadline:
        time.sleep(0.1)
        text = _metrics(small, 1)
    assert _value(text, "derot_requests_total", method="DeriveKey", outcome="ok") >= 2
    assert _value(text, "derot_requests_total", method="IssueCertificate", outcome="ok") >= 1
    assert _value(text, "derot_requests_total", method="DeriveKey", outcome="app_unknown") >= 1
    assert _value(text, "derot_request_seconds_count", method="DeriveKey") >= 3
    assert _value(text, "derot_dkg_phase_seconds_count", phase="deal") >= 1
    assert _value(text, "derot_evidence_verifications_total", platform="tdx", verdict="allowed") >= 1
    assert _value(text, "derot_evidence_verifications_total", platform="sev_snp", verdict="allowed") >= 1
    assert any(_value(text, "derot_peer_shares_total", peer=str(p), verdict="accepted") for p in (2, 3))
    assert "derot_chain_lag_blocks" in text and _value(text, "derot_confirmed_block") > 0
    assert _value(text, "derot_epoch") == 1
    assert _value(text, "derot_tee_attestation_available") == 1  # a devnet node's TEE always attests
    # contributors count what they checked too (the gateway spreads its eager calls over its peers)
    contributed = [_metrics(small, i) for i in (2, 3)]
    assert sum(_value(t, "derot_requests_total", method="DeriveShare", outcome="ok") for t in contributed) >= 2
    assert sum(_value(t, "derot_requests_total", method="PartialSign", outcome="ok") for t in contributed) >= 1


def test_grpc_health_and_reflection(small):
    proc = small.node_processes[0]
    cert = tls.fetch_certificate("127.0.0.1", proc.public_port)
    channel = grpc.secure_channel(proc.public_endpoint, grpc.ssl_channel_credentials(cert), tls.channel_options())
    try:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "derot.v1.RootOfTrust"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                            timeout=5)
        names = {s.name for r in replies for s in r.list_services_response.service}
        assert {"derot.v1.RootOfTrust", "derot.v1.Peer", "grpc.health.v1.Health"} <= names
    finally:
        channel.close()


def _hex_forms(value: bytes) -> set[str]:
    return {value.hex(), value.hex().upper()}


def test_logs_never_contain_secrets(small, app_harness):
    """Run the app scenario, collect every secret the test can know, grep every log line for them."""
    app = app_harness.app(Platform.TDX, client=app_harness.client())
    transport = kd.TransportKey.generate()
    tpk = transport.public.to_bytes()
    timestamp, nonce = int(time.time()), os.urandom(16)
    binding = RequestBinding(app_harness.anchor.network, app_harness.app_id, 1, b"", tpk, b"", timestamp, nonce)
    evidence = app.device.evidence(binding.report_data()).encode()
    pb = app.client.pb
    request = pb.DeriveKeyRequest(request=pb.AppRequest(
        evidence=evidence, app_id=app_harness.app_id, key_version=1, transport_public_key=tpk,
        timestamp=timestamp, nonce=nonce))
    reply = app.client.call("DeriveKey", lambda: request)
    root = kd.decrypt(kd.EncryptedKey.decode(reply.encrypted_key), transport, app_harness.anchor.group_key_kd,
                      kd.kd_point(app_harness.app_id, 1, b""))
    keys = derive_app_keys(root)
    app.get_certificate(keys.public_key(KeyType.SECP256K1), KeyType.SECP256K1)
    # a refused request too: refusals are logged with their details
    with pytest.raises(RequestFailed):
        app.client.call("DeriveKey", lambda: request)  # replayed

    from cryptography.hazmat.primitives import serialization as ser

    secrets: set[str] = set()
    secrets |= _hex_forms(transport.secret.to_bytes(32, "big")) | {str(transport.secret)}
    secrets |= _hex_forms(root.to_bytes())
    secrets |= _hex_forms(keys.secp256k1.to_bytes())
    raw = (ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption())
    secrets |= _hex_forms(keys.ed25519.private_bytes(*raw)) | _hex_forms(keys.x25519.private_bytes(*raw))
    secrets |= {format(keys.p256.private_numbers().private_value, "064x"), str(keys.p256.private_numbers().private_value)}
    for proc in small.node_processes:
        config = load_config(proc.config_path)
        secrets |= _hex_forms(config.seal_key_file.read_bytes())
        secrets |= {config.chain.operator_key_file and open(config.chain.operator_key_file).read().strip().removeprefix("0x")}
        store = open_store(config)
        try:
            record = store.active_epoch()
            held = EpochKeys.load(record.public, record.shares)
            for share in (held.shares.sig, held.shares.kd):
                secrets |= _hex_forms(share.to_bytes(32, "big")) | {str(share)}
            secrets |= _hex_forms(store.identity("ed25519")) | _hex_forms(store.identity("x25519"))
        finally:
            store.close()
    secrets = {s for s in secrets if s and len(s) >= 16}
    assert len(secrets) > 20
    # derot's own logs (anvil's log lists its well-known dev keys, which are not derot secrets)
    logs = [p.directory / "node.log" for p in small.node_processes]
    lines = [line for path in logs for line in path.read_text(errors="replace").splitlines()]
    structured = [line for line in lines if line.startswith("{")]
    assert len(structured) > 20 and any('"msg":"key derived"' in line for line in structured)
    for line in lines:
        if line.startswith("{"):
            json.loads(line)  # every structured line is valid JSON
        for secret in secrets:
            assert secret not in line, f"a secret appears in the logs: {line[:120]}"


def test_logs_are_json_lines_without_healthy_noise(small, app_harness):
    """Every line a node or the embedded broker writes is one JSON object (gRPC C-core and amqtt included), and
    a healthy devnet logs no failed epoch report (a late report that agrees with the activated epoch is not one)."""
    app_harness.app(Platform.SEV_SNP, client=app_harness.client()).get_key()  # some traffic first
    paths = [p.directory / "node.log" for p in small.node_processes] + [small.directory / "mqtt.log"]
    for path in paths:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        assert lines or path.name == "mqtt.log", f"{path} is empty"  # the broker logs warnings and errors only
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                raise AssertionError(f"{path.parent.name}/{path.name}: a line that is not JSON: {line[:160]!r}") from None
            assert isinstance(entry, dict) and {"level", "msg"} <= entry.keys(), line[:160]
            assert entry["msg"] != "epoch report failed", f"{path.parent.name}: {line[:200]}"


def _derot(*argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEROT_")}
    return subprocess.run([sys.executable, "-m", "derot.cli.main", *argv], capture_output=True, text=True,
                          timeout=120, env=env)


def test_node_status_health_and_devnet_status_ask_the_running_nodes(small, app_harness):
    """`derot node status` (health, epoch, chain lag, per-peer share verdicts), `derot node health` and
    `derot devnet status` (readiness and epoch per node) against the live processes."""
    app_harness.app(Platform.TDX, client=app_harness.client()).get_key()  # every gateway-to-peer path used
    statuses = []
    for proc in small.node_processes:
        result = _derot("node", "status", "--config", str(proc.config_path), "--json")
        assert result.returncode == 0, result.stderr
        status = json.loads(result.stdout)
        running = status["node"]
        assert running["health"] == "SERVING" and running["epoch"] == status["store"]["active_epoch"] >= 1
        assert running["chain_lag_blocks"] >= 0 and running["members"] == 3 and isinstance(running["peers"], dict)
        statuses.append(status)
        health = _derot("node", "health", "--config", str(proc.config_path))
        assert health.returncode == 0 and health.stdout.strip() == "SERVING", health
    assert any(verdicts.get("accepted", 0) > 0 for s in statuses for verdicts in s["node"]["peers"].values())
    human = _derot("node", "status", "--config", str(small.node_processes[0].config_path))
    assert human.returncode == 0 and "SERVING" in human.stdout and "{" not in human.stdout, human
    devnet = _derot("devnet", "status", "--dir", str(small.directory), "--json")
    assert devnet.returncode == 0, devnet.stderr
    nodes = json.loads(devnet.stdout)["nodes"]
    assert [(n["health"], n["serving_epoch"]) for n in nodes] == [("SERVING", statuses[0]["node"]["epoch"])] * 3


def test_sigterm_finishes_in_flight_requests_and_closes_storage(small, app_harness):
    net = small
    victim = net.node_processes[2]
    client = app_harness.client([3], attempts=1)
    app = app_harness.app(Platform.SEV_SNP, client=client)
    app.get_key()  # warm connections
    outcomes: list[str] = []

    def one():
        try:
            app.get_key()
            outcomes.append("ok")
        except RequestFailed as exc:
            outcomes.append(exc.reason)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(0.01)
    net.stop_node(victim, timeout=15)
    for thread in threads:
        thread.join(20)
    # every request either completed or was turned away before it started; none was cut off mid-way
    assert set(outcomes) <= {"ok", "unavailable"}, outcomes
    assert "ok" in outcomes
    log_text = (victim.directory / "node.log").read_text()
    assert '"msg":"stopping: finishing in-flight requests"' in log_text and '"msg":"node stopped"' in log_text
    wal = victim.directory / "node.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # the store was checkpointed and closed
    net.start_node(victim)


def test_sigusr1_writes_every_thread_stack_to_the_node_log(small):
    """The post-mortem hook the devnet uses when a wait times out: a live node dumps its stacks and keeps serving."""
    log_path = small.directory / "node-2" / "node.log"
    before = log_path.stat().st_size
    small.dump_stacks()
    deadline = time.monotonic() + 30
    while not all(mark in log_path.read_text(errors="replace")[before:]
                  for mark in ("most recent call first", "asyncio tasks")):  # threads (USR1), tasks (USR2)
        assert time.monotonic() < deadline, "no stack dump in node-2's log"
        time.sleep(0.1)
    assert "derot_epoch" in _metrics(small, 2)  # both signals handled: the node still answers
