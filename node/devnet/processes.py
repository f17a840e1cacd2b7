"""Processes of a devnet on this machine: pid liveness (zombies are not alive), signalling only our own pids,
waiting for an exit, spawning a node with its stack-dump signals held until it can dump, private files, and one
node metric read over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from derot.cli.node_cmd import DUMP_SIGNALS


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")


def write_role_keys(directory: Path, keys: dict[str, str]) -> dict[str, str]:
    """Write each role's key (hex) to ``directory/keys/<role>.key`` (0600, in a 0700 folder); return the paths
    relative to ``directory``, by role."""
    from derot.service.storage import private_dir

    private_dir(directory / "keys")
    for role, key in keys.items():
        write_private(directory / "keys" / f"{role}.key", key)
    return {role: f"keys/{role}.key" for role in keys}


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def is_ours(pid: int, marker: str) -> bool:
    """Only signal a pid whose command line carries ``marker`` (this devnet's directory, or its anvil's
    port): pids can be reused by unrelated processes."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return marker in cmdline


def spawn_node_process(args: list[str], **popen) -> subprocess.Popen:
    """``subprocess.Popen`` with :data:`DUMP_SIGNALS` blocked in the child from its first instruction (a
    blocked signal mask survives fork and exec). A dump asked for while the node boots stays pending until
    the node has installed its handlers and unblocks them, instead of ending the node."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, DUMP_SIGNALS)  # this thread only, for the fork
    try:
        return subprocess.Popen(args, **popen)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def send_signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_exit(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        try:  # reap our own children
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if time.monotonic() > deadline:
            send_signal(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            return
        time.sleep(0.05)


def metric(port: int, name: str) -> float:
    """A gauge from a node's Prometheus endpoint, summed over its labels if it has any (a name with a label set,
    ``name{label="x"}``, reads that one sample); -1 while the node does not answer or lacks it."""
    import urllib.request

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return -1.0
    samples = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + " ", name + "{"))]
    return sum(samples) if samples else -1.0
