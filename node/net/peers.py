"""Connections to other nodes: endpoints from the registry, TLS pinned by the registered key hash.

A node registers one endpoint string, ``public=HOST:PORT;peer=HOST:PORT`` (see :class:`Endpoint`): apps
use the public port, nodes the peer port. :class:`PeerPool` keeps one mutual-TLS channel per peer; the
peer's certificate is fetched once and accepted only if its key hash is the one in the registry, and the
channel presents this node's own certificate as client certificate.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc

from derot import _proto
from derot.net import tls

log = logging.getLogger("derot.net.peers")


class EndpointError(ValueError):
    """An endpoint string that is not ``public=HOST:PORT;peer=HOST:PORT``."""


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


def fetch_peer_certificate(endpoint: Endpoint, tls_key_hash: bytes, timeout: float = 3.0) -> bytes:
    """A node's pinned certificate, read from its public port (the peer port demands a client certificate
    before it completes a handshake; both ports present the same certificate)."""
    host, port = split_host_port(endpoint.public)
    return tls.fetch_pinned_certificate(host, port, tls_key_hash, timeout)


@dataclass(frozen=True)
class PeerInfo:
    """A committee member as this node reaches it."""

    index: int
    operator: str
    endpoint: Endpoint
    tls_key_hash: bytes


class PeerPool:
    """Pinned mutual-TLS channels to peers' Peer services, created on first use and dropped on failure."""

    def __init__(self, identity: tls.TlsIdentity, *, connect_timeout: float = 3.0):
        self.identity = identity
        self.connect_timeout = connect_timeout
        self._channels: dict[tuple[str, str, bytes], tuple[grpc.aio.Channel, object]] = {}
        self._locks: dict[tuple[str, str, bytes], asyncio.Lock] = {}
        self._pb_grpc = _proto.load("node_pb2_grpc")

    def _key(self, peer: PeerInfo) -> tuple[str, str, bytes]:
        return (peer.operator.lower(), peer.endpoint.peer, peer.tls_key_hash)

    async def stub(self, peer: PeerInfo):
        """A ``PeerStub`` for ``peer``; raises :class:`tls.PinMismatch` or ``OSError`` if it cannot connect."""
        key = self._key(peer)
        hit = self._channels.get(key)
        if hit is not None:
            return hit[1]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._channels.get(key)
            if hit is not None:
                return hit[1]
            cert = await asyncio.to_thread(fetch_peer_certificate, peer.endpoint, peer.tls_key_hash,
                                           self.connect_timeout)
            host, port = split_host_port(peer.endpoint.peer)
            credentials = grpc.ssl_channel_credentials(
                root_certificates=cert, private_key=self.identity.key_pem, certificate_chain=self.identity.cert_pem
            )
            channel = grpc.aio.secure_channel(f"{host}:{port}", credentials, options=tls.channel_options())
            stub = self._pb_grpc.PeerStub(channel)
            self._channels[key] = (channel, stub)
            return stub

    async def drop(self, peer: PeerInfo) -> None:
        """Forget a peer's channel (after a transport failure), so the next call reconnects and re-pins."""
        hit = self._channels.pop(self._key(peer), None)
        if hit is not None:
            await hit[0].close(grace=None)

    async def close(self) -> None:
        channels = list(self._channels.values())
        self._channels.clear()
        for channel, _ in channels:
            await channel.close(grace=None)
