"""Which gateway the SDK client asks (derot.app.client): a call starts on the gateway that answered the last
one, so a client keeps one warm channel instead of opening one per node; when that gateway stops answering,
the call moves on in list order and the client then stays on the one that answered. Real gRPC servers over
TLS on localhost, each answering GetNetworkInfo with its own index."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
import pytest

from derot import _proto
from derot.app.client import RootOfTrustClient
from derot.net import tls


class _Gateway:
    """A RootOfTrust server that answers GetNetworkInfo with ``epoch = index`` and counts the calls."""

    def __init__(self, index: int):
        pb, pb_grpc = _proto.load("node_pb2"), _proto.load("node_pb2_grpc")
        gateway = self
        self.index, self.calls = index, 0
        self.hung, self.release = False, threading.Event()

        class Servicer(pb_grpc.RootOfTrustServicer):
            def GetNetworkInfo(self, request, context):
                gateway.calls += 1
                if gateway.hung:
                    gateway.release.wait(30)
                return pb.NetworkInfo(epoch=gateway.index)

        identity = tls.generate_identity()
        self.server = grpc.server(futures.ThreadPoolExecutor(2))
        pb_grpc.add_RootOfTrustServicer_to_server(Servicer(), self.server)
        port = self.server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
            [(identity.key_pem, identity.cert_pem)]))
        self.endpoint = f"127.0.0.1:{port}"
        self.server.start()

    def stop(self) -> None:
        self.release.set()
        self.server.stop(None).wait()


@pytest.fixture
def gateways():
    started = [_Gateway(i) for i in range(3)]
    yield started
    for g in started:
        g.stop()


def test_calls_stay_on_the_gateway_that_answered_and_move_on_when_it_stops(gateways):
    with RootOfTrustClient([g.endpoint for g in gateways], timeout=5.0, backoff=0.01) as client:
        assert [client.network_info().epoch for _ in range(10)] == [0] * 10
        assert [g.calls for g in gateways] == [10, 0, 0]
        assert len(client._channels) == 1  # one channel, not one per node

        gateways[0].stop()
        assert client.network_info().epoch == 1  # moved on in list order
        assert [client.network_info().epoch for _ in range(5)] == [1] * 5  # and stays there
        assert gateways[2].calls == 0


def test_a_hedge_that_answers_becomes_the_preferred_gateway(gateways):
    gateways[0].hung = True
    with RootOfTrustClient([g.endpoint for g in gateways], timeout=20.0, hedge_after=0.2) as client:
        assert client.network_info().epoch == 1  # the hedge answered while gateway 0 hangs
        assert [client.network_info().epoch for _ in range(5)] == [1] * 5
        assert gateways[0].calls == 1  # the hung gateway was not asked again
