"""Where a node's CPU goes: sample running node processes with py-spy and sort the samples into the parts
of a request (evidence verification, key share, combine, gRPC, chain following, ...).

    python bench/tools/profile_nodes.py --pid 123 --pid 124 --seconds 10     # sample and print the breakdown
    python bench/tools/profile_nodes.py FILE...                              # the breakdown of raw py-spy files

bench/network.py uses it with ``--profile`` during its DeriveKey throughput run. py-spy is an optional tool
(``pip install py-spy``; it needs ptrace rights over the nodes). Samples are taken with ``--gil``: only a
thread holding the GIL is sampled, so the fractions are of the CPU time spent in Python and in native code
called with the GIL held (dcap-qvl, blst, protobuf, grpc's Cython layer); gRPC core's own threads (TLS,
HTTP/2 framing) hold no GIL and are not seen.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

#: (category, substrings of a sampled stack); the first category with a matching substring takes the sample
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("chain following (idle work, not per request)", ("follower.py", "finality.py", "quorum.py", "web3/",
                                                      "eth_abi/", "requests/", "urllib3/")),
    ("evidence: dcap-qvl (quote + collateral signatures)", ("IntelVerifier.verify (",)),
    ("evidence: collateral checks", ("require_same_pck_chain", "_parsed_collateral", "Collateral.")),
    ("evidence: parsing, claims", ("verify_evidence", "Evidence.decode", "parse_quote")),
    ("key share (DeriveShare)", ("derive_share (node/crypto/kd.py",)),
    ("combine + verify (gateway)", ("verify_encrypted", "combine_encrypted", "th.combine", "threshold.py")),
    ("partial signature", ("partial_sign",)),
    ("kd point hash", ("kd_point",)),
    ("policy + replay store", ("PolicyEngine", "add_if_absent", "policy.py", "policy_tee.py")),
    ("request shape checks, points", ("RequestChecker.check", "_shape", "from_bytes", "EncryptedKey.decode")),
    ("logging", ("Logger.", "logs.py")),
    ("metrics", ("prometheus_client",)),
    ("caller authentication (TLS key hash)", ("caller_operator", "caller_key_hash", "spki_hash")),
    ("gRPC client calls (gateway -> members)", ("UnaryUnaryCall", "_channel.py", "Peering.call")),
    ("thread-pool hand-off (verification workers)", ("concurrent/futures/thread.py", "run_in_executor",
                                                     "call_soon_threadsafe", "_write_to_self")),
)
GRPC_CORE = "gRPC server + asyncio (Cython, protobuf, event loop)"
OTHER = "other Python"


def categorize(stack: str) -> str:
    for name, keys in CATEGORIES:
        if any(k in stack for k in keys):
            return name
    leaf = stack.rsplit(";", 1)[-1]
    if leaf.startswith(("Handle._run", "BaseEventLoop._run_once")) or "select" in leaf:
        return GRPC_CORE
    return OTHER


def breakdown(paths) -> tuple[int, list[tuple[str, float]]]:
    """(samples, [(category, fraction of samples)]) over py-spy ``--format raw`` files, largest first."""
    counts: Counter = Counter()
    for path in paths:
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            stack, _, n = line.rstrip().rpartition(" ")
            if stack and n.isdigit():
                counts[categorize(stack)] += int(n)
    total = sum(counts.values())
    return total, [(k, v / total) for k, v in counts.most_common()] if total else []


def py_spy() -> str | None:
    """The py-spy executable next to this interpreter, or on PATH."""
    near = Path(sys.executable).with_name("py-spy")
    return str(near) if near.exists() else shutil.which("py-spy")


def start(pids, seconds: float, directory: Path, rate: int = 200) -> list[tuple[subprocess.Popen, Path]]:
    """Start one py-spy per pid for ``seconds``; returns the processes and their output files."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    started = []
    for pid in pids:
        out = directory / f"py-spy-{pid}.txt"
        proc = subprocess.Popen([exe, "record", "-p", str(pid), "-d", str(max(1, round(seconds))), "-r", str(rate),
                                 "--gil", "--nonblocking", "-f", "raw", "-o", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append((proc, out))
    return started


def finish(started, timeout: float = 60.0) -> tuple[int, list[tuple[str, float]]]:
    for proc, _ in started:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return breakdown([out for _, out in started])


def print_breakdown(total: int, parts, cpu_per_request: float | None = None) -> None:
    print(f"{total} GIL-holding samples over the nodes")
    for name, fraction in parts:
        ms = f"  ~{fraction * cpu_per_request * 1e3:5.2f} ms/request" if cpu_per_request else ""
        print(f"  {fraction * 100:5.1f} %{ms}  {name}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help="py-spy raw files to sort (instead of sampling)")
    ap.add_argument("--pid", type=int, action="append", default=[], help="a node process to sample")
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    if args.files:
        print_breakdown(*breakdown(args.files))
        return 0
    if not args.pid:
        ap.error("give py-spy files or --pid")
    with tempfile.TemporaryDirectory() as tmp:
        print_breakdown(*finish(start(args.pid, args.seconds, Path(tmp))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
