"""``kill -USR1`` / ``kill -USR2`` on a busy node dump its threads' and tasks' stacks, and the node lives on.

The attack: an operator (or the devnet's post-mortem after a timed-out wait) signals a node while its event loop
and other threads are running Python. A dump taken in the C signal handler (``faulthandler.register``) reads
the other threads' frames while they change, and crashed the node with SIGSEGV in 3 of 4 such runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

SIGNALS = 300  # pairs of USR1 + USR2 sent while the victim is busy

VICTIM = textwrap.dedent("""
    import asyncio, signal, sys, threading
    from derot.cli import node_cmd

    node_cmd._stack_dumps_on_sigusr1()

    def busy():  # another thread running Python: generators make and free frames all the time
        def gen(n):
            for i in range(n):
                yield i
        while True:
            sum(gen(20))
            [x for x in gen(10)]

    for _ in range(2):
        threading.Thread(target=busy, daemon=True).start()

    async def step(i):
        await asyncio.sleep(0)
        return i

    async def main():
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR2, node_cmd._dump_tasks)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        while not stop.is_set():  # the loop busy with tasks, as a node's is
            await asyncio.gather(*(step(i) for i in range(50)))

    asyncio.run(main())
    print("survived", flush=True)
""")


def test_a_busy_node_survives_stack_dump_signals_and_writes_the_dumps(tmp_path):
    dumps = tmp_path / "stderr.txt"
    with dumps.open("w") as err:
        victim = subprocess.Popen([sys.executable, "-c", VICTIM], stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            assert victim.stdout.readline().strip() == "ready"
            for _ in range(SIGNALS):
                if victim.poll() is not None:
                    break
                os.kill(victim.pid, signal.SIGUSR1)
                os.kill(victim.pid, signal.SIGUSR2)
                time.sleep(0.01)  # pacing only: signals sent back to back merge into one
            if victim.poll() is None:
                victim.send_signal(signal.SIGTERM)
            out, _ = victim.communicate(timeout=120)
        finally:
            if victim.poll() is None:
                victim.kill()
                victim.wait()
    assert victim.returncode == 0, f"the node died of signal {-victim.returncode} while dumping stacks"
    assert out.strip() == "survived"
    text = dumps.read_text(errors="replace")
    assert "most recent call first" in text  # threads (USR1)
    assert "asyncio tasks" in text  # tasks (USR2)


#: a node that is still booting (it has not reached its handlers) when the dump signals arrive
BOOTING = textwrap.dedent("""
    import sys
    from derot.cli import node_cmd

    print("booting", flush=True)
    sys.stdin.readline()  # the test signals us meanwhile
    node_cmd._stack_dumps_on_sigusr1()
    print("survived", flush=True)
""")


def _signal_while_booting(spawn) -> tuple[subprocess.Popen, str, str]:
    booting = spawn([sys.executable, "-c", BOOTING], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True)
    try:
        assert booting.stdout.readline().strip() == "booting"
        os.kill(booting.pid, signal.SIGUSR1)
        os.kill(booting.pid, signal.SIGUSR2)
        out, err = booting.communicate("go\n", timeout=120)
    finally:
        if booting.poll() is None:
            booting.kill()
            booting.wait()
    return booting, out, err


def test_a_dump_asked_for_while_a_devnet_node_boots_waits_for_its_handlers():
    """The devnet's post-mortem may signal a node that is still booting. The signals' default action would end
    it; started by the devnet, the node receives them once its handlers are installed."""
    from derot.devnet.processes import spawn_node_process

    plain, _, _ = _signal_while_booting(subprocess.Popen)
    assert plain.returncode in (-signal.SIGUSR1, -signal.SIGUSR2), "the signals did not reach a booting process"

    node, out, err = _signal_while_booting(spawn_node_process)
    assert node.returncode == 0, f"the booting node died of signal {-node.returncode}"
    assert out.strip() == "survived"
    assert "most recent call first" in err  # the thread dump asked for during boot, written once it could be
