"""``derot devnet``: a whole network on this machine, for development and demos.

    derot devnet up --nodes 5 --threshold 3     start anvil, deploy, create devnet TEE roots, start nodes, run the DKG
    derot devnet status                          nodes, epoch, chain head
    derot devnet down                            stop everything `up` started (and nothing else)

State lives in ``--dir`` (default ``.devnet``): node configs and logs, the roots, ``devnet.json``.
"""

from __future__ import annotations

import json
import sys
import time

from derot.cli.errors import guarded

DEFAULT_DIR = ".devnet"


def register(subparsers) -> None:
    parser = subparsers.add_parser("devnet", help="a local network: anvil, contracts, devnet TEEs, N nodes")
    sub = parser.add_subparsers(dest="devnet_command", metavar="COMMAND")
    up = sub.add_parser("up", help="start a devnet and wait for its first epoch")
    up.add_argument("--nodes", type=int, default=5)
    up.add_argument("--threshold", type=int, default=3)
    up.add_argument("--phase-timeout", type=float, default=10.0, help="DKG phase timeout, seconds")
    up.add_argument("--mqtt", default=None,
                    help="broker URL for the signed notice feed (default: start an embedded broker)")
    up.add_argument("--no-mqtt", action="store_true", help="run without the notice feed")
    up.add_argument("--timeout", type=float, default=180.0)
    up.set_defaults(func=guarded(_up))
    status = sub.add_parser("status", help="show the chain head, the epoch, and each node's readiness and epoch")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=guarded(_status))
    down = sub.add_parser("down", help="stop every process the devnet started")
    down.set_defaults(func=guarded(_down))
    for command in (up, status, down):
        command.add_argument("--dir", default=DEFAULT_DIR, help=f"devnet directory (default {DEFAULT_DIR})")


def _progress(started: float):
    def show(message: str) -> None:
        print(f"  [{time.monotonic() - started:5.1f}s] {message}", flush=True)

    return show


def _up(args) -> int:
    from derot.devnet.network import Devnet, DevnetError

    started = time.monotonic()
    print(f"starting a {args.threshold}-of-{args.nodes} devnet in {args.dir}")
    net = Devnet(args.dir, nodes=args.nodes, threshold=args.threshold, phase_timeout=args.phase_timeout,
                 progress=_progress(started))
    if not args.no_mqtt:
        net.mqtt_url = args.mqtt or "embedded"
    try:
        net.up(timeout=args.timeout)
    except DevnetError as exc:
        print(f"devnet failed: {exc}", file=sys.stderr)
        return 1
    _print_status(net.status())
    print(f"\nstop it with: derot devnet down --dir {args.dir}")
    return 0


def _status(args) -> int:
    from derot.devnet.network import Devnet, DevnetError

    try:
        status = Devnet.attach(args.dir).status()
    except DevnetError as exc:
        print(exc, file=sys.stderr)
        return 1
    _probe_nodes(status)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        _print_status(status)
    return 0


def _probe_nodes(status: dict) -> None:
    """Ask each running node for its readiness (gRPC health) and the epoch it serves."""
    from concurrent.futures import ThreadPoolExecutor

    from derot.cli import probe

    def ask(node: dict) -> None:
        if node.get("state") != "running":
            node.update(health="stopped", serving_epoch=None)
            return
        node["health"] = probe.health(node["public"])
        info = probe.network_info(node["public"]) if not node["health"].startswith("unreachable") else {}
        node["serving_epoch"] = info.get("epoch")

    nodes = status.get("nodes", [])
    with ThreadPoolExecutor(max(1, min(8, len(nodes)))) as pool:
        list(pool.map(ask, nodes))


def _print_status(status: dict) -> None:
    print(f"\nchain       {status.get('rpc_url')}  (anvil {status.get('anvil')}, head {status.get('chain_head', '?')})")
    print(f"registry    {status.get('registry')}")
    if status.get("mqtt_url"):
        print(f"mqtt        {status['mqtt_url']}")
    epoch = status.get("epoch")
    if epoch:
        print(f"epoch       {epoch}: threshold {status.get('threshold')} of {status.get('members')}")
        print(f"PK_sig      {status.get('group_key_sig')}")
        print(f"PK_kd       {status.get('group_key_kd')}")
    else:
        print("epoch       none active yet")
    if status.get("pending_epoch"):
        print(f"pending     epoch {status['pending_epoch']}")
    for report in status.get("exclusions", []):
        excluded = "; ".join(f"member {i} {why}" for i, why in report["excluded"].items())
        print(f"excluded    epoch {report['epoch']}, reported by {report['reporter']}: {excluded}")
    print("nodes")
    for node in status.get("nodes", []):
        ready = node.get("health", "")
        epoch = node.get("serving_epoch")
        shown = f"{ready:<12} epoch {epoch if epoch is not None else '-':<3} " if ready else ""
        print(f"  {node['index']:>2}  {node['state']:<8} {shown}public {node['public']:<21} "
              f"metrics {node['metrics']:<21} {node['operator']}")


def _down(args) -> int:
    from derot.devnet.network import Devnet, DevnetError

    try:
        stopped = Devnet.attach(args.dir).down()
    except DevnetError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"stopped {len(stopped)} process(es)")
    return 0
