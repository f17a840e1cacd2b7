"""``derot node``: run a committee node.

    derot node init     --config node.toml   create the sealed store and the identity keys
    derot node register --config node.toml   record the node (keys, endpoint, TEE evidence) in the registry
    derot node update   --config node.toml   new endpoint, TLS key or evidence (after an image upgrade)
    derot node run      --config node.toml   serve until SIGTERM / SIGINT
    derot node status   --config node.toml   ask the running node (health, epoch, chain lag) and its store
    derot node health   --config node.toml   one line; exit 0 when SERVING (for probes and systemd)

Secrets come from the environment, never from the command line: ``DEROT_SEAL_PASSPHRASE`` (when
``[seal].method = "passphrase"``) and ``DEROT_OPERATOR_KEY`` (or ``[chain].operator_key_file``).
Errors are one line with a documented exit code (:mod:`derot.cli.errors`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from derot.cli.errors import ADDRESS_IN_USE, FAILED, UNREACHABLE, USAGE, CommandError, guarded

LOG_LEVELS = ("debug", "info", "warning", "error")


def register(subparsers) -> None:
    parser = subparsers.add_parser("node", help="run a committee node (init, register, update, run, status, health)")
    sub = parser.add_subparsers(dest="node_command", metavar="COMMAND")
    for name, func, text in (
        ("init", _init, "create the sealed store and the node's identity keys (Ed25519, X25519, TLS)"),
        ("register", _register, "record this node and its TEE evidence in the registry (safe to re-run)"),
        ("update", _update, "replace the registered endpoint, TLS key hash and TEE evidence"),
        ("run", _run, "serve until SIGTERM or SIGINT"),
        ("status", _status, "ask the running node (health, epoch, chain lag) and show its store"),
        ("health", _health, "print the running node's gRPC health; exit 0 only when SERVING"),
    ):
        command = sub.add_parser(name, help=text, description=text)
        command.add_argument("--config", "-c", required=(name != "init"), help="node TOML config file")
        if name == "init":
            command.add_argument("--force", action="store_true", help="replace existing identity keys")
        command.add_argument("--json", action="store_true", help="machine-readable output")
        command.set_defaults(func=guarded(func))
    parser.set_defaults(func=lambda args: (parser.print_help(), USAGE)[1])


def _config(args):
    from derot.service.config import load_config

    return load_config(args.config) if args.config else load_config()


def _init(args) -> int:
    from derot.service.setup import init_node

    config = _config(args)
    ident = init_node(config, force=args.force)
    _print({"store": str(config.store_path), "identity_key": ident.identity_key.hex(),
            "x25519_key": ident.x25519_key.hex(), "tls_key_hash": ident.tls_key_hash.hex()}, args.json)
    return 0


def _register(args, update: bool = False) -> int:
    from derot.service.setup import register_node

    config = _config(args)
    reg = register_node(config, update=update)
    out = {"operator": reg.operator, "endpoint": reg.endpoint, "evidence_hash": reg.evidence_hash.hex(),
           "outcome": reg.outcome}
    if reg.outcome == "registered":
        out["next"] = f"governance approves the node: derot gov propose -m '...' add-node {reg.operator}"
    _print(out, args.json)
    return 0


def _update(args) -> int:
    return _register(args, update=True)


def _preflight(config) -> None:
    """What ``node run`` needs before it starts: a known log level, free listen addresses, an RPC that
    answers and a registry with code. Each failure is one line (exit 2, 3 or 4)."""
    if config.log.level.lower() not in LOG_LEVELS:
        raise CommandError("config_error", f"[log].level must be one of {', '.join(LOG_LEVELS)}, "
                                           f"got {config.log.level!r}", USAGE)
    listens = {"[node].public_listen": config.node.public_listen, "[node].peer_listen": config.node.peer_listen}
    if config.metrics.listen:
        listens["[metrics].listen"] = config.metrics.listen
    for key, listen in listens.items():
        _check_free(key, listen)
    from eth_utils import to_checksum_address

    from derot.chain.client import ChainClient  # not web3: the node process never loads it (derot.chain.client)
    from derot.chain.quorum import QuorumProvider

    w3 = ChainClient(QuorumProvider([config.chain.rpc_url], 1, timeout=10))
    try:
        code = w3.eth.get_code(to_checksum_address(config.chain.registry))
    except ValueError as exc:
        raise CommandError("config_error", f"[chain].registry: {exc}", USAGE) from None
    except Exception as exc:
        raise CommandError("unreachable", f"the chain RPC {config.chain.rpc_url} does not answer "
                                          f"({type(exc).__name__})", UNREACHABLE) from None
    if not code:
        raise CommandError("config_error", f"no contract at [chain].registry {config.chain.registry} on "
                                           f"{config.chain.rpc_url}", USAGE)


def _check_free(key: str, listen: str) -> None:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise CommandError("config_error", f"{key} {listen}: {exc}", USAGE) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise CommandError("address_in_use", f"{key} {listen}: {exc.strerror}", ADDRESS_IN_USE) from None


#: threads of the node's default executor (blocking I/O off the event loop)
IO_THREADS = 32
#: the stack-dump signals (threads, asyncio tasks); their default action ends a process
DUMP_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
#: where ``kill -USR1 <pid>`` writes every thread's stack (a copy of the original stderr); kept open for life
_STACK_DUMPS = None


def _stack_dumps_on_sigusr1() -> None:
    """``kill -USR1`` dumps all threads' stacks to the original stderr: how an operator (or the devnet, when a
    wait times out) sees where a stuck node is stuck. Registered before stderr is captured for JSON logs.

    The dump runs in a Python-level handler, so on the main thread holding the GIL, while no other thread runs
    Python. ``faulthandler.register`` dumps from the C signal handler instead, reading the other threads'
    frames while they run: a busy node crashed with SIGSEGV that way (tests/cli/test_stack_dumps.py).

    SIGUSR2 (the task dump) is ignored until the event loop installs its handler. Both are then unblocked: a
    devnet starts its nodes with them blocked (``derot.devnet.processes.spawn_node_process``), so a dump asked
    for while the node booted is written now instead of ending the node."""
    import faulthandler

    global _STACK_DUMPS
    _STACK_DUMPS = os.fdopen(os.dup(2), "w")

    fd = _STACK_DUMPS.fileno()  # the descriptor: flushing the file object here could re-enter its lock

    def dump(signum, frame) -> None:
        faulthandler.dump_traceback(file=fd, all_threads=True)

    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # until the event loop's task dump (``_run``) replaces it
    signal.pthread_sigmask(signal.SIG_UNBLOCK, DUMP_SIGNALS)


def _dump_tasks() -> None:
    """``kill -USR2``: every asyncio task's stack to the original stderr (where a waiting coroutine is waiting;
    SIGUSR1's thread dump shows only the event loop's thread)."""
    import asyncio

    out = _STACK_DUMPS
    if out is None:
        return
    tasks = asyncio.all_tasks()
    try:
        print(f"--- {len(tasks)} asyncio tasks (most recent call last) ---", file=out)
        for task in tasks:
            try:
                task.print_stack(limit=12, file=out)
            except Exception as exc:  # e.g. a task driving a coroutine without Python frames (grpc's Cython ones)
                print(f"{task!r}: no stack ({type(exc).__name__}: {exc})", file=out)
    finally:
        out.flush()


def _run(args) -> int:
    import asyncio

    from derot.service import logs
    from derot.service.node import NodeService
    from derot.service.setup import open_store, trust_config

    config = _config(args)
    _preflight(config)
    _stack_dumps_on_sigusr1()
    if config.log.format == "json":
        from derot.cli import native_stderr

        native_stderr.capture(config.node.name)  # gRPC C-core lines become JSON too
    logs.configure(config.log.level, config.log.format, node=config.node.name, file=config.log.file)
    store = open_store(config)
    try:
        service = NodeService(config, store, trust_config(config))
    except BaseException:
        store.close()
        raise

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # blocking I/O (RPC reads, certificate fetches, evidence) runs in threads: enough of them that a few
        # slow peers or RPCs never starve the rest (the default is cores + 4)
        loop.set_default_executor(ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="derot-io"))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGUSR2, _dump_tasks)
        try:
            await service.start()
        except BaseException:
            await service.stop(grace=0)
            raise
        await stop.wait()
        await service.stop(grace=5.0)

    try:
        with _profiled(config.node.name):
            asyncio.run(main())
    except Exception as exc:
        logging.getLogger("derot.node").error("node stopped on an error", extra={"error": type(exc).__name__})
        raise
    return 0


@contextlib.contextmanager
def _profiled(name: str):
    """With ``DEROT_PROFILE=DIR`` (benchmarks only), cProfile the node's main thread (the event loop) and write
    ``DIR/<name>.prof`` on exit. The clock is the main thread's own CPU time: process time would charge gRPC's C
    threads and the executor's threads to whatever the loop happened to be running."""
    directory = os.environ.get("DEROT_PROFILE")
    if not directory:
        yield
        return
    import cProfile

    profile = cProfile.Profile(time.thread_time)  # CPU, not wall (the machine is shared); this thread only
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        os.makedirs(directory, exist_ok=True)
        profile.dump_stats(os.path.join(directory, f"{name}-{os.getpid()}.prof"))


