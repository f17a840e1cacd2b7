"""Refusals: a stable reason code carried in gRPC status details, for servers and clients alike.

A node refuses with :class:`Refusal`; the gRPC layer turns it into a status whose details hold one
``google.rpc.ErrorInfo`` (``reason`` = the code, ``domain`` = ``derot.v1``). Clients recover it with
:func:`refusal_from_rpc_error`. Reason codes are lowercase snake case: the attestation layer's
(``derot.attest.errors``), the policy engine's (``derot.attest.policy.PolicyReason``) and the node's own below.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from derot.errors import DerotError

DOMAIN = "derot.v1"

# node-level reason codes
MALFORMED_REQUEST = "malformed_request"
REQUEST_TOO_LARGE = "request_too_large"
OVERLOADED = "overloaded"
NO_ACTIVE_EPOCH = "no_active_epoch"
WRONG_EPOCH = "wrong_epoch"
KEY_VERSION_MISMATCH = "key_version_mismatch"
NOT_ENOUGH_SHARES = "not_enough_shares"
CERTIFICATE_MISMATCH = "certificate_mismatch"
NOT_A_MEMBER = "not_a_member"
NOTICE_MISMATCH = "notice_mismatch"
NOT_CONFIRMED = "not_confirmed"
CHAIN_STALE = "chain_stale"  # the node's registry view is older than its maximum staleness (wall clock)
CHAIN_UNVERIFIED = "chain_unverified"  # the node's RPC endpoints disagree about the chain
DEADLINE_EXCEEDED = "deadline_exceeded"
INTERNAL = "internal_error"

#: reason code -> gRPC status code; anything not listed is PERMISSION_DENIED (an attestation or policy refusal)
_STATUS = {
    MALFORMED_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    "evidence_malformed": grpc.StatusCode.INVALID_ARGUMENT,
    REQUEST_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NO_ACTIVE_EPOCH: grpc.StatusCode.UNAVAILABLE,
    NOT_ENOUGH_SHARES: grpc.StatusCode.UNAVAILABLE,
    "collateral_unavailable": grpc.StatusCode.UNAVAILABLE,
    WRONG_EPOCH: grpc.StatusCode.FAILED_PRECONDITION,
    KEY_VERSION_MISMATCH: grpc.StatusCode.FAILED_PRECONDITION,
    CERTIFICATE_MISMATCH: grpc.StatusCode.INVALID_ARGUMENT,
    NOT_A_MEMBER: grpc.StatusCode.PERMISSION_DENIED,
    NOTICE_MISMATCH: grpc.StatusCode.INVALID_ARGUMENT,
    NOT_CONFIRMED: grpc.StatusCode.UNAVAILABLE,
    CHAIN_STALE: grpc.StatusCode.UNAVAILABLE,
    CHAIN_UNVERIFIED: grpc.StatusCode.UNAVAILABLE,
    DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    INTERNAL: grpc.StatusCode.INTERNAL,
}
#: reasons a client may retry on another node (or later)
UNAVAILABLE = "unavailable"  # transport failure: the node is down or unreachable
RETRYABLE = frozenset(
    {OVERLOADED, NO_ACTIVE_EPOCH, NOT_ENOUGH_SHARES, "collateral_unavailable", DEADLINE_EXCEEDED, UNAVAILABLE,
     NOT_CONFIRMED, CHAIN_STALE, CHAIN_UNVERIFIED}
)


class Refusal(DerotError):
    """A request refused with a stable ``reason`` code and a human ``detail``."""

    def __init__(self, reason: str, detail: str = "", *, metadata: dict[str, str] | None = None):
        self.reason = str(reason)
        self.detail = detail or self.reason
        self.metadata = dict(metadata or {})
        super().__init__(f"{self.reason}: {self.detail}")

    @property
    def status_code(self) -> grpc.StatusCode:
        return _STATUS.get(self.reason, grpc.StatusCode.PERMISSION_DENIED)

    @property
    def retryable(self) -> bool:
        return self.reason in RETRYABLE

    def to_status(self) -> status_pb2.Status:
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata)
        detail = any_pb2.Any()
        detail.Pack(info)
        return status_pb2.Status(code=self.status_code.value[0], message=self.detail, details=[detail])


def trailing_metadata(refusal: Refusal) -> tuple[tuple[str, bytes], ...]:
    """The ``grpc-status-details-bin`` trailer that carries the refusal."""
    return (("grpc-status-details-bin", refusal.to_status().SerializeToString()),)


async def abort_with(context, refusal: Refusal):
    """Abort an aio servicer call with the refusal's status code, message and details."""
    await context.abort(refusal.status_code, refusal.detail, trailing_metadata(refusal))


def refusal_from_rpc_error(error: grpc.RpcError) -> Refusal:
    """Rebuild a :class:`Refusal` from a failed call; transport failures map to generic reasons."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for any_detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if any_detail.Is(info.DESCRIPTOR) and any_detail.Unpack(info) and info.domain == DOMAIN:
                    return Refusal(info.reason, status.message, metadata=dict(info.metadata))
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Refusal(DEADLINE_EXCEEDED, details or "deadline exceeded")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return Refusal(UNAVAILABLE, details or "node unavailable")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return Refusal(OVERLOADED, details or "resource exhausted")
    return Refusal(f"grpc_{code.name.lower()}", details or code.name)

