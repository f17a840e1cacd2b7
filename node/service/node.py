"""The node process: wiring and lifecycle.

:class:`NodeService` builds the node's components and runs them on one asyncio loop:

- the chain task follows ``DerotRegistry`` at ``head − confirmations``; every update replaces the
  :class:`~derot.service.view.NodeView`'s state, refreshes the Peer port's TLS pins
  (:class:`~derot.service.peering.Peering`), starts verifying new registrants' evidence
  (:class:`~derot.service.member_evidence.MemberEvidence`) and lets the
  :class:`~derot.service.orchestrator.EpochOrchestrator` activate epochs and run DKGs/reshares;
- the gRPC server listens on two ports: RootOfTrust (TLS) for apps, answered by the
  :class:`~derot.service.gateway.Gateway`; Peer (mutual TLS, client certificates pinned by the registry) for
  nodes, answered by the :class:`~derot.service.contributor.Contributor`. Servicers reach the node only through
  :class:`~derot.service.api.ServiceApi` (a :class:`derot.net.api.NodeApi`);
- the notice publisher (when ``[mqtt].url`` is set) keeps the signed revocation/epoch feed current.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from eth_account import Account

from derot import __version__, untrusted
from derot.limits import LIMITS
from derot.attest.binding import network_id
from derot.attest.evidence import Evidence
from derot.attest.policy import PolicyEngine
from derot.attest.trust import TrustConfig
from derot.chain import quorum
from derot.chain.client import ChainClient
from derot.chain.finality import EraseGuard, FinalityMode, FinalityRule, ShareRetirement
from derot.chain.follower import Follower
from derot.chain.freshness import FreshnessClock
from derot.chain.registry import Registry
from derot.chain.state import RegistryState
from derot.crypto.dkg import Identity
from derot.net import tls
from derot.net.malformed import MalformedRequests
from derot.net.peers import parse_routes
from derot.net.servicers import Health, add_services
from derot.service import faults, issuance
from derot.service.api import ServiceApi
from derot.service.config import NodeConfig, operator_key
from derot.service.contributor import Contributor
from derot.service.gateway import Gateway
from derot.service.member_evidence import MemberEvidence
from derot.service.membership import node_report_data
from derot.service.metrics import Metrics
from derot.service.notice_source import NoticeSource
from derot.service.orchestrator import EpochOrchestrator
from derot.service.peering import Peering
from derot.service.requests import RequestChecker
from derot.service.signing import FanOut
from derot.service.storage import NodeStore
from derot.service.tasks import TaskSet
from derot.service.verification import EvidenceVerifier
from derot.service.view import Admission, NodeView

log = logging.getLogger("derot.node")


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


def server_options(max_request_bytes: int) -> list[tuple[str, int]]:
    """gRPC server options: message sizes, and what grpcio lets a server bound per connection. A TLS handshake
    must finish within ``LIMITS.handshake_timeout`` (grpc's default is 120 s, so half-open connections held a
    descriptor that long), and a connection carries at most ``LIMITS.max_streams_per_connection`` concurrent
    calls. grpcio has no per-source connection limit: that belongs to the host firewall or a proxy."""
    return [
        ("grpc.so_reuseport", 0),  # a port in use is an error, never a port shared with another process
        ("grpc.max_receive_message_length", 2 * max_request_bytes),
        ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ("grpc.server_handshake_timeout_ms", int(LIMITS.handshake_timeout * 1000)),
        ("grpc.max_concurrent_streams", LIMITS.max_streams_per_connection),
        ("grpc.max_connection_idle_ms", int(LIMITS.connection_idle * 1000)),
    ]


class NodeService:
    """Wiring and lifecycle: ``start()``, ``wait_ready()``, ``stop()``; ``public_port``/``peer_port``/
    ``metrics_port`` once started."""

    def __init__(self, config: NodeConfig, store: NodeStore, trust: TrustConfig):
        self.config, self.store = config, store
        self.identity = NodeIdentity(store)
        self.account = Account.from_key(operator_key(config))
        self.metrics = Metrics()
        # every chain read needs [chain].rpc_quorum of the configured endpoints to agree (docs/chain-trust.md)
        self.w3: ChainClient = quorum.connect(config.rpc_endpoints, config.chain.rpc_quorum, timeout=10)
        self.registry = Registry(self.w3, config.chain.registry)
        self.chain_id = self.w3.eth.chain_id
        self.network = network_id(self.chain_id, self.registry.address)
        deployment = issuance.Deployment(self.chain_id, self.registry.address)
        policy = PolicyEngine.default(replay=store, max_age=config.attest.freshness_window)
        active_faults = faults.parse(config.node.faults)
        if active_faults:
            log.warning("devnet fault injection active", extra={"faults": sorted(active_faults)})
        limits = config.limits

        self.view = NodeView(freshness=FreshnessClock(config.chain.max_staleness))
        finality = FinalityRule(FinalityMode(config.chain.finality), config.chain.finality_depth)
        retirement = ShareRetirement(EraseGuard(self.registry, finality, self.account.address,
                                                deploy_block=config.chain.start_block), store)
        self.tasks = TaskSet()
        self.peering = Peering(self.identity.tls, self.account.address, peer_deadline=limits.peer_deadline,
                               routes=parse_routes(config.node.peer_routes), metrics=self.metrics,
                               close_mid_call="close_channel_mid_call" in active_faults)
        trust.collateral.fetch_on_get = False  # collateral is fetched before verification, off the loop
        self.verifier = EvidenceVerifier(trust, workers=LIMITS.verify_workers,
                                         fetch_workers=LIMITS.collateral_fetch_workers)
        admission = Admission(self.view, RequestChecker(network=self.network, trust=trust, policy=policy),
                              self.verifier, self.metrics)
        fanout = FanOut(self.peering, self.metrics, limits)
        self.evidence = MemberEvidence(self.peering, self.verifier, self.network, self.account.address, self.tasks,
                                       self.metrics)
        self.epochs = EpochOrchestrator(
            view=self.view, store=store, peering=self.peering, evidence=self.evidence, registry=self.registry,
            w3=self.w3, account=self.account, network=self.network, identity=self.identity.dkg,
            metrics=self.metrics, phase_timeout=config.dkg.phase_timeout, faults_active=active_faults,
            tasks=self.tasks, retirement=retirement,
        )
        notice_source = NoticeSource(self.registry, self.w3, chain_id=self.chain_id,
                                     start_block=config.chain.start_block, confirmations=config.chain.confirmations)
        self.api = ServiceApi(
            limits=limits, metrics=self.metrics, view=self.view,
            gateway=Gateway(self.view, admission, fanout, store, deployment, limits),
            contributor=Contributor(self.view, admission, notice_source, store, deployment, limits, active_faults),
            epochs=self.epochs, chain_id=self.chain_id, registry=self.registry.address,
        )
        self.notices = None  # the signed revocation/epoch feed (derot.service.mqtt), when [mqtt].url is set
        if config.mqtt.url:
            from derot.service.mqtt import NoticePublisher

            self.notices = NoticePublisher(
                self.view, fanout, chain_id=self.chain_id, registry=self.registry.address,
                metrics_registry=self.metrics.registry, url=config.mqtt.url, heartbeat=config.mqtt.heartbeat)
        self._server: grpc.aio.Server | None = None
        self._health: Health | None = None
        self._ready = asyncio.Event()
        self.public_port = self.peer_port = self.metrics_port = 0
        self.epochs.load_active()

    async def start(self) -> None:
        untrusted.pin_recursion_limit()
        self._server = grpc.aio.server(options=server_options(self.config.limits.max_request_bytes))
        self._health = add_services(MalformedRequests(self._server), self.api)
        ident = self.identity.tls
        public_creds = grpc.ssl_server_credentials([(ident.key_pem, ident.cert_pem)])
        self.public_port = self._server.add_secure_port(self.config.node.public_listen, public_creds)
        self.peer_port = self._server.add_secure_port(self.config.node.peer_listen,
                                                      self.peering.server_credentials())
        await self._server.start()
        await self._health.set_serving(self.view.healthy)
        if self.config.metrics.listen:
            self.metrics_port = self.metrics.serve(self.config.metrics.listen)
        follower = Follower.connect(
            self.config.rpc_endpoints,
            self.registry.address,
            quorum=self.config.chain.rpc_quorum,
            start_block=self.config.chain.start_block,
            confirmations=self.config.chain.confirmations,
            poll_interval=self.config.chain.poll_interval,
        )
        self.tasks.spawn(self._follow(follower), name="chain")
        self.tasks.spawn(self._watch_staleness(follower), name="chain-staleness")
        if self.config.attest.node_tee in ("tdx", "snp"):
            self.tasks.spawn(self._watch_tee(), name="tee-status")
        elif self.config.attest.node_tee.startswith("devnet:"):  # a devnet TEE always attests (gauges start at 0)
            self.metrics.tee_available.set(1)
        if self.notices is not None:
            self.tasks.add(self.notices.start())
        log.info(
            "node serving",
            extra={
                "public_port": self.public_port, "peer_port": self.peer_port, "metrics_port": self.metrics_port,
                "operator": self.account.address, "registry": self.registry.address, "version": __version__,
            },
        )

    async def wait_ready(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def stop(self, grace: float = 5.0) -> None:
        """Graceful stop: refuse new calls, let in-flight ones finish (up to ``grace``), close storage."""
        log.info("stopping: finishing in-flight requests", extra={"grace_seconds": grace})
        if self._server is not None:
            try:
                await self._health.set_serving(False)
            except Exception:  # reporting health must never block a shutdown
                log.debug("health update failed", exc_info=True)
            await self._server.stop(grace)
        await self.tasks.cancel_all()
        await self.peering.close()
        self.verifier.close()
        self.store.close()
        log.info("node stopped")

    async def _follow(self, follower: Follower) -> None:
        async for update in follower.updates():
            try:
                await self._on_state(update.state)
            except Exception:  # a bug in handling one update must not stop following the chain
                log.exception("failed to apply registry update", extra={"block": update.state.block_number})
            if follower.head is not None:
                self.metrics.chain_lag.set(follower.head - update.state.block_number)

    async def _watch_staleness(self, follower: Follower, period: float = 1.0) -> None:
        """Lag on the wall clock, every ``period`` s whether or not the RPC answers; health follows it, so a
        hung, frozen or lying-about-its-head RPC turns the node NOT_SERVING after [chain].max_staleness, and
        endpoints that disagree make it refuse with chain_unverified."""
        serving = None
        while True:
            self.view.freshness.unverified = follower.last_reason == "chain_unverified"
            status = self.view.freshness.status()
            if status.lag_seconds is not None:
                self.metrics.chain_lag_seconds.set(status.lag_seconds)
            healthy = self.view.healthy
            if healthy != serving and self._health is not None:
                if not healthy and status.stale and status.lag_seconds is not None:
                    refusal = "chain_unverified" if self.view.freshness.unverified else "chain_stale"
                    log.warning(f"chain view stale: refusing with {refusal}", extra={
                        "lag_seconds": round(status.lag_seconds), "max_staleness": status.max_staleness,
                        "follower_error": follower.last_error})
                await self._health.set_serving(healthy)
                serving = healthy
            await asyncio.sleep(period)

    async def _watch_tee(self, period: float = 5.0) -> None:
        """This node's own TEE (:mod:`derot.service.tee_watch`): ``derot_tee_attestation_available`` and the
        ``derot.v1.Tee`` health service, every ``period`` s; an unavailable TEE is logged once, by name."""
        from derot.service.tee_watch import TeeWatch

        watch = TeeWatch(self.config.attest.device_options())
        while True:
            await watch.publish(self.metrics.tee_available, self._health)
            await asyncio.sleep(period)

    async def _on_state(self, state: RegistryState) -> None:
        self.view.state = state
        self.view.freshness.observe(state.block_number, state.snapshot.block_timestamp)
        self.metrics.confirmed_block.set(state.block_number)
        self.peering.on_state(state)  # never waits on peers: new pins are fetched in the background
        self.evidence.watch(state)
        self.epochs.on_state(state)
        if state.committee is not None:
            self._ready.set()
        await self._health.set_serving(self.view.healthy)
        if self.notices is not None:
            self.notices.on_state(state)


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

        return detect_device(**config.attest.device_options()).evidence(report_data)
    raise ValueError("[attest].node_tee must be devnet:tdx, devnet:snp, tdx or snp")
