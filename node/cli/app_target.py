"""Where a ``derot app`` command talks to: the chain, the registry, the nodes (with their TLS pins) and
the owner's signing key, from ``--rpc``/``--registry``/``--node``/``--devnet``/``--key-file`` and the
environment (see :mod:`derot.cli.app_cmd`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from derot.cli.errors import CliError


@dataclass(frozen=True)
class Target:
    """The network a command talks to."""

    rpc_url: str
    registry: str
    nodes: tuple[str, ...]  # explicit or devnet endpoints; empty = the committee's registered ones
    devnet: Path | None = None


def resolve_target(args, environ=os.environ) -> Target:
    """``--rpc``/``--registry``/``--node`` win over what ``--devnet DIR`` says."""
    rpc, registry, nodes = args.rpc, args.registry, list(args.node or [])
    if not nodes and environ.get("DEROT_NODES"):
        nodes = [n.strip() for n in environ["DEROT_NODES"].split(",") if n.strip()]
    devnet = args.devnet
    if devnet is not None:
        state = read_json(devnet / "devnet.json", "devnet state", " (is the devnet up? derot devnet up)")
        deployment = read_json(devnet / "deployment.json", "deployment")
        if state.get("registry") and deployment.get("registry") and \
                state["registry"].lower() != deployment["registry"].lower():
            raise CliError(f"{devnet}: devnet.json and deployment.json name different registries")
        rpc = rpc or state.get("rpc_url")
        registry = registry or deployment.get("registry") or state.get("registry")
        if not nodes:
            nodes = [f"127.0.0.1:{n['public_port']}" for n in state.get("nodes", [])]
    if not rpc:
        raise CliError("no chain: pass --rpc URL (or $DEROT_RPC) or --devnet DIR")
    if not registry:
        raise CliError("no registry: pass --registry ADDRESS (or $DEROT_REGISTRY) or --devnet DIR")
    for endpoint in nodes:
        host, sep, port = endpoint.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise CliError(f"--node wants HOST:PORT, got {endpoint!r}")
    return Target(rpc, registry, tuple(nodes), devnet)


def read_json(path: Path, what: str, hint: str = "") -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CliError(f"no {what} at {path}{hint}") from None
    except json.JSONDecodeError as exc:
        raise CliError(f"{path} is not JSON: {exc}") from None


def open_registry(target: Target):
    from web3 import Web3

    from derot.chain.registry import Registry

    w3 = Web3(Web3.HTTPProvider(target.rpc_url, request_kwargs={"timeout": 15}))
    if not w3.is_connected():
        raise ConnectionError(f"no JSON-RPC node answers at {target.rpc_url}")
    if not w3.eth.get_code(Web3.to_checksum_address(target.registry)):
        raise CliError(f"no contract at {target.registry} on {target.rpc_url}")
    return Registry(w3, target.registry)


def committee_endpoints(registry) -> dict[str, bytes]:
    """``{public endpoint: TLS key hash}`` of the current committee, as registered on-chain."""
    from derot.app.discovery import committee_endpoints as registered

    return registered(registry)


def node_client(target: Target, registry):
    from derot.app.client import RootOfTrustClient

    registered = committee_endpoints(registry)
    endpoints = list(target.nodes) or list(registered)
    if not endpoints:
        raise CliError("no node endpoints: pass --node HOST:PORT (the registry has no active committee)")
    pins = {e: registered[e] for e in endpoints if e in registered}
    return RootOfTrustClient(endpoints, tls_key_hashes=pins)


def signing_account(args, target: Target):
    from eth_account import Account

    if args.key_file:
        try:
            secret = args.key_file.read_text().strip()
        except OSError as exc:
            raise CliError(f"cannot read --key-file: {exc.strerror}") from None
    else:
        secret = os.environ.get("DEROT_KEY", "").strip()
    if not secret and target.devnet is not None:
        from derot.devnet.anvil import dev_accounts
        from derot.devnet.network import APP_OWNER

        return dev_accounts(APP_OWNER + 1)[APP_OWNER]
    if not secret:
        raise CliError("no signing key: pass --key-file FILE or set $DEROT_KEY")
    try:
        return Account.from_key(secret)
    except (ValueError, TypeError):
        raise CliError("the signing key is not a valid secp256k1 private key (hex)") from None
