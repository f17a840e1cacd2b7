"""In-process broadcast between DKG sessions: the network's stand-in for tests, benchmarks, one-process devnets.

Each message a session outputs is encoded once (by its sender) and delivered as bytes to every other
session, first in first out, so every session decodes and checks everything itself. With ``relay``, a
session that accepts a message for the first time broadcasts it again (what the node's transport does);
with ``sync``, before every deadline each session pulls what its peers hold and it lacks (digest sync).
When no message is in flight, the phase deadline passes for every unfinished session at once. CPU time
is accounted to the session whose call spent it.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

from derot.crypto.dkg.config import Committee, DkgConfig, Identity, KeyShares
from derot.crypto.dkg.errors import DkgMessageRejected, RejectReason
from derot.crypto.dkg.messages import Message
from derot.crypto.dkg.session import DkgSession

#: ``intercept(sender, recipient, message, data)`` returns the bytes to deliver, or None to drop them.
Intercept = Callable[[Hashable, Hashable, Message, bytes], "bytes | None"]


@dataclass(frozen=True)
class Rejection:
    recipient: Hashable
    sender: Hashable
    reason: RejectReason
    detail: str


class LocalBroadcast:
    """Delivers until every session is done. ``shuffle`` (a seeded ``random.Random``) delivers queued
    messages in random order instead of first in first out, to exercise out-of-order arrival."""

    def __init__(
        self,
        sessions: Mapping[Hashable, DkgSession],
        *,
        intercept: Intercept | None = None,
        shuffle: random.Random | None = None,
        relay: bool = False,
        sync: bool = False,
    ):
        self.sessions = dict(sessions)
        self.intercept = intercept
        self.shuffle = shuffle
        self.relay = relay
        self.sync = sync
        self.sent: list[tuple[Hashable, Message]] = []  # every message put on the wire, in order
        self.cpu_seconds: dict[Hashable, float] = {name: 0.0 for name in self.sessions}
        self.rejections: list[Rejection] = []
        self.deadlines = 0
        self._queue: deque[tuple[Hashable, Message]] = deque()

    def _call(self, name: Hashable, fn, *args):
        started = time.process_time()
        try:
            return fn(*args)
        finally:
            self.cpu_seconds[name] += time.process_time() - started

    def _post(self, sender: Hashable, messages: list[Message]) -> None:
        self._queue.extend((sender, m) for m in messages)
        self.sent.extend((sender, m) for m in messages)

    def deliver_to(self, name: Hashable, sender: Hashable, message: Message, data: bytes) -> bool:
        """Hand ``data`` to one session; True if it accepted it (new and valid)."""
        try:
            out = self._call(name, self.sessions[name].receive, data)
        except DkgMessageRejected as exc:
            self.rejections.append(Rejection(name, sender, exc.reason, exc.detail))
            return False
        self._post(name, out)
        if self.relay:
            self._queue.append((name, Message.decode(data)))  # the author's signed bytes, relayed
        return True

    def sync_all(self) -> int:
        """Every session pulls, from every other, the messages it lacks and would accept. Returns how many."""
        pulled = 0
        for name, session in self.sessions.items():
            for peer, other in self.sessions.items():
                if peer == name:
                    continue
                for digest in session.wanted(other.inventory()):
                    data = other.message(digest)
                    if data is not None and self.deliver_to(name, peer, Message.decode(data), data):
                        pulled += 1
        return pulled

    def _deliver(self, sender: Hashable, message: Message) -> None:
        data = self._call(sender, message.encode)
        names = list(self.sessions)
        if self.shuffle is not None:
            self.shuffle.shuffle(names)
        for name in names:
            session = self.sessions[name]
            if name == sender:
                continue
            wire = data if self.intercept is None else self.intercept(sender, name, message, data)
            if wire is None:
                continue
            self.deliver_to(name, sender, message, wire)

    def inject(self, sender: Hashable, messages: list[Message]) -> None:
        """Queue messages as if ``sender`` had broadcast them (a misbehaving member's extra messages)."""
        self._post(sender, messages)

    def run(self, *, start: bool = True, max_deadlines: int = 6) -> None:
        """Deliver until every session is done; deadlines pass only when nothing is in flight."""
        if start:
            for name, session in self.sessions.items():
                self._post(name, self._call(name, session.start))
        while True:
            while True:
                while self._queue:
                    if self.shuffle is not None:
                        self._queue.rotate(-self.shuffle.randrange(len(self._queue)))
                    self._deliver(*self._queue.popleft())
                if not self.sync or not self.sync_all():
                    break
            pending = [(name, s) for name, s in self.sessions.items() if not s.done]
            if not pending:
                return
            if self.deadlines >= max_deadlines:
                running = [name for name, _ in pending]
                raise RuntimeError(f"sessions still running after {max_deadlines} deadlines: {running}")
            self.deadlines += 1
            for name, session in pending:
                self._post(name, self._call(name, session.on_deadline))


def generate_identities(n: int) -> list[Identity]:
    """``n`` fresh node identities (Ed25519 + X25519 key pairs)."""
    return [Identity.generate() for _ in range(n)]


def committee_of(identities: list[Identity], threshold: int, indices: list[int] | None = None) -> Committee:
    """A committee seating ``identities`` at ``indices`` (default 1..n)."""
    indices = list(range(1, len(identities) + 1)) if indices is None else indices
    return Committee(tuple(identity.member(i) for identity, i in zip(identities, indices, strict=True)), threshold)


def make_sessions(
    config: DkgConfig,
    identities: Mapping[Hashable, Identity],
    *,
    old_shares: Mapping[Hashable, KeyShares] | None = None,
    classes: Mapping[Hashable, type[DkgSession]] | None = None,
) -> dict[Hashable, DkgSession]:
    """One session per identity that holds a seat in the run (dealer, recipient or both), keyed like
    ``identities``. ``classes`` substitutes a session class for some members (misbehaving ones in tests)."""
    old_shares = old_shares or {}
    classes = classes or {}
    seated = {m.signing_key for m in config.dealers.members}
    seated |= {m.signing_key for m in config.recipients.members}
    sessions = {}
    for name, identity in identities.items():
        if identity.signing_public not in seated:
            continue
        is_dealer = config.is_reshare and config.dealers.index_of(identity.signing_public) is not None
        shares = old_shares.get(name) if is_dealer else None
        sessions[name] = classes.get(name, DkgSession)(config, identity, shares)
    return sessions
