"""Distributed key generation and resharing for the two BLS12-381 master secrets (sig, kd).

Pure, network-free state machines (:class:`DkgSession`): messages in, messages out, phases ended by
completeness or by a deadline input. See :mod:`node.crypto.dkg.session` for the protocol and the
delivery model, :mod:`node.crypto.dkg.messages` for the wire format (``protocol/derot/v1/dkg.proto``)
and :mod:`node.crypto.batch` for the batched, subgroup-check-free commitment arithmetic.
"""

from node.crypto.dkg.config import (
    SECRETS,
    Committee,
    DkgConfig,
    Identity,
    KeyShares,
    Member,
    PreviousEpoch,
    PublicKeys,
)
from node.crypto.dkg.errors import DkgConfigError, DkgFailed, DkgMessageRejected, FailReason, RejectReason
from node.crypto.dkg.messages import ComplaintReason, Message, MessageKind
from node.crypto.dkg.result import DkgResult
from node.crypto.dkg.session import DkgSession, Phase, Progress

__all__ = [
    "SECRETS",
    "Committee",
    "ComplaintReason",
    "DkgConfig",
    "DkgConfigError",
    "DkgFailed",
    "DkgMessageRejected",
    "DkgResult",
    "DkgSession",
    "FailReason",
    "Identity",
    "KeyShares",
    "Member",
    "Message",
    "MessageKind",
    "Phase",
    "PreviousEpoch",
    "Progress",
    "PublicKeys",
    "RejectReason",
]
