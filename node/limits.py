"""Every fixed bound on work done for others, in one frozen value: :data:`LIMITS`.

Bounds an operator tunes per deployment (request size, concurrent requests, deadlines, certificate lifetimes)
are the node config's ``[limits]`` section (:class:`derot.service.config.LimitsSection`); everything here is a
protocol or safety constant that the code reads from this one place instead of repeating it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    # untrusted input, before any parser runs (derot.untrusted)
    safe_recursion_limit: int = 1000  # the interpreter's default; py_ecc raises it to 100,000 on import
    max_json_depth: int = 32  # Intel's collateral documents nest < 10 deep
    max_json_bytes: int = 1 << 20
    max_der_depth: int = 32  # certificate extensions in evidence nest < 10 deep

    # app requests (derot.service.requests, derot.crypto.kd)
    max_context: int = 1024  # bytes of key-derivation context (the u16 length field would allow 65,535)
    max_clock_skew: int = 30  # seconds a request timestamp or proposed certificate may lead this node's clock

    # evidence verification and collateral (derot.service.verification, derot.attest.collateral)
    verify_workers: int = 4  # verifications running at once on worker threads (GPU, vTPM, event-log evidence)
    verify_on_loop_max_bytes: int = 64 * 1024  # one CPU quote up to this size is verified on the loop (~1 ms)
    collateral_fetch_workers: int = 2  # PCCS fetches running at once
    collateral_fetch_budget: int = 4  # fetches charged to one requester per window
    collateral_budget_window: float = 60.0

    # membership evidence of other nodes (derot.service.member_evidence)
    member_evidence_slots: int = 4  # registrants' evidence fetched and verified at once
    member_evidence_retry: float = 2.0  # seconds before an unreachable registrant is asked again (doubling)
    member_evidence_retry_max: float = 16.0  # kept short: the DKG gate waits for late registrants

    # DKG (derot.service.orchestrator)
    dkg_backlog_per_sender: int = 256  # per sender, before the session (or the next attempt) starts; relays
    # forward other authors' messages: up to 2 per kind (3) and member
    dkg_backlog_bytes: int = 64 * 1024 * 1024  # bytes buffered per pending epoch
    epoch_report_attempts: int = 8  # attempts to report a finished run on-chain (backoff 1 s doubling to 15 s)
    epoch_report_max_delay: float = 15.0

    # peers (derot.service.peering, derot.net.peers)
    peer_cert_timeout: float = 2.0  # seconds to fetch a registered node's certificate
    peer_cert_retry_max: float = 60.0  # backoff cap for an unreachable node's certificate
    peer_connect_timeout: float = 3.0  # a channel not READY/IDLE this long is replaced
    peer_max_strikes: int = 3  # calls abandoned in a row (hedged away) before a channel is replaced
    peer_stale_after: float = 1.0  # only a call abandoned after waiting this long counts as a strike
    peer_patience: float = 10.0  # strikes replace a channel only after this long without an answer (doubling)
    peer_channel_max_age: float = 600.0
    evidence_fetch_attempts: int = 3
    evidence_fetch_timeout: float = 5.0  # per attempt
    dkg_send_timeout: float = 5.0  # first attempt at least; doubled per attempt that timed out, until the deadline
    dkg_send_share: float = 0.125  # first attempt at least this share of the phase (a crowded phase is slow)

    # gRPC server (derot.service.node.server_options)
    handshake_timeout: float = 5.0  # seconds for a TLS handshake (grpc's default is 120)
    max_streams_per_connection: int = 128
    connection_idle: float = 300.0  # seconds before an idle connection is closed

    # feed notices (derot.service.notice_source)
    max_notice_lag: int = 64  # blocks a signed notice may trail this node's confirmed block
    max_notice_lead: int = 16  # blocks it may lead it


LIMITS = Limits()
