"""``derot app``: what an app owner and a TEE app do.

    derot app register [--salt HEX]                        a new appId, owned by the signing key
    derot app allow APP_ID --platform tdx --devnet-image "my-app v1"     (or --measurement HEX; --disallow)
    derot app rotate APP_ID --key-version 2                raise the keyVersion (older keys stop)
    derot app show APP_ID                                  owner, keyVersion, allowed measurements
    derot app get-key APP_ID [DEVICE]                      the app's Ethereum address and public keys
    derot app get-cert APP_ID [DEVICE] [--out PREFIX]      certificate → PREFIX.cert, signature → PREFIX.sig
    derot app verify-cert PREFIX.cert PREFIX.sig [--onchain]

Every command takes: ``--rpc`` ($DEROT_RPC) and ``--registry`` ($DEROT_REGISTRY), or ``--devnet DIR``
($DEROT_DEVNET; reads DIR/devnet.json and DIR/deployment.json); ``--node HOST:PORT``, repeatable ($DEROT_NODES,
comma-separated; default: the devnet's nodes, else the committee's public endpoints registered on-chain, whose
TLS keys are then pinned); ``--json`` for machine-readable output.

Signing key (register, allow, rotate): ``--key-file`` or ``$DEROT_KEY`` (hex), never a command-line value and
never printed. With ``--devnet`` and neither, the devnet's app-owner dev account (a public test key) signs.

DEVICE (get-key, get-cert): ``--tee devnet --devnet-roots DIR --platform tdx|sev-snp|azure-snp|azure-tdx --image
NAME [--gpus N]`` for a devnet TEE (roots default to DIR/roots with ``--devnet``), or ``--tee auto`` for this
machine's TDX / SEV-SNP hardware or Azure CVM vTPM, with ``--vek-path`` ($DEROT_TEE_VEK_PATH),
``--collateral-path`` ($DEROT_TEE_COLLATERAL_PATH) and ``--privlevel`` ($DEROT_TEE_PRIVLEVEL) as in
docs/tee-guests.md.

Refusals print their reason code and detail and exit 1; a missing or bad input exits 2, an unreachable chain
or committee 3 (:mod:`derot.cli.errors`). Private keys are never printed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

from derot.cli.app_target import Target, node_client, open_registry, resolve_target, signing_account
from derot.cli import watch_cmd
from derot.cli.errors import FAILED, UNREACHABLE, USAGE, CliError, classify, report

#: one spelling per platform, everywhere (input and output); "snp"/"sev_snp" are read as "sev-snp"
PLATFORMS = {"tdx": "TDX", "sgx": "SGX", "sev-snp": "SEV_SNP", "nvidia-gpu": "NVIDIA_GPU",
             "azure-snp": "AZURE_SNP", "azure-tdx": "AZURE_TDX"}
DEVNET_PLATFORMS = ("tdx", "sev-snp", "azure-snp", "azure-tdx")


def platform_word(text: str) -> str:
    """A platform as typed, in its one spelling (``snp`` → ``sev-snp``)."""
    word = text.strip().lower().replace("_", "-")
    return "sev-snp" if word == "snp" else word
KEY_TYPES = ("secp256k1", "ed25519", "x25519", "p256")


# ------------------------------------------------------------------------------------------------
# argument types


def hex_bytes(size: int | None = None, what: str = "value"):
    """An argparse type: hex (optional 0x), exactly ``size`` bytes when given."""

    def parse(text: str) -> bytes:
        digits = text[2:] if text.lower().startswith("0x") else text
        try:
            value = bytes.fromhex(digits)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be hex, got {text!r}") from None
        if size is not None and len(value) != size:
            raise argparse.ArgumentTypeError(f"{what} must be {size} bytes ({2 * size} hex digits), got {len(value)}")
        return value

    return parse


app_id_type = hex_bytes(32, "APP_ID")


def _positive(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


# ------------------------------------------------------------------------------------------------
# parser


def _network_options() -> argparse.ArgumentParser:
    """``--rpc``/``--registry``/``--devnet``/``--node``/``--json``: every ``derot app`` command takes them."""
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("network")
    where.add_argument("--rpc", default=os.environ.get("DEROT_RPC"), help="Ethereum JSON-RPC URL ($DEROT_RPC)")
    where.add_argument("--registry", default=os.environ.get("DEROT_REGISTRY"),
                       help="DerotRegistry address ($DEROT_REGISTRY)")
    where.add_argument("--devnet", type=Path, default=_env_path("DEROT_DEVNET"),
                       help="a devnet directory: its devnet.json and deployment.json ($DEROT_DEVNET)")
    where.add_argument("--node", action="append", default=None, metavar="HOST:PORT",
                       help="a node's public endpoint (repeatable; $DEROT_NODES, comma-separated)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    return common


def _signer_options() -> argparse.ArgumentParser:
    """The owner's signing key (register, allow, rotate): a file or $DEROT_KEY, never a command-line value."""
    signer = argparse.ArgumentParser(add_help=False)
    signer.add_argument("--key-file", type=Path, help="file holding the owner's Ethereum key (hex); default $DEROT_KEY")
    return signer