def _status(args) -> int:
    from derot.cli import probe
    from derot.service.node import NodeIdentity
    from derot.service.setup import endpoint_of, open_store

    config = _config(args)
    public = _local(config.node.public_listen)
    running = {"health": probe.health(public)}
    if not running["health"].startswith("unreachable"):
        running.update(probe.network_info(public))
        if config.metrics.listen:
            running.update(probe.gauges(config.metrics.listen))
    store = open_store(config)
    try:
        identity = NodeIdentity(store)
        active = store.active_epoch()
        stored = {
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
    _print({"node": running, "store": stored}, args.json)
    return 0


def _health(args) -> int:
    from derot.cli import probe

    config = _config(args)
    answer = probe.health(_local(config.node.public_listen))
    if args.json:
        print(json.dumps({"health": answer}))
    else:
        print(answer)
    if answer.startswith("unreachable"):
        return UNREACHABLE
    return 0 if answer == "SERVING" else FAILED


def _local(listen: str) -> str:
    """Where this host reaches a listen address (a wildcard host means localhost)."""
    host, _, port = listen.rpartition(":")
    return f"{'127.0.0.1' if host in ('', '0.0.0.0', '::', '[::]') else host}:{port}"


def _print(data: dict, as_json: bool, indent: int = 0) -> None:
    if as_json:
        print(json.dumps(data, indent=2))
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        if isinstance(value, dict) and value:
            print(f"{' ' * indent}{key}")
            _print(value, False, indent + 2)
        else:
            shown = "none" if value is None or value == {} else value
            shown = "yes" if shown is True else "no" if shown is False else shown
            print(f"{' ' * indent}{key:<{width}}  {shown}")
