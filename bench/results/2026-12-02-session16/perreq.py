# session 16: py-spy raw output of perreq.py (SPY=1) is aggregated with bench/results/2026-12-02-session16/agg_spy.py
"""Per-node, per-thread CPU of one DeriveKey (sequential, node 1 the gateway), 3-of-5 devnet."""
import os, sys, time, tempfile
from pathlib import Path
sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from percall_lib import threads, diff
from derot.devnet.network import Devnet, APP_OWNER
from derot.app.client import RootOfTrustClient
from derot.app.owner import AppOwner
from derot.app.sdk import App, TrustAnchor
from derot.app.tee.devnet import DevnetDevice
from derot.attest.devnet import devnet_measurement_digest, image_registers
from derot.constants import Platform

IMAGE = "bench app v1"
N = int(os.environ.get("N", "400"))
d = Path(tempfile.mkdtemp(prefix="perreq-"))
net = Devnet(d, nodes=5, threshold=3, phase_timeout=10.0, progress=lambda m: print(m, flush=True))
net.up()
try:
    net.wait_for_epoch(1)
    owner = AppOwner.connect(net.rpc_url, net.registry, net.accounts[APP_OWNER])
    app_id = owner.register(os.urandom(32))
    owner.allow(app_id, Platform.TDX, devnet_measurement_digest(Platform.TDX, image_registers(Platform.TDX, IMAGE)))
    anchor = TrustAnchor.from_chain(net.rpc_url, net.registry)
    device = DevnetDevice(net.directory / "roots", Platform.TDX, image_registers(Platform.TDX, IMAGE))
    gw = net.node_processes[0]
    client = RootOfTrustClient([gw.public_endpoint], attempts=1)
    app = App(client, device, anchor, app_id)
    deadline = time.time() + 60
    while True:
        try:
            app.get_key(); break
        except Exception:
            if time.time() > deadline: raise
            time.sleep(0.5)
    for _ in range(30): app.get_key()
    pids = [p.pid for p in net.node_processes]
    import subprocess
    spies = [subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--pid", str(p), "--rate", "250",
              "--format", "raw", "--nonblocking", "-o", f"spy-node{i}.txt", "--duration", "30"],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i, p in enumerate(pids[:2], 1)] if os.environ.get("SPY") else []
    time.sleep(1)
    for rnd in range(int(os.environ.get("ROUNDS", "3"))):
        a = {p: threads(p) for p in pids}; t0 = time.time(); time.sleep(6)
        idle = {p: diff(a[p], threads(p)) for p in pids}; idle_s = time.time() - t0
        a = {p: threads(p) for p in pids}; c0 = os.times(); t0 = time.time(); lat = []
        for _ in range(N):
            s = time.perf_counter(); app.get_key(); lat.append(time.perf_counter() - s)
        wall = time.time() - t0; c1 = os.times()
        busy = {p: diff(a[p], threads(p)) for p in pids}
        lat.sort()
        print(f"round {rnd}: {N} DeriveKey in {wall:.1f} s, p50 {lat[N//2]*1e3:.1f} ms; client {(c1.user+c1.system-c0.user-c0.system)/N*1e3:.2f} ms/req")
        total = 0
        for i, p in enumerate(pids, 1):
            parts = {k: (busy[p][k] - idle[p].get(k, 0) / idle_s * wall) / N * 1e3 for k in busy[p]}
            s = sum(parts.values()); total += s
            print(f"   node {i}: {s:6.2f} ms/req  " + "  ".join(f"{k} {v:.2f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if abs(v) >= 0.01))
        print(f"   ALL NODES {total:.2f} ms/req")
    for sp in spies: sp.wait()
finally:
    net.down()
