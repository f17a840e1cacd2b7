"""In-process DKG benchmark: n members, both secrets (sig, kd), t = floor(2n/3) + 1 by default.

    python bench/dkg.py                 # n = 4, 16, 64
    python bench/dkg.py --sizes 16 --reshare

Every simulated member is a separate DkgSession that receives every message as bytes and decodes and
checks it itself (LocalBroadcast); nothing decoded or verified is shared between members. Key generation
happens before the clock starts. Wall time is the whole run on one core; CPU per member is the process
time spent inside that member's calls (its share of the wall time). Targets (2-core VM): n = 16 ≤ 3 s,
n = 64 ≤ 30 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from derot.crypto.bls import G2  # noqa: E402
from derot.crypto.dkg import DkgConfig, MessageKind  # noqa: E402
from derot.crypto.dkg.local import LocalBroadcast, committee_of, generate_identities, make_sessions  # noqa: E402

NETWORK = (31337).to_bytes(32, "big") + bytes(20)


def default_threshold(n: int) -> int:
    return 2 * n // 3 + 1


def _measure(config: DkgConfig, identities: dict, old_shares: dict | None = None) -> tuple[dict, dict]:
    sessions = make_sessions(config, identities, old_shares=old_shares)
    sizes: dict[MessageKind, list[int]] = {kind: [] for kind in MessageKind}

    names = list(sessions)
    observer = {name: names[1] if name == names[0] else names[0] for name in names}  # one recipient per sender

    def count(sender, recipient, message, data):
        if recipient == observer[sender]:
            sizes[message.kind].append(len(data))
        return data

    net = LocalBroadcast(sessions, intercept=count)
    started = time.perf_counter()
    net.run()
    wall = time.perf_counter() - started
    results = {name: s.result for name, s in sessions.items()}
    first = next(iter(results.values()))
    assert all(r.transcript_hash == first.transcript_hash for r in results.values()), "members disagree"
    for r in results.values():
        if r.shares is not None:
            assert G2.generator() * r.shares.sig == r.sig.share_keys[r.index], "share does not match its key"
    cpu = list(net.cpu_seconds.values())
    stats = {
        "wall_s": wall,
        "per_member_cpu_s": statistics.mean(cpu),
        "max_member_cpu_s": max(cpu),
        "deadlines": net.deadlines,
        "deal_bytes": statistics.mean(sizes[MessageKind.DEAL]),
        "response_bytes": statistics.mean(sizes[MessageKind.RESPONSE]) if sizes[MessageKind.RESPONSE] else 0,
    }
    return stats, results


def run_dkg_benchmark(n: int, t: int | None = None) -> dict:
    """One honest in-process DKG of ``n`` members; returns wall and per-member CPU seconds and sizes."""
    t = default_threshold(n) if t is None else t
    identities = dict(enumerate(generate_identities(n), start=1))
    config = DkgConfig(NETWORK, 1, committee_of(list(identities.values()), t))
    stats, _ = _measure(config, identities)
    return stats


def run_reshare_benchmark(n: int, t: int | None = None) -> dict:
    """A DKG of ``n`` members (not timed), then a timed reshare to the same members."""
    t = default_threshold(n) if t is None else t
    identities = dict(enumerate(generate_identities(n), start=1))
    committee = committee_of(list(identities.values()), t)
    _, first = _measure(DkgConfig(NETWORK, 1, committee), identities)
    previous = next(iter(first.values())).as_previous_epoch()
    config = DkgConfig(NETWORK, 2, committee, previous=previous)
    stats, _ = _measure(config, identities, {k: r.shares for k, r in first.items()})
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,16,64", help="comma-separated committee sizes")
    parser.add_argument("--reshare", action="store_true", help="also time a reshare (same committee) per size")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    targets = {16: 3.0, 64: 30.0}

    print("in-process DKG, both secrets (sig + kd), t = floor(2n/3) + 1, one process")
    header = f"{'run':8s} {'n':>4s} {'t':>4s} {'wall s':>8s} {'CPU/member s':>13s} {'max member s':>13s} " \
             f"{'deal B':>8s} {'resp B':>7s} {'target':>7s}"
    print(header)
    runs = [("dkg", run_dkg_benchmark)] + ([("reshare", run_reshare_benchmark)] if args.reshare else [])
    for label, bench in runs:
        for n in sizes:
            t = default_threshold(n)
            r = bench(n, t)
            target = targets.get(n) if label == "dkg" else None
            verdict = "" if target is None else ("ok" if r["wall_s"] <= target else "MISSED")
            print(f"{label:8s} {n:4d} {t:4d} {r['wall_s']:8.2f} {r['per_member_cpu_s']:13.3f} "
                  f"{r['max_member_cpu_s']:13.3f} {r['deal_bytes']:8.0f} {r['response_bytes']:7.0f} "
                  f"{(f'≤{target:g} ' + verdict) if target else '':>7s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
