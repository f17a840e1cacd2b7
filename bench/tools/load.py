"""Load generators for bench/network.py: client processes that call a devnet's nodes, and the CPU the nodes
spend meanwhile.

Each client process imports this module again (multiprocessing "spawn"), so its top stays light: derot is
imported inside the functions.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from collections import Counter

from tools.procstat import cpu_seconds, machine_busy_seconds

#: the devnet TDX image the benchmark app runs (its measurement is allowed for the app)
APP_IMAGE = "bench app v1"


def node_pids(net) -> list[int]:
    return [p.pid for p in net.node_processes if p.pid]


def node_metrics(net) -> Counter:
    """Sum over nodes of derot_requests_total{method,outcome} and of the latency histogram's sum/count."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: Counter = Counter()
    for proc in net.node_processes:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as reply:
                text = reply.read().decode()
        except OSError:
            continue
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "derot_requests_total":
                    totals[(sample.labels["method"], sample.labels["outcome"])] += sample.value
                elif sample.name in ("derot_request_seconds_sum", "derot_request_seconds_count"):
                    totals[(sample.labels["method"], sample.name.rsplit("_", 1)[1])] += sample.value
    return totals


class _TimedClient:
    """Proxy of RootOfTrustClient recording the duration of the last ``call`` (evidence + RPC)."""

    def __init__(self, client):
        self.client, self.pb, self.last = client, client.pb, 0.0

    def call(self, method, make_request):
        started = time.perf_counter()
        try:
            return self.client.call(method, make_request)
        finally:
            self.last = time.perf_counter() - started


def _client_thread(spec: dict, offset: int, window, out: dict, ready: threading.Barrier, go) -> None:
    from derot.app.client import RequestFailed, RootOfTrustClient
    from derot.app.sdk import App, AppError, TrustAnchor
    from derot.app.tee.devnet import DevnetDevice
    from derot.attest.devnet import image_registers
    from derot.constants import KeyType, Platform
    from derot.crypto.bls import G2

    op = None
    try:  # set up and warm up (channel, TLS session, caches); the certificate's subject is the app's own key
        endpoints = spec["endpoints"][offset:] + spec["endpoints"][:offset]
        chain_id, registry, epoch, group_key_sig, group_key_kd = spec["anchor"]
        anchor = TrustAnchor(chain_id, registry, epoch, G2.from_bytes(group_key_sig), G2.from_bytes(group_key_kd))
        client = _TimedClient(RootOfTrustClient(endpoints))
        device = DevnetDevice(spec["roots"], Platform.TDX, image_registers(Platform.TDX, APP_IMAGE))
        app = App(client, device, anchor, spec["app_id"])
        subject = app.get_key().keys.public_key(KeyType.SECP256K1)
        if spec["method"] == "certify":
            op = lambda: app.get_certificate(subject, KeyType.SECP256K1)  # noqa: E731
        else:
            op = app.get_key
        op()
    except Exception as exc:  # this client does not take part; the failure is reported
        out["errors"][f"set-up {type(exc).__name__}: {exc}"[:160]] += 1
        op = None
    ready.wait()
    go.wait()  # the parent has set the window
    if op is None:
        return
    start, end = window()
    while time.time() < start:
        time.sleep(0.001)
    count = spec.get("count")
    done = 0
    while (done < count) if count else (time.time() < end):
        began = time.perf_counter()
        try:
            op()
            finished = time.time()
            if count or finished <= end:
                out["latency"].append((time.perf_counter() - began, client.last))
        except RequestFailed as exc:
            out["errors"][exc.reason] += 1
        except AppError:
            out["errors"]["app_error"] += 1
        done += 1
    client.client.close()


def client_process(spec: dict, threads: int, first_offset: int, ready_queue, go, window_array, results) -> None:
    """One load-generator process: ``threads`` clients; reports latencies, errors and its own CPU time."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop (it terminates us)
    out = {"latency": [], "errors": Counter()}
    window = lambda: (window_array[0], window_array[1])  # noqa: E731
    barrier = threading.Barrier(threads + 1)
    workers = [threading.Thread(target=_client_thread, args=(spec, first_offset + k, window, out, barrier, go),
                                daemon=True) for k in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    ready_queue.put(os.getpid())
    go.wait()
    start = window_array[0]
    while time.time() < start:
        time.sleep(0.001)
    cpu0 = time.process_time()
    for w in workers:
        w.join()
    results.put({"latency": out["latency"], "errors": dict(out["errors"]), "cpu": time.process_time() - cpu0,
                 "ended": time.time()})


def run_clients(net, spec: dict, clients: int, procs: int, *, duration: float | None = None,
                count: int | None = None, idle_rate: float = 0.0, on_window=None) -> dict:
    """Run ``clients`` concurrent clients over ``procs`` processes; measure nodes' CPU over the window.
    ``on_window()`` is called when the measured window opens (the clients are set up and warm)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = max(1, min(procs, clients))
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    window = ctx.Array("d", 2, lock=False)
    spec = dict(spec, count=count)
    split = [clients // procs + (1 if k < clients % procs else 0) for k in range(procs)]
    workers = []
    try:
        offset = 0
        for threads in split:
            workers.append(ctx.Process(target=client_process, args=(spec, threads, offset, ready, go, window,
                                                                    results), daemon=True))
            offset += threads
        for w in workers:
            w.start()
        for _ in workers:
            ready.get(timeout=120)
        start = time.time() + 0.3
        window[0], window[1] = start, start + (duration or 0)
        go.set()
        pids = node_pids(net)
        time.sleep(max(0.0, start - time.time()))
        if on_window is not None:
            on_window()

        def reading():  # CPU per node (a single client's gateway stands out), anvil's, the machine's, ours
            return ([cpu_seconds([pid]) for pid in pids], cpu_seconds([net.anvil_pid]), machine_busy_seconds(),
                    time.process_time())

        metrics0 = node_metrics(net)
        before = reading()
        if duration:
            time.sleep(max(0.0, window[1] - time.time()))
            after, ended = reading(), time.time()
            collected = [results.get(timeout=120) for _ in workers]
        else:
            collected = [results.get(timeout=600) for _ in workers]
            after, ended = reading(), time.time()
        metrics1 = node_metrics(net)
        for w in workers:
            w.join(10)
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
                w.join(5)
    latency = [sample for c in collected for sample in c["latency"]]
    errors = Counter()
    for c in collected:
        errors.update(c["errors"])
    elapsed = ended - start
    served = len(latency)
    each = sorted((b - a for a, b in zip(before[0], after[0])), reverse=True)
    node_cpu, anvil_cpu = sum(each), after[1] - before[1]
    client_cpu = sum(c["cpu"] for c in collected)
    others = (after[2] - before[2]) - node_cpu - client_cpu - anvil_cpu - (after[3] - before[3])
    return {
        "clients": clients, "procs": procs, "elapsed": elapsed, "served": served, "errors": errors,
        "rps": served / elapsed,
        "total": [t for t, _ in latency], "rpc": [r for _, r in latency],
        "node_cpu": node_cpu, "node_cpu_net": node_cpu - idle_rate * elapsed,
        "node_cpu_each": each,
        "client_cpu": client_cpu, "anvil_cpu": anvil_cpu, "others_cores": max(0.0, others) / elapsed,
        "metrics": metrics1 - metrics0,
    }
