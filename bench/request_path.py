"""What one DeriveKey costs a 3-of-5 committee, part by part, measured in this process (issue 15 section 4).

    python bench/request_path.py            # ~30-60 s
    python bench/request_path.py --t 7      # another threshold

Every part is the real code a node runs, timed alone (process time, best of several rounds, so other processes
on the machine disturb it little): the protocol's crypto, the same parts and definition as bench/network.py's
t-member floor (evidence verification, key share, the gateway's combine as it runs), and what the nodes add
around it: the rest of the request check (shape, transport-key decoding, policy rules, the replay-store write in
a real SQLite node store), the protobuf messages, unary gRPC calls over TLS (a DeriveShare-sized request to a
grpc.aio server in another process, as a member is; client and server ends measured apart), the gateway's log
line. A devnet TDX quote is verified on the event loop (derot.service.verification), so no thread hand-off is
counted. The sum is the modelled node CPU per request; bench/network.py measures the real one on a running
devnet, and the difference between the two is what this model leaves out (event-loop scheduling, the node's
other threads, contention between the processes on the two cores).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from network import COLD_REPS, FLUSH_BYTES, best, cold, measure_floor  # noqa: E402  (timers, the floor)
from tools.load import APP_IMAGE  # noqa: E402
TARGET_CPU_RATIO = 1.5  # bench/network.py's target: node CPU per request <= 1.5x the t-member floor


@dataclass(frozen=True)
class Part:
    """One part of a request: seconds per operation warm (best of rounds) and cold (None: not timed cold), how
    many operations a request needs, how many of them the gateway does, and whether it is in the crypto floor."""

    name: str
    warm: float
    cold: float | None
    count: int
    at_gateway: int
    in_floor: bool

    def per_op(self, cold_caches: bool) -> float:
        return self.cold if cold_caches and self.cold is not None else self.warm


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
        self.roots_dir = directory / "roots"
        roots = DevnetRoots.generate(self.roots_dir)
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


def measure(fx: Fixture, t: int) -> list[Part]:
    """The parts of one request; the floor's parts are bench/network.py's (:func:`network.measure_floor`), the
    same definition as the verdict's."""
    from derot.attest.evidence import Evidence
    from derot.attest.verify import verify_evidence
    from derot.service.logs import JsonFormatter

    pb = fx.pb
    floor = measure_floor(fx.roots_dir, fx.network, fx.app_id, t, t)
    cold_floor = measure_floor(fx.roots_dir, fx.network, fx.app_id, t, t, timer=cold)
    requests = [fx.request() for _ in range(400 + COLD_REPS)]
    sample = requests[0]
    fresh = iter(requests)
    check = best(lambda: fx.checker.check(next(fresh), fx.snapshot, purpose="derive"), reps=50)
    verify = best(lambda: verify_evidence(Evidence.decode(sample.evidence), fx.trust))
    cold_check = cold(lambda: fx.checker.check(next(fresh), fx.snapshot, purpose="derive"))

    key_request = pb.DeriveKeyRequest(request=sample).SerializeToString()
    share_request = pb.DeriveShareRequest(request=sample, epoch=1)
    share_reply = pb.DeriveShareResponse(index=2, epoch=1, encrypted_share=os.urandom(240)).SerializeToString()
    protobuf = best(lambda: (pb.DeriveKeyRequest.FromString(key_request), share_request.SerializeToString(),
                             pb.DeriveShareRequest.FromString(share_request.SerializeToString()),
                             pb.DeriveShareResponse.FromString(share_reply)))

    record = logging.LogRecord("derot.node", logging.INFO, __file__, 0, "key derived", (), None)
    record.__dict__.update(app_id=fx.app_id, key_version=1, platform="TDX", measurement=os.urandom(48),
                           contributors=list(range(1, t + 1)), failures={}, ms=12.3)
    formatter = JsonFormatter("node-1")
    log_line = best(lambda: formatter.format(record))

    client_end, server_end = _grpc_ends(share_request)
    return [
        Part("evidence verification (dcap-qvl, claims)", floor["verify"], cold_floor["verify"], t, 1, True),
        Part("key share (with the kd point's hash)", floor["share"], cold_floor["share"], t, 1, True),
        Part("the gateway's combine as it runs (t - 1 weighted, sum, check)", floor["combine_verify"],
             cold_floor["combine_verify"], 1, 1, True),
        Part("rest of the request check (shape, tpk decode, policy, replay write)", max(0.0, check - verify),
             max(0.0, cold_check - cold_floor["verify"]), t, 1, False),
        Part("protobuf: parse/serialize the request's messages", protobuf, None, t - 1, 0, False),
        Part("gRPC unary call over TLS, client end (gateway -> member)", client_end, None, t - 1, t - 1, False),
        Part("gRPC unary call over TLS, server end (member)", server_end, None, t - 1, 0, False),
        Part("gRPC server end of the app's call (gateway)", server_end, None, 1, 1, False),
        Part("gateway log line (JSON)", log_line, None, 1, 1, False),
    ]


