"""``derot app`` with a hardware TEE: the device options reach detect_device, and a disabled VMPCK is
reported as what it is (issue 18 #3, #4)."""

from __future__ import annotations

import json

import pytest

import derot.app.tee as tee
from derot.app.tee import AttestationDisabled, TeeUnavailable
from derot.cli import app_cmd
from derot.cli.main import build_parser, main

APP_ID = "ab" * 32
REGISTRY = "0x5FC8d32690cc91D4c39d9d3abcBD16989F875707"
CLOSED_RPC = "http://127.0.0.1:9"


def test_device_options_reach_detect_device(monkeypatch, capsys, tmp_path):
    seen = {}

    def fake_detect(**kwargs):
        seen.update(kwargs)
        raise TeeUnavailable("no TEE here")

    monkeypatch.setattr(tee, "detect_device", fake_detect)
    vek = tmp_path / "vcek.der"
    code = main(["app", "get-key", APP_ID, "--tee", "auto", "--rpc", CLOSED_RPC, "--registry", REGISTRY, "--json",
                 "--vek-path", str(vek), "--privlevel", "2"])
    err = json.loads(capsys.readouterr().err)
    assert code == 1 and err["error"] == "tee_teeunavailable" and "no TEE here" in err["detail"]
    assert seen == {"vek_path": vek, "collateral_path": None, "privlevel": 2}


def test_device_options_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DEROT_TEE_PRIVLEVEL", "1")
    monkeypatch.setenv("DEROT_TEE_COLLATERAL_PATH", str(tmp_path / "c.json"))
    args = build_parser().parse_args(["app", "get-key", APP_ID, "--tee", "auto"])
    assert args.privlevel == 1 and args.collateral_path == tmp_path / "c.json"
    monkeypatch.setenv("DEROT_TEE_PRIVLEVEL", "7")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["app", "get-key", APP_ID, "--tee", "auto"])


def test_sdk_settings_pass_the_device_options(monkeypatch, tmp_path):
    """DerotClient / Settings: the same device options as the CLI, from arguments or $DEROT_TEE_*."""
    from derot.app import DerotClient
    from derot.app.settings import Settings, SettingsError

    seen = []
    monkeypatch.setattr(tee, "detect_device", lambda **kwargs: seen.append(kwargs) or "device")
    env = {"DEROT_TEE_VEK_PATH": str(tmp_path / "vcek.der"), "DEROT_TEE_COLLATERAL_PATH": str(tmp_path / "c.json"),
           "DEROT_TEE_PRIVLEVEL": "2"}
    assert Settings.resolve(env).device() == "device"
    assert seen.pop() == {"vek_path": tmp_path / "vcek.der", "collateral_path": tmp_path / "c.json", "privlevel": 2}
    client = DerotClient(APP_ID, rpc_url=CLOSED_RPC, registry=REGISTRY, vek_path=tmp_path / "other.pem",
                         privlevel=0, environ=env)
    client.settings.device()
    assert seen.pop() == {"vek_path": tmp_path / "other.pem", "collateral_path": tmp_path / "c.json", "privlevel": 0}
    Settings.resolve({}).device()
    assert seen.pop() == {"vek_path": None, "collateral_path": None, "privlevel": None}
    with pytest.raises(SettingsError, match="privlevel must be 0..3"):
        Settings.resolve({"DEROT_TEE_PRIVLEVEL": "4"})


def test_disabled_vmpck_is_reported_as_unavailable_until_reboot(capsys):
    class Args:
        json = True

    def handler(args):
        raise AttestationDisabled("attestation unavailable until the guest reboots: /dev/sev-guest "
                                  "SNP_GET_REPORT: the sev-guest driver has disabled its VMPCK (ENOTTY)")

    assert app_cmd._run(handler)(Args()) == 1
    err = json.loads(capsys.readouterr().err)
    assert err["error"] == "tee_attestation_disabled" and "until the guest reboots" in err["detail"]


def test_sdk_raises_attestation_disabled_with_its_reason(tmp_path):
    """App.get_key on a guest whose VMPCK is gone: the SDK caller gets AttestationDisabled, not a mystery."""
    from derot.app.sdk import App, TrustAnchor
    from derot.app.tee import RequestGate, SnpDevice
    from derot.attest.devnet import DevnetRoots, DevnetTee
    from derot.constants import Platform
    from derot.crypto.bls import G2

    from .tee_kernel import SnpGuest

    guest = SnpGuest(DevnetTee(DevnetRoots.generate(tmp_path / "roots"), Platform.SEV_SNP))
    guest.vmpck_alive = False
    node = tmp_path / "sev-guest"
    node.write_bytes(b"")
    device = SnpDevice(node, ioctl=guest.ioctl, gate=RequestGate(), vmpl=0)

    class Client:
        class pb:  # noqa: N801 - mirrors RootOfTrustClient.pb
            pass

        def call(self, method, make):
            return make()

    anchor = TrustAnchor(31337, REGISTRY, 1, G2.generator(), G2.generator())
    with pytest.raises(AttestationDisabled, match="until the guest reboots") as info:
        App(Client(), device, anchor, bytes(32)).get_key()
    assert info.value.reason == "tee_attestation_disabled"
