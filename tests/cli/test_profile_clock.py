"""``DEROT_PROFILE`` (benchmarks) profiles the event loop's own CPU, never the CPU of the node's other threads.

With the process's CPU as the clock, gRPC's C threads and the executor's threads were charged to whatever the
loop ran at the time, and a profile showed the loop's functions several times slower than they were.
"""

from __future__ import annotations

import hashlib
import pstats
import threading
import time

from derot.cli import node_cmd

BURN_CPU_S = 0.3  # CPU the other thread burns while the profiled thread waits


def _burn(done: threading.Event, burned: list[float]) -> None:
    """Hash until this thread used BURN_CPU_S of CPU (hashlib releases the GIL for large buffers)."""
    data = bytes(4 << 20)
    started = time.thread_time()
    while time.thread_time() - started < BURN_CPU_S:
        hashlib.sha256(data).digest()
    burned.append(time.thread_time() - started)
    done.set()


def test_the_profile_charges_only_the_profiled_threads_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("DEROT_PROFILE", str(tmp_path))
    done, burned = threading.Event(), []
    with node_cmd._profiled("clock"):
        burner = threading.Thread(target=_burn, args=(done, burned))
        burner.start()
        done.wait()  # blocks without using CPU while the other thread burns
        burner.join()
    (path,) = tmp_path.glob("clock-*.prof")
    total = pstats.Stats(str(path)).total_tt
    assert burned and burned[0] >= BURN_CPU_S
    # process time would give >= BURN_CPU_S here; the waiting thread itself used almost none
    assert total < BURN_CPU_S / 3, f"the profile charged {total:.3f} s to a thread that only waited"
