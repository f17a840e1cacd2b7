"""A node's chain follower against a big DerotRegistry on a real anvil (issue 15 §3).

    python bench/registry_scale.py                  # 10,000 apps × 2 measurements, 10,000 revocations, 200 nodes
    python bench/registry_scale.py --apps 1000 --revocations 1000 --nodes 50   # quicker

Figures, each next to its target:
- fill: how long filling the registry took (no target);
- cold sync: a fresh process that imports the whole node (``derot.service.node``) and runs the node's
  ``Follower`` from scratch until it holds the full state at ``head − confirmations``; seconds (≤ 30 s)
  and the RPC calls and HTTP requests it made;
- RSS: that process's peak resident set (VmHWM) holding the state (≤ 300 MB);
- per block: RPC calls of one follower poll over an empty block and over blocks with k changes
  (k/2 revocations + k/2 app measurement changes); the target is that the cost does not grow with the
  registry and grows at most by one call per change;
- revocation: with the full registry loaded and anvil mining a block a second, the blocks and seconds from
  sending a ``revoke`` to the follower's first update whose state holds it (≤ the first confirmed block).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path


from derot.devnet.fill import ANVIL_ARGS, Filler, app_txs, node_txs, revocation_ids, revoke_txs  # noqa: E402

from derot.chain import actions as A  # noqa: E402
from derot.chain.deploy import DeployParams, deploy  # noqa: E402
from derot.chain.follower import Follower  # noqa: E402
from derot.chain.registry import Registry  # noqa: E402
from derot.constants import Platform, RevocationKind  # noqa: E402
from derot.devnet.anvil import Anvil, dev_accounts  # noqa: E402

TARGET_SYNC_S = 30.0
TARGET_RSS_MB = 300.0
CONFIRMATIONS = 1
OWNERS = 8


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def figure(name: str, value: str, target: str, ok: bool | None) -> None:
    print(f"{name:<46} {value:>24}   target {target:<28} {'' if ok is None else verdict(ok)}", flush=True)


def counters(follower: Follower) -> tuple[int, int]:
    """(JSON-RPC calls, HTTP requests) the follower's endpoints have been sent so far."""
    endpoints = follower.w3.provider.endpoints
    return sum(e.calls for e in endpoints), sum(e.posts for e in endpoints)


def build(anvil: Anvil, args, rng: random.Random):
    """Deploy and fill; returns (registry, deploy block, filler, council address, app owners)."""
    deployer = dev_accounts(1)[0]
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 120}))
    addresses = w3.eth.accounts
    council, owners, operators = addresses[1], addresses[2:2 + OWNERS], addresses[2 + OWNERS:]
    bootstrap = (A.AllowPlatform(int(Platform.TDX)), A.AllowPlatform(int(Platform.SEV_SNP)))
    params = DeployParams.devnet([(deployer.address, 10**24)], council, bootstrap=bootstrap)
    deployment = deploy(w3, deployer, params)
    registry = Registry(w3, deployment.registry)
    filler = Filler(anvil.url, registry)
    filler.rpc("evm_setAutomine", [False])
    started = time.perf_counter()
    filler.send_mined(node_txs(filler, operators[:args.nodes], rng))
    filler.send_mined(app_txs(filler, owners, args.apps, rng))
    filler.send_mined(revoke_txs(filler, council, revocation_ids(args.revocations, rng)))
    filler.rpc("evm_mine", [])
    elapsed = time.perf_counter() - started
    figure("fill: transactions", f"{filler.sent} in {elapsed:.1f} s", "-", None)
    return registry, deployment.deploy_block, filler, council, owners


