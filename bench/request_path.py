"""What one DeriveKey costs a 3-of-5 committee, part by part, measured in this process (issue 15 section 4).

    python bench/request_path.py            # ~30-60 s
    python bench/request_path.py --t 7      # another threshold

Every part is the real code a node runs, timed alone (process time, best of several rounds, so other processes
on the machine disturb it little): the protocol's crypto (evidence verification, key share, combine + verify),
and what the nodes add around it: the rest of the request check (shape, transport-key decoding, policy rules,
the replay-store write in a real SQLite node store), the protobuf messages, one unary gRPC call over TLS (an in-process grpc.aio server and client,
a DeriveShare-sized request), the hand-off to a verification worker thread, the gateway's log line. The sum
is the modelled node CPU per request; bench/network.py measures the real one on a running devnet, and the
difference between the two is what this model leaves out (event-loop scheduling, GIL hand-offs between
threads, contention).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from network import best  # noqa: E402  (bench/network.py: best-of-rounds process time)

APP_IMAGE = "bench app v1"
TARGET_CPU_RATIO = 1.5  # bench/network.py's target: node CPU per request <= 1.5x the t-member floor


class Fixture:
    """A devnet app request as a node receives it, and the node-side objects that check and answer it."""

    def __init__(self, directory: Path):
        from derot import _proto
        from derot.app.tee.devnet import DevnetDevice
        from derot.attest.binding import network_id
        from derot.attest.devnet import DevnetRoots, devnet_measurement_digest, image_registers
        from derot.attest.policy import PolicyEngine
        from derot.attest.snapshot import AppRecord, GovernanceSnapshot, PlatformRule
        from derot.attest.trust import TrustConfig
        from derot.constants import Platform, TcbStatus
        from derot.crypto import kd
        from derot.service.requests import RequestChecker
        from derot.service.storage import NodeStore

        self.pb = _proto.load("node_pb2")
        roots = DevnetRoots.generate(directory / "roots")
        self.trust = TrustConfig.devnet(roots)
        registers = image_registers(Platform.TDX, APP_IMAGE)
        device = DevnetDevice(roots, Platform.TDX, registers)
        chain_id, registry = 31337, "0x" + "ab" * 20
        self.network = network_id(chain_id, registry)
        self.app_id = os.urandom(32)
        measurement = devnet_measurement_digest(Platform.TDX, registers)
        self.snapshot = GovernanceSnapshot(
            chain_id, registry, 100, platforms={Platform.TDX: PlatformRule(True, TcbStatus.UP_TO_DATE)},
            apps={self.app_id: AppRecord(self.app_id, "0x" + "cd" * 20, 1,
                                         measurements=frozenset({(Platform.TDX, measurement)}))})
        self.store = NodeStore.open(directory / "node.db", key=os.urandom(32), create=True)
        self.checker = RequestChecker(network=self.network, trust=self.trust,
                                      policy=PolicyEngine.default(replay=self.store))
        self.transport = kd.TransportKey.generate()
        self.device = device

    def request(self):
        """A fresh DeriveKey request (new nonce: the replay store accepts each once)."""
        from derot.attest.binding import RequestBinding

        tpk = self.transport.public.to_bytes()
        timestamp, nonce = int(time.time()), os.urandom(16)
        binding = RequestBinding(self.network, self.app_id, 1, b"", tpk, b"", timestamp, nonce)
        evidence = self.device.evidence(binding.report_data()).encode()
        return self.pb.AppRequest(evidence=evidence, app_id=self.app_id, key_version=1, transport_public_key=tpk,
                                  timestamp=timestamp, nonce=nonce)


def measure(fx: Fixture, t: int) -> list[tuple[str, float, float, bool]]:
    """[(part, seconds per operation, operations per request, part of the crypto floor)]."""
    from derot.attest.evidence import Evidence
    from derot.attest.verify import verify_evidence
    from derot.crypto import kd
    from derot.crypto.hazmat.poly import Polynomial
    from derot.crypto.bls import G2
    from derot.service.logs import JsonFormatter

    pb = fx.pb
    requests = [fx.request() for _ in range(400)]
    sample = requests[0]
    poly = Polynomial.random(t - 1)
    shares = {i: poly(i) for i in range(1, t + 1)}
    group_key = G2.generator() * poly.coefficients[0]
    hashed = kd.kd_point(fx.app_id, 1)
    answers = {i: kd.derive_share(shares[i], hashed, fx.transport.public) for i in shares}

    fresh = iter(requests)
    check = best(lambda: fx.checker.check(next(fresh), fx.snapshot, purpose="derive"), reps=50)
    verify = best(lambda: verify_evidence(Evidence.decode(sample.evidence), fx.trust))
    share = best(lambda: kd.derive_share(shares[1], hashed, fx.transport.public))
    kd_hash = best(lambda: kd.kd_point(fx.app_id, 1))
    combine = best(lambda: kd.verify_encrypted(kd.combine_encrypted(answers), group_key, hashed, fx.transport.public))

    key_request = pb.DeriveKeyRequest(request=sample).SerializeToString()
    share_request = pb.DeriveShareRequest(request=sample, epoch=1)
    share_reply = pb.DeriveShareResponse(index=2, epoch=1, encrypted_share=answers[1].encode()).SerializeToString()
    protobuf = best(lambda: (pb.DeriveKeyRequest.FromString(key_request), share_request.SerializeToString(),
                             pb.DeriveShareRequest.FromString(share_request.SerializeToString()),
                             pb.DeriveShareResponse.FromString(share_reply)))

    record = logging.LogRecord("derot.node", logging.INFO, __file__, 0, "key derived", (), None)
    record.__dict__.update(app_id=fx.app_id, key_version=1, platform="TDX", measurement=os.urandom(48),
                           contributors=list(range(1, t + 1)), failures={}, ms=12.3)
    formatter = JsonFormatter("node-1")
    log_line = best(lambda: formatter.format(record))

    grpc_call, handoff = asyncio.run(_async_parts(share_request))
    return [
        ("evidence verification (dcap-qvl, claims)", verify, t, True),
        ("key share", share, t, True),
        ("combine + verify (gateway)", combine, 1, True),
        ("rest of the request check (shape, tpk decode, policy, replay write)", max(0.0, check - verify), t, False),
        ("kd point hash (each member)", kd_hash, t, False),
        ("protobuf: parse/serialize the request's messages", protobuf, t - 1, False),
        ("gRPC unary call over TLS, both ends (gateway -> member)", grpc_call, t - 1, False),
        ("gRPC server end of the app's call (half a call)", grpc_call / 2, 1, False),
        ("hand-off to a verification worker thread", handoff, t, False),
        ("gateway log line (JSON)", log_line, 1, False),
    ]


async def _async_parts(share_request) -> tuple[float, float]:
    """(one grpc.aio unary call over TLS, client + server CPU; one run_in_executor round trip)."""
    import grpc

    from derot import _proto
    from derot.net import tls
    from derot.net.malformed import MalformedRequests

    pb, pbg = _proto.load("node_pb2"), _proto.load("node_pb2_grpc")
    ident = tls.generate_identity()
    reply = pb.DeriveShareResponse(index=2, epoch=1, encrypted_share=os.urandom(240))

    class Peer(pbg.PeerServicer):
        async def DeriveShare(self, request, context):
            return reply

    server = grpc.aio.server()
    pbg.add_PeerServicer_to_server(Peer(), MalformedRequests(server))
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(ident.key_pem, ident.cert_pem)]))
    await server.start()
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(ident.cert_pem),
                                           options=tls.channel_options()) as channel:
            stub = pbg.PeerStub(channel)
            call = await _best_async(lambda: stub.DeriveShare(share_request, timeout=10), reps=200)
    finally:
        await server.stop(None)
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(4) as pool:
        handoff = await _best_async(lambda: loop.run_in_executor(pool, int), reps=500)
    return call, handoff


async def _best_async(make, reps: int, rounds: int = 7) -> float:
    await make()
    samples = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(reps):
            await make()
        samples.append((time.process_time() - started) / reps)
    return min(samples)


def report(parts, t: int) -> None:
    total = sum(per * count for _, per, count, _ in parts)
    floor = sum(per * count for _, per, count, in_floor in parts if in_floor)
    width = max(len(name) for name, *_ in parts) + 2
    print(f"\nDeriveKey request path, {t} members working (3-of-5 devnet TDX evidence), in-process; "
          f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores")
    print(f"{'part':{width}}{'per op':>10}{'x':>5}{'per request':>14}{'share':>8}")
    for name, per, count, in_floor in parts:
        mark = " (floor)" if in_floor else ""
        print(f"{name + mark:{width}}{per * 1e3:8.3f} ms{count:>5g}{per * count * 1e3:11.2f} ms"
              f"{per * count / total * 100:7.1f} %")
    print(f"{'t-member crypto floor':{width}}{'':15}{floor * 1e3:11.2f} ms")
    print(f"{'modelled node CPU / request':{width}}{'':15}{total * 1e3:11.2f} ms = {total / floor:.2f}x floor")
    print(f"(a model, not the target's figure: bench/network.py measures the running devnet against <= "
          f"{TARGET_CPU_RATIO:g}x; the gap between the two is event loop, threads and contention)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--t", type=int, default=3, help="members working per request (the threshold)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="derot-bench-path-") as tmp:
        fx = Fixture(Path(tmp))
        report(measure(fx, args.t), args.t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
