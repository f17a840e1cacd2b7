"""``derot gov state --members``: which committee members run on a revoked machine, and why.

For every member of the active and the pending epoch: fetch the membership evidence the node registered (public
``GetNodeEvidence``, TLS pinned to the registered key hash), check it is the registered one (hash), verify it
under the given roots, and apply the revocation rule (``NotRevoked``) at the state's block. The verdict is the one
peers reach at the next DKG or reshare: a member whose machine is revoked receives no shares from them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from derot.attest.policy import NotRevoked, PolicyRequest
from derot.attest.trust import TrustConfig
from derot.chain.state import RegistryState
from derot.chain.types import NodeRecord
from derot.service.membership import MembershipRefused, verify_member_evidence


@dataclass(frozen=True)
class MemberMachine:
    """One member's machine verdict. ``status``: ``ok``, ``revoked`` or ``unverified``; ``reason`` a stable code."""

    epoch: int
    index: int
    operator: str
    status: str
    reason: str
    detail: str


def check_member_machines(state: RegistryState, fetch: Callable[[NodeRecord], bytes], trust: TrustConfig,
                          now: int | None = None) -> list[MemberMachine]:
    """The verdict for every member of the active and pending epochs (``fetch`` returns a node's evidence)."""
    now = int(time.time()) if now is None else now
    out: list[MemberMachine] = []
    for epoch in (state.committee, state.pending):
        if epoch is None:
            continue
        for index, operator in enumerate(epoch.members, start=1):
            out.append(_one(state, epoch.id, index, operator, fetch, trust, now))
    return out


def _one(state, epoch_id, index, operator, fetch, trust, now) -> MemberMachine:
    node = state.nodes.get(operator)
    if node is None:
        return MemberMachine(epoch_id, index, operator, "unverified", "node_unknown", "not a registered node")
    try:
        evidence = fetch(node)
    except Exception as exc:  # any transport failure: report it, keep going
        return MemberMachine(epoch_id, index, operator, "unverified", "evidence_unavailable", str(exc)[:200])
    try:
        claims = verify_member_evidence(evidence, registered_hash=node.evidence_hash, trust=trust, now=now)
    except MembershipRefused as exc:
        return MemberMachine(epoch_id, index, operator, "unverified", exc.reason, exc.detail)
    request = PolicyRequest(purpose="node", now=now, expected_report_data=claims.report_data)
    verdict = NotRevoked().check(claims, state.snapshot, request)
    if verdict is not None:
        return MemberMachine(epoch_id, index, operator, "revoked", verdict.code, verdict.detail)
    return MemberMachine(epoch_id, index, operator, "ok", "allowed", "")


def grpc_fetch(timeout: float = 10.0) -> Callable[[NodeRecord], bytes]:
    """Fetch a node's evidence from its registered public endpoint, pinned to its registered TLS key hash."""
    from derot.app.client import RootOfTrustClient
    from derot.net.peers import Endpoint

    def fetch(node: NodeRecord) -> bytes:
        public = Endpoint.parse(node.endpoint).public
        client = RootOfTrustClient([public], tls_key_hashes={public: node.tls_key_hash}, timeout=timeout, attempts=1)
        try:
            return bytes(client.call("GetNodeEvidence", client.pb.GetNodeEvidenceRequest).evidence)
        finally:
            client.close()

    return fetch


def describe(m: MemberMachine) -> str:
    """One line for ``derot gov state``."""
    head = f"member {m.index} of epoch {m.epoch} ({m.operator}): "
    if m.status == "ok":
        return head + "machine not revoked"
    if m.status == "revoked":
        return (head + f"MACHINE REVOKED [{m.reason}] {m.detail}; peers deal it no shares at the next DKG/reshare "
                f"(propose remove-node {m.operator} + start-reshare)")
    return head + f"machine not checked [{m.reason}] {m.detail}"
