"""What this node serves with right now, and the admission check every app request passes.

:class:`NodeView` holds the confirmed registry state (replaced by the chain follower on every update) and
the epoch keys this node holds (replaced when an epoch activates). Invariant: the node *serves* only while
it holds the keys of the epoch the registry says is active, and while that view is fresh (``freshness``:
the followed block is at most ``[chain].max_staleness`` seconds old by the wall clock).
"""

from __future__ import annotations

from dataclasses import dataclass

from derot.chain.freshness import ChainStale, FreshnessClock
from derot.chain.state import RegistryState
from derot.net import status
from derot.net.status import Refusal
from derot.service.epoch import EpochKeys
from derot.service.metrics import Metrics
from derot.service.requests import CheckedRequest, RequestChecker
from derot.service.verification import EvidenceVerifier


@dataclass
class NodeView:
    """The node's current view: written only by the chain follower (``state``) and the epoch
    orchestrator (``keys``); everything else reads it."""

    state: RegistryState | None = None
    keys: EpochKeys | None = None
    freshness: FreshnessClock | None = None  # None: staleness is not checked (tests, tools)

    def serving(self) -> tuple[RegistryState, EpochKeys]:
        """The state and keys to serve with, or a ``no_active_epoch`` / ``chain_stale`` refusal."""
        state, keys = self.state, self.keys
        if state is None or keys is None or state.committee is None:
            raise Refusal(status.NO_ACTIVE_EPOCH, "this node serves no active epoch yet")
        if state.committee.id != keys.epoch:
            raise Refusal(status.NO_ACTIVE_EPOCH, "this node is not in the active committee")
        if self.freshness is not None:
            try:
                self.freshness.check()
            except ChainStale as exc:  # chain_stale, or chain_unverified when the endpoints disagree
                raise Refusal(exc.reason, str(exc)) from None
        return state, keys

    @property
    def healthy(self) -> bool:
        """What health reports: keys held, (once the registry is read) they are the active epoch's, and the
        view is not stale."""
        state, keys = self.state, self.keys
        if state is not None and self.freshness is not None and self.freshness.status().stale:
            return False
        return keys is not None and (
            state is None or (state.committee is not None and state.committee.id == keys.epoch))


class Admission:
    """Checks an app request against the current view and counts the verdict (gateway and contributor).
    The check (evidence verification, policy) runs on the verifier's workers, never on the event loop."""

    def __init__(self, view: NodeView, checker: RequestChecker, verifier: EvidenceVerifier, metrics: Metrics):
        self.view, self.checker, self.verifier, self.metrics = view, checker, verifier, metrics

    async def check(self, request, purpose: str, source: str) -> tuple[RegistryState, EpochKeys, CheckedRequest]:
        """``source``: who asked (a gateway's peer address, or a contributing member's operator); collateral
        fetched on its behalf is charged to it."""
        state, keys = self.view.serving()
        try:
            checked = await self.verifier.verify(self.checker.check, bytes(request.evidence), request,
                                                 state.snapshot, purpose=purpose, source=source)
        except Refusal as refusal:
            self.metrics.evidence.labels("unknown", refusal.reason).inc()
            raise
        self.metrics.evidence.labels(checked.claims.platform.name.lower(), "allowed").inc()
        return state, keys, checked
