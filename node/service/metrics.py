"""Prometheus metrics of one node process (its own registry, served on ``[metrics].listen``)."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        from derot import __version__

        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds...
        self.build = Info("derot_build", "The running derot build", registry=r)  # exported as derot_build_info
        self.build.info({"version": __version__, "python": platform.python_version()})
        self.requests = Counter(
            "derot_requests_total", "Requests handled, by method and outcome (ok or the refusal reason)",
            ["method", "outcome"], registry=r,
        )
        self.latency = Histogram(
            "derot_request_seconds", "Request latency by method", ["method"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.dkg_phase = Histogram(
            "derot_dkg_phase_seconds", "Duration of DKG/reshare phases", ["phase"],
            buckets=(0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120), registry=r,
        )
        self.dkg_messages = Counter(
            "derot_dkg_messages_total", "DKG messages by direction (sent, received) and path (push: SubmitDkgMessage "
            "calls, own or relayed, counted when taken; sync: messages in SyncDkg answers)", ["direction", "via"],
            registry=r)
        self.dkg_bytes = Counter(
            "derot_dkg_bytes_total", "Bytes of DKG messages (signed message encodings, without gRPC/TLS framing), "
            "by direction and path as derot_dkg_messages_total", ["direction", "via"], registry=r)
        self.dkg_runs = Counter("derot_dkg_runs_total", "DKG/reshare runs by outcome", ["outcome"], registry=r)
        self.shares = Counter(
            "derot_peer_shares_total", "Shares received from peers, by peer index and verdict",
            ["peer", "verdict"], registry=r,
        )
        self.peer_sent = Counter(
            "derot_peer_messages_sent_total", "Peer calls this node made (DKG messages, share requests), by method",
            ["method"], registry=r,
        )
        self.peer_sent_bytes = Counter(
            "derot_peer_message_bytes_sent_total", "Serialized bytes of the requests of those calls, by method",
            ["method"], registry=r,
        )
        self.evidence = Counter(
            "derot_evidence_verifications_total", "Evidence verifications by platform and verdict",
            ["platform", "verdict"], registry=r,
        )
        self.member_evidence = Gauge(
            "derot_member_evidence_checked", "Other registered nodes whose membership evidence this node has checked, "
            "by verdict (verified, refused); the bootstrap DKG deals only to verified ones", ["verdict"], registry=r)
        for verdict in ("verified", "refused"):
            self.member_evidence.labels(verdict)  # exported as 0 from the start
        self.chain_lag = Gauge("derot_chain_lag_blocks", "Chain head minus the followed (confirmed) block", registry=r)
        self.chain_lag_seconds = Gauge(
            "derot_chain_lag_seconds", "Wall-clock time minus the timestamp of the followed (confirmed) block; "
            "updated every second, also while the RPC is down", registry=r)
        self.confirmed_block = Gauge("derot_confirmed_block", "The confirmed block this node decides at", registry=r)
        self.epoch = Gauge("derot_epoch", "The active epoch this node serves (0: none)", registry=r)
        self.tee_available = Gauge(
            "derot_tee_attestation_available",
            "1 while this node's TEE can attest; 0 once it cannot (e.g. a disabled VMPCK: until the guest reboots)",
            registry=r)

    def serve(self, listen: str) -> int:
        """Start the HTTP endpoint on ``host:port`` (port 0 picks a free one); returns the port."""
        host, _, port = listen.rpartition(":")
        server, _thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=self.registry)
        return server.server_port
