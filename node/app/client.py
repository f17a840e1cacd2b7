"""A client of the public ``RootOfTrust`` service: hedged requests across gateways.

Any node can serve any request (it is a gateway), so the client holds a list of endpoints. A call starts on
the gateway that answered the previous call (at first the list's first), so a client keeps one warm channel
and sends its load to one gateway, as long as that gateway answers; it tries the others in list order. One
call:
- starts an attempt on that gateway; when it has not answered within the hedge delay, starts another on
  the next gateway while the first keeps going (at most ``max_in_flight`` at once), so a hung gateway
  costs the hedge delay, not the whole ``timeout``. The delay is ``hedge_after`` or three times the
  median of recent answers' latency, whichever is longer: on a slow, loaded network hedges do not
  multiply the load;
- moves on at once when an attempt fails with a retryable reason (the node is down, overloaded, lacks
  shares...); stops at the first non-retryable refusal (the request itself is refused);
- returns the first answer and cancels the attempts still running.

An attempt started while no other is in flight (every call's first) is a blocking gRPC call on a pooled
thread; one started beside another (a hedge) is a gRPC future, which can be cancelled. A future costs a new
channel-polling thread per call (about 2.5 ms of latency and 0.7 ms of CPU more than a blocking call, measured
on the reference VM), while a blocking call cannot be cancelled: a first attempt that loses to a hedge runs to
its answer or its ``timeout`` on its pooled thread, and its answer is dropped.

Each attempt calls ``make_request`` again, because a request binds a fresh timestamp and nonce into new
evidence: an attempt never replays evidence.

When every attempt fails, :class:`RequestFailed` names the decisive reason: a refusal a gateway sent
(``not_enough_shares`` when too few members answered) wins over a transport failure (``unavailable``)
of a gateway that is down.

TLS: the client fetches each node's certificate and, when the caller gives the registry's TLS key hash
for that endpoint, refuses a certificate with another key (otherwise it trusts the certificate it is
shown: the answers are verified end to end against the group keys anyway).
"""

from __future__ import annotations

import logging
import queue
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import grpc

from derot import _proto
from derot.errors import DerotError
from derot.net import tls
from derot.net.status import DEADLINE_EXCEEDED, UNAVAILABLE, Refusal, refusal_from_rpc_error

log = logging.getLogger("derot.app")

#: transport-level reasons: they say a gateway could not be reached, nothing about the request
_TRANSPORT = frozenset({UNAVAILABLE, DEADLINE_EXCEEDED})


@dataclass(frozen=True)
class Attempt:
    """One gateway's failure during a call: where, the reason code and its detail."""

    endpoint: str
    reason: str
    detail: str


class RequestFailed(DerotError):
    """Every attempt failed; ``refusal`` is the decisive refusal, ``attempts`` all of them in order."""

    reason = "request_failed"

    def __init__(self, refusal: Refusal, attempts: Sequence[Attempt]):
        self.refusal = refusal
        self.reason = refusal.reason
        self.attempts = tuple(attempts)
        super().__init__(f"{refusal.reason}: {refusal.detail}")


def decisive(refusals: Sequence[Refusal]) -> Refusal:
    """The refusal a caller should see: the last one a gateway sent, else the last transport failure."""
    sent = [r for r in refusals if r.reason not in _TRANSPORT]
    if sent:
        return sent[-1]
    return refusals[-1] if refusals else Refusal(UNAVAILABLE, "no attempt made")


class _AttemptThreads:
    """Daemon threads that run blocking attempts, created on demand up to ``limit`` and reused when idle.
    Daemon threads, so an attempt stuck on a hung gateway never delays the process's exit."""

    def __init__(self, limit: int):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._limit, self._threads, self._idle, self._queued = limit, 0, 0, 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1  # an idle thread takes it
            elif self._threads < self._limit:
                self._threads += 1
                threading.Thread(target=self._work, name="derot-attempt", daemon=True).start()
            else:
                self._queued += 1  # the next thread to finish takes it
        self._jobs.put(job)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except BaseException:  # a bug: logged, the thread stays
                log.exception("attempt thread: unexpected error")
            with self._lock:
                if self._queued:
                    self._queued -= 1
                else:
                    self._idle += 1


_ATTEMPTS = _AttemptThreads(64)


