"""Connections to other nodes: endpoints from the registry, TLS pinned by the registered key hash.

A node registers one endpoint string, ``public=HOST:PORT;peer=HOST:PORT`` (see :class:`Endpoint`): apps
use the public port, nodes the peer port. :class:`PeerPool` keeps one mutual-TLS channel per peer; the
peer's certificate is fetched once and accepted only if its key hash is the one in the registry, and the
channel presents this node's own certificate as client certificate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import grpc

from derot import _proto
from derot.errors import DerotError
from derot.net import status, tls

log = logging.getLogger("derot.net.peers")


class EndpointError(DerotError, ValueError):
    """An endpoint string that is not ``public=HOST:PORT;peer=HOST:PORT``."""

    reason = "malformed_endpoint"


@dataclass(frozen=True)
class Endpoint:
    public: str  # host:port of the RootOfTrust service
    peer: str  # host:port of the Peer service

    def __str__(self) -> str:
        return f"public={self.public};peer={self.peer}"

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        parts = {}
        for item in text.split(";"):
            key, sep, value = item.strip().partition("=")
            if not sep:
                raise EndpointError(f"endpoint item {item!r} is not key=value")
            parts[key] = value
        try:
            endpoint = cls(parts["public"], parts["peer"])
        except KeyError as exc:
            raise EndpointError(f"endpoint {text!r} lacks {exc.args[0]}=") from None
        for address in (endpoint.public, endpoint.peer):
            split_host_port(address)
        return endpoint


def split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EndpointError(f"{address!r} is not host:port")
    return host.strip("[]"), int(port)


def parse_routes(text: str) -> dict[str, str]:
    """``"HOST:PORT=HOST:PORT,..."`` (a registered address = the address this node dials instead) as a dict.

    Devnet and benchmark only (``[node].peer_routes``): e.g. a WAN simulation puts a delay proxy per
    directed pair of nodes between them."""
    routes = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        registered, sep, dialled = item.partition("=")
        if not sep:
            raise EndpointError(f"route {item!r} is not registered=dialled")
        split_host_port(registered.strip())
        split_host_port(dialled.strip())
        routes[registered.strip()] = dialled.strip()
    return routes


def fetch_peer_certificate(endpoint: Endpoint, tls_key_hash: bytes, timeout: float = 3.0) -> bytes:
    """A node's pinned certificate, read from its public port (the peer port demands a client certificate
    before it completes a handshake; both ports present the same certificate)."""
    host, port = split_host_port(endpoint.public)
    return tls.fetch_pinned_certificate(host, port, tls_key_hash, timeout)


class ChannelClosed(DerotError, OSError):
    """A call's channel was closed under it (replaced after another call to the peer failed, or stuck)."""

    reason = status.UNAVAILABLE


async def await_call(call):
    """Await a gRPC aio call. grpc raises ``CancelledError`` in every caller whose call was in flight when its
    channel closed (:meth:`PeerPool.drop`, a replaced channel), though no one cancelled the caller's task; such
    an error becomes :class:`ChannelClosed`, so only a real cancellation (a hedge giving up) cancels the caller.
    Otherwise one peer's failed call would silently end every task with a call on the same channel."""
    try:
        return await call
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        raise ChannelClosed("the peer channel was closed during the call") from None


@dataclass(frozen=True)
class PeerInfo:
    """A committee member as this node reaches it."""

    index: int
    operator: str
    endpoint: Endpoint
    tls_key_hash: bytes


#: channel states in which a call can make progress without a new connection
_USABLE = (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.IDLE)


@dataclass
class _Channel:
    channel: grpc.aio.Channel
    stub: object
    created: float
    unusable_since: float | None = None  # monotonic time its state was first seen neither READY nor IDLE
    strikes: int = 0  # calls abandoned without an answer (a hedge cancelled them) since the last answer
    last_answer: float = 0.0  # monotonic time of its last answer (its creation before the first)


