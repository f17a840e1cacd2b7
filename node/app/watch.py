"""Watch the committee's notice feed: verify every notice against the group key, report changes and refusals.

The broker is not trusted. :class:`FeedVerifier` accepts a message only when

1. it is a canonical signed notice (``malformed`` otherwise);
2. it names the chain, registry and kind of the topic it arrived on (``wrong_topic``);
3. its signature verifies under the group key (``bad_signature``);
4. its block (the notice's sequence number) is newer than the newest notice of its kind accepted so far
   (``stale``: a replay, or a late older duplicate). The identical notice again is dropped silently:
   brokers re-deliver retained messages on reconnect and several members may publish the same notice.
   A different notice for the same block is refused (``conflict``).

:func:`watch` runs the subscription (reconnecting with backoff) and hands :class:`Accepted`,
:class:`Refused`, :class:`Stale` and :class:`Connection` events to a callback. A subscriber that sees no
fresh notice for ``max_age`` seconds of chain time gets a :class:`Stale` event: nodes re-publish unchanged
notices every heartbeat, so silence means the nodes are down or the broker withholds the feed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from derot.constants import Platform, TcbStatus, spelled
from derot.crypto.bls import G2
from derot.certs.notices import (
    BrokerAddress,
    EpochInfo,
    Notice,
    NoticeDecodeError,
    NoticeKind,
    PlatformStatus,
    RevocationSet,
    SignedNotice,
    topic,
)
from derot.errors import DerotError

MALFORMED = "malformed"
WRONG_TOPIC = "wrong_topic"
BAD_SIGNATURE = "bad_signature"
STALE = "stale"
CONFLICT = "conflict"


class NoticeRefused(DerotError):
    """A message on the feed that is not a valid, new notice; ``reason`` is one of the codes above."""

    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class Change:
    """One difference from the previously accepted notice, e.g. ``revoked FMSPC 00906ed50000``."""

    action: str  # revoked, unrevoked, platform, epoch, group key
    subject: str
    value: str

    def __str__(self) -> str:
        return f"{self.action} {self.subject} {self.value}".strip()


# events handed to the watch callback ------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    notice: Notice
    changes: tuple[Change, ...]
    first: bool  # the first notice of its kind: ``changes`` list the whole state


@dataclass(frozen=True)
class Refused:
    topic: str
    reason: str
    detail: str


@dataclass(frozen=True)
class Stale:
    kind: NoticeKind
    block: int | None  # the newest accepted notice's block, None if none arrived
    age: float  # seconds since that block's timestamp (or since subscribing)


@dataclass(frozen=True)
class Connection:
    connected: bool
    detail: str


Event = Accepted | Refused | Stale | Connection


# verification ----------------------------------------------------------------------------------


class FeedVerifier:
    """Verifies notices of one registry against a group key and remembers the newest of each kind."""

    def __init__(self, chain_id: int, registry: str, group_key_sig: G2):
        self.chain_id = chain_id
        self.group_key_sig = group_key_sig
        self.topics = {kind: topic(chain_id, registry, kind) for kind in NoticeKind}
        self._kind_of_topic = {name: kind for kind, name in self.topics.items()}
        self.latest: dict[NoticeKind, Notice] = {}

    def check(self, name: str, payload: bytes) -> Accepted | None:
        """The accepted notice and what changed, None for a duplicate; raises :class:`NoticeRefused`."""
        kind = self._kind_of_topic.get(name)
        if kind is None:
            raise NoticeRefused(WRONG_TOPIC, f"{name} is not a feed topic of this registry")
        try:
            signed = SignedNotice.decode(payload)
        except NoticeDecodeError as exc:
            raise NoticeRefused(MALFORMED, str(exc)) from None
        notice = signed.notice
        if notice.topic != name:
            raise NoticeRefused(WRONG_TOPIC, f"a {notice.kind.topic_suffix} notice for {notice.topic}")
        if not signed.verify(self.group_key_sig):
            raise NoticeRefused(BAD_SIGNATURE, f"block {notice.block_number}: the signature does not verify under "
                                               f"the group key {self.group_key_sig.to_bytes().hex()[:16]}…")
        latest = self.latest.get(kind)
        if latest is not None:
            if notice.block_number < latest.block_number:
                raise NoticeRefused(STALE, f"block {notice.block_number} is older than the accepted block "
                                           f"{latest.block_number} (a replay or a late duplicate)")
            if notice.block_number == latest.block_number:
                if notice == latest:
                    return None
                raise NoticeRefused(CONFLICT, f"another notice for block {notice.block_number} was accepted "
                                              "(a reorganised block?)")
        self.latest[kind] = notice
        return Accepted(notice, changes(latest, notice), latest is None)


def _platform_name(value: int) -> str:
    """The CLI's one spelling (``tdx``, ``sev-snp``, ``azure-snp``...), as ``derot gov state`` prints it."""
    return spelled(Platform, value)