class RootOfTrustClient:
    """Blocking client of the nodes' public service (``endpoints`` are ``host:port``; thread-safe).

    ``tls_key_hashes`` pins endpoints to the TLS key hashes the registry holds; ``timeout`` bounds one
    attempt; ``attempts`` bounds a call's attempts (default: two per endpoint); ``hedge_after`` is how long
    an attempt may stay unanswered before another gateway is tried beside it."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        tls_key_hashes: Mapping[str, bytes] | None = None,
        timeout: float = 15.0,
        attempts: int | None = None,
        backoff: float = 0.2,
        hedge_after: float = 2.0,
        max_in_flight: int = 2,
    ):
        if not endpoints:
            raise ValueError("need at least one node endpoint (host:port of its public service)")
        if hedge_after <= 0 or max_in_flight < 1:
            raise ValueError("hedge_after must be > 0 and max_in_flight >= 1")
        self.endpoints = list(endpoints)
        self.pins = dict(tls_key_hashes or {})
        self.timeout = timeout
        self.max_attempts = attempts if attempts is not None else 2 * len(self.endpoints)
        self.backoff = backoff
        self.hedge_after = hedge_after
        self.max_in_flight = max_in_flight
        self._channels: dict[str, tuple[grpc.Channel, object]] = {}
        self._lock = threading.Lock()
        self._next = 0
        self._latencies: deque[float] = deque(maxlen=16)
        self.pb = _proto.load("node_pb2")
        self._grpc = _proto.load("node_pb2_grpc")

    # connections ---------------------------------------------------------------------------------
    def _stub(self, endpoint: str):
        with self._lock:
            hit = self._channels.get(endpoint)
        if hit is not None:
            return hit[1]
        host, _, port = endpoint.rpartition(":")
        pin = self.pins.get(endpoint)
        timeout = min(self.timeout, 5.0)
        if pin is not None:
            cert = tls.fetch_pinned_certificate(host, int(port), pin, timeout)
        else:
            cert = tls.fetch_certificate(host, int(port), timeout)
        channel = grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(cert), options=tls.channel_options())
        stub = self._grpc.RootOfTrustStub(channel)
        with self._lock:
            if endpoint in self._channels:  # another thread connected first
                channel.close()
                return self._channels[endpoint][1]
            self._channels[endpoint] = (channel, stub)
        return stub

    def _drop(self, endpoint: str) -> None:
        """Forget an endpoint's channel so the next attempt reconnects. It is not closed here: other calls
        may still be in flight on it (closing would cancel them); it closes when the last reference goes."""
        with self._lock:
            self._channels.pop(endpoint, None)

    def close(self) -> None:
        """Close every channel (the client reconnects on its next call)."""
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel, _stub in channels:
            channel.close()

    def __enter__(self) -> RootOfTrustClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # calls ---------------------------------------------------------------------------------------
    def _first(self) -> int:
        with self._lock:
            return self._next

    def _prefer(self, endpoint: str) -> None:
        """The next call starts on ``endpoint``, the gateway that answered last (one warm channel)."""
        with self._lock:
            self._next = self.endpoints.index(endpoint)

    def hedge_delay(self) -> float:
        """Seconds an attempt may stay unanswered before another gateway is tried beside it."""
        with self._lock:
            recent = list(self._latencies)
        return max(self.hedge_after, 3 * statistics.median(recent)) if recent else self.hedge_after

    def _launch(self, method: str, make_request: Callable[[], object], endpoint: str, outcomes: queue.Queue,
                calls: list, cancelled: threading.Event, connect: bool = True, blocking: bool = False) -> None:
        """Start one attempt: on a connected channel, a blocking call on a pooled thread (``blocking``), or a
        future whose outcome arrives through a callback; otherwise a thread connects first (a TLS fetch may
        hang)."""
        with self._lock:
            hit = self._channels.get(endpoint)
        if hit is None and not connect:  # dropped again right after connecting
            outcomes.put((endpoint, None, Refusal(UNAVAILABLE, f"{endpoint}: connection lost")))
            return
        if hit is None:
            threading.Thread(target=self._attempt, name=f"derot-{method}", daemon=True,
                             args=(method, make_request, endpoint, outcomes, calls, cancelled, blocking)).start()
            return
        if blocking:
            try:
                request = make_request()
            except BaseException as exc:  # a bug or a device failure in make_request: the caller sees it
                outcomes.put((endpoint, None, exc))
                return
            _ATTEMPTS.submit(lambda: cancelled.is_set() or self._blocking(method, hit[1], request, endpoint, outcomes))
            return
        try:
            call = getattr(hit[1], method).future(make_request(), timeout=self.timeout)
        except ValueError as exc:  # the channel was closed under us
            self._drop(endpoint)
            outcomes.put((endpoint, None, Refusal(UNAVAILABLE, f"{endpoint}: {exc}")))
            return
        except BaseException as exc:  # a bug or a device failure in make_request: the caller sees it
            outcomes.put((endpoint, None, exc))
            return
        calls.append(call)
        started = time.monotonic()
        call.add_done_callback(lambda done: self._finished(endpoint, done, started, outcomes))

    def _blocking(self, method: str, stub, request, endpoint: str, outcomes: queue.Queue) -> None:
        started = time.monotonic()
        try:
            reply = getattr(stub, method)(request, timeout=self.timeout)
        except ValueError as exc:  # the channel was closed under us
            self._drop(endpoint)
            outcomes.put((endpoint, None, Refusal(UNAVAILABLE, f"{endpoint}: {exc}")))
        except grpc.RpcError as exc:
            self._refused(endpoint, exc, outcomes)
        else:
            self._answered(endpoint, reply, started, outcomes)

    def _answered(self, endpoint: str, reply, started: float, outcomes: queue.Queue) -> None:
        with self._lock:
            self._latencies.append(time.monotonic() - started)
        outcomes.put((endpoint, reply, None))

    def _refused(self, endpoint: str, exc: grpc.RpcError, outcomes: queue.Queue) -> None:
        refusal = refusal_from_rpc_error(exc)
        if refusal.reason == UNAVAILABLE:
            self._drop(endpoint)
        outcomes.put((endpoint, None, refusal))

    def _finished(self, endpoint: str, call, started: float, outcomes: queue.Queue) -> None:
        try:
            reply = call.result()
        except grpc.FutureCancelledError:
            outcomes.put((endpoint, None, Refusal(UNAVAILABLE, "cancelled: another gateway answered")))
        except grpc.RpcError as exc:
            self._refused(endpoint, exc, outcomes)
        else:
            self._answered(endpoint, reply, started, outcomes)

    def _attempt(self, method: str, make_request: Callable[[], object], endpoint: str, outcomes: queue.Queue,
                 calls: list, cancelled: threading.Event, blocking: bool) -> None:
        """Connect to ``endpoint`` (in its own thread), then launch the call on the new channel."""
        try:
            self._stub(endpoint)
        except (OSError, tls.PinMismatch) as exc:
            outcomes.put((endpoint, None, Refusal(UNAVAILABLE, f"{endpoint}: {exc}")))
            return
        except BaseException as exc:  # a bug: the caller sees it
            outcomes.put((endpoint, None, exc))
            return
        if cancelled.is_set():
            outcomes.put((endpoint, None, Refusal(UNAVAILABLE, "cancelled: another gateway answered")))
            return
        self._launch(method, make_request, endpoint, outcomes, calls, cancelled, connect=False, blocking=blocking)

    def call(self, method: str, make_request: Callable[[], object]):
        """Call ``method`` hedged across gateways (module docstring); :class:`RequestFailed` if all fail."""
        outcomes: queue.Queue = queue.Queue()
        calls: list = []
        cancelled = threading.Event()
        attempts: list[Attempt] = []
        refusals: list[Refusal] = []
        started = in_flight = 0
        first = self._first()
        try:
            while True:
                if started < self.max_attempts and in_flight < self.max_in_flight:
                    if started >= len(self.endpoints) and in_flight == 0:
                        time.sleep(min(self.backoff * (started // len(self.endpoints)), 2.0))
                    endpoint = self.endpoints[(first + started) % len(self.endpoints)]
                    self._launch(method, make_request, endpoint, outcomes, calls, cancelled, blocking=in_flight == 0)
                    started += 1
                    in_flight += 1
                if in_flight == 0:
                    raise RequestFailed(decisive(refusals), attempts)
                hedge = started < self.max_attempts and in_flight < self.max_in_flight
                try:
                    endpoint, reply, failure = outcomes.get(timeout=self.hedge_delay() if hedge else None)
                except queue.Empty:
                    log.info("hedging: no answer yet, trying another gateway", extra={"method": method})
                    continue
                in_flight -= 1
                if failure is None:
                    self._prefer(endpoint)
                    return reply
                if not isinstance(failure, Refusal):
                    raise failure
                attempts.append(Attempt(endpoint, failure.reason, failure.detail))
                refusals.append(failure)
                if not failure.retryable:
                    raise RequestFailed(failure, attempts)
                log.info("retrying on another node", extra={"endpoint": endpoint, "reason": failure.reason})
        finally:
            cancelled.set()
            for call in list(calls):
                call.cancel()

    def network_info(self):
        """``GetNetworkInfo``: chain, registry, epoch and group keys as a node sees them."""
        return self.call("GetNetworkInfo", self.pb.GetNetworkInfoRequest)

    def certificate_status(self, certificate: bytes, signature: bytes):
        """``GetStatus``: a node's view of a certificate (valid, expired, revoked...)."""
        return self.call("GetStatus", lambda: self.pb.GetStatusRequest(certificate=certificate, signature=signature))
