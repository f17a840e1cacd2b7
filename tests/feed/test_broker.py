"""The subscriber over a real broker (mosquitto and the embedded amqtt broker): retained delivery,
verification, refusal of forged, replayed and malformed messages; the ``watch`` command as a process."""

from __future__ import annotations

import asyncio
import os

import aiomqtt
import pytest

from derot.app.watch import Accepted, Connection, FeedVerifier, watch
from derot.crypto.hazmat.poly import Polynomial
from derot.devnet.broker import BrokerProcess, find_mosquitto
from derot.certs.notices import BrokerAddress

from .conftest import (
    CHAIN_ID,
    FMSPC,
    REGISTRY,
    Committee,
    epochs,
    revocations,
    run_watch_process,
    wait_for_line,
)


async def publish(url: str, *messages, retain: bool = True) -> None:
    """Publish ``(topic, payload)`` pairs in order from one connection (what any broker client can do)."""
    address = BrokerAddress.parse(url)
    async with address.client() as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1, retain=retain)


async def next_event(events: asyncio.Queue, timeout: float = 5.0):
    return await asyncio.wait_for(events.get(), timeout)


def _broker(kind: str, tmp_path) -> BrokerProcess:
    if kind == "mosquitto":
        if find_mosquitto() is None:
            pytest.skip("mosquitto is not installed")
        return BrokerProcess.mosquitto(tmp_path / "mosquitto")
    return BrokerProcess.embedded(tmp_path / "embedded.log")


@pytest.mark.parametrize("kind", ["mosquitto", "embedded"])
def test_watch_verifies_the_feed_on_a_real_broker(kind, tmp_path, committee):
    original = committee.sign(revocations(100))
    revoked = committee.sign(revocations(110, fmspcs=[FMSPC]))
    forged = Committee(2, Polynomial.random(1)).sign(revocations(120))
    epoch = committee.sign(epochs(111, group_key_sig=committee.group_key_sig))
    topic = original.notice.topic

    async def scenario(url: str) -> None:
        await publish(url, (topic, original.encode()))  # retained before the subscriber exists
        events: asyncio.Queue = asyncio.Queue()
        verifier = FeedVerifier(CHAIN_ID, REGISTRY, committee.group_key_sig)
        task = asyncio.create_task(watch(BrokerAddress.parse(url), verifier, events.put_nowait))
        try:
            assert isinstance(await next_event(events), Connection)
            first = await next_event(events)
            assert isinstance(first, Accepted) and first.first and first.notice == original.notice
            await publish(url, (topic, revoked.encode()))
            change = await next_event(events)
            assert isinstance(change, Accepted) and [str(c) for c in change.changes] == [f"revoked FMSPC {FMSPC.hex()}"]
            await publish(url, (topic, forged.encode()), (topic, original.encode()), (topic, revoked.encode()),
                          (topic, b"garbage"), (epoch.notice.topic, epoch.encode()))
            reasons = [await next_event(events) for _ in range(4)]
            assert [(type(e).__name__, getattr(e, "reason", None)) for e in reasons] == [
                ("Refused", "bad_signature"), ("Refused", "stale"), ("Refused", "malformed"), ("Accepted", None)]
            assert reasons[3].notice == epoch.notice  # the duplicate of `revoked` produced no event
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    with _broker(kind, tmp_path).start() as broker:
        asyncio.run(scenario(broker.url))


def test_watch_reports_a_lost_broker_and_reconnects(tmp_path, committee):
    broker = BrokerProcess.embedded(tmp_path / "embedded.log")
    signed = committee.sign(revocations(100))

    async def scenario() -> None:
        events: asyncio.Queue = asyncio.Queue()
        verifier = FeedVerifier(CHAIN_ID, REGISTRY, committee.group_key_sig)
        task = asyncio.create_task(watch(BrokerAddress.parse(broker.url), verifier, events.put_nowait))
        try:
            assert (await next_event(events)).connected
            await asyncio.to_thread(broker.stop)
            lost = await next_event(events)
            assert isinstance(lost, Connection) and not lost.connected
            await asyncio.to_thread(broker.start)
            while not (event := await next_event(events, 10)).connected:  # refused attempts while it was down
                assert isinstance(event, Connection)
            await publish(broker.url, (signed.notice.topic, signed.encode()))
            assert (await next_event(events)).notice == signed.notice
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    with broker.start():
        asyncio.run(scenario())