def _rule(rule: PlatformStatus) -> str:
    if not rule.enabled:
        return "disabled"
    return f"enabled, TCB floor {spelled(TcbStatus, rule.tcb_floor)}"


def changes(old: Notice | None, new: Notice) -> tuple[Change, ...]:
    """What ``new`` changes relative to ``old`` (the whole state when ``old`` is None)."""
    if isinstance(new.content, RevocationSet):
        before = old.content if old is not None else RevocationSet()
        return _revocation_changes(before, new.content)
    out = []
    info: EpochInfo = new.content
    if old is None or old.epoch != new.epoch or old.content != info:
        out.append(Change("epoch", str(new.epoch), f"active: {info.threshold} of {len(info.members)} members "
                                                   f"({', '.join(info.members)})"))
    if old is not None and old.content.group_key_sig != info.group_key_sig:
        out.append(Change("group key", "changed", f"to {info.group_key_sig.to_bytes().hex()[:16]}… (a fresh DKG)"))
    return tuple(out)


def _revocation_changes(before: RevocationSet, after: RevocationSet) -> tuple[Change, ...]:
    out = []
    for name, label in RevocationSet.LABELS.items():
        old, new = set(getattr(before, name)), set(getattr(after, name))
        out += [Change("revoked", label, ident.hex()) for ident in sorted(new - old)]
        out += [Change("unrevoked", label, ident.hex()) for ident in sorted(old - new)]
    old_rules = {r.platform: r for r in before.platforms}
    for rule in after.platforms:
        if old_rules.get(rule.platform) != rule:
            out.append(Change("platform", _platform_name(rule.platform), _rule(rule)))
    for platform in sorted(set(old_rules) - {r.platform for r in after.platforms}):
        out.append(Change("platform", _platform_name(platform), "no rule (disabled)"))
    return tuple(out)


# subscription ----------------------------------------------------------------------------------


async def watch(
    address: BrokerAddress,
    verifier: FeedVerifier,
    on_event: Callable[[Event], None],
    *,
    max_age: float = 0.0,
    refresh_group_key: Callable[[], G2] | None = None,
    reconnect: bool = True,
) -> None:
    """Subscribe to the feed and report every message until cancelled.

    ``max_age`` (seconds, 0 = off) raises :class:`Stale` when the newest notice of a kind is older than that.
    ``refresh_group_key`` (blocking; e.g. a read of the registry) is consulted when a notice fails the
    signature check, at most once a minute, to follow a fresh DKG's new group key.
    """
    import aiomqtt

    delay = 1.0
    last_refresh = 0.0
    subscribed_at = time.time()
    warned: dict[NoticeKind, int | None] = {}

    async def handle(name: str, payload: bytes) -> None:
        nonlocal last_refresh
        try:
            try:
                accepted = verifier.check(name, payload)
            except NoticeRefused as refused:
                if refused.reason != BAD_SIGNATURE or refresh_group_key is None or time.monotonic() - last_refresh < 60:
                    raise
                last_refresh = time.monotonic()
                key = await asyncio.to_thread(refresh_group_key)
                if key == verifier.group_key_sig:
                    raise
                verifier.group_key_sig = key
                accepted = verifier.check(name, payload)
        except NoticeRefused as refused:
            on_event(Refused(name, refused.reason, refused.detail))
            return
        if accepted is not None:
            on_event(accepted)

    def check_age() -> None:
        now = time.time()
        for kind in NoticeKind:
            latest = verifier.latest.get(kind)
            block = latest.block_number if latest else None
            age = now - (latest.block_timestamp if latest else subscribed_at)
            if age > max_age and warned.get(kind, -1) != block:
                warned[kind] = block
                on_event(Stale(kind, block, age))

    async def check_ages() -> None:
        while True:
            await asyncio.sleep(min(5.0, max_age / 2))
            check_age()

    while True:
        ager = None
        try:
            async with address.client() as client:
                for name in verifier.topics.values():
                    await client.subscribe(name, qos=1)
                delay = 1.0
                on_event(Connection(True, f"subscribed to {', '.join(verifier.topics.values())} at {address}"))
                ager = asyncio.create_task(check_ages()) if max_age else None
                async for message in client.messages:
                    await handle(str(message.topic), bytes(message.payload))
        except aiomqtt.MqttError as exc:
            on_event(Connection(False, f"{address}: {exc}"))
            if not reconnect:
                raise
        finally:
            if ager is not None:
                ager.cancel()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)
