"""``derot app``: argument parsing and output (no network), then the whole flow against a real devnet.

The devnet test runs every command as a user would, ``python -m derot.cli.main app ...`` in a subprocess,
against anvil and three node processes (t = 2): register → allow (TDX and SEV-SNP) → get-key on both (same
address) → get-cert → verify-cert off-chain and on-chain → a tampered certificate → rotate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from eth_keys import keys as eth_keys

from derot.cli import app_cmd, app_target
from derot.cli.main import build_parser, main

APP_ID = "ab" * 32
REGISTRY = "0x5FC8d32690cc91D4c39d9d3abcBD16989F875707"
CLOSED_RPC = "http://127.0.0.1:9"  # discard port: nothing answers JSON-RPC there


def parse(*argv: str):
    return build_parser().parse_args(["app", *argv])


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``derot app ...`` in-process; argparse errors (exit 2) are returned, not raised."""
    try:
        code = main(["app", *argv])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------------------------
# parsing


def test_every_command_is_registered_and_has_help():
    for command in ("register", "allow", "rotate", "show", "get-key", "get-cert", "verify-cert"):
        result = subprocess.run([sys.executable, "-m", "derot.cli.main", "app", command, "--help"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (command, result.stderr)
        assert f"derot app {command}" in result.stdout


def test_get_key_arguments():
    args = parse("get-key", APP_ID, "--devnet", "/d", "--platform", "snp", "--image", "my-app v1",
                 "--node", "h1:1", "--node", "h2:2", "--key-version", "3", "--json")
    assert args.app_id == bytes.fromhex(APP_ID)
    assert (args.platform, args.image, args.key_version, args.json) == ("sev-snp", "my-app v1", 3, True)
    assert args.node == ["h1:1", "h2:2"] and args.devnet == Path("/d")
    assert args.func is not None


def test_hex_arguments_are_checked_with_their_name(capsys):
    code, _, err = run_main(capsys, "get-key", "abcd")
    assert code == 2 and "APP_ID must be 32 bytes (64 hex digits), got 2" in err
    code, _, err = run_main(capsys, "allow", APP_ID, "--platform", "tdx", "--measurement", "zz" * 32)
    assert code == 2 and "--measurement must be hex" in err
    code, _, err = run_main(capsys, "allow", APP_ID, "--platform", "tdx", "--measurement", "00" * 31)
    assert code == 2 and "--measurement must be 32 bytes" in err
    code, _, err = run_main(capsys, "rotate", APP_ID, "--key-version", "0")
    assert code == 2 and "must be >= 1" in err


def test_allow_takes_exactly_one_measurement_source(capsys):
    code, _, err = run_main(capsys, "allow", APP_ID, "--platform", "tdx")
    assert code == 2 and "one of the arguments --measurement --devnet-image is required" in err
    code, _, err = run_main(capsys, "allow", APP_ID, "--platform", "tdx", "--measurement", "00" * 32,
                            "--devnet-image", "x")
    assert code == 2 and "not allowed with argument" in err


def test_devnet_image_digest_is_refused_for_platforms_without_devnet_tees(capsys):
    code, _, err = run_main(capsys, "allow", APP_ID, "--platform", "sgx", "--devnet-image", "x",
                            "--rpc", CLOSED_RPC, "--registry", REGISTRY)
    assert code == 2 and "computes TDX or SEV-SNP digests, not sgx" in err  # usage


# ------------------------------------------------------------------------------------------------
# where the commands go


def write_devnet(directory: Path, registry: str = REGISTRY, deployment_registry: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    state = {"rpc_url": "http://127.0.0.1:8545", "registry": registry,
             "nodes": [{"index": 1, "public_port": 7001}, {"index": 2, "public_port": 7002}]}
    (directory / "devnet.json").write_text(json.dumps(state))
    (directory / "deployment.json").write_text(json.dumps({"registry": deployment_registry or registry}))
    return directory


def test_devnet_directory_supplies_chain_registry_and_nodes(tmp_path):
    devnet = write_devnet(tmp_path / "dn")
    target = app_cmd.resolve_target(parse("show", APP_ID, "--devnet", str(devnet)), environ={})
    assert target.rpc_url == "http://127.0.0.1:8545"
    assert target.registry == REGISTRY
    assert target.nodes == ("127.0.0.1:7001", "127.0.0.1:7002")
    assert target.devnet == devnet


def test_explicit_options_win_over_the_devnet(tmp_path):
    devnet = write_devnet(tmp_path / "dn")
    args = parse("show", APP_ID, "--devnet", str(devnet), "--rpc", "http://chain:1", "--node", "n1:7400")
    target = app_cmd.resolve_target(args, environ={"DEROT_NODES": "ignored:1"})
    assert (target.rpc_url, target.nodes) == ("http://chain:1", ("n1:7400",))


def test_nodes_from_the_environment():
    args = parse("show", APP_ID, "--rpc", "http://chain:1", "--registry", REGISTRY)
    target = app_cmd.resolve_target(args, environ={"DEROT_NODES": "a:1, b:2,"})
    assert target.nodes == ("a:1", "b:2")


@pytest.mark.parametrize(
    "argv, environ, message",
    [
        (["--registry", REGISTRY], {}, "no chain: pass --rpc URL"),
        (["--rpc", "http://chain:1"], {}, "no registry: pass --registry"),
        (["--rpc", "http://c:1", "--registry", REGISTRY, "--node", "nohostport"], {}, "--node wants HOST:PORT"),
        (["--rpc", "http://c:1", "--registry", REGISTRY], {"DEROT_NODES": "h:port"}, "--node wants HOST:PORT"),
    ],
)
def test_incomplete_targets_are_named(argv, environ, message):
    with pytest.raises(app_cmd.CliError, match=message):
        app_cmd.resolve_target(parse("show", APP_ID, *argv), environ=environ)


def test_devnet_problems_are_named(tmp_path):
    with pytest.raises(app_cmd.CliError, match=r"no devnet state at .*devnet.json \(is the devnet up\?"):
        app_cmd.resolve_target(parse("show", APP_ID, "--devnet", str(tmp_path)), environ={})
    devnet = write_devnet(tmp_path / "dn", deployment_registry="0x" + "11" * 20)
    with pytest.raises(app_cmd.CliError, match="name different registries"):
        app_cmd.resolve_target(parse("show", APP_ID, "--devnet", str(devnet)), environ={})


def test_unreachable_chain_is_an_error_not_a_traceback(capsys):
    code, out, err = run_main(capsys, "show", APP_ID, "--rpc", CLOSED_RPC, "--registry", REGISTRY)
    assert code == 3 and out == ""  # unreachable
    assert err.startswith("error: no JSON-RPC node answers at " + CLOSED_RPC)


def test_committee_endpoints_come_with_their_registered_tls_pins():
    nodes = {"0xA": types.SimpleNamespace(endpoint="public=10.0.0.1:7400;peer=10.0.0.1:7401", tls_key_hash=b"\x01" * 32),
             "0xB": types.SimpleNamespace(endpoint="public=node-2:7400;peer=node-2:7401", tls_key_hash=b"\x02" * 32)}
    registry = types.SimpleNamespace(current_epoch=lambda: 4, node=nodes.__getitem__,
                                     epoch=lambda e: types.SimpleNamespace(members=["0xA", "0xB"]) if e == 4 else None)
    assert app_target.committee_endpoints(registry) == {"10.0.0.1:7400": b"\x01" * 32, "node-2:7400": b"\x02" * 32}
    assert app_target.committee_endpoints(types.SimpleNamespace(current_epoch=lambda: 0)) == {}


# ------------------------------------------------------------------------------------------------
# keys and devices (checked before any network call)


def test_owner_commands_need_a_key(capsys, monkeypatch):
    monkeypatch.delenv("DEROT_KEY", raising=False)
    code, _, err = run_main(capsys, "register", "--rpc", CLOSED_RPC, "--registry", REGISTRY)
    assert code == 2 and "no signing key: pass --key-file FILE or set $DEROT_KEY" in err


def test_a_bad_key_is_refused_without_echoing_it(capsys, monkeypatch, tmp_path):
    secret = "11" * 31 + "zz"
    monkeypatch.setenv("DEROT_KEY", secret)
    code, out, err = run_main(capsys, "register", "--rpc", CLOSED_RPC, "--registry", REGISTRY)
    assert code == 2 and "not a valid secp256k1 private key" in err
    assert secret not in out + err
    monkeypatch.delenv("DEROT_KEY")
    code, _, err = run_main(capsys, "rotate", APP_ID, "--key-version", "2", "--key-file", str(tmp_path / "missing"),
                            "--rpc", CLOSED_RPC, "--registry", REGISTRY)
    assert code == 2 and "cannot read --key-file" in err


def test_a_valid_key_reaches_the_chain_and_is_never_printed(capsys, monkeypatch):
    secret = "0x" + "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
    monkeypatch.setenv("DEROT_KEY", secret)
    code, out, err = run_main(capsys, "register", "--rpc", CLOSED_RPC, "--registry", REGISTRY, "--json")
    assert code == 3 and json.loads(err) == {"error": "unreachable", "attempts": [],  # got past the key
                                             "detail": f"no JSON-RPC node answers at {CLOSED_RPC}"}
    assert secret[2:] not in out + err


def test_devnet_device_needs_roots_and_an_image(capsys, tmp_path):
    code, _, err = run_main(capsys, "get-key", APP_ID, "--tee", "devnet", "--image", "x",
                            "--rpc", CLOSED_RPC, "--registry", REGISTRY)
    assert code == 2 and "needs --devnet-roots DIR" in err
    code, _, err = run_main(capsys, "get-key", APP_ID, "--devnet-roots", str(tmp_path),
                            "--rpc", CLOSED_RPC, "--registry", REGISTRY)
    assert code == 2 and "needs --image NAME" in err
    code, _, err = run_main(capsys, "get-key", APP_ID, "--devnet-roots", str(tmp_path), "--image", "x",
                            "--rpc", CLOSED_RPC, "--registry", REGISTRY)
    assert code == 2 and "holds no devnet roots" in err


def test_hardware_tee_absent_is_reported(capsys):
    if Path("/sys/kernel/config/tsm/report").exists() or Path("/dev/sev-guest").exists():
        pytest.skip("this machine has a TEE interface")
    code, _, err = run_main(capsys, "get-key", APP_ID, "--tee", "auto", "--rpc", CLOSED_RPC, "--registry", REGISTRY)
    assert code == 1 and err.startswith("error: no TEE attestation interface")


# ------------------------------------------------------------------------------------------------
# output


def test_human_output_aligns_and_nests(capsys):
    app_cmd.emit({"app_id": "ab", "key_version": 2, "public_keys": {"secp256k1": "02aa", "ed25519": "bb"},
                  "contributors": [1, 3]}, False)
    assert capsys.readouterr().out.splitlines() == [
        "app_id        ab",
        "key_version   2",
        "public_keys",
        "  secp256k1  02aa",
        "  ed25519    bb",
        "contributors  1, 3",
    ]


def test_json_output_round_trips(capsys):
    data = {"a": 1, "b": {"c": [1, 2]}, "d": True}
    app_cmd.emit(data, True)
    assert json.loads(capsys.readouterr().out) == data


def test_blobs_are_read_raw_or_as_hex(tmp_path):
    raw = bytes(range(256))
    (tmp_path / "raw").write_bytes(raw)
    (tmp_path / "hex").write_text("0x" + raw.hex().upper() + "\n")
    assert app_cmd.read_blob(tmp_path / "raw") == raw
    assert app_cmd.read_blob(tmp_path / "hex") == raw
    with pytest.raises(app_cmd.CliError, match="cannot read"):
        app_cmd.read_blob(tmp_path / "missing")


def test_watch_is_added_only_when_its_module_exists(monkeypatch):
    names = lambda: set(build_parser()._subparsers._group_actions[0].choices["app"]  # noqa: E731
                        ._subparsers._group_actions[0].choices)
    real = Path(app_cmd.__file__).with_name("watch_cmd.py").exists()
    assert ("watch" in names()) == real
    fake = types.ModuleType("derot.cli.watch_cmd")
    fake.register_watch = lambda sub: sub.add_parser("watch").set_defaults(func=lambda args: 0)
    monkeypatch.setitem(sys.modules, "derot.cli.watch_cmd", fake)
    assert "watch" in names()


# ------------------------------------------------------------------------------------------------
# the whole flow on a real devnet


@pytest.fixture(scope="module")
def devnet(tmp_path_factory):
    from derot.devnet.network import Devnet

    net = Devnet(tmp_path_factory.mktemp("app-devnet"), nodes=3, threshold=2)
    try:
        net.up(timeout=120)
        yield net
    finally:
        net.down()


def derot(devnet, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, GRPC_VERBOSITY="ERROR")
    env.pop("DEROT_KEY", None)
    result = subprocess.run([sys.executable, "-m", "derot.cli.main", "app", *argv, "--devnet", str(devnet.directory)],
                            capture_output=True, text=True, timeout=120, env=env, cwd=devnet.directory)
    if check:
        assert result.returncode == 0, (argv, result.stdout, result.stderr)
    return result


def derot_json(devnet, *argv: str) -> dict:
    return json.loads(derot(devnet, *argv, "--json").stdout)


def concurrently(*calls):
    """Run independent CLI calls (thunks) at the same time; their results in order."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(call) for call in calls]]


def once_nodes_caught_up(devnet, *argv: str, block: int, pending_reason: str, timeout: float = 30.0) -> dict:
    """Run ``argv`` until the nodes stop refusing with ``pending_reason``: an owner's change (made in
    ``block``) takes effect once the nodes have seen that block confirmed."""
    devnet.wait_for_block(block + devnet.confirmations + 1, timeout=timeout)
    time.sleep(0.3)  # a follower poll
    deadline = time.monotonic() + timeout
    while True:
        result = derot(devnet, *argv, "--json", check=False)
        if result.returncode == 0:
            return json.loads(result.stdout)
        assert json.loads(result.stderr).get("refused") == pending_reason, result.stderr
        assert time.monotonic() < deadline, f"the nodes never stopped refusing with {pending_reason}"
        time.sleep(0.5)


def private_key_encodings(devnet, app_id: str) -> list[str]:
    """The app's private keys, derived in-process through the SDK (to prove the CLI never prints them)."""
    from cryptography.hazmat.primitives import serialization

    from derot.app.client import RootOfTrustClient
    from derot.app.sdk import App, TrustAnchor
    from derot.app.tee.devnet import DevnetDevice
    from derot.attest.devnet import image_registers
    from derot.constants import Platform

    device = DevnetDevice(devnet.directory / "roots", Platform.TDX, image_registers(Platform.TDX, "my-app v1"))
    with RootOfTrustClient([p.public_endpoint for p in devnet.node_processes]) as client:
        keys = App(client, device, TrustAnchor.from_chain(devnet.rpc_url, devnet.registry),
                   bytes.fromhex(app_id)).get_key().keys
    raw = serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    return [keys.secp256k1.to_bytes().hex(), keys.ed25519.private_bytes(*raw).hex(),
            keys.x25519.private_bytes(*raw).hex(), f"{keys.p256.private_numbers().private_value:064x}"]


def address_of(public_key_hex: str) -> str:
    """Independent of the SDK: the Ethereum address of a compressed secp256k1 key (eth_keys)."""
    return eth_keys.PublicKey.from_compressed_bytes(bytes.fromhex(public_key_hex)).to_checksum_address()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_register_allow_get_key_get_cert_verify_rotate(devnet, tmp_path):
    from derot.certs import Certificate
    from derot.devnet.network import APP_OWNER

    registered = derot_json(devnet, "register")
    app_id = registered["app_id"]
    assert registered["owner"] == devnet.accounts[APP_OWNER].address and registered["key_version"] == 1
    for platform in ("tdx", "snp"):
        allowed = derot_json(devnet, "allow", app_id, "--platform", platform, "--devnet-image", "my-app v1")
        assert allowed["allowed"] is True
    key_from = {p: ("get-key", app_id, "--platform", p, "--image", "my-app v1") for p in ("tdx", "snp")}
    tdx = once_nodes_caught_up(devnet, *key_from["tdx"], block=allowed["block"],
                               pending_reason="measurement_not_allowed")

    endpoint = devnet.node_processes[0].public_endpoint
    snp, human, refused, shown, secrets, health = concurrently(
        lambda: derot_json(devnet, *key_from["snp"]),
        lambda: derot(devnet, *key_from["tdx"]).stdout,
        lambda: derot(devnet, "get-key", app_id, "--platform", "tdx", "--image", "not-my-app", check=False),
        lambda: derot_json(devnet, "show", app_id),
        lambda: private_key_encodings(devnet, app_id),
        # the docker-compose node health check, against a node that holds its epoch shares
        lambda: subprocess.run([sys.executable, "-m", "derot.cli.main", "compose", "health", "--grpc", endpoint],
                               capture_output=True, text=True, timeout=60),
    )
    assert health.returncode == 0 and health.stdout.strip() == f"{endpoint} SERVING", health.stderr
    # TDX and SEV-SNP: one identity; public keys only, in JSON and for people
    assert tdx["ethereum_address"] == snp["ethereum_address"] == address_of(tdx["public_keys"]["secp256k1"])
    assert tdx["public_keys"] == snp["public_keys"] and tdx["key_version"] == 1
    assert (tdx["tee"], snp["tee"]) == ("devnet tdx", "devnet sev-snp")  # no Python reprs, one spelling
    assert len(tdx["contributors"]) >= 2
    assert f"ethereum_address  {tdx['ethereum_address']}" in human
    assert f"  secp256k1  {tdx['public_keys']['secp256k1']}" in human
    assert not [s for s in secrets if s in json.dumps([tdx, snp]) + human]
    # an image the owner did not allow: the refusal's reason code and detail, exit 1
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("refused: measurement_not_allowed: ") and "not allowed for the app" in refused.stderr
    assert shown["key_version"] == 1 and len(shown["measurements"]) == 2

    # get-cert writes the certificate and its EIP-2537 signature; it certifies the derived secp256k1 key
    prefix = tmp_path / "app"
    issued = derot_json(devnet, "get-cert", app_id, "--platform", "snp", "--image", "my-app v1", "--out", str(prefix))
    cert_file, sig_file = Path(issued["certificate_file"]), Path(issued["signature_file"])
    assert (cert_file, sig_file) == (prefix.with_suffix(".cert"), prefix.with_suffix(".sig"))
    cert = Certificate.decode(cert_file.read_bytes())
    assert cert.subject_key.hex() == tdx["public_keys"]["secp256k1"] == issued["subject_key"]
    assert cert.app_id.hex() == app_id and issued["platform"] == "sev-snp" and len(sig_file.read_bytes()) == 128
    assert not [s for s in secrets if s in json.dumps(issued)]

    # verified off-chain and on-chain; one flipped bit in the measurement fails both for the same reason
    encoded = bytearray(cert_file.read_bytes())
    encoded[encoded.index(cert.measurement)] ^= 1
    (tmp_path / "bad.cert").write_bytes(bytes(encoded))
    good, bad = concurrently(
        lambda: derot(devnet, "verify-cert", str(cert_file), str(sig_file), "--onchain", "--json", check=False),
        lambda: derot(devnet, "verify-cert", str(tmp_path / "bad.cert"), str(sig_file), "--onchain", "--json",
                      check=False),
    )
    verified = json.loads(good.stdout)
    assert good.returncode == 0 and (verified["offchain"], verified["onchain"], verified["valid"]) == ("ok", "ok", True)
    assert verified["onchain_gas"] > 21_000 and verified["certificate"]["serial"] == cert.serial.hex()
    assert bad.returncode == 1
    assert (json.loads(bad.stdout)["offchain"], json.loads(bad.stdout)["onchain"]) == ("bad_signature",) * 2

    # rotate: the old certificate stops verifying, and the key changes
    rotation = derot_json(devnet, "rotate", app_id, "--key-version", "2")
    assert (rotation["previous_key_version"], rotation["key_version"]) == (1, 2)
    stale, rotated = concurrently(
        lambda: derot(devnet, "verify-cert", str(cert_file), str(sig_file), "--onchain", "--json", check=False),
        lambda: once_nodes_caught_up(devnet, *key_from["tdx"], block=rotation["block"],
                                     pending_reason="key_version_mismatch"),
    )
    assert stale.returncode == 1
    assert (json.loads(stale.stdout)["offchain"], json.loads(stale.stdout)["onchain"]) == ("key_version_mismatch",) * 2
    assert rotated["key_version"] == 2 and rotated["ethereum_address"] != tdx["ethereum_address"]