class PeerPool:
    """Pinned mutual-TLS channels to peers' Peer services, created on first use, with health.

    A channel is replaced (closed, the certificate re-fetched and re-pinned, a fresh connection) when a call on
    it fails with a transport error (:meth:`drop`), when it has been neither READY nor IDLE for
    ``connect_timeout`` seconds, when ``max_strikes`` calls in a row were abandoned after waiting ``stale_after``
    seconds without an answer (a hedge cancels calls to a peer that does not answer, so such a channel would
    otherwise never fail) and no answer came for ``patience`` seconds, and after ``max_age`` seconds. So a peer
    that restarted is used again within seconds.

    Invariant: strikes replace a peer's channel at most once per ``patience`` seconds without an answer, and the
    patience doubles with each such replacement (up to ``max_age``) until the peer answers again. A peer that is
    merely overloaded gets no answer out in time either; replacing its channel every few seconds would end the
    calls in flight and add TLS handshakes to its load (a 64-member DKG on 2 cores collapsed that way).
    """

    def __init__(self, identity: tls.TlsIdentity, *, connect_timeout: float = 3.0, max_strikes: int = 3,
                 max_age: float = 600.0, stale_after: float = 1.0, patience: float = 10.0,
                 routes: dict[str, str] | None = None):
        self.identity = identity
        self.routes = dict(routes or {})  # registered host:port -> the one dialled (devnet; parse_routes)
        self.connect_timeout = connect_timeout
        self.max_strikes = max_strikes
        self.max_age = max_age
        self.stale_after = stale_after
        self.patience = patience
        self._patience: dict[tuple[str, str, bytes], float] = {}  # a peer's doubled patience, until it answers
        self._channels: dict[tuple[str, str, bytes], _Channel] = {}
        self._locks: dict[tuple[str, str, bytes], asyncio.Lock] = {}
        self._pb_grpc = _proto.load("node_pb2_grpc")

    def route(self, endpoint: Endpoint) -> Endpoint:
        """The addresses this node dials for a registered ``endpoint`` (the same unless routed)."""
        if not self.routes:
            return endpoint
        return Endpoint(self.routes.get(endpoint.public, endpoint.public), self.routes.get(endpoint.peer, endpoint.peer))

    def _key(self, peer: PeerInfo) -> tuple[str, str, bytes]:
        return (peer.operator.lower(), peer.endpoint.peer, peer.tls_key_hash)

    def patience_of(self, peer: PeerInfo) -> float:
        """Seconds without an answer after which strikes replace ``peer``'s channel (doubled per replacement)."""
        return self._patience.get(self._key(peer), self.patience)

    def _unhealthy(self, key, entry: _Channel, now: float) -> str | None:
        """Why ``entry`` must be replaced (``aged``, ``strikes``, ``unusable``), or None while it is healthy."""
        if now - entry.created > self.max_age:
            return "aged"
        if entry.strikes >= self.max_strikes and now - entry.last_answer >= self._patience.get(key, self.patience):
            return "strikes"
        if entry.channel.get_state(try_to_connect=False) in _USABLE:
            entry.unusable_since = None
            return None
        if entry.unusable_since is None:
            entry.unusable_since = now
        return "unusable" if now - entry.unusable_since >= self.connect_timeout else None

    async def stub(self, peer: PeerInfo):
        """A ``PeerStub`` for ``peer``; raises :class:`tls.PinMismatch` or ``OSError`` if it cannot connect."""
        key = self._key(peer)
        entry = self._channels.get(key)
        if entry is not None and self._unhealthy(key, entry, time.monotonic()) is None:
            return entry.stub
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._channels.get(key)
            if entry is not None:
                why = self._unhealthy(key, entry, time.monotonic())
                if why is None:
                    return entry.stub
                log.info("replacing an unhealthy peer channel", extra={
                    "peer": peer.operator, "why": why, "strikes": entry.strikes,
                    "state": entry.channel.get_state(try_to_connect=False).name.lower()})
                if entry.strikes >= self.max_strikes:
                    self._patience[key] = min(self._patience.get(key, self.patience) * 2, self.max_age)
                await self._close(key)
            endpoint = self.route(peer.endpoint)
            cert = await asyncio.to_thread(fetch_peer_certificate, endpoint, peer.tls_key_hash,
                                           self.connect_timeout)
            host, port = split_host_port(endpoint.peer)
            credentials = grpc.ssl_channel_credentials(
                root_certificates=cert, private_key=self.identity.key_pem, certificate_chain=self.identity.cert_pem
            )
            channel = grpc.aio.secure_channel(f"{host}:{port}", credentials, options=tls.channel_options())
            now = time.monotonic()
            entry = _Channel(channel, self._pb_grpc.PeerStub(channel), now, last_answer=now)
            self._channels[key] = entry
            return entry.stub

    def answered(self, peer: PeerInfo) -> None:
        """A call to ``peer`` got an answer (any answer: the channel works)."""
        key = self._key(peer)
        entry = self._channels.get(key)
        if entry is not None:
            entry.strikes = 0
            entry.last_answer = time.monotonic()
        self._patience.pop(key, None)

    def abandoned(self, peer: PeerInfo, waited: float) -> None:
        """A call to ``peer`` ended after ``waited`` seconds without an answer: a hedge cancelled it, or its
        deadline passed. A hedge routinely cancels calls that are merely slower than the first ``t``; only one
        that waited ``stale_after`` is a strike."""
        entry = self._channels.get(self._key(peer))
        if entry is not None and waited >= self.stale_after:
            entry.strikes += 1

    async def failed(self, peer: PeerInfo, reason: str, waited: float) -> None:
        """A call to ``peer`` ended, after ``waited`` seconds, with the refusal ``reason``
        (:func:`~derot.net.status.refusal_from_rpc_error`: a peer's own refusal keeps its reason, although many
        travel as gRPC ``UNAVAILABLE``). The one channel policy:

        - ``unavailable`` (the connection failed, or the channel closed): the channel is replaced (:meth:`drop`);
        - ``deadline_exceeded`` (no answer in time): a strike (:meth:`abandoned`), never a replacement on its
          own. A slow peer's connection is fine, and closing it would end every other call in flight on it and
          cost both sides a new TLS handshake, just when the peer is overloaded: a 64-member DKG on 2 cores
          collapsed into ~275 new connections a second that way;
        - any other reason is the peer's answer (:meth:`answered`), e.g. ``chain_stale``."""
        if reason == status.UNAVAILABLE:
            if self._key(peer) in self._channels:
                log.info("replacing an unhealthy peer channel", extra={"peer": peer.operator, "why": "unavailable",
                                                                        "waited": round(waited, 3)})
            await self.drop(peer)
        elif reason == status.DEADLINE_EXCEEDED:
            self.abandoned(peer, waited)
        else:
            self.answered(peer)

    async def drop(self, peer: PeerInfo) -> None:
        """Forget a peer's channel (after a transport failure), so the next call reconnects and re-pins."""
        await self._close(self._key(peer))

    async def _close(self, key) -> None:
        entry = self._channels.pop(key, None)
        if entry is not None:
            # bounded: it runs under the peer's lock, which every call to that peer waits for (asyncio.wait, not
            # wait_for: a close that ignores cancellation must not hold the lock either)
            closing = asyncio.ensure_future(entry.channel.close(grace=None))
            done, _ = await asyncio.wait({closing}, timeout=self.connect_timeout)
            if not done:
                closing.add_done_callback(lambda t: t.cancelled() or t.exception())
                log.warning("a peer channel did not close in time", extra={"peer": key[0]})

    async def close(self) -> None:
        for key in list(self._channels):
            await self._close(key)
