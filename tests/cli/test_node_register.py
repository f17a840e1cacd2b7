"""``derot node register`` is safe to re-run, refuses a registry address without code, and ``derot node
update`` replaces the endpoint and evidence. Against a real anvil with the contracts deployed.

Invariant checked after every step: the evidence in the node's store hashes to the evidence hash the
registry holds (a mismatch stalls a later reshare until the council aborts the epoch).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from derot.cli import errors
from derot.devnet.network import Devnet
from derot.service.config import load_config
from derot.service.setup import open_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    net = Devnet(tmp_path_factory.mktemp("register"), nodes=1, threshold=1)
    try:
        net._start_chain()
        net._deploy()
        net._make_roots()
        net.node_processes = [net._setup_node(1)]  # init + first registration, as `derot devnet up` does
        yield net
    finally:
        net.down()


def derot(*argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEROT_")}
    return subprocess.run([sys.executable, "-m", "derot.cli.main", *argv], capture_output=True, text=True,
                          timeout=180, env=env)


def stored_matches_chain(net, config_path) -> bytes:
    config = load_config(config_path)
    store = open_store(config)
    try:
        stored = store.meta("node_evidence")
    finally:
        store.close()
    record = net.registry_client().node(net.node_processes[0].operator)
    assert stored and hashlib.sha256(stored).digest() == bytes(record.evidence_hash)
    return stored


def test_re_running_register_changes_nothing(chain):
    proc = chain.node_processes[0]
    before = stored_matches_chain(chain, proc.config_path)
    result = derot("node", "register", "--config", str(proc.config_path), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outcome"] == "unchanged"
    assert stored_matches_chain(chain, proc.config_path) == before


def test_register_with_a_new_endpoint_is_refused_and_stores_nothing_then_update_applies_it(chain, tmp_path):
    proc = chain.node_processes[0]
    before = stored_matches_chain(chain, proc.config_path)
    moved = tmp_path / "moved.toml"
    moved.write_text(proc.config_path.read_text().replace('advertise_host = "127.0.0.1"',
                                                          'advertise_host = "node-1.example.org"'))
    refused = derot("node", "register", "--config", str(moved))
    assert refused.returncode == errors.FAILED, refused
    assert refused.stderr.count("\n") == 1 and "derot node update" in refused.stderr
    assert stored_matches_chain(chain, proc.config_path) == before  # nothing stored, chain unchanged

    updated = derot("node", "update", "--config", str(moved), "--json")
    assert updated.returncode == 0, updated.stderr
    assert json.loads(updated.stdout)["outcome"] == "updated"
    assert "node-1.example.org" in chain.registry_client().node(proc.operator).endpoint
    assert stored_matches_chain(chain, moved) != before  # fresh evidence, stored once the chain holds it


def test_register_refuses_an_address_without_contract_code(chain, tmp_path):
    proc = chain.node_processes[0]
    eoa = chain.accounts[0].address
    wrong = tmp_path / "wrong.toml"
    text = proc.config_path.read_text()
    registry_line = next(line for line in text.splitlines() if line.startswith("registry"))
    wrong.write_text(text.replace(registry_line, f'registry = "{eoa}"'))
    result = derot("node", "register", "--config", str(wrong))
    assert result.returncode == errors.FAILED, result
    assert result.stderr.count("\n") == 1 and f"no contract at {eoa}" in result.stderr
