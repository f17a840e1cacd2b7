"""Ask a running node how it is: gRPC health and ``GetNetworkInfo`` on its public port, and a few gauges
from its Prometheus endpoint. Used by ``derot node status``, ``derot node health`` and ``derot devnet status``.

The public port speaks TLS with the node's own certificate (server name ``derot-node``); the probe fetches
the certificate and trusts it for this local question (pinning is for apps, which verify every answer).
"""

from __future__ import annotations

import urllib.error
import urllib.request

GAUGES = ("derot_chain_lag_blocks", "derot_confirmed_block", "derot_epoch", "derot_tee_attestation_available")


def health(endpoint: str, timeout: float = 3.0) -> str:
    """``SERVING``, ``NOT_SERVING`` (or another health status name), or ``unreachable: <why>``."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from derot.net import tls

    host, _, port = endpoint.rpartition(":")
    try:
        cert = tls.fetch_certificate(host, int(port), timeout)
    except (OSError, ValueError) as exc:
        return f"unreachable: {exc.strerror or exc}" if isinstance(exc, OSError) else f"unreachable: {exc}"
    with grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(cert), options=tls.channel_options()) as ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as exc:
            return f"unreachable: {exc.code().name.lower()}"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def network_info(endpoint: str, timeout: float = 3.0) -> dict:
    """The node's ``GetNetworkInfo`` answer as plain values, or ``{"error": ...}``."""
    from derot.app.client import RequestFailed, RootOfTrustClient

    try:
        with RootOfTrustClient([endpoint], timeout=timeout, attempts=1) as client:
            info = client.network_info()
    except RequestFailed as exc:
        return {"error": exc.reason}
    return {"epoch": info.epoch, "threshold": info.threshold, "members": len(info.members),
            "confirmed_block": info.confirmed_block, "node_index": info.node_index, "version": info.version}


def gauges(metrics_listen: str, timeout: float = 3.0) -> dict:
    """The :data:`GAUGES` from ``http://<metrics_listen>/metrics`` (absent ones omitted) and ``peers``: per peer
    index, the signature/key shares received from it since the node started, by verdict (``accepted`` or the
    refusal reason); or ``{"error": ...}``."""
    from prometheus_client.parser import text_string_to_metric_families

    host, _, port = metrics_listen.rpartition(":")
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::", "[::]") else host
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as answer:
            text = answer.read(4 * 1024 * 1024).decode("utf-8", "replace")
    except OSError as exc:
        detail = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return {"error": f"metrics unreachable: {detail}"}
    out: dict = {}
    peers: dict[str, dict[str, int]] = {}
    for family in text_string_to_metric_families(text):
        if family.name in GAUGES and family.samples:
            out[family.name.removeprefix("derot_")] = int(family.samples[0].value)
        elif family.name == "derot_peer_shares":  # the counter derot_peer_shares_total
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    verdicts = peers.setdefault(sample.labels.get("peer", "?"), {})
                    verdicts[sample.labels.get("verdict", "?")] = int(sample.value)
    out["peers"] = dict(sorted(peers.items(), key=lambda item: (len(item[0]), item[0])))
    return out
