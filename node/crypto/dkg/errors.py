"""The three ways a DKG can go wrong: a bad configuration, a refused message, a failed run."""

from __future__ import annotations

from enum import Enum

from derot.errors import DerotError


class DkgConfigError(DerotError, ValueError):
    """The run's configuration or this member's identity is inconsistent (raised at construction)."""

    reason = "dkg_config_invalid"


class RejectReason(str, Enum):
    """Why :meth:`DkgSession.receive` refused a message. The session state is unchanged in every case."""

    MALFORMED = "malformed"                    # protobuf parse error, wrong lengths/counts, non-canonical
    UNSUPPORTED_VERSION = "unsupported_version"
    WRONG_NETWORK = "wrong_network"
    WRONG_EPOCH = "wrong_epoch"
    WRONG_SESSION = "wrong_session"            # same network and epoch, different committee/config
    UNKNOWN_SENDER = "unknown_sender"          # not a dealer (deal, justification) / recipient (response)
    BAD_SIGNATURE = "bad_signature"
    BAD_POINT = "bad_point"                    # a commitment is not a canonical curve point, or is O
    WRONG_SHARE_KEY = "wrong_share_key"        # reshare: commitment to g_i(0) is not the old PK_i
    BAD_PROOF = "bad_proof"                    # a deal key without a valid proof of knowledge
    BAD_BOX = "bad_box"                        # a share box sealed to a key its recipient did not sign
    DUPLICATE = "duplicate"                    # this exact message was already accepted (replay)
    OVER_BOUND = "over_bound"                  # two different bodies of this kind from this sender are held
    LATE = "late"                              # its run is over at this member (secrets erased)


class DkgMessageRejected(DerotError):
    """A message refused by a session, with a machine-readable :class:`RejectReason` and a detail."""

    def __init__(self, reason: RejectReason, detail: str):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}")


class FailReason(str, Enum):
    TOO_FEW_QUALIFIED = "too_few_qualified"    # |QUAL| < t (DKG) or < t_old (reshare)
    TOO_FEW_HOLDERS = "too_few_holders"        # fewer than t recipients were sealed a box by every used dealer
    GROUP_KEY_MISMATCH = "group_key_mismatch"  # reshare: recombined key differs from the old group key
    DEGENERATE_KEY = "degenerate_key"          # the group key came out as the identity point


class PhaseTransitionError(DerotError, RuntimeError):
    """A phase change not in the transition table: a bug in the state machine, never a peer's doing."""

    reason = "dkg_phase_transition"


class DkgFailed(DerotError):
    """The run ended without a usable result; ``reason`` says why, ``detail`` names the dealers involved."""

    def __init__(self, reason: FailReason, detail: str):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}")
