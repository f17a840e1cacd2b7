"""A node's own TEE evidence for committee membership, and checking another member's.

A node's evidence binds its identity: ``report_data = SHA-512("DEROT-V1-NODE" ‖ network ‖ operator(20) ‖
identityKey(32) ‖ x25519Key(32) ‖ tlsKeyHash(32))``. The registry stores the evidence's hash; peers fetch
the evidence itself over the Peer service, check the hash, verify it and apply the node-membership policy
(an allowed node measurement, not revoked, not debug) at their own confirmed block.
"""

from __future__ import annotations

import hashlib

from derot.attest.claims import Claims
from derot.attest.errors import AttestationError
from derot.attest.evidence import Evidence
from derot.attest.policy import PolicyEngine, PolicyRequest
from derot.attest.snapshot import GovernanceSnapshot
from derot.attest.trust import TrustConfig
from derot.attest.verify import verify_evidence
from derot.errors import DerotError

NODE_DOMAIN = b"DEROT-V1-NODE"


class MembershipRefused(DerotError):
    """A member's evidence does not establish it as an attested node; ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


def node_report_data(network: bytes, operator: str, identity_key: bytes, x25519_key: bytes, tls_key_hash: bytes) -> bytes:
    operator_bytes = bytes.fromhex(operator.removeprefix("0x"))
    if len(operator_bytes) != 20 or len(identity_key) != 32 or len(x25519_key) != 32 or len(tls_key_hash) != 32:
        raise ValueError("operator is 20 bytes; identity, x25519 and TLS key hash are 32 bytes each")
    return hashlib.sha512(
        NODE_DOMAIN + len(network).to_bytes(2, "big") + network + operator_bytes + identity_key + x25519_key + tls_key_hash
    ).digest()


def verify_member_evidence(evidence_bytes: bytes, *, registered_hash: bytes, trust: TrustConfig, now: int) -> Claims:
    """The claims of a member's evidence, if it is the registered one and verifies (raises otherwise).

    This is the expensive, policy-free part: nodes run it once per registered evidence hash, in the
    background, as soon as a node registers."""
    if hashlib.sha256(evidence_bytes).digest() != registered_hash:
        raise MembershipRefused("evidence_hash_mismatch", "the evidence is not the one registered on-chain")
    try:
        return verify_evidence(Evidence.decode(evidence_bytes), trust, at=now)
    except AttestationError as exc:
        raise MembershipRefused(exc.reason, str(exc)) from None


def check_member_policy(claims: Claims, *, expected_report_data: bytes, policy: PolicyEngine,
                        snapshot: GovernanceSnapshot, now: int) -> None:
    """The node-membership policy at ``snapshot`` (cheap: run again for every DKG/reshare)."""
    verdict = policy.decide(
        claims, snapshot, PolicyRequest(purpose="node", now=now, expected_report_data=expected_report_data)
    )
    if not verdict.allowed:
        raise MembershipRefused(verdict.code, verdict.detail)


def check_member_evidence(
    evidence_bytes: bytes,
    *,
    registered_hash: bytes,
    expected_report_data: bytes,
    trust: TrustConfig,
    policy: PolicyEngine,
    snapshot: GovernanceSnapshot,
    now: int,
) -> None:
    """Raise :class:`MembershipRefused` unless the evidence is the registered one, verifies and is allowed."""
    claims = verify_member_evidence(evidence_bytes, registered_hash=registered_hash, trust=trust, now=now)
    check_member_policy(claims, expected_report_data=expected_report_data, policy=policy, snapshot=snapshot, now=now)
