"""Distributed key generation and resharing for the two BLS12-381 master secrets (sig, kd).

Pure, network-free state machines (:class:`DkgSession`): messages in, messages out, phases ended by
completeness or by a deadline input. See :mod:`derot.crypto.dkg.session` for the protocol and the
delivery model, :mod:`derot.crypto.dkg.messages` for the wire format (``protocol/derot/v1/dkg.proto``)
and :mod:`derot.crypto.hazmat.batch` for the batched, subgroup-check-free commitment arithmetic.
"""

from derot.crypto.dkg.config import (
    SECRETS,
    Committee,
    DkgConfig,
    Identity,
    KeyShares,
    Member,
    PreviousEpoch,
    PublicKeys,
)
from derot.crypto.dkg.errors import (
    DkgConfigError,
    DkgFailed,
    DkgMessageRejected,
    FailReason,
    PhaseTransitionError,
    RejectReason,
)
from derot.crypto.dkg.messages import Digest, Message, MessageKind
from derot.crypto.dkg.result import DkgResult
from derot.crypto.dkg.session import TRANSITIONS, DkgSession, Phase, Progress

__all__ = [
    "SECRETS",
    "Committee",
    "Digest",
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
    "PhaseTransitionError",
    "PreviousEpoch",
    "Progress",
    "PublicKeys",
    "RejectReason",
    "TRANSITIONS",
]
