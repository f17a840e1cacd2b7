"""A client of the public ``RootOfTrust`` service, with failover between nodes.

Any node can serve any request (it is a gateway), so the client holds a list of endpoints and moves
to the next one when a node is unreachable or answers with a retryable refusal. Each attempt calls a
``make_request`` function again, because a request binds a fresh timestamp and nonce into new evidence:
a retry never replays evidence.

TLS: the client fetches each node's certificate and, when the caller gives the registry's TLS key hash
for that endpoint, refuses a certificate with another key (otherwise it trusts the certificate it is
shown: the answers are verified end to end against the group keys anyway).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import grpc

from derot import _proto
from derot.errors import DerotError
from derot.net import tls
from derot.net.status import Refusal, refusal_from_rpc_error

log = logging.getLogger("derot.app")


@dataclass(frozen=True)
class Attempt:
    endpoint: str
    reason: str
    detail: str


class RequestFailed(DerotError):
    """Every attempt failed; ``refusal`` is the last (or the decisive) refusal, ``attempts`` all of them."""

    def __init__(self, refusal: Refusal, attempts: Sequence[Attempt]):
        self.refusal = refusal
        self.reason = refusal.reason
        self.attempts = tuple(attempts)
        super().__init__(f"{refusal.reason}: {refusal.detail}")


class RootOfTrustClient:
    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        tls_key_hashes: Mapping[str, bytes] | None = None,
        timeout: float = 15.0,
        attempts: int | None = None,
        backoff: float = 0.2,
    ):
        if not endpoints:
            raise ValueError("need at least one node endpoint (host:port of its public service)")
        self.endpoints = list(endpoints)
        self.pins = dict(tls_key_hashes or {})
        self.timeout = timeout
        self.max_attempts = attempts if attempts is not None else 2 * len(self.endpoints)
        self.backoff = backoff
        self._channels: dict[str, tuple[grpc.Channel, object]] = {}
        self._next = 0
        self.pb = _proto.load("node_pb2")
        self._grpc = _proto.load("node_pb2_grpc")

    # connections ---------------------------------------------------------------------------------
    def _stub(self, endpoint: str):
        hit = self._channels.get(endpoint)
        if hit is not None:
            return hit[1]
        host, _, port = endpoint.rpartition(":")
        pin = self.pins.get(endpoint)
        if pin is not None:
            cert = tls.fetch_pinned_certificate(host, int(port), pin)
        else:
            cert = tls.fetch_certificate(host, int(port))
        channel = grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(cert), options=tls.channel_options())
        stub = self._grpc.RootOfTrustStub(channel)
        self._channels[endpoint] = (channel, stub)
        return stub

    def _drop(self, endpoint: str) -> None:
        hit = self._channels.pop(endpoint, None)
        if hit is not None:
            hit[0].close()

    def close(self) -> None:
        for endpoint in list(self._channels):
            self._drop(endpoint)

    def __enter__(self) -> RootOfTrustClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # calls ---------------------------------------------------------------------------------------
    def call(self, method: str, make_request: Callable[[], object]):
        """Call ``method`` with failover: a fresh request per attempt, the next node on retryable failures."""
        attempts: list[Attempt] = []
        last: Refusal | None = None
        for attempt in range(self.max_attempts):
            endpoint = self.endpoints[self._next % len(self.endpoints)]
            try:
                stub = self._stub(endpoint)
                return getattr(stub, method)(make_request(), timeout=self.timeout)
            except grpc.RpcError as exc:
                last = refusal_from_rpc_error(exc)
                if last.reason in ("unavailable",):
                    self._drop(endpoint)
            except (OSError, tls.PinMismatch) as exc:
                last = Refusal("unavailable", f"{endpoint}: {exc}")
            attempts.append(Attempt(endpoint, last.reason, last.detail))
            if not last.retryable:
                raise RequestFailed(last, attempts)
            log.info("retrying on another node", extra={"endpoint": endpoint, "reason": last.reason})
            self._next += 1
            time.sleep(min(self.backoff * (attempt + 1), 2.0))
        raise RequestFailed(last or Refusal("unavailable", "no attempt made"), attempts)

    def network_info(self):
        return self.call("GetNetworkInfo", self.pb.GetNetworkInfoRequest)

    def certificate_status(self, certificate: bytes, signature: bytes):
        return self.call("GetStatus", lambda: self.pb.GetStatusRequest(certificate=certificate, signature=signature))
