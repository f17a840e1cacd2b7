"""The node process: follows the registry, runs DKGs and reshares with its peers, serves apps.

One asyncio loop runs everything:

- the chain task follows ``DerotRegistry`` at ``head − confirmations``; every update may activate an
  epoch (shares of older epochs are erased in the same store transaction), start a DKG/reshare runner,
  or refresh the peer certificates the Peer port trusts;
- the gRPC server listens on two ports: RootOfTrust (TLS) for apps, Peer (mutual TLS, client certificates
  pinned by the registry) for nodes;
- gateway requests fan out to the committee; contributing requests are checked here again, against this
  node's own view of the chain.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

import grpc
from eth_account import Account
from web3 import Web3

from derot import __version__, _proto, untrusted
from derot.attest.binding import network_id
from derot.attest.evidence import Evidence
from derot.attest.policy import PolicyEngine
from derot.attest.trust import TrustConfig
from derot.certs.verify import signature_bytes
from derot.chain.follower import Follower
from derot.chain.registry import Registry
from derot.chain.state import RegistryState
from derot.chain.types import EpochPhase, EpochRecord
from derot.constants import DST_CERT
from derot.crypto import kd
from derot.crypto import threshold as th
from derot.crypto.bls import G1, G2, PointDecodeError
from derot.crypto.dkg import (
    Committee,
    DkgConfig,
    DkgFailed,
    DkgMessageRejected,
    DkgSession,
    Identity,
    Member,
    PreviousEpoch,
    PublicKeys,
    RejectReason,
)
from derot.crypto.dkg.messages import Digest, MessageKind
from derot.net import status, tls
from derot.net.gateway import collect
from derot.net.peers import Endpoint, PeerInfo, PeerPool, fetch_peer_certificate
from derot.net.status import Refusal, refusal_from_rpc_error
from derot.service import faults, issuance
from derot.service.config import NodeConfig, operator_key
from derot.service.dkg_runner import MAX_SYNC_MESSAGES, DkgRunner, attempt_start, open_session
from derot.service.epoch import EpochKeys
from derot.service.membership import (
    MembershipRefused,
    check_member_policy,
    node_report_data,
    verify_member_evidence,
)
from derot.service.metrics import Metrics
from derot.service.requests import CheckedRequest, RequestChecker
from derot.service.storage import NodeStore

log = logging.getLogger("derot.node")

#: messages buffered per epoch for a DKG this node has not started yet
DKG_BUFFER = 4096
#: digests one DKG sync request may carry (2 per kind and member bounds what a run can hold)
MAX_SYNC_DIGESTS = 4096


class NodeIdentity:
    """The node's keys, unsealed from its store. Nothing here is ever logged."""

    def __init__(self, store: NodeStore):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        self.dkg = Identity(
            Ed25519PrivateKey.from_private_bytes(store.identity("ed25519")),
            X25519PrivateKey.from_private_bytes(store.identity("x25519")),
        )
        self.tls = tls.TlsIdentity(store.identity_public("tls"), store.identity("tls"))

    @property
    def identity_key(self) -> bytes:
        return self.dkg.signing_public

    @property
    def x25519_key(self) -> bytes:
        return self.dkg.box_public


def create_identity(store: NodeStore) -> None:
    """Generate and seal the node's Ed25519, X25519 and TLS keys (``derot node init``)."""
    identity = Identity.generate()
    from cryptography.hazmat.primitives import serialization as ser

    raw = (ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption())
    store.put_identity("ed25519", identity.signing_key.private_bytes(*raw), identity.signing_public)
    store.put_identity("x25519", identity.box_key.private_bytes(*raw), identity.box_public)
    tls_id = tls.generate_identity()
    store.put_identity("tls", tls_id.key_pem, tls_id.cert_pem)


@dataclass
class _Pending:
    """A finished DKG/reshare waiting for the registry to activate its epoch."""

    keys: EpochKeys | None
    reported: bool = False


