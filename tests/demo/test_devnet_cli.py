"""`derot devnet up/status/down` as a user runs them: separate commands, background processes, clean stop."""

import json
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _derot(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "derot.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_devnet_up_status_down_leaves_no_process(tmp_path, processes):
    directory = tmp_path / "dn"
    up = _derot("devnet", "up", "--nodes", "3", "--threshold", "2", "--dir", str(directory))
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        assert "epoch 1 active" in up.stdout and "PK_sig" in up.stdout and "registry" in up.stdout
        state = json.loads((directory / "devnet.json").read_text())
        assert state["mqtt_url"].startswith("mqtt://127.0.0.1:")  # the embedded broker
        status = _derot("devnet", "status", "--dir", str(directory), "--json")
        assert status.returncode == 0, status.stderr
        info = json.loads(status.stdout)
        assert info["epoch"] == 1 and info["threshold"] == 2 and len(info["nodes"]) == 3
        # a clean DKG: the on-chain exclusion reports (EpochExclusions) were read and are empty
        assert "chain_error" not in info and info["exclusions"] == []
        assert all(node["state"] == "running" for node in info["nodes"])
        assert len(processes(str(directory))) >= 4  # 3 nodes + the broker
    finally:
        down = _derot("devnet", "down", "--dir", str(directory), timeout=60)
    assert down.returncode == 0, down.stderr
    assert processes(str(directory)) == []
    with socket.socket() as sock:  # anvil's port is closed
        assert sock.connect_ex(("127.0.0.1", state["anvil_port"])) != 0
    assert _derot("devnet", "status", "--dir", str(directory)).returncode == 1  # nothing recorded any more
