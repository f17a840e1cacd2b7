"""Where ``derot gov`` connects when no option says: $DEROT_RPC/$DEROT_DEPLOYMENT first, else the devnet that
$DEROT_DEVNET names (the Quick tour exports only that), else the local defaults. The whole command against a
running devnet is in tests/demo/test_devnet_cli.py."""

from __future__ import annotations

import json
from pathlib import Path

from derot.cli.gov_cmd import DEFAULT_DEPLOYMENT, DEFAULT_RPC, connection_defaults


def test_explicit_environment_wins(tmp_path):
    (tmp_path / "devnet.json").write_text(json.dumps({"rpc_url": "http://127.0.0.1:27001"}))
    env = {"DEROT_RPC": "http://rpc.example:8545", "DEROT_DEPLOYMENT": "/etc/derot/deployment.json",
           "DEROT_DEVNET": str(tmp_path)}
    assert connection_defaults(env) == ("http://rpc.example:8545", Path("/etc/derot/deployment.json"))


def test_the_devnet_names_its_chain_and_deployment(tmp_path):
    (tmp_path / "devnet.json").write_text(json.dumps({"rpc_url": "http://127.0.0.1:27001"}))
    assert connection_defaults({"DEROT_DEVNET": str(tmp_path)}) == ("http://127.0.0.1:27001",
                                                                    tmp_path / "deployment.json")


def test_a_devnet_that_is_not_up_falls_back_to_the_default_rpc(tmp_path):
    assert connection_defaults({"DEROT_DEVNET": str(tmp_path / "absent")}) == (DEFAULT_RPC,
                                                                                tmp_path / "absent" / "deployment.json")
    (tmp_path / "devnet.json").write_text("[not json")
    assert connection_defaults({"DEROT_DEVNET": str(tmp_path)})[0] == DEFAULT_RPC


def test_nothing_set():
    assert connection_defaults({}) == (DEFAULT_RPC, Path(DEFAULT_DEPLOYMENT))
