"""The feed end to end: a 2-of-3 devnet (anvil, contracts, node processes) publishing to a real mosquitto,
``derot app watch`` as a process, a council revocation, an attacker with write access to the broker, and a
member asked to sign a notice that does not match its view of the chain."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
from dataclasses import replace

import grpc
import pytest

from derot import _proto
from derot.chain.actions import Revoke
from derot.chain.types import RevocationKind
from derot.constants import DST_CERT
from derot.crypto import threshold as th
from derot.crypto.bls import G1, G2
from derot.crypto.hazmat.poly import Polynomial
from derot.net import tls
from derot.net.status import refusal_from_rpc_error
from derot.service.config import load_config
from derot.devnet.network import COUNCIL, Devnet
from derot.devnet.broker import BrokerProcess, find_mosquitto
from derot.service.notice_source import read_notice_at
from derot.service.node import NodeIdentity
from derot.certs.notices import BrokerAddress, NoticeKind, SignedNotice, topic
from derot.service.setup import open_store

from .conftest import Committee, run_watch_process, wait_for_line

pytestmark = pytest.mark.slow
pb = _proto.load("node_pb2")
FMSPC = bytes.fromhex("00a06f000000")
CHIP_ID = bytes(range(64))
#: seconds of chain time between re-publications of an unchanged notice
HEARTBEAT = 6


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    directory = tmp_path_factory.mktemp("feed")
    broker = (BrokerProcess.mosquitto(directory / "mosquitto") if find_mosquitto()
              else BrokerProcess.embedded(directory / "broker.log")).start()
    net = Devnet(directory / "devnet", nodes=3, threshold=2, mqtt_url=broker.url)
    saved = os.environ.get("DEROT_MQTT_HEARTBEAT")
    os.environ["DEROT_MQTT_HEARTBEAT"] = str(HEARTBEAT)  # the node processes inherit it
    try:
        net.up(timeout=120)
        yield net, broker
    finally:
        net.down()
        broker.stop()
        if saved is None:
            os.environ.pop("DEROT_MQTT_HEARTBEAT", None)
        else:
            os.environ["DEROT_MQTT_HEARTBEAT"] = saved


def retained(url: str, name: str, timeout: float = 10.0) -> bytes:
    """The broker's retained message on ``name``."""
    async def fetch() -> bytes:
        async with BrokerAddress.parse(url).client() as client:
            await client.subscribe(name, qos=1)
            async for message in client.messages:
                return bytes(message.payload)

    return asyncio.run(asyncio.wait_for(fetch(), timeout))


def publish(url: str, name: str, payload: bytes) -> None:
    async def send() -> None:
        async with BrokerAddress.parse(url).client() as client:
            await client.publish(name, payload, qos=1, retain=True)

    asyncio.run(send())


def metric(net: Devnet, index: int, name: str) -> float:
    port = net.node_processes[index - 1].metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_a_council_revocation_reaches_watch_verified_and_attacks_are_refused(network):
    net, broker = network
    registry = net.registry_client()
    group_key = registry.epoch(registry.current_epoch()).group_key_sig
    revocations_topic = topic(registry.w3.eth.chain_id, net.registry, NoticeKind.REVOCATIONS)
    process, lines = run_watch_process(["--mqtt", broker.url, "--devnet", str(net.directory), "--json",
                                        "--timeout", "90"])  # RPC and registry from the devnet's devnet.json
    try:
        first = {wait_for_line(lines, lambda e: e["event"] == "accepted")["kind"] for _ in range(2)}
        assert first == {"revocations", "epochs"}  # both retained notices, published by the nodes on activation
        before = retained(broker.url, revocations_topic)

        started = time.monotonic()
        receipt = registry.apply(net.accounts[COUNCIL], [Revoke(RevocationKind.FMSPC, FMSPC)])
        line = wait_for_line(lines, lambda e: e["event"] == "accepted" and e["kind"] == "revocations"
                             and e["changes"], timeout=30)
        seconds = time.monotonic() - started
        assert line["changes"] == [{"action": "revoked", "subject": "FMSPC", "value": FMSPC.hex()}]
        assert 0 <= line["block"] - receipt["blockNumber"] <= 4, "not within a few blocks of the revocation"
        print(f"revocation in block {receipt['blockNumber']} printed by watch at block {line['block']}, "
              f"{seconds:.1f} s after the transaction was sent")

        # an attacker who can write to the broker: a forgery and a replay of the older genuine notice
        latest = SignedNotice.decode(retained(broker.url, revocations_topic))
        assert latest.verify(group_key) and FMSPC in latest.notice.content.fmspcs
        lifted = replace(latest.notice, block_number=latest.notice.block_number + 1,
                         content=replace(latest.notice.content, fmspcs=()))
        publish(broker.url, revocations_topic, Committee(2, Polynomial.random(1)).sign(lifted).encode())
        forged = wait_for_line(lines, lambda e: e["event"] != "accepted")
        assert (forged["event"], forged["reason"]) == ("refused", "bad_signature")
        publish(broker.url, revocations_topic, before)
        replayed = wait_for_line(lines, lambda e: e["event"] != "accepted")
        assert (replayed["event"], replayed["reason"]) == ("refused", "stale")

        # the nodes noticed too, and put the newest genuine notice back as the retained message
        assert sum(metric(net, i, 'derot_notices_refused_total{reason="bad_signature"}') for i in (1, 2, 3)) >= 3
        deadline = time.monotonic() + 20
        while True:
            current = SignedNotice.decode(retained(broker.url, revocations_topic))
            if current.verify(group_key) and current.notice.block_number >= latest.notice.block_number:
                break
            assert time.monotonic() < deadline, "the retained notice was not restored"
            time.sleep(1)
        assert FMSPC in current.notice.content.fmspcs

        # a quiet registry still gets fresh notices (heartbeat), so silence would mean trouble
        beat = wait_for_line(lines, lambda e: e["event"] == "accepted" and e["kind"] == "revocations", timeout=20)
        assert beat["changes"] == [] and beat["block"] > line["block"]
        assert beat["timestamp"] - line["timestamp"] >= HEARTBEAT
    finally:
        process.terminate()
        process.wait(timeout=10)


