"""Helpers for the user-level command tests: which processes are still running."""

import os

import pytest


def pids_mentioning(marker: str) -> list[int]:
    """Processes (other than this one) whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                found.append(int(entry))
    return found


@pytest.fixture
def processes():
    """``processes(marker)``: pids of running processes whose command line contains ``marker``."""
    return pids_mentioning
