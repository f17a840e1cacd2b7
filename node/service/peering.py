"""Peering: which registered nodes this node trusts on its Peer port (TLS pins), and every call it makes
to another node's Peer port.

Who may call. Approved nodes (:func:`pinned_nodes`); before the first epoch activates, also registrants
awaiting approval, so the future members of the bootstrap DKG can check each other's membership evidence
before the vote that approves them and starts it. Approved nodes may fetch this node's membership evidence
(public: its hash is on-chain); every other Peer method is for approved members of the current or the pending
epoch only (:func:`epoch_members`). The registry pins each
node's TLS key hash; :meth:`Peering.on_state` drops the pins of nodes that are no longer allowed at once, and fetches the certificates of newly allowed ones in a background task, so handling a registry update
(a revocation, say) never waits on peer I/O, and a registrant that never answers costs nothing but its own
retries (backed off per registrant). The Peer port accepts a client certificate only if it is pinned
(:meth:`Peering.server_credentials`), and every Peer handler checks the caller again against the current state
(:meth:`Peering.authorize`), so a removed or suspended node is refused by name even before its pin is gone.

Calling peers. Outgoing calls go through one :class:`~derot.net.peers.PeerPool` of pinned mutual-TLS channels
with health (a failed, stuck or aged channel is replaced). DKG messages go out with :meth:`Peering.submit_dkg`
(also for relays) and missing ones come back by digest sync (:meth:`Peering.pull_dkg`, the ``SyncDkg`` call).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time

import grpc

from derot import _proto
from derot.chain.state import RegistryState
from derot.chain.types import EpochRecord, NodeRecord, NodeStatus
from derot.limits import LIMITS
from derot.net import status, tls
from derot.net.peers import ChannelClosed, Endpoint, PeerInfo, PeerPool, await_call, fetch_peer_certificate
from derot.net.status import Refusal, refusal_from_rpc_error
from derot.service.backoff import BackOff
from derot.service.tasks import TaskSet

log = logging.getLogger("derot.peering")

#: refusals of a DKG message from a peer whose view of the registry may lag this node's: retried
LAGGING = frozenset({status.NOT_A_MEMBER, status.WRONG_EPOCH})
#: seconds before an unreachable node's certificate is fetched again (doubling up to the limit)
CERT_RETRY = 2.0


#: the pinned hash of a peer's certificate, parsed once per certificate, not on every call (a DKG makes many)
_spki_hash = functools.lru_cache(maxsize=1024)(tls.spki_hash)


def admitted_statuses(state: RegistryState) -> tuple[NodeStatus, ...]:
    """Registry statuses whose nodes may reach the Peer port: approved ones; before any epoch is active, also
    registrants awaiting approval (the bootstrap committee, checking each other's evidence before the vote)."""
    if state.committee is None:
        return (NodeStatus.PENDING, NodeStatus.APPROVED)
    return (NodeStatus.APPROVED,)


def pinned_nodes(state: RegistryState) -> dict[str, NodeRecord]:
    """Nodes whose TLS key the Peer port accepts (:func:`admitted_statuses`)."""
    admitted = admitted_statuses(state)
    return {op.lower(): n for op, n in state.nodes.items() if n.status in admitted}


def epoch_members(state: RegistryState) -> dict[str, NodeRecord]:
    """Nodes that may use the whole Peer service: approved members of the current or the pending epoch (a
    reshare's old members are the current epoch's), by lower-case operator."""
    epochs = [e for e in (state.committee, state.pending) if e is not None]
    out = {}
    for epoch in epochs:
        for operator in epoch.members:
            node = state.nodes.get(operator)
            if node is not None and node.status == NodeStatus.APPROVED:
                out[operator.lower()] = node
    return out


class _StateIndex:
    """The Peer port's lookups into one registry state, built once per state object. Every Peer call asks
    them, and built per call they cost O(n) each: O(n²) per member over a DKG. States are immutable (their
    mappings are read-only), so an index never goes stale; a new state gets a new index."""

    def __init__(self, state: RegistryState) -> None:
        self.state = state
        self.operator_by_key: dict[bytes, str] = {}  # TLS key hash -> the first registered operator with it
        for operator, node in state.nodes.items():
            self.operator_by_key.setdefault(node.tls_key_hash, operator)
        self.members = frozenset(epoch_members(state))


_last_index: _StateIndex | None = None


def _index_of(state: RegistryState) -> _StateIndex:
    """The index of ``state``, kept until another state object is asked for. Only the event loop calls it;
    were two threads to race here, the worst case is an index built twice, never one of another state."""
    global _last_index
    index = _last_index
    if index is None or index.state is not state:
        index = _last_index = _StateIndex(state)
    return index


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
    def __init__(self, identity: tls.TlsIdentity, operator: str, *, peer_deadline: float,
                 routes: dict[str, str] | None = None, metrics=None, close_mid_call: bool = False):
        self.identity = identity
        self.operator = operator.lower()
        self.peer_deadline = peer_deadline
        self.metrics = metrics  # derot.service.metrics.Metrics, or None: counts the calls made
        self.pool = PeerPool(identity, connect_timeout=LIMITS.peer_connect_timeout,
                             max_strikes=LIMITS.peer_max_strikes, max_age=LIMITS.peer_channel_max_age,
                             stale_after=LIMITS.peer_stale_after, patience=LIMITS.peer_patience, routes=routes)
        self._pb = _proto.load("node_pb2")
        self._peer_certs: dict[bytes, bytes] = {}  # tls key hash -> PEM, for the Peer port's client auth
        self._server_cert_config = grpc.ssl_server_certificate_configuration(
            [(identity.key_pem, identity.cert_pem)], root_certificates=identity.cert_pem
        )
        self._served_cert_config = self._server_cert_config
        self._wanted: dict[bytes, NodeRecord] = {}  # tls key hash -> node, for the latest state
        self._cert_retry = BackOff(CERT_RETRY, LIMITS.peer_cert_retry_max)  # by tls key hash
        self._refresh: asyncio.Task | None = None
        self._refresh_wake = asyncio.Event()  # a new state while the refresh waits out a back-off
        # devnet fault close_channel_mid_call: (peer, method) pairs whose first call already had its channel closed
        self._closed_once: set[tuple[str, str]] | None = set() if close_mid_call else None
        self._fault_tasks = TaskSet()

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

    def on_state(self, state: RegistryState) -> None:
        """A new registry state: unpin nodes no longer allowed now; fetch new pins in the background."""
        self._wanted = {n.tls_key_hash: n for op, n in pinned_nodes(state).items() if op != self.operator}
        kept = {h: pem for h, pem in self._peer_certs.items() if h in self._wanted}
        if kept != self._peer_certs:
            self._pin(kept)
        if any(h not in self._peer_certs for h in self._wanted):
            if self._refresh is None or self._refresh.done():
                self._refresh = asyncio.create_task(self.refresh_certs(), name="peer-certs")
            else:
                self._refresh_wake.set()  # a newly allowed node is fetched now, not after another one's back-off

    async def refresh_certs(self) -> None:
        """Fetch (and pin) the certificate of every allowed node not fetched yet, skipping those backed off; while
        some are still missing, try again when the earliest back-off ends. So a registrant that was not up yet is
        pinned without waiting for a new block (the bootstrap committee boots on a chain that may not move until
        the vote, and a node that has not pinned a registrant refuses its evidence fetches)."""
        while True:
            self._refresh_wake.clear()  # a state that arrives from here on wakes the wait below
            missing = [n for h, n in self._wanted.items() if h not in self._peer_certs and self._cert_retry.due(h)]
            results = await asyncio.gather(*(self._fetch_cert(n) for n in missing))
            certs = {h: pem for h, pem in self._peer_certs.items() if h in self._wanted}
            certs.update(r for r in results if r is not None and r[0] in self._wanted)
            if certs != self._peer_certs:
                self._pin(certs)
            due = [self._cert_retry.next_attempt(h) for h in self._wanted if h not in self._peer_certs]
            if not due:
                return
            try:
                await asyncio.wait_for(self._refresh_wake.wait(), timeout=max(min(due) - time.monotonic(), 0.05))
            except asyncio.TimeoutError:
                pass

    async def _fetch_cert(self, node: NodeRecord) -> tuple[bytes, bytes] | None:
        """(tls key hash, PEM) of ``node``'s pinned certificate, or None (backed off, doubling per failure)."""
        try:
            endpoint = self.pool.route(Endpoint.parse(node.endpoint))
            pem = await asyncio.to_thread(fetch_peer_certificate, endpoint, node.tls_key_hash, LIMITS.peer_cert_timeout)
            self._cert_retry.succeeded(node.tls_key_hash)
            return node.tls_key_hash, pem
        except (OSError, ValueError, tls.PinMismatch) as exc:
            self._cert_retry.failed(node.tls_key_hash)
            log.debug("peer certificate not fetched yet", extra={"operator": node.operator, "error": str(exc)})
            return None

    def _pin(self, certs: dict[bytes, bytes]) -> None:
        self._peer_certs = certs
        ident = self.identity
        roots = b"".join(certs.values()) or ident.cert_pem
        self._server_cert_config = grpc.ssl_server_certificate_configuration(
            [(ident.key_pem, ident.cert_pem)], root_certificates=roots
        )

    @property
    def pinned(self) -> frozenset[bytes]:
        """TLS key hashes the Peer port accepts now."""
        return frozenset(self._peer_certs)

    @staticmethod
    def authorize(operator: str, state: RegistryState | None, *, evidence_only: bool = False) -> None:
        """Refuse (``not_a_member``, naming why) unless registered ``operator`` may make a Peer call now: it is
        approved and a member of the current or the pending epoch. ``evidence_only``: the call is
        GetNodeEvidence, open to every node :func:`admitted_statuses` admits."""
        node = state.nodes.get(operator) if state is not None else None
        if node is None:
            raise Refusal(status.NOT_A_MEMBER, f"{operator} is not registered")
        allowed = admitted_statuses(state) if evidence_only else (NodeStatus.APPROVED,)
        if node.status not in allowed:
            raise Refusal(status.NOT_A_MEMBER, f"{operator} is {node.status.name.lower()}, not an approved node",
                          metadata={"status": node.status.name.lower()})
        if not evidence_only and operator.lower() not in _index_of(state).members:
            raise Refusal(status.NOT_A_MEMBER, f"{operator} is in neither the current nor the pending epoch",
                          metadata={"status": "not_in_epoch"})

    @staticmethod
    def caller_operator(context, state: RegistryState | None) -> str:
        """The registered operator whose pinned TLS key the calling peer presented."""
        certs = context.auth_context().get("x509_pem_cert")
        if not certs or state is None:
            raise Refusal(status.NOT_A_MEMBER, "no client certificate")
        operator = _index_of(state).operator_by_key.get(_spki_hash(bytes(certs[0])))
        if operator is not None:
            return operator
        raise Refusal(status.NOT_A_MEMBER, "the client certificate is not registered")

    # ---------------------------------------------------------------------------------------------
    # calling peers

    def _sent(self, method: str, message) -> None:
        if self.metrics is not None:
            self.metrics.peer_sent.labels(method).inc()
            self.metrics.peer_sent_bytes.labels(method).inc(message.ByteSize())

    async def call(self, info: PeerInfo, method: str, message):
        """One unary Peer call; every failure is a :class:`Refusal` (``unavailable`` drops the channel, and is
        also the answer when the channel was closed under the call); only a cancellation of the calling task
        raises ``CancelledError``."""
        self._sent(method, message)
        try:
            stub = await self.pool.stub(info)
        except (OSError, tls.PinMismatch) as exc:
            raise Refusal(status.UNAVAILABLE, f"peer {info.index}: {exc}") from None
        started = time.monotonic()
        try:
            reply = await self._await(info, method, getattr(stub, method)(message, timeout=self.peer_deadline))
        except ChannelClosed as exc:
            raise Refusal(status.UNAVAILABLE, f"peer {info.index}: {exc}") from None
        except grpc.aio.AioRpcError as exc:
            refusal = refusal_from_rpc_error(exc)
            await self.pool.failed(info, refusal.reason, time.monotonic() - started)
            raise refusal from None
        except asyncio.CancelledError:  # a hedge gave up on this peer: count it against the channel
            self.pool.abandoned(info, time.monotonic() - started)
            raise
        self.pool.answered(info)
        return reply

    async def _await(self, info: PeerInfo, method: str, call):
        """Await one Peer call (:func:`~derot.net.peers.await_call`). Under the devnet fault
        ``close_channel_mid_call``, the channel of the first call of each method to each peer is closed while
        that call is in flight, as when a concurrent call to the peer failed."""
        if self._closed_once is not None and (info.operator.lower(), method) not in self._closed_once:
            self._closed_once.add((info.operator.lower(), method))
            self._fault_tasks.spawn(self.pool.drop(info), name=f"fault-close-{method}")
        return await await_call(call)

    async def submit_dkg(self, info: PeerInfo, epoch_id: int, data: bytes, deadline: float) -> bool:
        """Deliver one DKG message, retrying for ``deadline`` seconds; whether the peer took it.

        The first attempt may take ``dkg_send_timeout`` or ``dkg_send_share`` of ``deadline``, whichever is
        longer: every member broadcasts at the same moments, so a big committee's peers each receive n messages
        at once, and on a crowded machine a short first timeout made most pushes go out twice or more (450
        attempts for ~200 deliveries per member at n = 64 on 2 cores). An attempt that ran out of time is sent
        again with twice its timeout (at most what is left of ``deadline``): an overloaded peer that is slow to
        answer gets the time it needs, instead of the same message again every few seconds, each copy adding to
        its load. A message no attempt delivers still arrives by digest sync."""
        started = time.monotonic()
        delay, timeout = 0.1, max(LIMITS.dkg_send_timeout, LIMITS.dkg_send_share * deadline)
        envelope = self._pb.DkgEnvelope(epoch=epoch_id, message=data)
        while (left := deadline - (time.monotonic() - started)) > 0:
            attempt = time.monotonic()
            try:
                stub = await self.pool.stub(info)
                self._sent("SubmitDkgMessage", envelope)
                await self._await(info, "SubmitDkgMessage",
                                  stub.SubmitDkgMessage(envelope, timeout=min(timeout, max(left, 0.1))))
                self.pool.answered(info)
                return True
            except grpc.aio.AioRpcError as exc:
                reason = refusal_from_rpc_error(exc).reason
                await self.pool.failed(info, reason, time.monotonic() - attempt)
                if reason == status.DEADLINE_EXCEEDED:
                    timeout *= 2
                elif reason not in (status.UNAVAILABLE, *LAGGING):
                    log.warning("peer refused a DKG message", extra={"peer": info.index, "reason": reason})
                    return False
            except (OSError, tls.PinMismatch):
                pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        log.warning("DKG message not delivered", extra={"peer": info.index, "epoch": epoch_id})
        return False

    async def pull_dkg(self, infos, epoch_id: int, digests, max_messages: int) -> list[bytes]:
        """Digest sync: ask every peer in ``infos`` for the messages of ``epoch_id``'s run it holds beyond
        ``digests`` (:class:`~derot.crypto.dkg.messages.Digest`); at most ``max_messages`` kept per answer.
        An unreachable or refusing peer contributes nothing."""
        pb = self._pb
        request = pb.DkgSyncRequest(epoch=epoch_id, held=[
            pb.DkgSyncDigest(kind=int(d.kind), sender=d.sender, body_hash=d.body_hash) for d in digests])

        async def ask(info: PeerInfo) -> list[bytes]:
            try:
                reply = await self.call(info, "SyncDkg", request)
            except Refusal:
                return []
            return [bytes(m) for m in reply.messages[:max_messages]]

        replies = await asyncio.gather(*(ask(info) for info in infos))
        return [data for reply in replies for data in reply]

    async def fetch_evidence(self, info: PeerInfo) -> bytes | None:
        """A registered node's membership evidence (its GetNodeEvidence answer), or None if unreachable."""
        for _attempt in range(LIMITS.evidence_fetch_attempts):
            started = time.monotonic()
            try:
                stub = await self.pool.stub(info)
                reply = await self._await(info, "GetNodeEvidence", stub.GetNodeEvidence(
                    self._pb.GetNodeEvidenceRequest(), timeout=LIMITS.evidence_fetch_timeout))
                self.pool.answered(info)
                return bytes(reply.evidence)
            except grpc.aio.AioRpcError as exc:
                await self.pool.failed(info, refusal_from_rpc_error(exc).reason, time.monotonic() - started)
            except (OSError, tls.PinMismatch):
                pass
            await asyncio.sleep(0.5)
        return None

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            await asyncio.gather(self._refresh, return_exceptions=True)
        await self.pool.close()