def cold_sync_child(url: str, registry: str, start: int) -> dict:
    """Run in a fresh process: import the node, sync from scratch, report time, calls and memory."""
    import derot.service.node  # noqa: F401 - the node's whole module graph, as a node process holds it

    follower = Follower.connect(url, registry, start_block=start, confirmations=CONFIRMATIONS, timeout=120)
    started, cpu = time.perf_counter(), time.process_time()
    polls = 0
    while True:
        update = follower.poll()
        polls += 1
        if update is not None and not follower.behind:
            break
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    calls, posts = counters(follower)
    state = update.state
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    snap = state.snapshot
    revocations = (len(snap.revoked_fmspcs) + len(snap.revoked_chip_ids) + len(snap.revoked_gpu_fwids)
                   + len(snap.revoked_measurements) + len(state.revoked_serials) + len(state.revoked_evidence_hashes)
                   + len(snap.revoked_ppids) + len(snap.revoked_pck_certs) + len(snap.revoked_gpu_devices))
    return {
        "seconds": seconds, "cpu": cpu, "calls": calls, "posts": posts, "polls": polls,
        "apps": len(snap.apps), "measurements": sum(len(a.measurements) for a in snap.apps.values()),
        "revocations": revocations, "nodes": len(state.nodes),
        "rss_mb": int(status["VmRSS"].split()[0]) / 1024, "hwm_mb": int(status["VmHWM"].split()[0]) / 1024,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_cold_sync(anvil: Anvil, registry: Registry, start: int, args) -> None:
    anvil_cpu = cpu_seconds(anvil.pid)
    reply = subprocess.run(
        [sys.executable, __file__, "--child", anvil.url, registry.address, str(start)],
        capture_output=True, text=True, check=True,
    )
    anvil_cpu = cpu_seconds(anvil.pid) - anvil_cpu
    r = json.loads(reply.stdout.strip().splitlines()[-1])
    complete = (r["apps"], r["measurements"], r["revocations"], r["nodes"]) == (
        args.apps, 2 * args.apps, args.revocations, args.nodes)
    figure("state loaded (apps/meas./revocations/nodes)",
           f"{r['apps']}/{r['measurements']}/{r['revocations']}/{r['nodes']}", "all filled", complete)
    figure("cold sync (fresh node process)", f"{r['seconds']:.2f} s", f"<= {TARGET_SYNC_S:.0f} s",
           r["seconds"] <= TARGET_SYNC_S)
    figure("cold sync CPU: node process + anvil", f"{r['cpu']:.1f} s + {anvil_cpu:.1f} s",
           f"<= {TARGET_SYNC_S:.0f} s (unloaded wall)", r["cpu"] + anvil_cpu <= TARGET_SYNC_S)
    figure("cold sync RPC calls / HTTP requests", f"{r['calls']} / {r['posts']}", "-", None)
    figure("node RSS peak (VmHWM) holding the state", f"{r['hwm_mb']:.0f} MB", f"<= {TARGET_RSS_MB:.0f} MB",
           r["hwm_mb"] <= TARGET_RSS_MB)


def synced_follower(url: str, registry: Registry, start: int) -> Follower:
    follower = Follower.connect(url, registry.address, start_block=start, confirmations=CONFIRMATIONS, timeout=120)
    while follower.poll() is None or follower.behind:
        pass
    return follower


def poll_cost(follower: Follower, filler: Filler) -> tuple[int, int, object]:
    """Mine one block, then the calls and requests of the poll that takes it in (after the confirmation)."""
    filler.rpc("evm_mine", [])
    before = counters(follower)
    update = follower.poll()
    after = counters(follower)
    return after[0] - before[0], after[1] - before[1], update


def measure_per_block(follower: Follower, filler: Filler, council: str, owners: list[str], rng) -> None:
    """Per-block cost: an empty block, then blocks with k changes."""
    filler.rpc("evm_mine", [])  # the confirmation block of whatever came before
    follower.poll()
    calls0, posts0, _ = poll_cost(follower, filler)
    figure("per block: empty block", f"{calls0} calls / {posts0} req", "independent of registry", None)
    app_ids = list(follower.state.snapshot.apps)
    for k in (2, 20, 200):
        txs = list(revoke_txs(filler, council, [(RevocationKind.CERT_SERIAL, rng.randbytes(32))
                                                for _ in range(k // 2)]))
        for app_id in rng.sample(app_ids, k // 2):
            owner = follower.state.snapshot.apps[app_id].owner
            txs.append(filler.tx(owner, "setAppMeasurement", [app_id, int(Platform.TDX), rng.randbytes(32), True]))
        filler.send_mined(txs)  # mined into one block; the poll below sees it once confirmed
        calls, posts, update = poll_cost(follower, filler)
        events = len(update.events) if update else 0
        figure(f"per block: {k} changes ({events} events)", f"{calls} calls / {posts} req",
               f"<= {calls0} + 1 + {k} calls", calls <= calls0 + 1 + k)


def measure_revocation(follower: Follower, filler: Filler, council: str, rng) -> None:
    """Blocks and seconds from sending a revoke to the first follower update that holds it."""
    ident = rng.randbytes(32)
    filler.rpc("evm_setIntervalMining", [1])
    follower.poll_interval = 0.2
    try:
        started = time.perf_counter()
        tx_hash = filler.rpc_batch([filler.tx(council, "revoke", [int(RevocationKind.CERT_SERIAL), ident])])[0]
        mined_in = None
        for update in follower.run():
            if mined_in is None:
                receipt = filler.rpc("eth_getTransactionReceipt", [tx_hash])
                mined_in = int(receipt["blockNumber"], 16) if receipt else None
            if ident in update.state.revoked_serials:
                seconds = time.perf_counter() - started
                break
    finally:
        filler.rpc("evm_setIntervalMining", [0])
    blocks = update.state.block_number - mined_in
    figure("revocation: state block − tx block", f"{blocks} blocks", "0 (the first confirmed block)", blocks == 0)
    figure("revocation: seconds from send to the state", f"{seconds:.2f} s", f"1 s blocks, {CONFIRMATIONS} conf.",
           None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", type=int, default=10_000)
    parser.add_argument("--revocations", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--child", nargs=3, metavar=("URL", "REGISTRY", "START"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, registry, start = args.child
        print(json.dumps(cold_sync_child(url, registry, int(start))))
        return
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"registry scale: {args.apps} apps × 2 measurements, {args.revocations} revocations, {args.nodes} nodes; "
          f"seed {seed}; confirmations {CONFIRMATIONS}", flush=True)
    rng = random.Random(seed)
    with Anvil(accounts=2 + OWNERS + args.nodes, extra_args=ANVIL_ARGS) as anvil:
        registry, start, filler, council, owners = build(anvil, args, rng)
        measure_cold_sync(anvil, registry, start, args)
        follower = synced_follower(anvil.url, registry, start)
        measure_per_block(follower, filler, council, owners, rng)
        measure_revocation(follower, filler, council, rng)


if __name__ == "__main__":
    main()
