"""`derot demo` (what `make demo` runs) completes the mission and leaves no process behind."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _stdout_path(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/fd/1")
    except OSError:
        return ""


def test_demo_runs_the_mission_and_cleans_up(tmp_path, processes):
    directory = tmp_path / "demo"
    anvils_before = set(processes("anvil-linux-amd64/bin/anvil"))
    out = subprocess.run(
        [sys.executable, "-m", "derot.cli.main", "demo", "--dir", str(directory)],
        capture_output=True, text=True, timeout=420,  # a loaded 2-core machine: devnet start-up dominates
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    for marker in (
        "verifyCertificate → OK; gas",
        "refused: fmspc_revoked",
        "on-chain: CERT_REVOKED",
        "the SAME address",
        "certificate: 1 GPU attested, models h100; on-chain: OK",
        "GPU refused: gpu_fwid_revoked",
        "the GPU certificate, on-chain: HARDWARE_REVOKED",
        "SEV-SNP + GPU: 0x",
        "group keys unchanged",
        "(same), epoch 2",
        "mission complete",
    ):
        assert marker in text, marker
    assert not directory.exists()  # the demo removed its devnet directory
    assert processes(str(directory)) == []  # no node or broker process survived
    # nor the demo's chain (other anvils may run beside the suite: only one logging into the demo's folder counts)
    leftover = [pid for pid in set(processes("anvil-linux-amd64/bin/anvil")) - anvils_before
                if _stdout_path(pid).startswith(str(directory))]
    assert leftover == []