def _grpc_ends(share_request, rounds: int = 7, reps: int = 200) -> tuple[float, float]:
    """(client end, server end) CPU of one sequential unary DeriveShare call over TLS between two processes,
    best of ``rounds``. The server is another process, as a member is: in one process the two ends share
    wake-ups and threads, and a call cost about half as much (0.62 against 1.3 ms, session 16)."""
    import multiprocessing as mp

    import grpc

    from derot import _proto
    from derot.net import tls

    pbg = _proto.load("node_pb2_grpc")
    ident = tls.generate_identity()
    ctx = mp.get_context("spawn")
    ports, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(ident.key_pem, ident.cert_pem, ports, stop), daemon=True)
    server.start()
    try:
        port = ports.get(timeout=60)
        channel = grpc.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(ident.cert_pem),
                                      options=tls.channel_options())
        stub = pbg.PeerStub(channel)
        stub.DeriveShare(share_request, timeout=10)
        samples = []
        for _ in range(rounds):
            server0, client0 = _process_cpu(server.pid), time.process_time()
            for _ in range(reps):
                stub.DeriveShare(share_request, timeout=10)
            client1, server1 = time.process_time(), _process_cpu(server.pid)
            samples.append(((client1 - client0) / reps, (server1 - server0) / reps))
        channel.close()
    finally:
        stop.set()
        server.join(10)
        if server.is_alive():
            server.terminate()
    return min(samples, key=sum)


def _process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _serve(key_pem: bytes, cert_pem: bytes, ports, stop) -> None:
    """A grpc.aio Peer server (its handlers wrapped as a node's are) answering DeriveShare with a share-sized
    reply, until ``stop`` is set."""
    import grpc

    from derot import _proto
    from derot.net.malformed import MalformedRequests

    pb, pbg = _proto.load("node_pb2"), _proto.load("node_pb2_grpc")
    reply = pb.DeriveShareResponse(index=2, epoch=1, encrypted_share=os.urandom(240))

    class Peer(pbg.PeerServicer):
        async def DeriveShare(self, request, context):
            return reply

    async def main() -> None:
        server = grpc.aio.server()
        pbg.add_PeerServicer_to_server(Peer(), MalformedRequests(server))
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key_pem, cert_pem)]))
        await server.start()
        ports.put(port)
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await server.stop(None)

    asyncio.run(main())


def _total(parts: list[Part], cold_caches: bool, gateway_only: bool = False) -> float:
    """Seconds per request of ``parts`` (only the gateway's operations with ``gateway_only``)."""
    return sum(p.per_op(cold_caches) * (p.at_gateway if gateway_only else p.count) for p in parts)


def report(parts: list[Part], t: int) -> None:
    floor_parts = [p for p in parts if p.in_floor]
    warm_total = _total(parts, False)
    width = max(len(p.name) for p in parts) + 2
    print(f"\nDeriveKey request path, {t} members working (3-of-5 devnet TDX evidence), in-process; "
          f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores")
    print(f"{'part':{width}}{'per op':>10}{'cold':>10}{'x':>5}{'per request':>14}{'share':>8}")
    for p in parts:
        mark = " (floor)" if p.in_floor else ""
        cold_text = f"{p.cold * 1e3:7.3f} ms" if p.cold is not None else f"{'-':>10}"
        print(f"{p.name + mark:{width}}{p.warm * 1e3:7.3f} ms{cold_text}{p.count:>5g}{p.warm * p.count * 1e3:11.2f} ms"
              f"{p.warm * p.count / warm_total * 100:7.1f} %")
    floor = _total(floor_parts, False)
    for label, cold_caches in (("", False), (", cold caches", True)):
        whole, gateway = _total(parts, cold_caches), _total(parts, cold_caches, gateway_only=True)
        print(f"{'t-member crypto floor' + label:{width}}{'':25}{_total(floor_parts, cold_caches) * 1e3:11.2f} ms")
        print(f"{'modelled node CPU / request' + label:{width}}{'':25}{whole * 1e3:11.2f} ms = "
              f"{whole / floor:.2f}x floor")
        print(f"{'  of it, the gateway; a member per call':{width}}{'':25}{gateway * 1e3:11.2f} ms; "
              f"{(whole - gateway) / max(1, t - 1) * 1e3:.2f} ms")
    print(f"(a model, not the target's figure: bench/network.py measures the running devnet against <= "
          f"{TARGET_CPU_RATIO:g}x the warm floor, split the same way in its latency runs; \"cold\" times each "
          f"operation after {FLUSH_BYTES >> 20} MB were written, as other processes evict a node's caches between "
          f"its requests)")


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