class NodeService:
    def __init__(self, config: NodeConfig, store: NodeStore, trust: TrustConfig):
        self.config = config
        self.store = store
        self.trust = trust
        self.identity = NodeIdentity(store)
        self.account = Account.from_key(operator_key(config))
        self.metrics = Metrics()
        self.w3 = Web3(Web3.HTTPProvider(config.chain.rpc_url, request_kwargs={"timeout": 10}))
        self.registry = Registry(self.w3, config.chain.registry)
        self.chain_id = self.w3.eth.chain_id
        self.network = network_id(self.chain_id, self.registry.address)
        self.deployment = issuance.Deployment(self.chain_id, self.registry.address)
        self.policy = PolicyEngine.default(replay=store, max_age=config.attest.freshness_window)
        self.checker = RequestChecker(network=self.network, trust=trust, policy=self.policy)
        self.peers = PeerPool(self.identity.tls)
        self.state: RegistryState | None = None
        self.keys: EpochKeys | None = None
        self._pending: dict[int, _Pending] = {}
        self._runners: dict[int, DkgRunner] = {}
        self._dkg_status: dict[int, str] = {}  # epoch -> why its run has not finished (dkg: issue 12)
        self._dkg_buffer: dict[int, deque] = defaultdict(lambda: deque(maxlen=DKG_BUFFER))
        self._peer_certs: dict[bytes, bytes] = {}  # tls key hash -> PEM, for the Peer port's client auth
        self._server_cert_config = None
        self._served_cert_config = None
        self._rotation = 0  # which peers a gateway asks first (round robin)
        self._member_claims: dict[bytes, object] = {}  # evidence hash -> Claims, or the MembershipRefused
        self._evidence_tasks: dict[bytes, asyncio.Task] = {}
        self._evidence_retry: dict[bytes, float] = {}
        self._evidence_slots = asyncio.Semaphore(4)
        self._member_changed = asyncio.Event()
        self._node_policy = PolicyEngine.default()
        self._tasks: list[asyncio.Task] = []
        self._server: grpc.aio.Server | None = None
        self.public_port = 0
        self.peer_port = 0
        self.metrics_port = 0
        self._ready = asyncio.Event()
        self._pb = _proto.load("node_pb2")
        self.faults = faults.parse(config.node.faults)
        if self.faults:
            log.warning("devnet fault injection active", extra={"faults": sorted(self.faults)})
        self.notices = None  # the signed revocation/epoch feed (derot.service.mqtt), when [mqtt].url is set
        if config.mqtt.url:
            from derot.service.mqtt import NoticePublisher

            self.notices = NoticePublisher(self, config.mqtt.url, heartbeat=config.mqtt.heartbeat)
        self._load_active_epoch()

    # ---------------------------------------------------------------------------------------------
    # lifecycle

    def _load_active_epoch(self) -> None:
        record = self.store.active_epoch()
        if record is not None and record.shares is not None:
            self.keys = EpochKeys.load(record.public, record.shares)
            self.metrics.epoch.set(self.keys.epoch)
            log.info("loaded epoch keys", extra={"epoch": self.keys.epoch, "index": self.keys.index})

    async def start(self) -> None:
        untrusted.pin_recursion_limit()
        from derot.net.servicers import add_services

        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", 2 * self.config.limits.max_request_bytes),
                ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ]
        )
        add_services(self._server, self)
        ident = self.identity.tls
        public_creds = grpc.ssl_server_credentials([(ident.key_pem, ident.cert_pem)])
        self.public_port = self._server.add_secure_port(self.config.node.public_listen, public_creds)
        self._server_cert_config = grpc.ssl_server_certificate_configuration(
            [(ident.key_pem, ident.cert_pem)], root_certificates=ident.cert_pem
        )
        self._served_cert_config = self._server_cert_config
        peer_creds = grpc.dynamic_ssl_server_credentials(
            self._server_cert_config, self._peer_cert_config, require_client_authentication=True
        )
        self.peer_port = self._server.add_secure_port(self.config.node.peer_listen, peer_creds)
        await self._server.start()
        await self._update_health()
        if self.config.metrics.listen:
            self.metrics_port = self.metrics.serve(self.config.metrics.listen)
        follower = Follower.connect(
            self.config.chain.rpc_url,
            self.registry.address,
            start_block=self.config.chain.start_block,
            confirmations=self.config.chain.confirmations,
            poll_interval=self.config.chain.poll_interval,
        )
        self._tasks.append(asyncio.create_task(self._follow(follower), name="chain"))
        if self.notices is not None:
            self._tasks.append(self.notices.start())
        log.info(
            "node serving",
            extra={
                "public_port": self.public_port, "peer_port": self.peer_port, "metrics_port": self.metrics_port,
                "operator": self.account.address, "registry": self.registry.address, "version": __version__,
            },
        )

    async def _update_health(self) -> None:
        from derot.net.servicers import set_health

        serving = self.keys is not None and (self.state is None or (
            self.state.committee is not None and self.state.committee.id == self.keys.epoch))
        await set_health(self, serving)

    async def wait_ready(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def stop(self, grace: float = 5.0) -> None:
        """Graceful stop: refuse new calls, let in-flight ones finish (up to ``grace``), close storage."""
        log.info("stopping: finishing in-flight requests", extra={"grace_seconds": grace})
        if self._server is not None:
            await set_health_safely(self, False)
            await self._server.stop(grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.peers.close()
        self.store.close()
        log.info("node stopped")

    # ---------------------------------------------------------------------------------------------
    # following the registry

    async def _follow(self, follower: Follower) -> None:
        async for update in follower.updates():
            try:
                await self._on_state(update.state)
            except Exception:  # a bug in handling one update must not stop following the chain
                log.exception("failed to apply registry update", extra={"block": update.state.block_number})
            if follower.head is not None:
                self.metrics.chain_lag.set(follower.head - update.state.block_number)

    async def _on_state(self, state: RegistryState) -> None:
        self.state = state
        self.metrics.confirmed_block.set(state.block_number)
        await self._refresh_peer_certs(state)
        self._watch_member_evidence(state)
        current = state.committee
        if current is not None and (self.keys is None or self.keys.epoch != current.id):
            self._activate(current)
        pending = state.pending
        if (
            pending is not None
            and pending.phase in (EpochPhase.DKG, EpochPhase.RESHARE)
            and pending.id not in self._runners
            and pending.id not in self._pending
            and self.store.epoch(pending.id) is None
            and self._involved(state, pending)
        ):
            self._start_runner(state, pending)
        if current is not None:
            self._ready.set()
        await self._update_health()
        if self.notices is not None:
            self.notices.on_state(state)

    def _involved(self, state: RegistryState, epoch: EpochRecord) -> bool:
        me = self.account.address
        if epoch.index_of(me):
            return True
        previous = state.epochs.get(epoch.previous) if epoch.phase == EpochPhase.RESHARE else None
        return previous is not None and bool(previous.index_of(me))

    def _activate(self, epoch: EpochRecord) -> None:
        pending = self._pending.pop(epoch.id, None)
        record = self.store.epoch(epoch.id)
        if record is not None and record.shares is not None:
            keys = EpochKeys.load(record.public, record.shares)
            if keys.sig.group_key != epoch.pk_sig or keys.kd.group_key != epoch.pk_kd:
                log.error("registry activated keys this node does not hold", extra={"epoch": epoch.id})
                return
            self.store.activate_epoch(epoch.id)
            self.keys = keys
            log.info("epoch active; older shares erased", extra={"epoch": epoch.id, "index": keys.index})
        else:
            self.store.erase_shares_before(epoch.id)
            self.keys = None
            log.info("epoch active without this node", extra={"epoch": epoch.id, "was_pending": pending is not None})
        self.metrics.epoch.set(self.keys.epoch if self.keys else 0)

    # ---------------------------------------------------------------------------------------------
    # peers

    def peer_info(self, state: RegistryState, epoch: EpochRecord) -> dict[int, PeerInfo]:
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

    async def _refresh_peer_certs(self, state: RegistryState) -> None:
        """Fetch (and pin) the certificate of every registered node not fetched yet."""
        wanted = {n.tls_key_hash: n for n in state.nodes.values() if n.operator.lower() != self.account.address.lower()}
        missing = [n for h, n in wanted.items() if h not in self._peer_certs]
        if not missing and set(self._peer_certs) <= set(wanted):
            return

        async def fetch(node):
            try:
                endpoint = Endpoint.parse(node.endpoint)
                return node.tls_key_hash, await asyncio.to_thread(
                    fetch_peer_certificate, endpoint, node.tls_key_hash, 2.0
                )
            except (OSError, ValueError, tls.PinMismatch) as exc:
                log.debug("peer certificate not fetched yet", extra={"operator": node.operator, "error": str(exc)})
                return None

        results = await asyncio.gather(*(fetch(n) for n in missing))
        certs = {h: pem for h, pem in self._peer_certs.items() if h in wanted}
        certs.update(r for r in results if r is not None)
        if certs != self._peer_certs:
            self._peer_certs = certs
            ident = self.identity.tls
            roots = b"".join(certs.values()) or ident.cert_pem
            self._server_cert_config = grpc.ssl_server_certificate_configuration(
                [(ident.key_pem, ident.cert_pem)], root_certificates=roots
            )

    def _peer_cert_config(self):
        """gRPC calls this before every Peer-port handshake: the pinned client roots if they changed, else None.

        gRPC treats any returned configuration as new and rebuilds the port's TLS context, racing handshakes
        in flight (seen as crashes inside grpc at n = 32), so an unchanged configuration must return None.
        """
        config = self._server_cert_config
        if config is self._served_cert_config:
            return None
        self._served_cert_config = config
        return config

    def caller_operator(self, context) -> str:
        """The registered operator whose pinned TLS key the calling peer presented."""
        certs = context.auth_context().get("x509_pem_cert")
        if not certs or self.state is None:
            raise Refusal(status.NOT_A_MEMBER, "no client certificate")
        key_hash = tls.spki_hash(certs[0])
        for operator, node in self.state.nodes.items():
            if node.tls_key_hash == key_hash:
                return operator
        raise Refusal(status.NOT_A_MEMBER, "the client certificate is not registered")

    def _broadcast(self, state: RegistryState, epochs: list[EpochRecord]):
        """A broadcast function for DKG messages to every other participant of ``epochs``."""
        targets: dict[str, PeerInfo] = {}
        for epoch in epochs:
            for info in self.peer_info(state, epoch).values():
                if info.operator.lower() != self.account.address.lower():
                    targets[info.operator.lower()] = info
        deadline = self.config.dkg.phase_timeout

        async def send(info: PeerInfo, epoch_id: int, data: bytes) -> None:
            pb = self._pb
            started = time.monotonic()
            delay = 0.1
            while time.monotonic() - started < deadline:
                try:
                    stub = await self.peers.stub(info)
                    await stub.SubmitDkgMessage(pb.DkgEnvelope(epoch=epoch_id, message=data), timeout=5)
                    return
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        log.warning("peer refused a DKG message",
                                    extra={"peer": info.index, "reason": refusal_from_rpc_error(exc).reason})
                        return
                    await self.peers.drop(info)
                except (OSError, tls.PinMismatch):
                    pass
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            log.warning("DKG message not delivered", extra={"peer": info.index, "epoch": epoch_id})

        def send_all(data: bytes) -> None:  # --- dkg: relay (issue 12) ---
            for info in targets.values():
                self._tasks.append(asyncio.ensure_future(send(info, epochs[0].id, data)))
            self._tasks[:] = [t for t in self._tasks if not t.done()]

        def broadcast(messages) -> None:
            for message in messages:
                send_all(message.encode())

        async def pull(digests) -> list[bytes]:  # --- dkg: digest sync (issue 12) ---
            pb = self._pb
            request = pb.DkgSyncRequest(epoch=epochs[0].id, held=[
                pb.DkgSyncDigest(kind=int(d.kind), sender=d.sender, body_hash=d.body_hash) for d in digests])

            async def ask(info: PeerInfo) -> list[bytes]:
                try:
                    reply = await self._peer_call(info, "SyncDkg", request)
                except Refusal:
                    return []
                return [bytes(m) for m in reply.messages[:MAX_SYNC_MESSAGES]]

            replies = await asyncio.gather(*(ask(info) for info in targets.values()))
            return [data for reply in replies for data in reply]

        return broadcast, send_all, pull

    # ---------------------------------------------------------------------------------------------
    # DKG / reshare

    def _committee(self, state: RegistryState, epoch: EpochRecord) -> Committee:
        members = []
        for index, operator in enumerate(epoch.members, start=1):
            node = state.nodes.get(operator)
            if node is None:
                raise ValueError(f"epoch {epoch.id} member {operator} is not registered")
            members.append(Member(index, node.identity_key, node.x25519_key))
        return Committee(tuple(members), epoch.threshold)

    async def _previous_keys(self, state: RegistryState, previous: EpochRecord) -> PreviousEpoch:
        """The old committee's public keys: from this node's store if it was a member; otherwise from the old
        members, accepted when ``t_old`` of them give identical keys that match the group keys on-chain."""
        committee = self._committee(state, previous)
        record = self.store.epoch(previous.id)
        if record is not None:
            held = EpochKeys.load_public(record.public)
            return PreviousEpoch(committee, held.sig, held.kd)
        peers = self.peer_info(state, previous)
        request = self._pb.GetEpochKeysRequest(epoch=previous.id)

        async def ask(info: PeerInfo):
            try:
                return await self._peer_call(info, "GetEpochKeys", request)
            except Refusal:
                return None

        votes: dict[bytes, list] = defaultdict(list)
        for reply in await asyncio.gather(*(ask(info) for info in peers.values())):
            if reply is not None and reply.epoch == previous.id:
                votes[reply.SerializeToString(deterministic=True)].append(reply)
        for replies in votes.values():
            if len(replies) < previous.threshold:
                continue
            reply = replies[0]
            try:
                sig = PublicKeys(G2.from_bytes(reply.group_key_sig),
                                 {k.index: G2.from_bytes(k.sig) for k in reply.share_keys})
                kd_keys = PublicKeys(G2.from_bytes(reply.group_key_kd),
                                     {k.index: G2.from_bytes(k.kd) for k in reply.share_keys})
            except PointDecodeError:
                continue
            if sig.group_key == previous.pk_sig and kd_keys.group_key == previous.pk_kd:
                return PreviousEpoch(committee, sig, kd_keys)
        raise Refusal(status.NO_ACTIVE_EPOCH, f"fewer than {previous.threshold} old members agree on the keys "
                                              f"of epoch {previous.id}")

    # --- dkg: restart safety, exclusion with reasons, retries (issue 12); keep this block together ---
    async def _run_attempt(self, state: RegistryState, epoch: EpochRecord, started_at: float, attempt: int):
        """One attempt of the run: resumed from its sealed snapshot after a restart, never dealt twice."""
        config, old_shares = await self._dkg_config(state, epoch)
        config = dataclasses.replace(config, attempt=attempt)
        session_class = faults.CheatingDealer if "dkg_cheat" in self.faults else DkgSession
        session, resumed = open_session(
            config, self.identity.dkg, old_shares, checks_pending=True, session_class=session_class,
            load=lambda: self.store.dkg_state(epoch.id, config.session_id))
        epochs = [epoch] + ([state.epochs[epoch.previous]] if config.is_reshare else [])
        broadcast, relay, pull = self._broadcast(state, epochs)
        runner = DkgRunner(
            session,
            phase_timeout=self.config.dkg.phase_timeout,
            started_at=attempt_start(started_at, self.config.dkg.phase_timeout, attempt),
            broadcast=broadcast,
            relay=relay,
            pull=pull,
            member_checks=lambda decide_by: self._check_members(state, epoch, decide_by),
            persist=lambda blob: self._persist_dkg(epoch.id, session, blob),
            on_phase=lambda phase, seconds: self.metrics.dkg_phase.labels(phase).observe(seconds),
            resumed=resumed,
        )
        self._runners[epoch.id] = runner
        backlog = [m for m in self._dkg_buffer.pop(epoch.id, ())]
        return await runner.run(backlog)

    def _persist_dkg(self, epoch_id: int, session: DkgSession, blob: bytes) -> None:
        self.store.put_dkg_state(epoch_id, session.config.session_id, blob)
        if "dkg_crash_after_deal" in self.faults and session.has_dealt:
            marker = Path(self.store.path).parent / faults.CRASH_MARKER
            if not marker.exists():
                marker.touch()
                log.error("fault dkg_crash_after_deal: exiting after persisting the deal, before sending it")
                os._exit(70)

    async def _run_with_retries(self, state: RegistryState, epoch: EpochRecord):
        started_at = await self._block_time(epoch.started_block)
        attempt = 0
        while True:
            begin = attempt_start(started_at, self.config.dkg.phase_timeout, attempt)
            if begin > time.time():
                await asyncio.sleep(begin - time.time())
            try:
                return await self._run_attempt(state, epoch, started_at, attempt)
            except DkgFailed as exc:
                self.metrics.dkg_runs.labels("failed").inc()
                log.error("dkg failed",  # retried below under a new session id
                          extra={"epoch": epoch.id, "attempt": attempt, "retrying": True, "reason": exc.reason.value,
                                 "detail": exc.detail})
                self._dkg_status[epoch.id] = f"attempt {attempt} failed: {exc.reason.value}: {exc.detail}"
                attempt += 1

    def _start_runner(self, state: RegistryState, epoch: EpochRecord) -> None:
        async def run() -> None:
            try:
                result = await self._run_with_retries(state, epoch)
            except (MembershipRefused, Refusal) as exc:
                self.metrics.dkg_runs.labels("refused").inc()
                log.error("not taking part in the dkg", extra={"epoch": epoch.id, "reason": exc.reason,
                                                               "detail": getattr(exc, "detail", str(exc))})
                return
            except Exception:
                self.metrics.dkg_runs.labels("error").inc()
                log.exception("dkg crashed", extra={"epoch": epoch.id})
                return
            self.metrics.dkg_runs.labels("ok").inc()
            keys = EpochKeys.from_result(result) if result.shares is not None else None
            if keys is not None:
                self.store.save_epoch(epoch.id, keys.public_record(), keys.secret_record())
            self._pending[epoch.id] = _Pending(keys)
            if epoch.index_of(self.account.address):
                await self._report(epoch.id, result)

        self._runners[epoch.id] = None  # reserve: a later update must not start a second runner
        self._tasks.append(asyncio.create_task(run(), name=f"dkg-{epoch.id}"))

    async def _block_time(self, number: int) -> float:
        """When the run began, on this node's clock: the starting block's timestamp, corrected by how far the
        chain's clock is from ours now (a devnet's clock runs ahead after timelock warps; a real chain's
        lags by up to a block), so every member gets the same deadlines whenever it starts its session."""
        try:
            started, latest = await asyncio.to_thread(
                lambda: (self.w3.eth.get_block(number)["timestamp"], self.w3.eth.get_block("latest")["timestamp"])
            )
        except Exception:  # the RPC is down: fall back to our own clock
            return time.time()
        now = time.time()
        skew = latest - now
        return min(started - skew, now) if skew > 0 else min(started, now)

    # ---------------------------------------------------------------------------------------------
    # membership evidence: verified in the background once per registered evidence, checked per epoch

    def _watch_member_evidence(self, state: RegistryState) -> None:
        """Start verifying the evidence of every registered node not verified yet (bounded, with retries)."""
        for operator, node in state.nodes.items():
            if operator.lower() == self.account.address.lower() or node.evidence_hash in self._member_claims:
                continue
            if node.evidence_hash in self._evidence_tasks or time.monotonic() < self._evidence_retry.get(
                    node.evidence_hash, 0):
                continue
            try:
                endpoint = Endpoint.parse(node.endpoint)
            except ValueError:
                continue
            info = PeerInfo(0, operator, endpoint, node.tls_key_hash)
            task = asyncio.create_task(self._verify_member(info, node.evidence_hash))
            self._evidence_tasks[node.evidence_hash] = task
            self._tasks.append(task)

    async def _verify_member(self, info: PeerInfo, evidence_hash: bytes) -> None:
        try:
            async with self._evidence_slots:
                evidence = await self._fetch_evidence(info)
                if evidence is None:
                    self._evidence_retry[evidence_hash] = time.monotonic() + 2.0
                    return
                try:
                    self._member_claims[evidence_hash] = verify_member_evidence(
                        evidence, registered_hash=evidence_hash, trust=self.trust, now=int(time.time()))
                except MembershipRefused as exc:
                    self._member_claims[evidence_hash] = exc
                    log.warning("member evidence refused", extra={"operator": info.operator, "reason": exc.reason,
                                                                  "detail": exc.detail})
        finally:
            self._evidence_tasks.pop(evidence_hash, None)
            self._member_changed.set()

    async def _check_members(self, state: RegistryState, epoch: EpochRecord, deadline: float) -> dict[int, str]:
        """The members this node refuses to deal to, with the reason: their registered TEE evidence fails the
        node-membership policy, or they had not shown it by ``deadline`` (just before the announce phase
        ends). Shares are never dealt to an unattested member; the run goes on without it (empty box)."""
        members = {i: p for i, p in self.peer_info(state, epoch).items()
                   if p.operator.lower() != self.account.address.lower()}
        while True:
            missing = [i for i, p in members.items() if state.nodes[p.operator].evidence_hash not in self._member_claims]
            if not missing:
                break
            if time.time() >= deadline:
                break
            self._watch_member_evidence(state)
            self._member_changed.clear()
            try:
                await asyncio.wait_for(self._member_changed.wait(), timeout=min(1.0, max(deadline - time.time(), 0.01)))
            except asyncio.TimeoutError:
                pass
        now = int(time.time())
        refused: dict[int, str] = {}
        for index, info in members.items():
            node = state.nodes[info.operator]
            claims = self._member_claims.get(node.evidence_hash)
            try:
                if claims is None:
                    raise MembershipRefused("evidence_unavailable", "did not show its TEE evidence in time")
                if isinstance(claims, MembershipRefused):
                    raise claims
                expected = node_report_data(self.network, info.operator, node.identity_key, node.x25519_key,
                                            node.tls_key_hash)
                check_member_policy(claims, expected_report_data=expected, policy=self._node_policy,
                                    snapshot=state.snapshot, now=now)
            except MembershipRefused as exc:
                refused[index] = f"{exc.reason}: {exc.detail}"
                log.warning("not dealing to a member", extra={"epoch": epoch.id, "member": index,
                                                                "operator": info.operator, "reason": exc.reason})
        return refused

    async def _fetch_evidence(self, info: PeerInfo) -> bytes | None:
        for _attempt in range(3):
            try:
                stub = await self.peers.stub(info)
                reply = await stub.GetNodeEvidence(self._pb.GetNodeEvidenceRequest(), timeout=5)
                return bytes(reply.evidence)
            except grpc.aio.AioRpcError:
                await self.peers.drop(info)
            except (OSError, tls.PinMismatch):
                pass
            await asyncio.sleep(0.5)
        return None

    async def _dkg_config(self, state: RegistryState, epoch: EpochRecord):
        committee = self._committee(state, epoch)
        if epoch.phase != EpochPhase.RESHARE:
            return DkgConfig(self.network, epoch.id, committee), None
        previous_record = state.epochs[epoch.previous]
        previous = await self._previous_keys(state, previous_record)
        old_shares = None
        if previous_record.index_of(self.account.address):
            record = self.store.epoch(previous_record.id)
            if record is None or record.shares is None:
                raise Refusal(status.NO_ACTIVE_EPOCH, f"this node holds no shares of epoch {previous_record.id}")
            old_shares = EpochKeys.load(record.public, record.shares).shares
        return DkgConfig(self.network, epoch.id, committee, previous), old_shares

    async def _report(self, epoch_id: int, result) -> None:
        delay = 1.0
        for _attempt in range(8):
            try:
                await asyncio.to_thread(
                    self.registry.report_epoch, self.account, epoch_id, result.sig.group_key, result.kd.group_key,
                    result.transcript_hash,
                )
                log.info("reported epoch result", extra={"epoch": epoch_id, "transcript": result.transcript_hash})
                return
            except Exception as exc:  # RPC down or a revert; retried, then logged
                log.warning("epoch report failed", extra={"epoch": epoch_id, "error": str(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 15)

    def sync_dkg(self, epoch: int, held) -> list[bytes]:
        """The messages of ``epoch``'s run this node holds and a peer (holding ``held``) lacks."""
        runner = self._runners.get(epoch)
        if runner is None:
            return []
        if len(held) > MAX_SYNC_DIGESTS:
            raise Refusal(status.REQUEST_TOO_LARGE, f"{len(held)} digests, at most {MAX_SYNC_DIGESTS}")
        digests = [Digest(MessageKind(d.kind), d.sender, bytes(d.body_hash)) for d in held
                   if d.kind in MessageKind._value2member_map_]
        return runner.serve_sync(digests)

    def receive_dkg(self, epoch: int, data: bytes) -> None:
        runner = self._runners.get(epoch)
        if runner is None:
            self._dkg_buffer[epoch].append(bytes(data))
            return
        try:
            runner.receive(data)
        except DkgMessageRejected as exc:
            if exc.reason is not RejectReason.WRONG_SESSION:
                raise
            self._dkg_buffer[epoch].append(bytes(data))  # maybe the next attempt's: kept for its runner

    # ---------------------------------------------------------------------------------------------
    # serving apps (gateway)

    def _serving(self) -> tuple[RegistryState, EpochKeys]:
        if self.state is None or self.keys is None or self.state.committee is None:
            raise Refusal(status.NO_ACTIVE_EPOCH, "this node serves no active epoch yet")
        if self.state.committee.id != self.keys.epoch:
            raise Refusal(status.NO_ACTIVE_EPOCH, "this node is not in the active committee")
        return self.state, self.keys

    def _check(self, request, purpose: str) -> tuple[RegistryState, EpochKeys, CheckedRequest]:
        state, keys = self._serving()
        try:
            checked = self.checker.check(request, state.snapshot, purpose=purpose)
        except Refusal as refusal:
            platform = "unknown"
            self.metrics.evidence.labels(platform, refusal.reason).inc()
            raise
        self.metrics.evidence.labels(checked.claims.platform.name.lower(), "allowed").inc()
        return state, keys, checked

    async def derive_key(self, request):
        state, keys, checked = self._check(request.request, "derive")
        hashed = kd.kd_point(checked.app_id, checked.key_version, checked.context)
        pb = self._pb

        def first(answers):
            combined = kd.combine_encrypted(answers)
            return combined if kd.verify_encrypted(combined, keys.kd.group_key, hashed, checked.tpk) else None

        def every(answers):
            combined = kd.combine_verified(answers, keys.threshold, keys.kd.group_key, keys.kd.share_keys, hashed,
                                           checked.tpk)
            return combined.key, combined.used, combined.bad

        collected = await self._fan_out(
            state, keys,
            own=lambda: issuance.derive_share(keys, checked),
            method="DeriveShare", message=pb.DeriveShareRequest(request=request.request, epoch=keys.epoch),
            decode=lambda reply: kd.EncryptedKey.decode(reply.encrypted_share),
            first=first, every=every,
        )
        log.info("key derived", extra={
            "app_id": checked.app_id, "key_version": checked.key_version, "platform": checked.claims.platform.name,
            "measurement": checked.claims.measurement_digest, "contributors": sorted(collected.used),
            "failures": dict(collected.failures), "ms": round(collected.seconds * 1000, 1)})
        return pb.DeriveKeyResponse(
            epoch=keys.epoch,
            encrypted_key=collected.result.encode(),
            contributors=sorted(collected.used),
            excluded=_invalid(collected),
        )

    async def issue_certificate(self, request):
        state, keys, checked = self._check(request.request, "certify")
        limits = self.config.limits
        lifetime = request.lifetime_seconds or limits.certificate_lifetime
        if not 0 < lifetime <= limits.max_certificate_lifetime:
            raise Refusal(status.MALFORMED_REQUEST, f"lifetime must be 1..{limits.max_certificate_lifetime} s",
                          metadata={"field": "lifetime_seconds"})
        cert = issuance.build_certificate(
            checked, self.deployment, keys.epoch, now=int(time.time()), lifetime=lifetime,
            policy_block=state.block_number,
        )
        digest = cert.digest
        cert_bytes = cert.encode()
        pb = self._pb

        def first(answers):
            signature = th.combine(answers)
            return signature if th.verify(keys.sig.group_key, digest, signature, DST_CERT) else None

        def every(answers):
            combined = th.combine_verified(answers, keys.threshold, keys.sig.group_key, keys.sig.share_keys, digest,
                                           DST_CERT)
            return combined.signature, combined.used, combined.bad

        collected = await self._fan_out(
            state, keys,
            own=lambda: issuance.partial_sign(keys, cert),
            method="PartialSign", message=pb.PartialSignRequest(request=request.request, certificate=cert_bytes),
            decode=lambda reply: G1.from_bytes(reply.partial_signature),
            first=first, every=every,
        )
        signature = collected.result
        log.info("certificate issued", extra={
            "serial": cert.serial, "app_id": cert.app_id, "platform": checked.claims.platform.name,
            "key_type": cert.key_type, "not_after": cert.not_after, "contributors": sorted(collected.used),
            "failures": dict(collected.failures), "ms": round(collected.seconds * 1000, 1)})
        self.store.log_certificate(cert.serial, keys.epoch, cert.app_id, cert.not_after, cert_bytes,
                                   signature.to_bytes())
        return pb.IssueCertificateResponse(
            certificate=cert_bytes,
            signature=signature.to_bytes(),
            signature_eip2537=signature_bytes(signature),
            epoch=keys.epoch,
            contributors=sorted(collected.used),
            excluded=_invalid(collected),
        )

    async def _fan_out(self, state, keys, *, own, method, message, decode, first, every):
        """Ask every committee member (this node answers ``own()`` itself) and combine, as a gateway."""

        async def mine():
            return own()

        def remote(info: PeerInfo):
            async def call():
                reply = await self._peer_call(info, method, message)
                try:
                    return decode(reply)
                except PointDecodeError as exc:
                    self.metrics.shares.labels(str(info.index), "malformed").inc()
                    raise Refusal("invalid_share", str(exc)) from None
            return call

        peers = [i for i in self.peer_info(state, state.committee) if i != keys.index]
        peer_info = self.peer_info(state, state.committee)
        self._rotation += 1
        shift = self._rotation % max(1, len(peers))
        order = peers[shift:] + peers[:shift]  # round robin: spread the eager calls over the committee
        calls = {keys.index: mine}
        calls.update({i: remote(peer_info[i]) for i in order})
        collected = await collect(calls, keys.threshold, first, every, deadline=self.config.limits.peer_deadline,
                                  eager=keys.threshold + self.config.limits.extra_peers,
                                  hedge_after=self.config.limits.hedge_after)
        self._count_shares(collected)
        return collected

    def _count_shares(self, collected) -> None:
        for index in collected.used:
            self.metrics.shares.labels(str(index), "accepted").inc()
        for index, reason in collected.failures.items():
            self.metrics.shares.labels(str(index), reason).inc()

    async def _peer_call(self, info: PeerInfo, method: str, message):
        try:
            stub = await self.peers.stub(info)
        except (OSError, tls.PinMismatch) as exc:
            raise Refusal(status.UNAVAILABLE, f"peer {info.index}: {exc}") from None
        try:
            return await getattr(stub, method)(message, timeout=self.config.limits.peer_deadline)
        except grpc.aio.AioRpcError as exc:
            refusal = refusal_from_rpc_error(exc)
            if refusal.reason == status.UNAVAILABLE:
                await self.peers.drop(info)
            raise refusal from None

    # ---------------------------------------------------------------------------------------------
    # serving peers (contributor)

    def contribute_share(self, request, caller: str):
        state, keys, checked = self._check(request.request, "derive")
        if request.epoch != keys.epoch:
            raise Refusal(status.WRONG_EPOCH, f"asked for epoch {request.epoch}, this node serves {keys.epoch}")
        share = issuance.derive_share(keys, checked)
        if "corrupt_shares" in self.faults:
            share = kd.EncryptedKey(share.c1, share.c2, faults.corrupt_point(share.c3))
        return self._pb.DeriveShareResponse(index=keys.index, epoch=keys.epoch, encrypted_share=share.encode())

    def contribute_signature(self, request, caller: str):
        state, keys, checked = self._check(request.request, "certify")
        cert = issuance.check_proposed_certificate(
            request.certificate, checked, self.deployment, keys.epoch, now=int(time.time()),
            max_lifetime=self.config.limits.max_certificate_lifetime, confirmed_block=state.block_number,
        )
        partial = issuance.partial_sign(keys, cert)
        if "corrupt_shares" in self.faults:
            partial = faults.corrupt_point(partial)
        return self._pb.PartialSignResponse(index=keys.index, epoch=keys.epoch,
                                            partial_signature=partial.to_bytes())

    async def sign_notice(self, request, caller: str):
        """Peer SignNotice: a partial signature over a feed notice this node rebuilds identically."""
        from derot.service.mqtt import contribute_notice_signature

        return await contribute_notice_signature(self, request)

    def epoch_keys(self, request):
        record = self.store.epoch(request.epoch)
        if record is None or record.status == "pending":
            raise Refusal(status.WRONG_EPOCH, f"this node holds no keys of epoch {request.epoch}")
        keys = EpochKeys.load_public(record.public)
        pb = self._pb
        return pb.EpochKeys(
            epoch=request.epoch, threshold=keys.threshold, group_key_sig=keys.sig.group_key.to_bytes(),
            group_key_kd=keys.kd.group_key.to_bytes(),
            share_keys=[pb.ShareKeys(index=i, sig=keys.sig.share_keys[i].to_bytes(), kd=keys.kd.share_keys[i].to_bytes())
                        for i in keys.sig.share_keys],
        )

    def node_evidence(self):
        evidence = self.store.meta("node_evidence")
        if evidence is None:
            raise Refusal(status.NOT_A_MEMBER, "this node has no registered evidence")
        return self._pb.NodeEvidence(evidence=evidence, timestamp=int(time.time()))

    # ---------------------------------------------------------------------------------------------
    # public information

    def network_info(self):
        state = self.state
        pb = self._pb
        info = pb.NetworkInfo(chain_id=self.chain_id, registry=self.registry.address, version=__version__)
        if state is None:
            return info
        info.confirmed_block = state.block_number
        epoch = state.committee
        if epoch is not None:
            info.epoch, info.threshold = epoch.id, epoch.threshold
            info.group_key_sig = epoch.pk_sig.to_bytes()
            info.group_key_kd = epoch.pk_kd.to_bytes()
            for index, operator in enumerate(epoch.members, start=1):
                node = state.nodes.get(operator)
                if node is not None:
                    info.members.append(pb.Member(index=index, operator=operator, endpoint=node.endpoint,
                                                  tls_key_hash=node.tls_key_hash, identity_key=node.identity_key))
        if self.keys is not None:
            info.node_index = self.keys.index
        return info

    def certificate_status(self, request):
        state = self.state
        if state is None:
            raise Refusal(status.NO_ACTIVE_EPOCH, "this node has not read the registry yet")
        sig = bytes(request.signature)
        if len(sig) == G1.SIZE:
            try:
                sig = G1.from_bytes(sig, allow_identity=True).to_eip2537()
            except PointDecodeError:
                sig = b""
        verdict = state.verify_certificate(bytes(request.certificate), sig, now=int(time.time()))
        return self._pb.GetStatusResponse(valid=verdict.ok, reason=verdict.reason.name.lower(),
                                          confirmed_block=state.block_number)


def _invalid(collected) -> list[int]:
    """Members whose shares failed verification in a fan-out."""
    return sorted(i for i, reason in collected.failures.items() if reason == "invalid_share")


async def set_health_safely(node, serving: bool) -> None:
    from derot.net.servicers import set_health

    try:
        await set_health(node, serving)
    except Exception:  # reporting health must never block a shutdown
        log.debug("health update failed", exc_info=True)


def make_node_evidence(config: NodeConfig, network: bytes, operator: str, identity_key: bytes, x25519_key: bytes,
                       tls_key_hash: bytes) -> Evidence:
    """This node's membership evidence from the TEE named by ``[attest].node_tee``."""
    report_data = node_report_data(network, operator, identity_key, x25519_key, tls_key_hash)
    source = config.attest.node_tee
    if source.startswith("devnet:"):
        from derot.app.tee.devnet import DevnetDevice
        from derot.attest.devnet import NODE_FMSPC, node_measurements
        from derot.constants import Platform

        platform = Platform.TDX if source == "devnet:tdx" else Platform.SEV_SNP
        extra = {"fmspc": NODE_FMSPC} if platform == Platform.TDX else {}
        device = DevnetDevice(config.attest.devnet_roots, platform, node_measurements(platform), **extra)
        return device.evidence(report_data)
    if source in ("tdx", "snp"):
        from derot.app.tee import detect_device

        return detect_device().evidence(report_data)
    raise ValueError("[attest].node_tee must be devnet:tdx, devnet:snp, tdx or snp")