def test_embedded_broker_keeps_retained_messages_and_stops(tmp_path):
    broker = BrokerProcess.embedded(tmp_path / "embedded.log").start()
    try:
        async def roundtrip() -> bytes:
            await publish(broker.url, ("derot/t", b"retained payload"))
            async with BrokerAddress.parse(broker.url).client() as client:
                await client.subscribe("derot/t", qos=1)
                async for message in client.messages:
                    return bytes(message.payload)

        assert asyncio.run(asyncio.wait_for(roundtrip(), 10)) == b"retained payload"
        pid = broker.pid
    finally:
        broker.stop()
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"
    with pytest.raises(aiomqtt.MqttError):
        asyncio.run(publish(broker.url, ("derot/t", b"x")))


def test_watch_command_with_a_pinned_group_key(broker, committee):
    original = committee.sign(revocations(100))
    revoked = committee.sign(revocations(110, fmspcs=[FMSPC]))
    forged = Committee(2, Polynomial.random(1)).sign(revocations(120, fmspcs=[FMSPC]))
    topic = original.notice.topic
    asyncio.run(publish(broker.url, (topic, original.encode())))
    process, lines = run_watch_process([
        "--mqtt", broker.url, "--group-key", committee.group_key_sig.to_bytes().hex(), "--chain-id", str(CHAIN_ID),
        "--registry", REGISTRY, "--json", "--count", "2", "--timeout", "30"])
    try:
        first = wait_for_line(lines, lambda e: e["event"] == "accepted")
        assert first["block"] == 100 and first["first"]
        asyncio.run(publish(broker.url, (topic, forged.encode()), (topic, revoked.encode())))
        refused = wait_for_line(lines, lambda e: e["event"] != "connected")
        assert refused["event"] == "refused" and refused["reason"] == "bad_signature"
        second = wait_for_line(lines, lambda e: True)
        assert second["event"] == "accepted" and second["changes"] == [
            {"action": "revoked", "subject": "FMSPC", "value": FMSPC.hex()}]
        assert second["notice"]["content"]["fmspcs"] == [FMSPC.hex()]
        assert process.wait(timeout=15) == 3  # something was refused
    finally:
        process.kill()
        process.wait()


def test_watch_command_refuses_bad_arguments(broker):
    process, lines = run_watch_process(["--mqtt", broker.url, "--group-key", "00" * 96, "--chain-id", "1",
                                        "--registry", REGISTRY])
    assert process.wait(timeout=15) == 1
    assert "--group-key" in process.stderr.read()
    process, lines = run_watch_process(["--mqtt", "http://nope", "--group-key", "00", "--chain-id", "1",
                                        "--registry", REGISTRY])
    assert process.wait(timeout=15) == 1
    assert "broker URL" in process.stderr.read()


def test_watch_follows_a_new_group_key_from_the_chain(broker, committee):
    """After a fresh DKG the registry names a new group key: a chain-anchored watcher re-reads it once."""
    old_key = Committee(2, Polynomial.random(1)).group_key_sig
    signed = committee.sign(revocations(100))
    reads = []

    def read_key_from_chain():
        reads.append(1)
        return committee.group_key_sig

    async def scenario() -> None:
        events: asyncio.Queue = asyncio.Queue()
        verifier = FeedVerifier(CHAIN_ID, REGISTRY, old_key)
        task = asyncio.create_task(watch(BrokerAddress.parse(broker.url), verifier, events.put_nowait,
                                         refresh_group_key=read_key_from_chain))
        try:
            assert (await next_event(events)).connected
            await publish(broker.url, (signed.notice.topic, signed.encode()))
            accepted = await next_event(events)
            assert isinstance(accepted, Accepted) and verifier.group_key_sig == committee.group_key_sig
            forged = Committee(2, Polynomial.random(1)).sign(revocations(120))
            await publish(broker.url, (forged.notice.topic, forged.encode()))
            refused = await next_event(events)
            assert refused.reason == "bad_signature" and len(reads) == 1  # at most one chain read a minute
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
