"""Membership evidence of the other registered nodes: verified in the background once per registered
evidence hash, and checked against the node-membership policy for every DKG/reshare.

:meth:`MemberEvidence.watch` starts fetching and verifying the evidence of every registrant not verified
yet (a bounded number at a time, unreachable ones retried later). :meth:`MemberEvidence.check_members` is
the gate of a DKG run: it names the members whose evidence is missing or refused, and the session never deals
them a share (the run goes on without them; docs/dkg.md).
"""

from __future__ import annotations

import asyncio
import logging
import time

from derot.attest.claims import Claims
from derot.attest.policy import PolicyEngine
from derot.chain.state import RegistryState
from derot.chain.types import EpochRecord
from derot.limits import LIMITS
from derot.net.peers import Endpoint, PeerInfo
from derot.service.backoff import BackOff
from derot.service.membership import (
    MembershipRefused,
    check_member_policy,
    node_report_data,
    verify_member_evidence,
)
from derot.service.peering import Peering, peer_info
from derot.service.tasks import TaskSet
from derot.service.verification import EvidenceVerifier

log = logging.getLogger("derot.node")


class MemberEvidence:
    """Verdicts on other registrants' evidence, by evidence hash. ``metrics`` (optional) gets the count of verdicts
    by kind (``derot_member_evidence_checked``), so an operator, and the devnet before its bootstrap vote, can see
    when every registrant has been checked."""

    def __init__(self, peering: Peering, verifier: EvidenceVerifier, network: bytes, operator: str, tasks: TaskSet,
                 metrics=None):
        self.peering, self.verifier, self.network = peering, verifier, network
        self.metrics = metrics
        self.operator = operator.lower()
        self.tasks = tasks
        self.policy = PolicyEngine.default()
        self._claims: dict[bytes, Claims | MembershipRefused] = {}  # evidence hash -> verdict
        self._running: dict[bytes, asyncio.Task] = {}
        self._retry = BackOff(LIMITS.member_evidence_retry, LIMITS.member_evidence_retry_max)  # by evidence hash
        self._state: RegistryState | None = None  # the latest state watched (unreachable registrants retry on it)
        self._slots = asyncio.Semaphore(LIMITS.member_evidence_slots)
        self._changed = asyncio.Event()

    def watch(self, state: RegistryState) -> None:
        """Start verifying the evidence of every registered node not verified yet (bounded). An unreachable
        registrant is retried on its own back-off (doubling from ``member_evidence_retry``), also when no new
        state arrives: the bootstrap committee boots on a chain that may not move until the vote."""
        self._state = state
        for operator, node in state.nodes.items():
            if operator.lower() == self.operator or node.evidence_hash in self._claims:
                continue
            if node.evidence_hash in self._running or not self._retry.due(node.evidence_hash):
                continue
            try:
                endpoint = Endpoint.parse(node.endpoint)
            except ValueError:
                continue
            info = PeerInfo(0, operator, endpoint, node.tls_key_hash)
            self._running[node.evidence_hash] = self.tasks.spawn(self._verify(info, node.evidence_hash),
                                                                 name=f"member-evidence-{operator}")

    async def _verify(self, info: PeerInfo, evidence_hash: bytes) -> None:
        try:
            async with self._slots:
                evidence = await self.peering.fetch_evidence(info)
                if evidence is None:  # unreachable: asked again after its back-off, whether or not a state comes
                    asyncio.get_running_loop().call_later(self._retry.failed(evidence_hash), self._rewatch)
                    return
                try:  # no I/O on the loop: one CPU quote on it, other evidence on the verifier's workers
                    self._claims[evidence_hash] = await self.verifier.verify(
                        verify_member_evidence, evidence, evidence, registered_hash=evidence_hash,
                        trust=self.verifier.trust, now=int(time.time()), source=info.operator)
                    self._count("verified")
                except MembershipRefused as exc:
                    self._claims[evidence_hash] = exc
                    self._count("refused")
                    log.warning("member evidence refused", extra={"operator": info.operator, "reason": exc.reason,
                                                                  "detail": exc.detail})
        finally:
            self._running.pop(evidence_hash, None)
            self._changed.set()

    def _rewatch(self) -> None:
        if self._state is not None:
            self.watch(self._state)

    def _count(self, verdict: str) -> None:
        if self.metrics is not None:
            self.metrics.member_evidence.labels(verdict).inc()

    async def check_members(self, state: RegistryState, epoch: EpochRecord, deadline: float) -> dict[int, str]:
        """The members of ``epoch`` this node refuses to deal to, with the reason: their registered TEE evidence
        fails the node-membership policy, or they had not shown it by ``deadline`` (just before the announce
        phase ends). Shares are never dealt to an unattested member; the run goes on without it (empty box)."""
        members = {i: p for i, p in peer_info(state, epoch).items() if p.operator.lower() != self.operator}
        while True:
            missing = [i for i, p in members.items() if state.nodes[p.operator].evidence_hash not in self._claims]
            if not missing or time.time() >= deadline:
                break
            self.watch(state)
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=min(1.0, max(deadline - time.time(), 0.01)))
            except asyncio.TimeoutError:
                pass
        now = int(time.time())
        refused: dict[int, str] = {}
        for index, info in members.items():
            node = state.nodes[info.operator]
            claims = self._claims.get(node.evidence_hash)
            try:
                if claims is None:
                    raise MembershipRefused("evidence_unavailable", "did not show its TEE evidence in time")
                if isinstance(claims, MembershipRefused):
                    raise claims
                expected = node_report_data(self.network, info.operator, node.identity_key, node.x25519_key,
                                            node.tls_key_hash)
                check_member_policy(claims, expected_report_data=expected, policy=self.policy,
                                    snapshot=state.snapshot, now=now)
            except MembershipRefused as exc:
                refused[index] = f"{exc.reason}: {exc.detail}"
                log.warning("not dealing to a member", extra={"epoch": epoch.id, "member": index,
                                                                "operator": info.operator, "reason": exc.reason})
        return refused
