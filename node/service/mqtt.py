"""The node side of the notice feed: build notices from the confirmed registry state, have the committee
threshold-sign them, publish them retained on MQTT. (The embedded broker devnets use is
:mod:`derot.devnet.broker`.)

Who publishes. Every member of the active committee runs a :class:`NoticePublisher`; they coordinate through
the feed itself, without a leader election. Each publisher subscribes to its own topics and tracks the
newest notice there that verifies under the group key. A notice is *due* when the node's confirmed state
differs from it (a revocation, a platform rule, a new epoch), when the feed is empty, or when the feed's
notice is older than ``heartbeat`` seconds of chain time (so subscribers can tell a quiet registry from a
withheld feed). Member ``i`` publishes a due notice only after it has been due for ``(i − 1) · stagger``
seconds: member 1 publishes at once, the others see its notice arrive and stand down, and the next member
takes over within ``stagger`` seconds when member 1 is down or cut off from the broker. Nobody publishes a
notice older than the feed's (no regression of the retained message). Duplicates that slip through a race are
harmless: BLS threshold signatures are unique, so two publishers of one notice publish identical bytes.
Anything else that appears on a feed topic (a forgery, garbage, an older notice replayed with the retain flag)
would displace the retained notice, so a publisher that sees it re-publishes the newest signed notice it holds
(no signing round; at most once per ``RESTORE_INTERVAL``). Broker ACLs that let only the nodes write the
feed topics remain the real defence against such a flood; subscribers refuse those messages either way.

Signing (like certificate issuance): the publisher is the gateway. It gets the encoded notice threshold-signed
through :meth:`derot.service.signing.FanOut.threshold_sign` (Peer ``SignNotice``); each contributing member
signs only the notice it rebuilds itself (:class:`derot.service.notice_source.NoticeSource`).
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge

from derot import _proto
from derot.certs.notices import BrokerAddress, Notice, NoticeDecodeError, NoticeKind, SignedNotice, topic
from derot.constants import DST_CERT
from derot.net.status import Refusal
from derot.service.notice_source import notice_from_state
from derot.service.signing import FanOut
from derot.service.view import NodeView

log = logging.getLogger("derot.mqtt")

#: seconds between the publishing turns of consecutive members
STAGGER = 2.0
#: seconds to wait after (re)subscribing for the broker's retained notices before deciding anything
SETTLE = 1.0
#: seconds before a notice whose signing failed is tried again
RETRY = 3.0
#: minimum seconds between two re-publications of the newest notice after the feed was displaced
RESTORE_INTERVAL = 5.0
TICK = 1.0


# ---------------------------------------------------------------------------------------------
# publishing


class NoticePublisher:
    """Keeps the feed's retained notices current (see the module docstring). One per node process."""

    def __init__(self, view: NodeView, signer: FanOut, *, chain_id: int, registry: str,
                 metrics_registry: CollectorRegistry, url: str, heartbeat: float = 300.0, stagger: float = STAGGER,
                 settle: float = SETTLE) -> None:
        self.view = view
        self.signer = signer
        self.address = BrokerAddress.parse(url)
        self.heartbeat = heartbeat
        self.stagger = stagger
        self.settle = settle
        self._pb = _proto.load("node_pb2")
        self.topics = {kind: topic(chain_id, registry, kind) for kind in NoticeKind}
        self._kind_of_topic = {name: kind for kind, name in self.topics.items()}
        self._latest: dict[NoticeKind, SignedNotice] = {}  # newest notice on each topic that verifies
        self._displaced: set[NoticeKind] = set()  # topics whose retained message may no longer be the newest
        self._unverified: dict[NoticeKind, bytes] = {}  # arrived before this node knew the group key
        self._restored_at: dict[NoticeKind, float] = {}
        self._due_since: dict[NoticeKind, float] = {}
        self._retry_at: dict[NoticeKind, float] = {}
        self._wake = asyncio.Event()
        registry = metrics_registry
        self.published = Counter("derot_notices_published_total", "Feed notices this node published", ["kind"],
                                 registry=registry)
        self.refused = Counter(
            "derot_notices_refused_total", "Messages on the feed topics that are not its newest notice "
            "(forged, malformed, for another registry, or older: stale)", ["reason"], registry=registry)
        self.feed_block = Gauge("derot_notice_block", "Block of the newest verified notice on the feed", ["kind"],
                                registry=registry)
        self.connected = Gauge("derot_mqtt_connected", "1 while connected to the MQTT broker", registry=registry)

    def start(self) -> asyncio.Task:
        return asyncio.create_task(self._run(), name="mqtt")

    def on_state(self, _state) -> None:
        """A new confirmed state (the view holds it): re-evaluate now."""
        self._wake.set()

    # connection ---------------------------------------------------------------------------------
    async def _run(self) -> None:
        import aiomqtt

        delay = 1.0
        while True:
            try:
                async with self.address.client() as client:
                    for name in self.topics.values():
                        await client.subscribe(name, qos=1)
                    self.connected.set(1)
                    log.info("connected to the MQTT broker", extra={"broker": str(self.address)})
                    delay = 1.0
                    publisher = asyncio.create_task(self._publish_loop(client), name="mqtt-publish")
                    try:
                        async for message in client.messages:
                            try:
                                self._observe(str(message.topic), bytes(message.payload))
                            except Exception:  # one message must not end the subscription
                                log.exception("failed to examine a feed message", extra={"topic": str(message.topic)})
                    finally:
                        publisher.cancel()
                        await asyncio.gather(publisher, return_exceptions=True)
            except (aiomqtt.MqttError, OSError) as exc:
                log.warning("MQTT broker unreachable; retrying",
                            extra={"broker": str(self.address), "error": str(exc), "retry_in": delay})
            finally:
                self.connected.set(0)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _observe(self, name: str, payload: bytes) -> None:
        """Track the newest verified notice on each topic; count (and log) what fails verification."""
        kind = self._kind_of_topic.get(name)
        if kind is None:
            return
        state = self.view.state
        if state is None or state.group_key_sig is None:
            self._unverified[kind] = payload  # verified once the follower has seen the active epoch
            return
        try:
            signed = SignedNotice.decode(payload)
        except NoticeDecodeError as exc:
            return self._refuse(kind, "malformed", name, str(exc))
        notice = signed.notice
        if notice.topic != name:
            return self._refuse(kind, "wrong_topic", name, f"a {notice.kind.topic_suffix} notice for {notice.topic}")
        if not signed.verify(state.group_key_sig):
            return self._refuse(kind, "bad_signature", name, f"block {notice.block_number}: does not verify under "
                                                             "the group key")
        latest = self._latest.get(kind)
        if latest is not None and notice.block_number < latest.notice.block_number:
            # replayed, or a late duplicate: it may now be the retained message
            return self._refuse(kind, "stale", name, f"block {notice.block_number} is older than block "
                                                     f"{latest.notice.block_number}")
        self._latest[kind] = signed
        self.feed_block.labels(kind.topic_suffix).set(notice.block_number)
        self._wake.set()

    def _refuse(self, kind: NoticeKind, reason: str, name: str, detail: str) -> None:
        self.refused.labels(reason).inc()
        log.warning("refused a message on the feed topic", extra={"topic": name, "reason": reason, "detail": detail})
        self._displaced.add(kind)
        self._wake.set()

    # deciding and publishing --------------------------------------------------------------------
    async def _publish_loop(self, client) -> None:
        """Runs while connected; a lost connection ends the subscription, which restarts this loop."""
        import aiomqtt

        await asyncio.sleep(self.settle)
        while True:
            state = self.view.state
            if self._unverified and state is not None and state.group_key_sig is not None:
                for kind, payload in list(self._unverified.items()):
                    del self._unverified[kind]
                    try:
                        self._observe(self.topics[kind], payload)
                    except Exception:  # as in the subscription: one message must not end the feed
                        log.exception("failed to examine a feed message", extra={"topic": self.topics[kind]})
            for kind in NoticeKind:
                try:
                    await self._restore(client, kind)
                    await self._consider(client, kind)
                except aiomqtt.MqttError as exc:  # e.g. no PUBACK in time: try again later
                    log.warning("publishing to the broker failed", extra={"kind": kind.topic_suffix,
                                                                          "error": str(exc)})
                    self._retry_at[kind] = time.monotonic() + RETRY
                except Exception:  # one bad round must not stop the feed
                    log.exception("notice round failed", extra={"kind": kind.topic_suffix})
                    self._retry_at[kind] = time.monotonic() + RETRY
            try:
                await asyncio.wait_for(self._wake.wait(), TICK)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def _restore(self, client, kind: NoticeKind) -> None:
        """Re-publish the newest signed notice after something else displaced it on the topic."""
        latest = self._latest.get(kind)
        now = time.monotonic()
        if kind not in self._displaced or latest is None or now - self._restored_at.get(kind, -1e9) < RESTORE_INTERVAL:
            return
        self._displaced.discard(kind)
        state = self.view.state
        if state is None or state.group_key_sig is None or not latest.verify(state.group_key_sig):
            return  # signed under a group key that is no longer current (a fresh DKG): nothing to restore
        self._restored_at[kind] = now
        await client.publish(self.topics[kind], latest.encode(), qos=1, retain=True)
        log.info("restored the newest notice on the feed", extra={"kind": kind.topic_suffix,
                                                                   "block": latest.notice.block_number})

    def _due(self, notice: Notice, latest: Notice | None) -> bool:
        if latest is None:
            return True
        if latest.block_number >= notice.block_number:
            return False  # the feed is at least as new as this node's view
        if latest.content != notice.content or latest.epoch != notice.epoch:
            return True
        return notice.block_timestamp - latest.block_timestamp >= self.heartbeat

    async def _consider(self, client, kind: NoticeKind) -> None:
        state, keys = self.view.state, self.view.keys
        if state is None or keys is None or state.committee is None or state.committee.id != keys.epoch:
            self._due_since.pop(kind, None)
            return
        notice = notice_from_state(state, kind)
        latest = self._latest.get(kind)
        if notice is None or not self._due(notice, latest.notice if latest else None):
            self._due_since.pop(kind, None)
            return
        now = time.monotonic()
        since = self._due_since.setdefault(kind, now)
        if now < since + (keys.index - 1) * self.stagger or now < self._retry_at.get(kind, 0.0):
            return
        try:
            signed = await self.sign(notice)
        except Refusal as refusal:
            self._retry_at[kind] = time.monotonic() + RETRY
            log.warning("could not get the notice signed", extra={"kind": kind.topic_suffix, "block":
                        notice.block_number, "reason": refusal.reason, "detail": refusal.detail})
            return
        await client.publish(self.topics[kind], signed.encode(), qos=1, retain=True)
        self._latest[kind] = signed
        self._due_since.pop(kind, None)
        self.published.labels(kind.topic_suffix).inc()
        self.feed_block.labels(kind.topic_suffix).set(notice.block_number)
        log.info("published notice", extra={"kind": kind.topic_suffix, "block": notice.block_number,
                                            "epoch": notice.epoch})

    async def sign(self, notice: Notice) -> SignedNotice:
        """Gateway: collect ``t`` partial signatures over ``notice`` from the committee and combine them."""
        state, keys = self.view.serving()
        collected = await self.signer.threshold_sign(
            state, keys, digest=notice.digest, dst=DST_CERT,
            own=lambda weight: notice.sign(keys.shares.sig * weight),  # reduced mod R by the multiplication
            method="SignNotice", message=self._pb.SignNoticeRequest(notice=notice.encode()),
        )
        return SignedNotice(notice, collected.result)
