"""Peering: which registered nodes this node trusts on its Peer port (TLS pins), and every call it makes
to another node's Peer port.

The registry pins each node's TLS key hash. :meth:`Peering.refresh_certs` fetches the certificate behind
every pin; the Peer port accepts a client certificate only if it is one of them
(:meth:`Peering.server_credentials`), and :meth:`Peering.caller_operator` names the operator a caller
authenticated as. Outgoing calls go through one :class:`~derot.net.peers.PeerPool` of pinned mutual-TLS
channels; a transport failure drops the channel so the next call reconnects and re-pins.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from derot import _proto
from derot.chain.state import RegistryState
from derot.chain.types import EpochRecord
from derot.net import status, tls
from derot.net.peers import Endpoint, PeerInfo, PeerPool, fetch_peer_certificate
from derot.net.status import Refusal, refusal_from_rpc_error

log = logging.getLogger("derot.peering")

#: seconds to fetch a registered node's certificate
CERT_FETCH_TIMEOUT = 2.0
#: attempts and per-attempt timeout (s) to fetch a registrant's membership evidence
EVIDENCE_ATTEMPTS = 3
EVIDENCE_TIMEOUT = 5.0
#: per-attempt timeout (s) of a DKG message delivery (retried until the phase deadline)
DKG_SEND_TIMEOUT = 5.0


def peer_info(state: RegistryState, epoch: EpochRecord) -> dict[int, PeerInfo]:
    """The members of ``epoch`` as this node reaches them (members with a malformed endpoint are left out)."""
    out = {}
    for index, operator in enumerate(epoch.members, start=1):
        node = state.nodes.get(operator)
        if node is None:
            continue
        try:
            endpoint = Endpoint.parse(node.endpoint)
        except ValueError:
            log.warning("member has a malformed endpoint", extra={"operator": operator})
            continue
        out[index] = PeerInfo(index, operator, endpoint, node.tls_key_hash)
    return out


class Peering:
    def __init__(self, identity: tls.TlsIdentity, operator: str, *, peer_deadline: float):
        self.identity = identity
        self.operator = operator.lower()
        self.peer_deadline = peer_deadline
        self.pool = PeerPool(identity)
        self._pb = _proto.load("node_pb2")
        self._peer_certs: dict[bytes, bytes] = {}  # tls key hash -> PEM, for the Peer port's client auth
        self._server_cert_config = grpc.ssl_server_certificate_configuration(
            [(identity.key_pem, identity.cert_pem)], root_certificates=identity.cert_pem
        )
        self._served_cert_config = self._server_cert_config

    # ---------------------------------------------------------------------------------------------
    # the Peer port: who may call

    def server_credentials(self) -> grpc.ServerCredentials:
        """Mutual-TLS credentials of the Peer port; client roots follow :meth:`refresh_certs`."""
        return grpc.dynamic_ssl_server_credentials(
            self._server_cert_config, self._cert_config, require_client_authentication=True
        )

    def _cert_config(self):
        """gRPC calls this before every Peer-port handshake: the pinned client roots if they changed, else None.

        gRPC treats any returned configuration as new and rebuilds the port's TLS context, racing handshakes
        in flight (seen as crashes inside grpc at n = 32), so an unchanged configuration must return None.
        """
        config = self._server_cert_config
        if config is self._served_cert_config:
            return None
        self._served_cert_config = config
        return config

    async def refresh_certs(self, state: RegistryState) -> None:
        """Fetch (and pin) the certificate of every registered node not fetched yet."""
        wanted = {n.tls_key_hash: n for n in state.nodes.values() if n.operator.lower() != self.operator}
        missing = [n for h, n in wanted.items() if h not in self._peer_certs]
        if not missing and set(self._peer_certs) <= set(wanted):
            return

        async def fetch(node):
            try:
                endpoint = Endpoint.parse(node.endpoint)
                return node.tls_key_hash, await asyncio.to_thread(
                    fetch_peer_certificate, endpoint, node.tls_key_hash, CERT_FETCH_TIMEOUT
                )
            except (OSError, ValueError, tls.PinMismatch) as exc:
                log.debug("peer certificate not fetched yet", extra={"operator": node.operator, "error": str(exc)})
                return None

        results = await asyncio.gather(*(fetch(n) for n in missing))
        certs = {h: pem for h, pem in self._peer_certs.items() if h in wanted}
        certs.update(r for r in results if r is not None)
        if certs != self._peer_certs:
            self._peer_certs = certs
            ident = self.identity
            roots = b"".join(certs.values()) or ident.cert_pem
            self._server_cert_config = grpc.ssl_server_certificate_configuration(
                [(ident.key_pem, ident.cert_pem)], root_certificates=roots
            )

    @staticmethod
    def caller_operator(context, state: RegistryState | None) -> str:
        """The registered operator whose pinned TLS key the calling peer presented."""
        certs = context.auth_context().get("x509_pem_cert")
        if not certs or state is None:
            raise Refusal(status.NOT_A_MEMBER, "no client certificate")
        key_hash = tls.spki_hash(certs[0])
        for operator, node in state.nodes.items():
            if node.tls_key_hash == key_hash:
                return operator
        raise Refusal(status.NOT_A_MEMBER, "the client certificate is not registered")

    # ---------------------------------------------------------------------------------------------
    # calling peers

    async def call(self, info: PeerInfo, method: str, message):
        """One unary Peer call; every failure is a :class:`Refusal` (``unavailable`` drops the channel)."""
        try:
            stub = await self.pool.stub(info)
        except (OSError, tls.PinMismatch) as exc:
            raise Refusal(status.UNAVAILABLE, f"peer {info.index}: {exc}") from None
        try:
            return await getattr(stub, method)(message, timeout=self.peer_deadline)
        except grpc.aio.AioRpcError as exc:
            refusal = refusal_from_rpc_error(exc)
            if refusal.reason == status.UNAVAILABLE:
                await self.pool.drop(info)
            raise refusal from None

    async def submit_dkg(self, info: PeerInfo, epoch_id: int, data: bytes, deadline: float) -> None:
        """Deliver one DKG message, retrying transport failures for ``deadline`` seconds."""
        started = time.monotonic()
        delay = 0.1
        envelope = self._pb.DkgEnvelope(epoch=epoch_id, message=data)
        while time.monotonic() - started < deadline:
            try:
                stub = await self.pool.stub(info)
                await stub.SubmitDkgMessage(envelope, timeout=DKG_SEND_TIMEOUT)
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    log.warning("peer refused a DKG message",
                                extra={"peer": info.index, "reason": refusal_from_rpc_error(exc).reason})
                    return
                await self.pool.drop(info)
            except (OSError, tls.PinMismatch):
                pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        log.warning("DKG message not delivered", extra={"peer": info.index, "epoch": epoch_id})

    async def fetch_evidence(self, info: PeerInfo) -> bytes | None:
        """A registered node's membership evidence (its GetNodeEvidence answer), or None if unreachable."""
        for _attempt in range(EVIDENCE_ATTEMPTS):
            try:
                stub = await self.pool.stub(info)
                reply = await stub.GetNodeEvidence(self._pb.GetNodeEvidenceRequest(), timeout=EVIDENCE_TIMEOUT)
                return bytes(reply.evidence)
            except grpc.aio.AioRpcError:
                await self.pool.drop(info)
            except (OSError, tls.PinMismatch):
                pass
            await asyncio.sleep(0.5)
        return None

    async def close(self) -> None:
        await self.pool.close()
