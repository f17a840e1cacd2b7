"""What the gRPC servicers may call on the node: :class:`NodeApi`, and nothing else.

Every method either returns the protobuf answer or raises :class:`~derot.net.status.Refusal`. Peer methods
take the operator the caller authenticated as (:meth:`NodeApi.caller_operator`); a servicer never reaches
into the node otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from google.protobuf.message import Message


class RequestLimits(Protocol):
    """The bounds every handler applies before any work (``[limits]`` of the node's config)."""

    @property
    def max_request_bytes(self) -> int: ...
    @property
    def max_concurrent_requests(self) -> int: ...
    @property
    def request_deadline(self) -> float: ...


class RequestMetrics(Protocol):
    """Prometheus metrics of the handlers: ``requests`` (labels method, outcome) and ``latency`` (method)."""

    requests: Any
    latency: Any


class NodeApi(Protocol):
    limits: RequestLimits
    metrics: RequestMetrics

    # RootOfTrust (apps)
    def network_info(self) -> Message: ...
    async def derive_key(self, request: Message, source: str) -> Message:
        """``source`` names where the request came from (the gRPC peer address), for per-source bounds."""
        ...

    async def issue_certificate(self, request: Message, source: str) -> Message: ...
    def certificate_status(self, request: Message) -> Message: ...

    # Peer (nodes; mutual TLS)
    def caller_operator(self, context: Any) -> str:
        """The registered operator whose pinned TLS key the caller presented; refuses ``not_a_member``.
        Each Peer method then checks that this operator may make that call now."""
        ...

    def receive_dkg(self, epoch: int, message: bytes, caller: str) -> None: ...
    def sync_dkg(self, epoch: int, held: Sequence[Message], caller: str) -> list[bytes]:
        """DKG digest sync: the messages of ``epoch``'s run the caller (holding ``held``, ``DkgSyncDigest``s)
        lacks, bounded in count and bytes."""
        ...

    def node_evidence(self, caller: str) -> Message: ...
    def public_node_evidence(self) -> Message: ...
    def epoch_keys(self, request: Message, caller: str) -> Message: ...
    async def partial_sign(self, request: Message, caller: str) -> Message: ...
    async def derive_share(self, request: Message, caller: str) -> Message: ...
    async def sign_notice(self, request: Message, caller: str) -> Message: ...
