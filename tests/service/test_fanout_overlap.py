"""The gateway's own answer overlaps its peers' work: the peer requests of a fan-out are on the wire, over a
real grpc.aio channel, before the gateway starts computing its own share (which holds its event loop)."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc

from derot import _proto
from derot.certs.notices import Notice, RevocationSet
from derot.constants import DST_CERT
from derot.service.config import LimitsSection
from derot.service.metrics import Metrics
from derot.service.signing import FanOut

pb = _proto.load("node_pb2")
GATEWAY = 1
OWN_WORK = 1.0  # seconds the gateway's own answer holds its loop (a share is ~1 ms; long, so a loaded machine still fits)


class PeerServer:
    """A grpc.aio server on its own thread and loop that notes when each request arrives."""

    def __init__(self):
        self.arrivals: list[float] = []
        self.port: int | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self._thread.start()
        assert self._ready.wait(30), "the peer server did not start"

    async def _serve(self):
        async def answer(request: bytes, context) -> bytes:
            self.arrivals.append(time.monotonic())
            return b"ok"

        server = grpc.aio.server()
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "test.Peer", {"Call": grpc.unary_unary_rpc_method_handler(answer)})])
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        await self._stop.wait()
        await server.stop(None)

    def close(self):
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


class GrpcPeering:
    """Peering.call over a real (warm) grpc.aio channel; the partial itself is computed locally."""

    def __init__(self, port: int, answers):
        self.port, self.answers = port, answers

    async def open(self):
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        self.rpc = self.channel.unary_unary("/test.Peer/Call")
        await self.rpc(b"warm-up")

    async def call(self, info, method: str, message):
        await self.rpc(b"request")
        return self.answers(info.index, message)


def test_peer_requests_are_on_the_wire_before_the_gateway_computes_its_own_answer(committee):
    server = PeerServer()
    snap = committee.state().snapshot
    notice = Notice(snap.chain_id, snap.registry, 100, bytes(32), 1_790_001_200, 1, RevocationSet.of())
    keys = committee.keys(GATEWAY)

    def peer_answer(index: int, message):
        return pb.SignNoticeResponse(index=index, partial_signature=notice.sign(committee.sig(index)).to_bytes())

    own_started: list[float] = []

    def own(weight):
        own_started.append(time.monotonic())
        time.sleep(OWN_WORK)  # CPU work on the loop, as a real share is
        return notice.sign(keys.shares.sig * weight)

    async def run():
        peering = GrpcPeering(server.port, peer_answer)
        await peering.open()
        server.arrivals.clear()
        fanout = FanOut(peering, Metrics(), LimitsSection(peer_deadline=10.0))
        try:
            return await fanout.threshold_sign(committee.state(), keys, digest=notice.digest, dst=DST_CERT, own=own,
                                               method="SignNotice", message=pb.SignNoticeRequest(notice=notice.encode()))
        finally:
            await peering.channel.close()

    try:
        collected = asyncio.run(run())
    finally:
        server.close()
    assert GATEWAY in collected.used and len(collected.used) == committee.threshold
    asked = committee.threshold - 1
    assert len(server.arrivals) >= asked
    own_ended = own_started[0] + OWN_WORK
    # every peer had its request while the gateway was still busy with its own answer
    assert all(at < own_ended for at in sorted(server.arrivals)[:asked]), (own_started, server.arrivals)
