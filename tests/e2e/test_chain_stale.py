"""A real node process behind a frozen RPC (issue 9 item 5, issue 17): past [chain].max_staleness it reports
NOT_SERVING and refuses app requests with chain_stale (chain_unverified when the RPC's answers do not verify);
once the RPC answers honestly again it serves again."""

from __future__ import annotations

import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from derot.app.client import RequestFailed
from derot.constants import Platform
from derot.net import tls

from ..chain.lying_rpc import LyingRpc

pytestmark = pytest.mark.slow

MAX_STALENESS = 6


@pytest.fixture(scope="module")
def small(devnet_starter):
    net = devnet_starter("stale", nodes=3, threshold=2)
    yield net
    net.down()


def health_of(proc) -> int:
    cert = tls.fetch_certificate("127.0.0.1", proc.public_port)
    channel = grpc.secure_channel(proc.public_endpoint, grpc.ssl_channel_credentials(cert), tls.channel_options())
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service="derot.v1.RootOfTrust"), timeout=5).status
    finally:
        channel.close()


def metric(proc, name: str) -> float:
    """One unlabelled gauge from the node's Prometheus endpoint."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5).read().decode()
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert len(values) == 1, f"{name} not exported"
    return values[0]


def wait_for(condition, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
            if value:
                return value
        except (grpc.RpcError, OSError):
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def test_frozen_rpc_makes_the_node_refuse_with_chain_stale(small, harness_for):
    net = small
    proc = net.node_processes[0]
    proxy = LyingRpc(net.rpc_url)
    try:
        net.stop_node(proc)
        text = proc.config_path.read_text().replace(
            f'rpc_url = "{net.rpc_url}"', f'rpc_url = "{proxy.url}"\nmax_staleness = {MAX_STALENESS}')
        proc.config_path.write_text(text)
        net.start_node(proc)
        serving = health_pb2.HealthCheckResponse.SERVING
        wait_for(lambda: health_of(proc) == serving, "node 1 serving through the proxy")
        harness = harness_for(net)
        app = harness.app(Platform.TDX, client=harness.client([1], attempts=1))
        assert app.get_key().epoch >= 1  # node 1 is a working gateway

        proxy.frozen_head = net.w3().eth.block_number  # the RPC claims the chain stopped
        frozen_at = time.monotonic()
        wait_for(lambda: health_of(proc) != serving, "NOT_SERVING on a frozen head")
        assert time.monotonic() - frozen_at >= MAX_STALENESS - 1
        # the lag metric is measured on the wall clock, not against the frozen RPC's own head
        lag = metric(proc, "derot_chain_lag_seconds")
        assert lag > MAX_STALENESS and metric(proc, "derot_chain_lag_blocks") <= 2, lag
        with pytest.raises(RequestFailed) as refused:
            harness.app(Platform.TDX, client=harness.client([1], attempts=1)).get_key()
        assert refused.value.reason == "chain_stale"
        # the other nodes (honest RPC) keep serving the same app
        assert harness.app(Platform.TDX, client=harness.client([2, 3])).get_key().epoch >= 1

        proxy.honest()
        wait_for(lambda: health_of(proc) == serving, "SERVING again once the RPC answers")
        assert harness.app(Platform.TDX, client=harness.client([1], attempts=1)).get_key().epoch >= 1

        # an RPC whose headers do not hash to their claimed hashes: the view stalls unverified, and the
        # refusal says so (chain_unverified), not just chain_stale
        proxy.header_lie = lambda block: {**block, "timestamp": hex(int(block["timestamp"], 16) + 3600)}
        wait_for(lambda: health_of(proc) != serving, "NOT_SERVING behind forged headers")
        with pytest.raises(RequestFailed) as refused:
            harness.app(Platform.TDX, client=harness.client([1], attempts=1)).get_key()
        assert refused.value.reason == "chain_unverified"
        proxy.honest()
        wait_for(lambda: health_of(proc) == serving, "SERVING again once the headers are honest")
    finally:
        proxy.close()