def _device_options() -> argparse.ArgumentParser:
    """The TEE a get-key/get-cert runs in: a devnet TEE, or this machine's hardware (``--tee auto``)."""
    device = argparse.ArgumentParser(add_help=False)
    tee = device.add_argument_group("device")
    tee.add_argument("--tee", choices=("devnet", "auto"),
                     help="devnet TEE, or this machine's hardware (default: devnet when devnet roots are known)")
    tee.add_argument("--devnet-roots", type=Path, help="devnet roots directory (default: DEVNET/roots)")
    tee.add_argument("--platform", type=platform_word, choices=DEVNET_PLATFORMS, default="tdx",
                     help="devnet TEE platform (default tdx)")
    tee.add_argument("--image", help="devnet image name whose measurement the TEE reports, e.g. 'my-app v1'")
    tee.add_argument("--fmspc", type=hex_bytes(6, "--fmspc"), help="devnet TDX: the platform's FMSPC")
    tee.add_argument("--chip-id", type=hex_bytes(64, "--chip-id"), help="devnet SEV-SNP: the chip id")
    # hardware TEE options (--tee auto); see docs/tee-guests.md
    tee.add_argument("--vek-path", type=Path, default=_env_path("DEROT_TEE_VEK_PATH"),
                     help="SEV-SNP: VCEK/VLEK file for hosts that supply none ($DEROT_TEE_VEK_PATH)")
    tee.add_argument("--collateral-path", type=Path, default=_env_path("DEROT_TEE_COLLATERAL_PATH"),
                     help="TDX: offline collateral bundle to attach ($DEROT_TEE_COLLATERAL_PATH)")
    tee.add_argument("--privlevel", type=_privlevel, metavar="0..3",
                     default=os.environ.get("DEROT_TEE_PRIVLEVEL"),
                     help="SEV-SNP: the VMPL to ask reports for (default: the guest's own) ($DEROT_TEE_PRIVLEVEL)")
    tee.add_argument("--gpus", type=int, default=0, help="devnet: attach this many devnet H100 GPUs (a GPU TEE)")
    return device


