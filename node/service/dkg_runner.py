"""Driving one DKG/reshare session with real deadlines, independent of how messages travel.

The runner owns a :class:`~derot.crypto.dkg.DkgSession`. Incoming messages are fed with :meth:`receive`
(from the Peer service); every message the session emits is handed to ``broadcast``. Each phase has a
timeout; a phase ends earlier when the session advances by itself (every expected message arrived).
Messages that arrive before the runner exists are buffered by the caller and replayed in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from derot.crypto.dkg import DkgMessageRejected, DkgResult, DkgSession, Phase, RejectReason
from derot.crypto.dkg.messages import Message

log = logging.getLogger("derot.dkg")

#: refusals that are normal in a broadcast network and say nothing bad about the sender
HARMLESS = frozenset({RejectReason.DUPLICATE, RejectReason.LATE})


class DkgRunner:
    def __init__(
        self,
        session: DkgSession,
        *,
        phase_timeout: float,
        broadcast: Callable[[list[Message]], None],
        on_phase: Callable[[str, float], None] | None = None,
        started_at: float | None = None,
    ):
        self.session = session
        self.phase_timeout = phase_timeout
        #: wall-clock time every member agrees the run began (the block that started the epoch), so
        #: members that start late still share the deadlines: phase i ends by started_at + (i+1)·timeout
        self.started_at = time.time() if started_at is None else started_at
        self._broadcast = broadcast
        self._on_phase = on_phase
        self._changed = asyncio.Event()
        self.rejected: list[tuple[str, str]] = []

    @property
    def epoch(self) -> int:
        return self.session.config.epoch

    def receive(self, data: bytes) -> None:
        """Apply a message from a peer. Raises :class:`DkgMessageRejected` for a refused message
        (except duplicates and late arrivals, which are dropped quietly)."""
        try:
            out = self.session.receive(data)
        except DkgMessageRejected as exc:
            if exc.reason in HARMLESS:
                return
            self.rejected.append((exc.reason.value, exc.detail))
            raise
        self._emit(out)
        self._changed.set()

    def _emit(self, messages: list[Message]) -> None:
        if messages:
            self._broadcast(messages)

    async def run(self, backlog: list[bytes] = ()) -> DkgResult:
        """Run to the end; returns the result or raises :class:`~derot.crypto.dkg.DkgFailed`.

        ``backlog`` holds messages that arrived before this node started its session; they are applied
        right after the session starts.
        """
        session = self.session
        self._emit(session.start())
        phase, phase_started, number = session.phase, time.monotonic(), 0
        log.info("dkg started", extra={"epoch": self.epoch, "phase": phase.value, "backlog": len(backlog)})
        for data in backlog:
            try:
                self.receive(data)
            except DkgMessageRejected as exc:
                log.info("dkg message refused", extra={"epoch": self.epoch, "reason": exc.reason.value})
        while not session.done:
            deadline = self.started_at + (number + 1) * self.phase_timeout
            remaining = max(deadline - time.time(), 0.05 if number == 0 else 0.0)
            if remaining > 0:
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=remaining)
                except asyncio.TimeoutError:
                    pass
            if session.phase == phase and not session.done and time.time() >= deadline:
                log.info("dkg phase deadline", extra={"epoch": self.epoch, "phase": phase.value})
                self._emit(session.on_deadline())
            if session.phase != phase:
                self._phase_ended(phase, time.monotonic() - phase_started)
                phase, phase_started, number = session.phase, time.monotonic(), number + 1
        if session.phase is Phase.FINISHED:
            result = session.result
            log.info(
                "dkg finished",
                extra={"epoch": self.epoch, "qualified": list(result.qualified), "excluded": dict(result.excluded)},
            )
            return result
        raise session.failure

    def _phase_ended(self, phase: Phase, seconds: float) -> None:
        log.info("dkg phase ended", extra={"epoch": self.epoch, "phase": phase.value, "seconds": round(seconds, 3)})
        if self._on_phase is not None:
            self._on_phase(phase.value, seconds)
