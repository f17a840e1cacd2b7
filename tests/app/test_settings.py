"""The one-call SDK's settings: arguments over $DEROT_* over a devnet directory; the TEE is the devnet's only
when devnet roots are known or asked for (a hardware TEE is never silently replaced); bad values are named."""

from __future__ import annotations

import json

import pytest

from derot.app.settings import Settings, SettingsError


@pytest.fixture
def devnet(tmp_path):
    (tmp_path / "devnet.json").write_text(json.dumps({"rpc_url": "http://127.0.0.1:27001", "registry": "0xAA",
                                                      "nodes": [{"public_port": 21001}, {"public_port": 21002}]}))
    (tmp_path / "deployment.json").write_text(json.dumps({"registry": "0xBB"}))
    return tmp_path


def test_a_devnet_directory_gives_chain_gateways_and_the_devnet_tee(devnet):
    s = Settings.resolve({"DEROT_DEVNET": str(devnet), "DEROT_APP_ID": "ab" * 32})
    assert (s.rpc_url, s.registry, s.app_id) == ("http://127.0.0.1:27001", "0xBB", "ab" * 32)
    assert s.endpoints == ("127.0.0.1:21001", "127.0.0.1:21002")
    assert s.tee == "devnet" and s.devnet_roots == devnet / "roots" and s.devnet_platform == "tdx"


def test_arguments_beat_the_environment_which_beats_the_devnet(devnet):
    env = {"DEROT_DEVNET": str(devnet), "DEROT_RPC": "http://env:8545", "DEROT_NODES": "a:1, b:2",
           "DEROT_DEVNET_PLATFORM": "sev-snp"}
    s = Settings.resolve(env, rpc_url="http://arg:8545", registry="0xCC")
    assert (s.rpc_url, s.registry, s.endpoints, s.devnet_platform) == ("http://arg:8545", "0xCC", ("a:1", "b:2"),
                                                                      "sev-snp")
    assert Settings.resolve(env).rpc_url == "http://env:8545"


def test_without_devnet_roots_the_tee_is_this_machines(devnet):
    assert Settings.resolve({}).tee == "auto"
    assert Settings.resolve({"DEROT_DEVNET": str(devnet), "DEROT_TEE": "auto"}).tee == "auto"  # asked for hardware
    assert Settings.resolve({"DEROT_TEE": "DEVNET"}).tee == "devnet"


def test_bad_values_are_named(devnet, tmp_path):
    with pytest.raises(SettingsError, match=r"\$DEROT_TEE"):
        Settings.resolve({"DEROT_TEE": "sgx"})
    with pytest.raises(SettingsError, match="devnet platform"):
        Settings.resolve({"DEROT_DEVNET_PLATFORM": "sev_snp2"})
    with pytest.raises(SettingsError, match="is the devnet up"):
        Settings.resolve({"DEROT_DEVNET": str(tmp_path / "absent")})
    with pytest.raises(SettingsError, match=r"\$DEROT_RPC"):
        Settings.resolve({}).require_chain()
    with pytest.raises(SettingsError, match="DEROT_DEVNET_IMAGE"):
        Settings.resolve({"DEROT_DEVNET": str(devnet)}).device()