def register(subparsers) -> None:
    app = subparsers.add_parser("app", help="app owners and TEE apps: register, allow, get-key, get-cert, verify",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = app.add_subparsers(dest="app_command", metavar="COMMAND")

    common, signer, device = _network_options(), _signer_options(), _device_options()

    def command(name, func, text, parents=(), **kwargs):
        parser = sub.add_parser(name, help=text, description=text, parents=[common, *parents], **kwargs)
        parser.set_defaults(func=_run(func))
        return parser

    p = command("register", cmd_register, "register a new app (permissionless); prints its appId", [signer])
    p.add_argument("--salt", type=hex_bytes(32, "--salt"), help="32-byte salt (default: random); "
                                                                "appId = keccak256(owner, salt)")

    p = command("allow", cmd_allow, "allow (or --disallow) a measurement digest for the app on a platform", [signer])
    p.add_argument("app_id", type=app_id_type, metavar="APP_ID")
    p.add_argument("--platform", type=platform_word, required=True, choices=tuple(PLATFORMS))
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--measurement", type=hex_bytes(32, "--measurement"), help="the 32-byte measurement digest")
    what.add_argument("--devnet-image", metavar="NAME", help="compute the digest a devnet TEE running NAME reports")
    p.add_argument("--disallow", action="store_true", help="remove the measurement instead")

    from derot.cli import app_policy_cmd

    app_policy_cmd.add_commands(command, signer, app_id_type)

    p = command("rotate", cmd_rotate, "raise the app's keyVersion: keys of older versions are no longer derived",
                [signer])
    p.add_argument("app_id", type=app_id_type, metavar="APP_ID")
    p.add_argument("--key-version", type=_positive, required=True, help="the new keyVersion (> the current one)")

    p = command("show", cmd_show, "show the app as registered: owner, keyVersion, allowed measurements")
    p.add_argument("app_id", type=app_id_type, metavar="APP_ID")

    p = command("get-key", cmd_get_key, "get the app's key from the committee; prints public keys only", [device])
    p.add_argument("app_id", type=app_id_type, metavar="APP_ID")
    p.add_argument("--key-version", type=_positive, help="default: the app's current keyVersion")
    p.add_argument("--context", default="", help="derivation context (text); default empty")

    p = command("get-cert", cmd_get_cert, "get a certificate for the app's derived key (or --subject-key)", [device])
    p.add_argument("app_id", type=app_id_type, metavar="APP_ID")
    p.add_argument("--key-type", choices=KEY_TYPES, default="secp256k1", help="type of the certified key")
    p.add_argument("--subject-key", type=hex_bytes(None, "--subject-key"),
                   help="certify this public key instead of the app's derived one")
    p.add_argument("--key-version", type=_positive, help="default: the app's current keyVersion")
    p.add_argument("--lifetime", type=_positive, help="seconds (default: the node's, 24 h)")
    p.add_argument("--out", type=Path, default=Path("derot-cert"),
                   help="writes OUT.cert (ABI-encoded certificate) and OUT.sig (128-byte EIP-2537 signature)")

    p = command("verify-cert", cmd_verify_cert, "verify a certificate off-chain (and on-chain with --onchain)")
    p.add_argument("cert_file", type=Path, metavar="CERT")
    p.add_argument("sig_file", type=Path, metavar="SIG")
    p.add_argument("--onchain", action="store_true", help="also ask DerotRegistry.verifyCertificate (eth_call)")
    p.add_argument("--now", type=int, help="Unix time to check validity at (default: the latest block's time)")

    watch_cmd.register_watch(sub)  # derot app watch
    app.set_defaults(func=lambda args: (app.print_help(), 2)[1])


def _privlevel(text: str) -> int:
    """``--privlevel`` / $DEROT_TEE_PRIVLEVEL: an SEV-SNP VMPL, 0..3 (argparse checks string defaults too)."""
    if text.strip() not in ("0", "1", "2", "3"):
        raise argparse.ArgumentTypeError(f"privlevel must be 0..3, got {text!r}")
    return int(text)


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def _run(handler):
    def wrapped(args) -> int:
        from derot.app.client import RequestFailed
        from derot.app.sdk import AppError
        from derot.app.tee.errors import TeeError
        from derot.chain.registry import ChainReadError
        from derot.chain.tx import TransactionFailed
        from web3.exceptions import Web3Exception

        try:
            return handler(args) or 0
        except RequestFailed as exc:
            code = UNREACHABLE if exc.reason == "unavailable" else FAILED
            return _fail(args, "refused", exc.reason, exc.refusal.detail,
                         [f"{a.endpoint}: {a.reason}: {a.detail}" for a in exc.attempts], code)
        except TransactionFailed as exc:
            return _fail(args, "error", "transaction_failed", str(exc))
        except AppError as exc:
            return _fail(args, "error", "answer_not_verified", str(exc))
        except TeeError as exc:
            return _fail(args, "error", exc.reason, str(exc))
        except CliError as exc:
            return _fail(args, "error", "invalid_input", str(exc), code=USAGE)
        except (ConnectionError, TimeoutError) as exc:
            return _fail(args, "error", "unreachable", str(exc), code=UNREACHABLE)
        except (ChainReadError, Web3Exception) as exc:
            return _fail(args, "error", "chain_error", str(exc))
        except OSError as exc:
            return _fail(args, "error", "unreachable", str(exc), code=UNREACHABLE)
        except Exception as exc:  # a bug: one line, like every derot command
            return report(classify(exc), args.json)

    return wrapped


def _fail(args, kind: str, reason: str, detail: str, attempts: list[str] | None = None, code: int = FAILED) -> int:
    if args.json:
        print(json.dumps({kind: reason, "detail": detail, "attempts": attempts or []}), file=sys.stderr)
    else:
        print(f"{kind}: {reason}: {detail}" if kind == "refused" else f"{kind}: {detail}", file=sys.stderr)
        if attempts and len(attempts) > 1:
            for line in attempts:
                print(f"  {line}", file=sys.stderr)
    return code


def _platform(name: str):
    from derot.constants import Platform

    return Platform[PLATFORMS[name]]


# ------------------------------------------------------------------------------------------------
# output


def emit(data: dict, as_json: bool, out=None) -> None:
    """Print ``data``: JSON, or aligned ``key  value`` lines (nested dicts and lists indented)."""
    out = out or sys.stdout
    if as_json:
        print(json.dumps(data, indent=2), file=out)
        return
    _emit_lines(data, 0, out)


def _emit_lines(data: dict, indent: int, out) -> None:
    width = max((len(k) for k in data), default=0)
    pad = " " * indent
    for key, value in data.items():
        if isinstance(value, dict):
            print(f"{pad}{key}", file=out)
            _emit_lines(value, indent + 2, out)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            print(f"{pad}{key}", file=out)
            for item in value:
                _emit_lines(item, indent + 2, out)
        else:
            text = ", ".join(str(v) for v in value) if isinstance(value, list) else value
            print(f"{pad}{key:<{width}}  {text}", file=out)


def _iso(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _enum_name(enum_cls, value: int) -> str:
    """``sev-snp``, ``up-to-date``, ``secp256k1``: enum names in the CLI's one spelling."""
    from derot.constants import spelled

    return spelled(enum_cls, value)


def certificate_summary(cert) -> dict:
    from derot.constants import KeyType, Platform, TcbStatus

    return {
        "serial": cert.serial.hex(),
        "app_id": cert.app_id.hex(),
        "key_version": cert.key_version,
        "key_type": _enum_name(KeyType, cert.key_type),
        "subject_key": cert.subject_key.hex(),
        "platform": _enum_name(Platform, cert.platform),
        "measurement": cert.measurement.hex(),
        "tcb_status": _enum_name(TcbStatus, cert.tcb_status),
        "epoch": cert.epoch,
        "not_before": _iso(cert.not_before),
        "not_after": _iso(cert.not_after),
        "chain_id": cert.chain_id,
        "registry": cert.registry,
        "policy_block": cert.policy_block,
        "gpu_count": cert.gpu_count,
        "gpu_models": gpu_model_names(cert.gpu_models),
    }


def gpu_model_names(bits: int) -> list[str]:
    """``["h100", "unrecognised"]``: the GpuModel bits of a certificate's ``gpuModels``, by name."""
    from derot.constants import GPU_MODEL_UNRECOGNISED, GpuModel

    names = [m.name.lower() for m in GpuModel if bits & m]
    known = GPU_MODEL_UNRECOGNISED | sum(int(m) for m in GpuModel)
    return names + (["unrecognised"] if bits & GPU_MODEL_UNRECOGNISED else []) + ([hex(bits & ~known)] if bits & ~known else [])


# ------------------------------------------------------------------------------------------------
# owner commands


def cmd_register(args) -> int:
    from derot.app.owner import AppOwner

    target = resolve_target(args)
    account = signing_account(args, target)
    registry = open_registry(target)
    salt = args.salt or os.urandom(32)
    app_id = AppOwner(registry, account).register(salt)
    emit({"app_id": app_id.hex(), "owner": account.address, "salt": salt.hex(),
          "key_version": registry.app(app_id).key_version,
          "next": f"derot app allow {app_id.hex()} --platform tdx --measurement DIGEST"}, args.json)
    return 0


def cmd_allow(args) -> int:
    from derot.app.owner import AppOwner

    target = resolve_target(args)
    platform = _platform(args.platform)
    if args.devnet_image is not None:
        if PLATFORMS[args.platform] not in ("TDX", "SEV_SNP", "AZURE_SNP", "AZURE_TDX"):
            raise CliError(f"--devnet-image computes TDX or SEV-SNP digests, not {args.platform} "
                           "(also azure-snp and azure-tdx)")
        from derot.attest.devnet import devnet_measurement_digest, image_registers

        if platform.name.startswith("AZURE"):
            from derot.attest.devnet_azure import measurement_digest_for

            measurement = measurement_digest_for(platform, args.devnet_image)
        else:
            measurement = devnet_measurement_digest(platform, image_registers(platform, args.devnet_image))
    else:
        measurement = args.measurement
    account = signing_account(args, target)
    registry = open_registry(target)
    _require_app(registry, args.app_id)
    AppOwner(registry, account).allow(args.app_id, platform, measurement, allowed=not args.disallow)
    emit({"app_id": args.app_id.hex(), "platform": _platform_name(platform), "measurement": measurement.hex(),
          "allowed": not args.disallow, "block": registry.w3.eth.block_number,
          "note": "nodes apply it once the block is confirmed"}, args.json)
    return 0


def cmd_rotate(args) -> int:
    from derot.app.owner import AppOwner

    target = resolve_target(args)
    account = signing_account(args, target)
    registry = open_registry(target)
    before = _require_app(registry, args.app_id).key_version
    AppOwner(registry, account).rotate(args.app_id, args.key_version)
    emit({"app_id": args.app_id.hex(), "key_version": registry.app(args.app_id).key_version,
          "previous_key_version": before, "block": registry.w3.eth.block_number,
          "note": "nodes apply it once the block is confirmed"}, args.json)
    return 0


def cmd_show(args) -> int:
    from derot.cli import app_policy_cmd

    target = resolve_target(args)
    app = _require_app(open_registry(target), args.app_id)
    emit({
        "app_id": app.app_id.hex(),
        "owner": app.owner,
        "key_version": app.key_version,
        "frozen": app.frozen,
        "allow_debug": app.allow_debug,
        "delegate": app.delegate or "none",
        "tee_exceptions": sorted(app.tee_exceptions) or "none",
        **app_policy_cmd.gpu_policy_view(app),
        "measurements": sorted(f"{_platform_name(p)}:{m.hex()}" for p, m in app.measurements),
    }, args.json)
    return 0


def _require_app(registry, app_id: bytes):
    app = registry.app(app_id)
    if app is None:
        raise CliError(f"app {app_id.hex()} is not registered in {registry.address}")
    return app


# ------------------------------------------------------------------------------------------------
# app commands (in the TEE)


def make_device(args, target: Target):
    """The TEE device the options name (see the module docstring)."""
    roots = args.devnet_roots or (target.devnet / "roots" if target.devnet else None)
    tee = args.tee or ("devnet" if roots else "auto")
    if tee == "auto":
        from derot.app.tee import detect_device

        return detect_device(vek_path=args.vek_path, collateral_path=args.collateral_path, privlevel=args.privlevel)
    if roots is None:
        raise CliError("a devnet TEE needs --devnet-roots DIR (or --devnet DIR)")
    if not args.image:
        raise CliError("a devnet TEE needs --image NAME (the image whose measurement it reports)")
    from derot.app.tee.devnet import DevnetDevice
    from derot.attest.devnet import image_registers

    platform = _platform(args.platform)
    if not (Path(roots) / "devnet.json").exists():
        raise CliError(f"{roots} holds no devnet roots (devnet.json missing)")
    gpus = getattr(args, "gpus", 0) or 0
    if platform.name.startswith("AZURE"):
        from derot.app.tee.devnet_azure import DevnetAzureDevice

        return DevnetAzureDevice(roots, platform, args.image, chip_id=args.chip_id, fmspc=args.fmspc, gpus=gpus)
    return DevnetDevice(roots, platform, image_registers(platform, args.image), fmspc=args.fmspc,
                        chip_id=args.chip_id, gpus=gpus)


def _app_session(args):
    """(target, registry, App, key_version) for get-key and get-cert."""
    from derot.app.sdk import App, TrustAnchor

    target = resolve_target(args)
    device = make_device(args, target)  # local: fails before any network call
    registry = open_registry(target)
    app = _require_app(registry, args.app_id)
    key_version = args.key_version or app.key_version
    anchor = TrustAnchor.from_chain(target.rpc_url, target.registry)
    return App(node_client(target, registry), device, anchor, args.app_id), key_version


def _public_keys(keys) -> dict:
    from derot.constants import KeyType

    return {name: keys.public_key(KeyType[name.upper()]).hex() for name in KEY_TYPES}


def cmd_get_key(args) -> int:
    app, key_version = _app_session(args)
    try:
        key = app.get_key(key_version=key_version, context=args.context.encode())
    finally:
        app.client.close()
    emit({
        "app_id": key.app_id.hex(),
        "key_version": key.key_version,
        "context": args.context,
        "ethereum_address": key.ethereum_address,
        "public_keys": _public_keys(key.keys),
        "epoch": key.epoch,
        "contributors": list(key.contributors),
        "tee": _device_name(app.device),
        "milliseconds": round(key.seconds * 1000, 1),
    }, args.json)
    return 0


def cmd_get_cert(args) -> int:
    from derot.constants import KeyType

    key_type = KeyType[args.key_type.upper()]
    app, key_version = _app_session(args)
    started = time.perf_counter()
    try:
        address = None
        subject = args.subject_key
        if subject is None:
            key = app.get_key(key_version=key_version)
            subject, address = key.keys.public_key(key_type), key.ethereum_address
        issued = app.get_certificate(subject, key_type, key_version=key_version, lifetime=args.lifetime or 0)
    finally:
        app.client.close()
    cert_path, sig_path = Path(f"{args.out}.cert"), Path(f"{args.out}.sig")
    cert_path.write_bytes(issued.encoded)
    sig_path.write_bytes(issued.signature_eip2537)
    summary = certificate_summary(issued.certificate)
    if address is not None:
        summary["ethereum_address"] = address
    summary.update(contributors=list(issued.contributors), tee=_device_name(app.device),
                   certificate_file=str(cert_path), signature_file=str(sig_path),
                   milliseconds=round((time.perf_counter() - started) * 1000, 1))
    emit(summary, args.json)
    return 0


def _device_name(device) -> str:
    """``devnet tdx``, ``configfs-tsm sev-snp``, ``sev-guest sev-snp``: which TEE interface, which platform."""
    kinds = {"DevnetDevice": "devnet", "TdxConfigfsDevice": "configfs-tsm", "SnpConfigfsDevice": "configfs-tsm",
             "SnpDevice": "sev-guest"}
    kind = kinds.get(type(device).__name__, type(device).__name__)
    platform = getattr(device, "platform", None)
    return f"{kind} {_platform_name(platform)}" if platform is not None else kind


def _platform_name(platform) -> str:
    from derot.constants import Platform

    return _enum_name(Platform, int(platform))


# ------------------------------------------------------------------------------------------------
# relying party


def read_blob(path: Path) -> bytes:
    """A file's bytes; a file holding hex text (optional 0x, whitespace) is decoded."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    text = data.strip()
    if text[:2].lower() == b"0x":
        text = text[2:]
    if text and len(text) % 2 == 0 and all(c in b"0123456789abcdefABCDEF" for c in text):
        return bytes.fromhex(text.decode())
    return data


def cmd_verify_cert(args) -> int:
    from derot.certs import Certificate, CertificateDecodeError
    from derot.chain.state import read_state
    from derot.crypto.bls import G1, PointDecodeError

    cert = read_blob(args.cert_file)
    sig = read_blob(args.sig_file)
    if len(sig) == G1.SIZE:  # the 48-byte compressed form: the contract takes EIP-2537
        try:
            sig = G1.from_bytes(sig).to_eip2537()
        except PointDecodeError:
            pass  # verification reports malformed_signature
    target = resolve_target(args)
    registry = open_registry(target)
    block = registry.w3.eth.get_block("latest")
    now = args.now if args.now is not None else block["timestamp"]
    state = read_state(registry, bytes(block["hash"]), block["number"], block["timestamp"])
    verdict = state.verify_certificate(cert, sig, now=now)
    out: dict = {"offchain": verdict.reason.name.lower(), "checked_at": _iso(now), "block": block["number"]}
    ok = verdict.ok
    if args.onchain:
        onchain = registry.verify_certificate(cert, sig, at=args.now, block=block["number"])
        out["onchain"] = onchain.name.lower()
        if onchain.ok and args.now is None:
            out["onchain_gas"] = registry.contract.functions.verifyCertificate(cert, sig).estimate_gas(
                block_identifier=block["number"])
        ok = ok and onchain.ok
    try:
        out["certificate"] = certificate_summary(Certificate.decode(cert))
    except CertificateDecodeError as exc:
        out["certificate"] = {"malformed": str(exc)}
    out["valid"] = ok
    emit(out, args.json)
    return 0 if ok else 1
