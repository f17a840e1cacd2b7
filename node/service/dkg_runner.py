"""Driving one DKG/reshare session with real deadlines, independent of how messages travel.

The runner owns a :class:`~derot.crypto.dkg.DkgSession`. Incoming messages are fed with :meth:`receive`
(from the Peer service). Invariants:

- **Persist, then send.** Whenever the session produces messages of its own, its snapshot goes to
  ``persist`` (the node seals it into its store) *before* they are broadcast, so a node restarted mid-run
  resumes from the snapshot (:func:`open_session`) and never announces or deals twice. Without ``pull`` the
  snapshot is also persisted after every message received; with ``pull`` it is not (received messages are
  signed broadcasts: a resumed member fetches them again by digest sync), which saves rewriting a snapshot of
  every bundle held (O(n²) bytes) n times per phase.
- **Relay.** Without ``gossip``, a message accepted for the first time is handed to ``relay`` (the author's
  signed bytes), so a message one honest member holds reaches every honest member although its author sent
  it to some only. With ``gossip`` (a pull from a few random peers), relays are selective (:meth:`_to_relay`):
  a message is relayed when it arrives at or after its phase's sync point or after the finish (no scheduled
  sync will carry it any more), and both bodies are relayed when a second one proves equivocation; a message
  that arrives earlier is carried by the pulls: gossip every :func:`gossip_interval` while the phase is
  incomplete and no message was accepted for that long (while pushes keep arriving, a pull would mostly fetch
  copies of them), the full sync at the sync point, and a full sync right after the finish. This keeps the
  dissemination guarantee at O(n) messages per member instead of O(n²) (docs/dkg.md, "Dissemination").
- **Digest sync.** With ``pull`` (ask every peer for what it holds beyond these digests), the runner syncs
  three quarters into every phase (the sync point), so a message that missed the relay still arrives before
  the phase ends. :meth:`serve_sync` is the other side: what this member holds that a peer's digests lack.
- **Membership checks.** With ``member_checks`` (given the time by which to decide, it returns the members
  not to deal to, with reasons), the checks run during the announce phase; the session deals only after
  they are done (``checks_pending``), so a late verification costs no phase and never leaks a share.
- **Deadlines.** Every member derives the same deadlines from ``started_at`` (the block that began the
  run): phase i ends by ``started_at + (i+1)·phase_timeout``; a phase ends earlier when every expected
  message is held. A retry of a failed run (:func:`attempt_start`) starts at a time every member computes
  alike, under a new session id (``DkgConfig.attempt``).

Messages that arrive before the runner exists are buffered by the caller and replayed in order. After the
run, the runner keeps accepting messages (its session's result follows the messages held), so a member
whose view lacked something converges when it arrives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

from derot.crypto.dkg import DkgConfig, DkgMessageRejected, DkgResult, DkgSession, Identity, KeyShares, Phase
from derot.crypto.dkg import RejectReason
from derot.crypto.dkg.messages import Digest, Message, MessageKind

log = logging.getLogger("derot.dkg")

#: refusals that are normal in a broadcast network with relays and say nothing bad about the sender
HARMLESS = frozenset({RejectReason.DUPLICATE, RejectReason.LATE, RejectReason.OVER_BOUND})
#: phases of one attempt, each one ``phase_timeout`` long (announce, deal, response)
PHASES_PER_ATTEMPT = 3
#: the longest pause between two attempts, in phase timeouts
MAX_BACKOFF_PHASES = 8
#: membership checks are decided this many phase timeouts before the announce deadline
CHECK_MARGIN = 0.1
#: a sync runs this far into each phase
SYNC_AT = 0.75
#: at most this many messages, and bytes, in one sync answer (under gRPC's 4 MiB default)
MAX_SYNC_MESSAGES = 1024
MAX_SYNC_BYTES = 3 * 2**20


#: gossip pulls while a phase is incomplete: every this share of a phase timeout, at least GOSSIP_MIN seconds
GOSSIP_SHARE = 1 / 40
GOSSIP_MIN = 1.0
#: the phase (0 announce, 1 deal, 2 response) in which messages of each kind are due
KIND_PHASE = {MessageKind.ANNOUNCE: 0, MessageKind.DEAL: 1, MessageKind.RESPONSE: 2}


def gossip_interval(phase_timeout: float) -> float:
    """Seconds between two gossip pulls of an incomplete phase."""
    return max(GOSSIP_MIN, phase_timeout * GOSSIP_SHARE)


def attempt_start(started_at: float, phase_timeout: float, attempt: int) -> float:
    """When attempt ``attempt`` (0 = the first) begins: after each earlier attempt's phases and a back-off
    that doubles from one phase timeout up to :data:`MAX_BACKOFF_PHASES`. Every member computes the same."""
    start = started_at
    for k in range(attempt):
        start += PHASES_PER_ATTEMPT * phase_timeout + min(2**k, MAX_BACKOFF_PHASES) * phase_timeout
    return start


def open_session(
    config: DkgConfig,
    identity: Identity,
    old_shares: KeyShares | None,
    *,
    load: Callable[[], bytes | None],
    refused: Mapping[int, str] | None = None,
    checks_pending: bool = False,
    session_class: type[DkgSession] = DkgSession,
) -> tuple[DkgSession, bool]:
    """The session of this run: resumed from its persisted snapshot if there is one (``True``), else new."""
    saved = load()
    options = {"refused": refused, "checks_pending": checks_pending}
    if saved is not None:
        return session_class.restore(config, identity, old_shares, saved, **options), True
    return session_class(config, identity, old_shares, **options), False


class DkgRunner:
    def __init__(
        self,
        session: DkgSession,
        *,
        phase_timeout: float,
        broadcast: Callable[[list[Message]], None],
        relay: Callable[[bytes], None] | None = None,
        pull: Callable[[tuple[Digest, ...]], Awaitable[list[bytes]]] | None = None,
        gossip: Callable[[tuple[Digest, ...]], Awaitable[list[bytes]]] | None = None,
        member_checks: Callable[[float], Awaitable[Mapping[int, str]]] | None = None,
        persist: Callable[[bytes], None] | None = None,
        on_phase: Callable[[str, float], None] | None = None,
        started_at: float | None = None,
        resumed: bool = False,
    ):
        self.session = session
        self.phase_timeout = phase_timeout
        #: wall-clock time every member agrees the run began (the block that started the epoch, plus the
        #: back-off of earlier attempts), so members that start late still share the deadlines
        self.started_at = time.time() if started_at is None else started_at
        self._broadcast = broadcast
        self._relay = relay
        self._pull = pull
        self._gossip = gossip
        self._member_checks = member_checks
        self._persist = persist
        self._on_phase = on_phase
        self._resumed = resumed
        self._changed = asyncio.Event()
        self._progress = time.time()  # when a message was last accepted (gossip pulls wait for a quiet spell)
        self.rejected: list[tuple[str, str]] = []

    @property
    def epoch(self) -> int:
        return self.session.config.epoch

    def receive(self, data: bytes) -> None:
        """Apply a message from a peer. Raises :class:`DkgMessageRejected` for a refused message
        (except duplicates, over-bound copies and late arrivals, which are dropped quietly)."""
        done_before = self.session.done
        try:
            out = self.session.receive(data)
        except DkgMessageRejected as exc:
            if exc.reason in HARMLESS:
                return
            self.rejected.append((exc.reason.value, exc.detail))
            raise
        self._progress = time.time()
        self._commit(out, received=True)
        if self._relay is not None:
            for item in self._to_relay(bytes(data), done_before):
                self._relay(item)
        self._changed.set()

    def _to_relay(self, data: bytes, done_before: bool) -> list[bytes]:
        """What to relay after accepting ``data``: everything without gossip; with gossip, what no scheduled
        pull will carry any more (it came at or after its phase's sync point, or after the finish) and both
        bodies of an equivocation (every honest member must see the pair)."""
        if self._gossip is None:
            return [data]
        message = Message.decode(data)
        bodies = self.session.held_bodies(message.kind, message.sender)
        if len(bodies) > 1:
            return bodies
        if done_before or time.time() >= self._sync_point(KIND_PHASE[message.kind]):
            return [data]
        return []

    def serve_sync(self, digests: Iterable[Digest]) -> list[bytes]:
        """The messages this member holds that a peer holding ``digests`` lacks (bounded)."""
        theirs = set(digests)
        out, size = [], 0
        for digest in self.session.inventory():
            data = None if digest in theirs else self.session.message(digest)
            if data is None:
                continue
            if len(out) >= MAX_SYNC_MESSAGES or size + len(data) > MAX_SYNC_BYTES:
                break
            out.append(data)
            size += len(data)
        return out

    async def sync(self, pull: Callable[[tuple[Digest, ...]], Awaitable[list[bytes]]] | None = None) -> int:
        """Pull what peers hold and this member lacks (from every peer, or with ``pull``, e.g. the gossip);
        returns how many messages were new."""
        pull = pull or self._pull
        if pull is None:
            return 0
        accepted = 0
        for data in await pull(self.session.inventory()):
            try:
                before = self.session.message_count
                self.receive(data)
                accepted += self.session.message_count > before
            except DkgMessageRejected:
                continue
        return accepted

    def _commit(self, messages: list[Message], *, received: bool = False) -> None:
        """Persist the session, then broadcast what it produced (never the other way round). After a received
        message that produced nothing, persist only without ``pull`` (see the module docstring)."""
        if self._persist is not None and (messages or not received or self._pull is None):
            self._persist(self.session.snapshot())
        if messages:
            self._broadcast(messages)

    def _deadline(self, number: int) -> float:
        return self.started_at + (number + 1) * self.phase_timeout

    def _sync_point(self, number: int) -> float:
        return self._deadline(number) - (1 - SYNC_AT) * self.phase_timeout

    async def run(self, backlog: list[bytes] = ()) -> DkgResult:
        """Run to the end; returns the result or raises :class:`~derot.crypto.dkg.DkgFailed`.

        ``backlog`` holds messages that arrived before this node started its session; they are applied
        right after the session starts.
        """
        session = self.session
        if self._resumed:  # what it sent before may not have left: send its own messages again
            self._commit(session.own_messages())
        else:
            self._commit(session.start())
        number = list(Phase).index(session.phase)
        phase, phase_started = session.phase, time.monotonic()
        log.info("dkg started", extra={"epoch": self.epoch, "phase": phase.value, "backlog": len(backlog),
                                       "resumed": self._resumed, "refused": dict(session.refused)})
        for data in backlog:
            try:
                self.receive(data)
            except DkgMessageRejected as exc:
                log.info("dkg message refused", extra={"epoch": self.epoch, "reason": exc.reason.value})
        checks = None
        if self._member_checks is not None:
            decide_by = self._deadline(0) - CHECK_MARGIN * self.phase_timeout
            checks = asyncio.create_task(self._run_checks(decide_by))
        try:
            return await self._run_phases(phase, phase_started, number)
        finally:
            if checks is not None and not checks.done():
                checks.cancel()

    async def _run_checks(self, decide_by: float) -> None:
        refused = dict(await self._member_checks(decide_by))
        log.info("dkg membership checked", extra={"epoch": self.epoch, "refused": refused})
        self._commit(self.session.set_refused(refused))
        self._changed.set()

    async def _run_phases(self, phase: Phase, phase_started: float, number: int) -> DkgResult:
        session = self.session
        self._gossiping: asyncio.Task | None = None
        try:
            await self._phase_loop(phase, phase_started, number)
        finally:
            if self._gossiping is not None:
                self._gossiping.cancel()
        if self._gossip is not None:  # early finishes skip the scheduled syncs: one full sync (see _to_relay)
            await self._bounded_sync(None, (1 - SYNC_AT) * self.phase_timeout)
        failure = session.failure
        if failure is not None:
            raise failure
        result = session.result
        log.info("dkg finished", extra={"epoch": self.epoch, "qualified": list(result.qualified),
                                        "excluded": dict(result.excluded), "holders": list(result.holders),
                                        "transcript": result.transcript_hash.hex(),
                                        "group_key_sig": result.sig.group_key.to_bytes().hex(),
                                        "group_key_kd": result.kd.group_key.to_bytes().hex()})
        return result

    async def _phase_loop(self, phase: Phase, phase_started: float, number: int) -> None:
        """Until the session finishes: phase ends, deadlines, the sync at each sync point, gossip pulls."""
        session = self.session
        synced = -1
        every = gossip_interval(self.phase_timeout)
        next_gossip = time.time() + every
        while True:
            if session.phase != phase:
                self._phases_ended(phase, session.phase, time.monotonic() - phase_started)
                phase, phase_started = session.phase, time.monotonic()
                number = list(Phase).index(phase)
                next_gossip = time.time() + every
            if session.done:
                return
            deadline = self._deadline(number)
            sync_at = self._sync_point(number)
            if self._pull is not None and synced != number and time.time() >= sync_at:
                synced = number
                await self._bounded_sync(None, deadline - time.time())
                continue
            if self._gossip is not None and time.time() >= next_gossip:
                if time.time() - self._progress < every:  # pushes still arriving: pull once they pause
                    next_gossip = self._progress + every
                else:
                    next_gossip = time.time() + every
                    if self._gossiping is None or self._gossiping.done():  # background: never delays a deadline
                        self._gossiping = asyncio.create_task(self._bounded_sync(self._gossip, every))
            wake = sync_at if self._pull is not None and synced != number else deadline
            if self._gossip is not None:
                wake = min(wake, next_gossip)
            remaining = max(wake - time.time(), 0.05 if number == 0 else 0.0)
            if remaining > 0:
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=remaining)
                except asyncio.TimeoutError:
                    pass
            if session.phase == phase and time.time() >= deadline:
                log.info("dkg phase deadline", extra={"epoch": self.epoch, "phase": phase.value})
                self._commit(session.on_deadline())

    async def _bounded_sync(self, pull, timeout: float) -> int:
        """:meth:`sync` given at most ``timeout`` seconds, then abandoned: a peer call that never returns, or one
        that ignores cancellation (which ``asyncio.wait_for`` would wait for), never holds up a phase."""
        task = asyncio.ensure_future(self.sync(pull))
        try:
            done, _ = await asyncio.wait({task}, timeout=max(timeout, 0.1))
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # never "exception not retrieved"
            log.info("dkg sync timed out", extra={"epoch": self.epoch, "gossip": pull is not None})
            return 0
        if task.cancelled() or task.exception() is not None:  # exception() of a cancelled task would raise
            error = "cancelled" if task.cancelled() else repr(task.exception())
            log.warning("dkg sync failed", extra={"epoch": self.epoch, "error": error})
            return 0
        return task.result()

    def _phases_ended(self, phase: Phase, now: Phase, seconds: float) -> None:
        """Report ``phase`` as ended after ``seconds``, and every phase the session passed through on its
        way to ``now`` within the same step as ended after 0 s (one step may complete several phases)."""
        order = list(Phase)
        self._phase_ended(phase, seconds)
        for skipped in order[order.index(phase) + 1:order.index(now)]:
            self._phase_ended(skipped, 0.0)

    def _phase_ended(self, phase: Phase, seconds: float) -> None:
        log.info("dkg phase ended", extra={"epoch": self.epoch, "phase": phase.value, "seconds": round(seconds, 3)})
        if self._on_phase is not None:
            self._on_phase(phase.value, seconds)
