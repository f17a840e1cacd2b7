"""Deliberate misbehaviour for fault tests and demos, honoured on devnets only.

``[node].faults`` is a comma-separated list; production configs refuse it (config validation):

- ``corrupt_shares``: answer DeriveShare / PartialSign with well-formed but wrong shares
  (a valid point, so only the gateway's verification catches it);
- ``dkg_cheat``: as a DKG dealer, send the highest-index recipient a wrong share, so that its proven
  complaint disqualifies this dealer;
- ``dkg_crash_after_deal``: exit the process right after its deal is persisted and before it is sent, once
  (a marker file in the data directory remembers it), to test restart safety;
- ``close_channel_mid_call``: close this node's channel to a peer under the first call of each Peer method
  to it, as when a concurrent call to that peer failed, to test that every caller survives it.
"""

from __future__ import annotations

from derot.crypto.bls import G1, R, random_scalar
from derot.crypto.dkg import DkgSession

KNOWN = frozenset({"corrupt_shares", "dkg_cheat", "dkg_crash_after_deal", "close_channel_mid_call"})
CRASH_MARKER = "dkg-crashed-once"


def parse(text: str) -> frozenset[str]:
    faults = frozenset(f.strip() for f in text.split(",") if f.strip())
    unknown = faults - KNOWN
    if unknown:
        raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(KNOWN)}")
    return faults


def corrupt_point(point: G1) -> G1:
    """A different valid G1 point: the honest share plus a random multiple of the generator. Random, so two
    faulty members' errors never cancel: with the same offset ``G`` on shares 2 and 3, the Lagrange weights of
    {2, 3, 5} (5, −5, 1) add the offsets up to zero and the combined value is the honest one."""
    return point + G1.generator() * random_scalar()


class CheatingDealer(DkgSession):
    """A dealer whose share for the last recipient does not match its commitments."""

    def _victim(self) -> int:
        return max(self.config.recipients.indices)

    def _deal_share(self, recipient: int, polynomials) -> tuple[int, int]:
        sig, kd = super()._deal_share(recipient, polynomials)
        return ((sig + 1) % R, kd) if recipient == self._victim() else (sig, kd)
