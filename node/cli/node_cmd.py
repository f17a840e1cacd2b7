"""``derot node``: run a committee node.

    derot node init     --config node.toml   create the sealed store and the identity keys
    derot node register --config node.toml   record the node (keys, endpoint, TEE evidence) in the registry
    derot node run      --config node.toml   serve until SIGTERM / SIGINT
    derot node status   --config node.toml   what this node holds and what it sees

Secrets come from the environment, never from the command line: ``DEROT_SEAL_PASSPHRASE`` (when
``[seal].method = "passphrase"``) and ``DEROT_OPERATOR_KEY`` (or ``[chain].operator_key_file``).
"""

from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser("node", help="run a committee node (init, register, run, status)")
    sub = parser.add_subparsers(dest="node_command", metavar="COMMAND")
    for name, func, text in (
        ("init", _init, "create the sealed store and the node's identity keys (Ed25519, X25519, TLS)"),
        ("register", _register, "record this node and its TEE evidence in the registry"),
        ("run", _run, "serve until SIGTERM or SIGINT"),
        ("status", _status, "show the node's keys, epoch and view of the registry"),
    ):
        command = sub.add_parser(name, help=text, description=text)
        command.add_argument("--config", "-c", required=(name != "init"), help="node TOML config file")
        if name == "init":
            command.add_argument("--force", action="store_true", help="replace existing identity keys")
        command.add_argument("--json", action="store_true", help="machine-readable output")
        command.set_defaults(func=func)


def _config(args):
    from derot.service.config import ConfigError, load_config

    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _init(args) -> int:
    from derot.service.config import load_config
    from derot.service.setup import SetupError, init_node

    config = load_config(args.config) if args.config else load_config()
    try:
        ident = init_node(config, force=args.force)
    except SetupError as exc:
        print(exc, file=sys.stderr)
        return 1
    _print({"store": str(config.store_path), "identity_key": ident.identity_key.hex(),
            "x25519_key": ident.x25519_key.hex(), "tls_key_hash": ident.tls_key_hash.hex()}, args.json)
    return 0


def _register(args) -> int:
    from derot.service.setup import register_node

    config = _config(args)
    reg = register_node(config)
    _print({"operator": reg.operator, "endpoint": reg.endpoint, "evidence_hash": reg.evidence_hash.hex(),
            "next": "governance approves the node (derot gov propose add-node OPERATOR) before it joins a committee"},
           args.json)
    return 0


def _run(args) -> int:
    import asyncio
    import signal

    from derot.service import logs
    from derot.service.node import NodeService
    from derot.service.setup import open_store, trust_config

    config = _config(args)
    logs.configure(config.log.level, config.log.format, node=config.node.name)
    store = open_store(config)
    service = NodeService(config, store, trust_config(config))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await service.start()
        await stop.wait()
        await service.stop(grace=5.0)

    asyncio.run(main())
    return 0


def _status(args) -> int:
    from derot.service.node import NodeIdentity
    from derot.service.setup import endpoint_of, open_store

    config = _config(args)
    store = open_store(config)
    try:
        identity = NodeIdentity(store)
        active = store.active_epoch()
        out = {
            "store": str(config.store_path),
            "identity_key": identity.identity_key.hex(),
            "tls_key_hash": identity.tls.key_hash.hex(),
            "endpoint": endpoint_of(config),
            "active_epoch": None if active is None else active.epoch,
            "index": None if active is None else active.public.get("index"),
            "holds_shares": bool(active and active.shares),
            "certificates_issued": store.certificate_count(),
            "registered_evidence": store.meta("node_evidence") is not None,
        }
    finally:
        store.close()
    _print(out, args.json)
    return 0


def _print(data: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2))
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        print(f"{key:<{width}}  {value}")
