"""The node's :class:`~derot.net.api.NodeApi`: the servicers' one entry point, routing each call to the
component that answers it (gateway, contributor, epoch orchestrator, peering)."""

from __future__ import annotations

from derot.service.config import LimitsSection
from derot.service.contributor import Contributor
from derot.service.gateway import Gateway
from derot.service.metrics import Metrics
from derot.service.orchestrator import EpochOrchestrator
from derot.service.peering import Peering
from derot.service.view import NodeView


class ServiceApi:
    """Implements :class:`derot.net.api.NodeApi`."""

    def __init__(self, *, limits: LimitsSection, metrics: Metrics, view: NodeView, gateway: Gateway,
                 contributor: Contributor, epochs: EpochOrchestrator, chain_id: int, registry: str):
        self.limits, self.metrics = limits, metrics
        self._view, self._gateway, self._contributor, self._epochs = view, gateway, contributor, epochs
        self._chain_id, self._registry = chain_id, registry

    # RootOfTrust
    def network_info(self):
        return self._gateway.network_info(self._chain_id, self._registry)

    async def derive_key(self, request, source: str):
        return await self._gateway.derive_key(request, source)

    async def issue_certificate(self, request, source: str):
        return await self._gateway.issue_certificate(request, source)

    def certificate_status(self, request):
        return self._gateway.certificate_status(request)

    # Peer: every method checks the caller against the current state first
    def caller_operator(self, context) -> str:
        return Peering.caller_operator(context, self._view.state)

    def _member(self, caller: str) -> None:
        Peering.authorize(caller, self._view.state)

    def receive_dkg(self, epoch: int, message: bytes, caller: str) -> None:
        self._member(caller)
        self._epochs.receive_dkg(epoch, message, caller)

    def sync_dkg(self, epoch: int, held, caller: str) -> list[bytes]:
        self._member(caller)
        return self._epochs.sync_dkg(epoch, held)

    def node_evidence(self, caller: str):
        Peering.authorize(caller, self._view.state, evidence_only=True)
        return self._contributor.node_evidence()

    def public_node_evidence(self):
        """The same evidence on the public port, for anyone (``derot gov state --members``): it binds only
        public keys, and its hash is on-chain."""
        return self._contributor.node_evidence()

    def epoch_keys(self, request, caller: str):
        self._member(caller)
        return self._contributor.epoch_keys(request)

    async def partial_sign(self, request, caller: str):
        self._member(caller)
        return await self._contributor.partial_sign(request, caller)

    async def derive_share(self, request, caller: str):
        self._member(caller)
        return await self._contributor.derive_share(request, caller)

    async def sign_notice(self, request, caller: str):
        self._member(caller)
        return await self._contributor.sign_notice(request)
