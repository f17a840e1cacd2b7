"""`derot devnet up/status/down` as a user runs them: separate commands, background processes, clean stop."""

import json
import os
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _derot(*args, timeout=240, env=None):
    return subprocess.run([sys.executable, "-m", "derot.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


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
        # the Quick tour's council command: only $DEROT_DEVNET set, the council's key file from the devnet
        accounts = json.loads((directory / "accounts.json").read_text())
        council_key = directory / accounts["key_files"]["council"]
        assert council_key.stat().st_mode & 0o777 == 0o600
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEROT_")} | {"DEROT_DEVNET": str(directory)}
        revoked = _derot("gov", "council", "revoke", "fmspc", "00806f050000", "--key-file", str(council_key),
                         "--json", env=env)
        assert revoked.returncode == 0, revoked.stderr
        assert json.loads(revoked.stdout)["council"] == accounts["council"]
        registry_state = _derot("gov", "state", "--json", env=env)
        assert registry_state.returncode == 0, registry_state.stderr
        assert "00806f050000" in json.loads(registry_state.stdout)["revoked"]["fmspcs"]
        members = _derot("gov", "state", "--members", env=env)  # the devnet's roots are trusted for the check
        assert members.returncode == 0, members.stderr
        assert members.stdout.count("machine not revoked") == 3 and "not checked" not in members.stdout, members.stdout
    finally:
        down = _derot("devnet", "down", "--dir", str(directory), timeout=60)
    assert down.returncode == 0, down.stderr
    assert processes(str(directory)) == []
    with socket.socket() as sock:  # anvil's port is closed
        assert sock.connect_ex(("127.0.0.1", state["anvil_port"])) != 0
    assert _derot("devnet", "status", "--dir", str(directory)).returncode == 1  # nothing recorded any more
