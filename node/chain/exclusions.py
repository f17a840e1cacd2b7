"""DKG exclusion reasons as the registry records them (``reportEpoch`` → ``EpochExclusions`` event).

A DKG result names the dealers it excluded with a free-text reason (``derot.crypto.dkg.outcome``); the
membership gate names the members a node refused to deal to (``member_evidence``). On-chain each becomes
one ``uint8`` code. The numbers are part of the registry's ABI; never renumber.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class ExclusionReason(enum.IntEnum):
    OTHER = 0
    SILENT = 1  # no deal bundle
    EQUIVOCATION = 2  # two different signed deal bundles
    LATE = 3  # too few responses list its bundle
    PROVEN_COMPLAINT = 4  # a complaint proved its box holds no valid share
    WITHHELD_BOX = 5  # withheld a box the others sealed
    EVIDENCE_REFUSED = 6  # its TEE evidence was refused by this node's membership check
    EVIDENCE_UNAVAILABLE = 7  # its TEE evidence did not arrive in time


#: the prefix each DKG outcome reason starts with (derot.crypto.dkg.outcome)
_PREFIXES = (
    ("silent", ExclusionReason.SILENT),
    ("equivocation", ExclusionReason.EQUIVOCATION),
    ("late", ExclusionReason.LATE),
    ("proven complaint", ExclusionReason.PROVEN_COMPLAINT),
    ("withheld", ExclusionReason.WITHHELD_BOX),
)


def classify(text: str) -> ExclusionReason:
    """The code of a DKG outcome's reason text (OTHER if it has none)."""
    return next((code for prefix, code in _PREFIXES if text.startswith(prefix)), ExclusionReason.OTHER)


def classify_refusal(text: str) -> ExclusionReason:
    """The code of a membership refusal ("<reason>: <detail>")."""
    if text.startswith("evidence_unavailable"):
        return ExclusionReason.EVIDENCE_UNAVAILABLE
    return ExclusionReason.EVIDENCE_REFUSED


def encode(excluded: Mapping[int, str], refused: Mapping[int, str] | None = None) -> tuple[list[int], list[int]]:
    """(member indices, reason codes) for ``reportEpoch``, sorted by index: the run's excluded dealers and
    the members this node refused to deal to (the run's own reason wins for a member in both)."""
    codes = {int(i): classify_refusal(t) for i, t in (refused or {}).items()}
    codes.update({int(i): classify(t) for i, t in excluded.items()})
    indices = sorted(i for i in codes if 1 <= i <= 255)
    return indices, [int(codes[i]) for i in indices]


@dataclass(frozen=True)
class EpochExclusion:
    """One reporter's view, from an ``EpochExclusions`` event."""

    epoch: int
    reporter: str
    block_number: int
    excluded: Mapping[int, ExclusionReason]

    def to_json_dict(self) -> dict:
        return {"reporter": self.reporter, "block": self.block_number,
                "excluded": {str(i): r.name.lower() for i, r in sorted(self.excluded.items())}}


def reason_of(code: int) -> ExclusionReason:
    try:
        return ExclusionReason(code)
    except ValueError:
        return ExclusionReason.OTHER
