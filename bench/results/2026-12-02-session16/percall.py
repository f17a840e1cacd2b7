"""Server-side CPU per trivial public call (GetNetworkInfo) on a running devnet node, vs idle."""
import os, sys, time, tempfile
from pathlib import Path
sys.path.insert(0, os.getcwd())
import grpc
from derot import _proto
from derot.net import tls
from derot.devnet.network import Devnet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from percall_lib import threads, diff  # noqa: E402

d = Path(tempfile.mkdtemp(prefix="percall-"))
net = Devnet(d, nodes=3, threshold=2, progress=lambda m: print(m, flush=True))
net.up()
try:
    net.wait_for_epoch(1)
    p = net.node_processes[0]
    host, port = "127.0.0.1", p.public_port
    cert = tls.fetch_certificate(host, port, 5)
    ch = grpc.secure_channel(f"{host}:{port}", grpc.ssl_channel_credentials(cert), options=tls.channel_options())
    stub = _proto.load("node_pb2_grpc").RootOfTrustStub(ch)
    pb = _proto.load("node_pb2")
    for _ in range(50):
        stub.GetNetworkInfo(pb.GetNetworkInfoRequest())
    time.sleep(3)
    for rnd in range(3):
        a = threads(p.pid); t0 = time.time(); time.sleep(8); idle = diff(a, threads(p.pid)); idle_s = time.time() - t0
        N = 2000
        a = threads(p.pid); c0 = os.times(); t0 = time.time()
        for _ in range(N):
            stub.GetNetworkInfo(pb.GetNetworkInfoRequest())
        busy = diff(a, threads(p.pid)); wall = time.time() - t0; c1 = os.times()
        print(f"round {rnd}: {N} calls in {wall:.1f} s; client {(c1.user+c1.system-c0.user-c0.system)/N*1e3:.3f} ms/call")
        for k in sorted(busy):
            rate = idle.get(k, 0) / idle_s
            print(f"   {k:20s} busy {busy[k]/N*1e3:7.3f} ms/call   minus idle {(busy[k]-rate*wall)/N*1e3:7.3f} ms/call")
        tot = sum(busy.values()) - sum(idle.values()) / idle_s * wall
        print(f"   TOTAL minus idle {tot/N*1e3:.3f} ms/call")
finally:
    net.down()
