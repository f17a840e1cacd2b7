"""Checking an app's request: shape, evidence, policy, replay — the same code on the gateway and on every
contributing node, each against its own confirmed view of the registry.

:meth:`RequestChecker.check` turns a ``derot.v1.AppRequest`` into a :class:`CheckedRequest` or raises a
:class:`~derot.net.status.Refusal` naming the reason. Nothing is recorded for a refused request except
(on success of every other rule) its replay-cache entry, which the policy engine writes last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from derot.attest.binding import RequestBinding
from derot.attest.claims import Claims
from derot.attest.errors import AttestationError
from derot.attest.evidence import Evidence
from derot.attest.policy import PolicyEngine, PolicyRequest
from derot.attest.policy_tee import effective_tcb_status
from derot.attest.snapshot import GovernanceSnapshot
from derot.attest.trust import TrustConfig
from derot.attest.verify import verify_evidence
from derot.constants import KeyType, TcbStatus
from derot.crypto.bls import G1, PointDecodeError
from derot.limits import LIMITS
from derot.net import status
from derot.net.status import Refusal

APP_ID_SIZE = 32
NONCE_SIZE = 16
MAX_SUBJECT_KEY = 133  # an uncompressed P-521 point; every derot key type is smaller


@dataclass(frozen=True)
class CheckedRequest:
    """An app request whose evidence verified and whose policy allowed it, at ``snapshot_block``.
    ``tcb_status`` is the claims' status with governance's rules applied at that block
    (:func:`derot.attest.policy_tee.effective_tcb_status`): what its certificate carries."""

    app_id: bytes
    key_version: int
    context: bytes
    tpk: G1 | None
    subject_key: bytes
    key_type: int
    timestamp: int
    nonce: bytes
    evidence_hash: bytes
    claims: Claims
    snapshot_block: int
    tcb_status: TcbStatus


class RequestChecker:
    """Validates app requests for one deployment (``network`` = chain id ‖ registry)."""

    def __init__(self, *, network: bytes, trust: TrustConfig, policy: PolicyEngine):
        self.network = network
        self.trust = trust
        self.policy = policy

    def check(self, request, snapshot: GovernanceSnapshot, *, purpose: str, now: int | None = None) -> CheckedRequest:
        """``purpose`` is ``"derive"`` (needs a tpk) or ``"certify"`` (needs a subject key)."""
        now = int(time.time()) if now is None else now
        fields = _shape(request, purpose)
        try:
            evidence = Evidence.decode(request.evidence)
            claims = verify_evidence(evidence, self.trust, at=now)
        except AttestationError as exc:
            raise Refusal(exc.reason, str(exc)) from None
        binding = RequestBinding(
            network=self.network,
            app_id=fields["app_id"],
            key_version=request.key_version,
            context=bytes(request.context),
            tpk=bytes(request.transport_public_key),
            subject_key=bytes(request.subject_key),
            timestamp=request.timestamp,
            nonce=bytes(request.nonce),
        )
        app = snapshot.apps.get(fields["app_id"])
        if app is not None and not app.frozen and request.key_version != app.key_version:
            raise Refusal(
                status.KEY_VERSION_MISMATCH,
                f"the app's current keyVersion is {app.key_version}, the request asks for {request.key_version}",
                metadata={"current_key_version": str(app.key_version)},
            )
        verdict = self.policy.decide(
            claims, snapshot, PolicyRequest(purpose="app", now=now, app_id=fields["app_id"], binding=binding)
        )
        if not verdict.allowed:
            raise Refusal(verdict.code, verdict.detail)
        return CheckedRequest(
            app_id=fields["app_id"],
            key_version=request.key_version,
            context=bytes(request.context),
            tpk=fields["tpk"],
            subject_key=bytes(request.subject_key),
            key_type=request.key_type,
            timestamp=request.timestamp,
            nonce=bytes(request.nonce),
            evidence_hash=evidence.digest(),
            claims=claims,
            snapshot_block=snapshot.block_number,
            tcb_status=effective_tcb_status(claims, snapshot),
        )


def _shape(request, purpose: str) -> dict:
    """Field-level checks that need no cryptography; raises ``malformed_request``."""

    def bad(detail: str, field: str) -> Refusal:
        return Refusal(status.MALFORMED_REQUEST, detail, metadata={"field": field})

    if len(request.app_id) != APP_ID_SIZE:
        raise bad(f"app_id must be {APP_ID_SIZE} bytes, got {len(request.app_id)}", "app_id")
    if len(request.nonce) != NONCE_SIZE:
        raise bad(f"nonce must be {NONCE_SIZE} bytes, got {len(request.nonce)}", "nonce")
    if len(request.context) > LIMITS.max_context:
        raise bad(f"context longer than {LIMITS.max_context} bytes", "context")
    if not request.evidence:
        raise bad("the request carries no evidence", "evidence")
    tpk = None
    if purpose == "derive":
        try:
            tpk = G1.from_bytes(bytes(request.transport_public_key))
        except PointDecodeError as exc:
            raise bad(f"transport public key: {exc}", "transport_public_key") from None
        if request.subject_key:
            raise bad("a key derivation request carries no subject key", "subject_key")
    elif purpose == "certify":
        if not 0 < len(request.subject_key) <= MAX_SUBJECT_KEY:
            raise bad("subject_key is missing or too long", "subject_key")
        try:
            KeyType(request.key_type)
        except ValueError:
            raise bad(f"unknown key type {request.key_type}", "key_type") from None
        if request.transport_public_key:
            raise bad("a certificate request carries no transport key", "transport_public_key")
    else:  # pragma: no cover - programming error
        raise ValueError(purpose)
    return {"app_id": bytes(request.app_id), "tpk": tpk}