def _peer_stub(net: Devnet, target: int, as_node: int):
    """A Peer stub to node ``target`` presenting node ``as_node``'s registered TLS key (mutual TLS)."""
    store = open_store(load_config(net.node_processes[as_node - 1].config_path))
    try:
        identity = NodeIdentity(store).tls
    finally:
        store.close()
    proc = net.node_processes[target - 1]
    creds = grpc.ssl_channel_credentials(tls.fetch_certificate("127.0.0.1", proc.public_port), identity.key_pem,
                                         identity.cert_pem)
    channel = grpc.secure_channel(f"127.0.0.1:{proc.peer_port}", creds, options=tls.channel_options())
    return channel, _proto.load("node_pb2_grpc").PeerStub(channel)


def test_a_member_signs_only_the_notice_it_derives_itself(network):
    net, _broker = network
    registry = net.registry_client()
    w3 = registry.w3
    confirmed = w3.eth.get_block(net.wait_confirmed() - net.confirmations)
    honest = read_notice_at(registry, w3.eth.chain_id, NoticeKind.REVOCATIONS, confirmed["number"],
                            bytes(confirmed["hash"]), confirmed["timestamp"])
    channel, stub = _peer_stub(net, target=2, as_node=1)
    try:
        def sign(notice) -> bytes:
            return stub.SignNotice(pb.SignNoticeRequest(notice=notice.encode()), timeout=10).partial_signature

        def refused(notice) -> str:
            with pytest.raises(grpc.RpcError) as info:
                sign(notice)
            return refusal_from_rpc_error(info.value).reason

        partial = G1.from_bytes(sign(honest))
        keys = stub.GetEpochKeys(pb.GetEpochKeysRequest(epoch=honest.epoch), timeout=10)
        share_key = G2.from_bytes(next(k.sig for k in keys.share_keys if k.index == 2))
        assert th.verify(share_key, honest.digest, partial, DST_CERT)

        doctored = replace(honest, content=replace(honest.content, fmspcs=(b"\x01" * 6,)))
        assert refused(doctored) == "notice_mismatch"
        assert refused(replace(honest, block_timestamp=honest.block_timestamp + 1)) == "notice_mismatch"
        assert refused(replace(honest, epoch=honest.epoch + 1)) == "wrong_epoch"
        assert refused(replace(honest, block_number=w3.eth.block_number + 2)) == "not_confirmed"
        genesis = w3.eth.get_block(1)  # far older than the member's view, and older than the registry
        with pytest.raises(grpc.RpcError) as info:
            sign(replace(honest, block_number=1, block_hash=bytes(genesis["hash"]),
                         block_timestamp=genesis["timestamp"]))
        too_old = refusal_from_rpc_error(info.value)
        assert too_old.reason == "notice_mismatch" and ("too far" in too_old.detail or "precedes" in too_old.detail)
        with pytest.raises(grpc.RpcError) as info:
            stub.SignNotice(pb.SignNoticeRequest(notice=b"\x00" * 400), timeout=10)
        assert refusal_from_rpc_error(info.value).reason == "malformed_request"
    finally:
        channel.close()


def test_the_next_member_publishes_while_the_first_is_down(network):
    net, broker = network
    registry = net.registry_client()
    group_key = registry.epoch(registry.current_epoch()).group_key_sig
    revocations_topic = topic(registry.w3.eth.chain_id, net.registry, NoticeKind.REVOCATIONS)
    published_before = metric(net, 2, "derot_notices_published_total")
    net.stop_node(net.node_processes[0])
    receipt = registry.apply(net.accounts[COUNCIL], [Revoke(RevocationKind.CHIP_ID, CHIP_ID)])
    deadline = time.monotonic() + 30
    while True:
        current = SignedNotice.decode(retained(broker.url, revocations_topic))
        if CHIP_ID in current.notice.content.chip_ids:
            break
        assert time.monotonic() < deadline, "no member published the revocation while member 1 was down"
        time.sleep(0.5)
    assert current.verify(group_key) and current.notice.block_number >= receipt["blockNumber"]
    assert metric(net, 2, "derot_notices_published_total") > published_before  # member 2's turn came first
