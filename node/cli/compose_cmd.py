"""``derot compose``: what the containers of ``docker-compose.yml`` run besides ``derot node run``.

    derot compose deploy --shared /shared --rpc http://anvil:8545     the one-shot deploy job
    derot compose health --grpc 127.0.0.1:7400                        a node container's health check (gRPC
                                                                      health: SERVING once it holds epoch shares)
    derot compose health --rpc http://127.0.0.1:8545                  the chain container's health check

``deploy`` reuses :class:`derot.devnet.network.Devnet`'s steps (deploy the contracts, create the devnet
TEE roots, init and register every node, pass the bootstrap governance vote) against an anvil it does
not start, and writes each node's config for the compose network: nodes listen on ``0.0.0.0`` and
advertise their compose service name (``node-1`` …), so peers find each other by DNS on that network.
The shared volume then holds::

    /shared/deployment.json   contract addresses          /shared/roots/        devnet TEE roots
    /shared/accounts.json     which dev account is what   /shared/node-i/       node.toml, keys, node.db
    /shared/network.json      written last: the deploy finished (a re-run then does nothing)

Nodes start only after the job exits 0 (``service_completed_successfully``) and run the DKG themselves.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from derot.cli.errors import guarded


def register(subparsers) -> None:
    parser = subparsers.add_parser("compose", help="entry points of the docker-compose deployment (deploy job, health)")
    sub = parser.add_subparsers(dest="compose_command", metavar="COMMAND")

    deploy = sub.add_parser("deploy", help="one-shot job: contracts, devnet roots, node configs and registration, "
                                           "bootstrap governance")
    deploy.add_argument("--shared", type=Path, default=Path("/shared"), help="shared volume to write (default /shared)")
    deploy.add_argument("--rpc", default="http://anvil:8545", help="the chain's JSON-RPC URL")
    deploy.add_argument("--nodes", type=int, default=5)
    deploy.add_argument("--threshold", type=int, default=3)
    deploy.add_argument("--host-template", default="node-{i}",
                        help="host name node i advertises (its compose service name); default node-{i}")
    deploy.add_argument("--public-port", type=int, default=7400, help="RootOfTrust port inside each node container")
    deploy.add_argument("--peer-port", type=int, default=7401, help="Peer (mutual TLS) port inside each node container")
    deploy.add_argument("--metrics-port", type=int, default=9100, help="Prometheus port inside each node container")
    deploy.add_argument("--mqtt", default="", help="broker URL for the nodes' notices, e.g. mqtt://mosquitto:1883")
    deploy.add_argument("--phase-timeout", type=float, default=60.0,
                        help="DKG phase timeout, seconds (containers boot after the job starts the DKG)")
    deploy.add_argument("--confirmations", type=int, default=1)
    deploy.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the chain to answer")
    deploy.set_defaults(func=guarded(_deploy))

    health = sub.add_parser("health", help="exit 0 when the service answers (for container health checks)")
    target = health.add_mutually_exclusive_group(required=True)
    target.add_argument("--grpc", metavar="HOST:PORT", help="a node's public port: gRPC health over TLS says SERVING")
    target.add_argument("--rpc", metavar="URL", help="a JSON-RPC node: eth_chainId answers")
    health.add_argument("--timeout", type=float, default=3.0)
    health.set_defaults(func=guarded(_health))
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


# ------------------------------------------------------------------------------------------------
# deploy


def _deploy(args) -> int:
    from derot.devnet.compose import DONE_FILE, ComposeNetwork
    from derot.devnet.anvil import rpc
    from derot.devnet.network import FIRST_OPERATOR, DevnetError

    try:
        network = ComposeNetwork(
            args.shared, nodes=args.nodes, threshold=args.threshold, phase_timeout=args.phase_timeout,
            confirmations=args.confirmations, mqtt_url=args.mqtt, rpc_url=args.rpc,
            host_template=args.host_template, public_port=args.public_port, peer_port=args.peer_port,
            metrics_port=args.metrics_port, progress=lambda message: print(message, flush=True),
        )
    except DevnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not _wait_for_chain(args.rpc, args.wait):
        print(f"error: no JSON-RPC answer at {args.rpc} within {args.wait:.0f} s", file=sys.stderr)
        return 1
    done = network.directory / DONE_FILE
    if done.exists():
        registry = json.loads(done.read_text())["registry"]
        if rpc(args.rpc, "eth_getCode", [registry, "latest"]) not in ("0x", "0x0", None):
            print(f"already deployed: registry {registry} (from {done}); nothing to do")
            return 0
        print(f"error: {done} names registry {registry}, but the chain at {args.rpc} has no code there: the chain "
              "was reset while the shared volume was kept. Start over with `docker compose down -v`.",
              file=sys.stderr)
        return 1
    funded = len(rpc(args.rpc, "eth_accounts"))
    needed = FIRST_OPERATOR + args.nodes + 2
    if funded < needed:
        print(f"error: the chain funds {funded} dev accounts; {args.nodes} nodes need {needed} (anvil --accounts)",
              file=sys.stderr)
        return 1
    try:
        summary = network.deploy_only()
    except DevnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"deployed: registry {summary['registry']} on chain {summary['chain_id']} (block {summary['deploy_block']})")
    for node in summary["nodes"]:
        print(f"  node-{node['index']}  {node['operator']}  {node['platform']:3s}  public {node['public']}  "
              f"config {node['config']}")
    print(f"a {args.threshold}-of-{args.nodes} DKG is pending: it runs once the node containers start")
    return 0


def _wait_for_chain(url: str, seconds: float) -> bool:
    from derot.devnet.anvil import rpc

    deadline = time.monotonic() + seconds
    while True:
        try:
            rpc(url, "eth_chainId", timeout=2.0)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not up yet"
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)


# ------------------------------------------------------------------------------------------------
# health


def _health(args) -> int:
    try:
        status = _grpc_health(args.grpc, args.timeout) if args.grpc else _rpc_health(args.rpc, args.timeout)
    except Exception as exc:  # noqa: BLE001 - a health check reports, it never raises
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    print(status)
    return 0


def _rpc_health(url: str, timeout: float) -> str:
    import urllib.request

    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        reply = json.loads(response.read())
    if "result" not in reply:
        raise RuntimeError(f"eth_chainId answered {reply.get('error')}")
    return f"chain {int(reply['result'], 16)} answers at {url}"


def _grpc_health(endpoint: str, timeout: float) -> str:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from derot.net import tls

    host, _, port = endpoint.rpartition(":")
    cert = tls.fetch_certificate(host, int(port), timeout)
    channel = grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(cert), options=tls.channel_options())
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    finally:
        channel.close()
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        raise RuntimeError(f"{endpoint} reports {name}")
    return f"{endpoint} {name}"
