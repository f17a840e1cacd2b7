"""Summarise bench/tools/same_run.sh outputs: per set, each round's four figures for both sides, how many
rounds the newer code won, and over all sets the means and medians, and the paired differences (new − old,
per round) over every round and over the undisturbed ones (other < DISTURBED cores on both sides).

    python bench/tools/same_run_summary.py DIR [DIR ...]

Each DIR holds old-1.txt … old-N.txt and new-1.txt … new-N.txt (bench/network.py outputs). "other" is the CPU
that processes outside the benchmark used during the single-client DeriveKey phase (cores): a round where it
is high was disturbed.
"""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

FIGURES = (
    ("DeriveKey per s", r"DeriveKey throughput, 12 clients \(2 procs, 15 s\)", True),
    ("IssueCertificate per s", r"IssueCertificate throughput, 12 clients \(2 procs, 15 s\)", True),
    ("DeriveKey p50 ms", r"DeriveKey RPC latency p50 \(1 client, n=150\)", False),
    ("IssueCertificate p50 ms", r"IssueCertificate RPC latency p50 \(1 client, n=150\)", False),
)


DISTURBED = 0.3


def figures(path: Path) -> tuple[list[float], float]:
    text = path.read_text()
    values = [float(re.search(pattern + r"\s+([\d.]+)", text).group(1)) for _, pattern, _ in FIGURES]
    other = re.search(r"other processes on the machine\s+([\d.]+)", text)
    return values, float(other.group(1)) if other else float("nan")


def main(dirs: list[str]) -> None:
    pooled: dict[str, list[list[float]]] = {"old": [], "new": []}
    quiet: list[bool] = []
    for directory in map(Path, dirs):
        rounds = sorted(int(p.stem.split("-")[1]) for p in directory.glob("old-*.txt"))
        print(f"{directory}:")
        wins = [0] * len(FIGURES)
        for r in rounds:
            (old, old_other), (new, new_other) = figures(directory / f"old-{r}.txt"), figures(directory / f"new-{r}.txt")
            pooled["old"].append(old)
            pooled["new"].append(new)
            quiet.append(old_other < DISTURBED and new_other < DISTURBED)
            for i, (_, _, higher_is_better) in enumerate(FIGURES):
                wins[i] += (new[i] > old[i]) if higher_is_better else (new[i] < old[i])
            print(f"  round {r}: old {old} (other {old_other:.2f})  new {new} (other {new_other:.2f})")
        print("  rounds the newer code won: " + ", ".join(f"{name} {w}/{len(rounds)}" for (name, _, _), w in zip(FIGURES, wins)))
    for i, (name, _, _) in enumerate(FIGURES):
        old = [row[i] for row in pooled["old"]]
        new = [row[i] for row in pooled["new"]]
        change = 100 * (statistics.mean(new) / statistics.mean(old) - 1)
        print(f"{name}: old mean {statistics.mean(old):.1f}, median {statistics.median(old):.1f}; "
              f"new mean {statistics.mean(new):.1f}, median {statistics.median(new):.1f} ({change:+.1f} % on the means)")
        paired = [n - o for n, o in zip(new, old)]
        undisturbed = [d for d, q in zip(paired, quiet) if q]
        print(f"  paired new - old: median {statistics.median(paired):+.1f}, mean {statistics.mean(paired):+.1f} "
              f"({len(paired)} rounds); undisturbed: median {statistics.median(undisturbed):+.1f}, "
              f"mean {statistics.mean(undisturbed):+.1f} ({len(undisturbed)} rounds)")


if __name__ == "__main__":
    main(sys.argv[1:] or ["."])
