"""The one threshold-signing path (derot.service.signing) as the notice publisher and the certificate
gateway use it: a faulty member among the first t answers costs latency, never the signature."""

from __future__ import annotations

import asyncio
import random

import pytest
from prometheus_client import CollectorRegistry

from derot import _proto
from derot.certs.notices import Notice, RevocationSet
from derot.constants import DST_CERT
from derot.crypto import threshold as th
from derot.net.status import Refusal
from derot.service import faults
from derot.service.config import LimitsSection
from derot.service.metrics import Metrics
from derot.service.mqtt import NoticePublisher
from derot.service.notice_source import notice_from_state
from derot.service.signing import FanOut, invalid_members
from derot.service.view import NodeView

pb = _proto.load("node_pb2")


def notice_signers(committee, faulty: set[int], slow: float = 0.02):
    """Answer functions for SignNotice: honest members sign the notice (after ``slow`` s), faulty ones answer
    at once with a wrong but well-formed partial, so they are among the first t answers."""

    def member(index: int):
        async def answer(method, message):
            assert method == "SignNotice"
            partial = Notice.decode(message.notice).sign(committee.sig(index))
            if index in faulty:
                return pb.SignNoticeResponse(index=index, partial_signature=faults.corrupt_point(partial).to_bytes())
            await asyncio.sleep(slow)
            return pb.SignNoticeResponse(index=index, partial_signature=partial.to_bytes())
        return answer

    return {i: member(i) for i in range(1, committee.n + 1)}


def publisher(committee, gateway_index: int, peering) -> tuple[NoticePublisher, FanOut, Metrics]:
    state = committee.state()
    view = NodeView(state, committee.keys(gateway_index))
    metrics = Metrics()
    # every member is asked at once, so the instant faulty answer is among the first t
    fanout = FanOut(peering, metrics, LimitsSection(extra_peers=committee.n - committee.threshold))
    notices = NoticePublisher(view, fanout, chain_id=state.snapshot.chain_id, registry=state.snapshot.registry,
                              metrics_registry=CollectorRegistry(), url="mqtt://127.0.0.1:1883")
    return notices, fanout, metrics


def test_a_bad_partial_among_the_first_t_still_gives_a_verified_notice_signature(committee, local_peering):
    seed = random.randrange(2**32)
    print("seed", seed)
    rng = random.Random(seed)
    gateway = rng.randrange(1, 6)
    bad = rng.choice([i for i in range(1, 6) if i != gateway])
    peering = local_peering(notice_signers(committee, {bad}))
    notices, _, metrics = publisher(committee, gateway, peering)
    notice = notice_from_state(committee.state(), next(iter(notices.topics)))

    signed = asyncio.run(notices.sign(notice))

    group_key = committee.public(committee.sig).group_key
    assert th.verify(group_key, notice.digest, signed.signature, DST_CERT)
    assert signed.verify(group_key)
    assert metrics.shares.labels(str(bad), "invalid_share")._value.get() == 1
    assert (bad, "SignNotice") in peering.calls  # the faulty member was asked among the first t


def test_the_certificate_path_reports_the_faulty_member_as_excluded(committee, local_peering):
    peering = local_peering(notice_signers(committee, {2}))
    _, fanout, _ = publisher(committee, 1, peering)
    snap = committee.state().snapshot
    notice = Notice(snap.chain_id, snap.registry, 100, (100).to_bytes(32, "big"), 1_790_001_200, 1, RevocationSet.of())
    keys = committee.keys(1)

    collected = asyncio.run(fanout.threshold_sign(
        committee.state(), keys, digest=notice.digest, dst=DST_CERT, own=lambda weight: notice.sign(keys.shares.sig * weight),
        method="SignNotice", message=pb.SignNoticeRequest(notice=notice.encode())))

    assert th.verify(committee.public(committee.sig).group_key, notice.digest, collected.result, DST_CERT)
    assert invalid_members(collected) == [2]
    assert 2 not in collected.used and len(collected.used) == 3


def test_too_many_faulty_members_refuse_with_not_enough_shares(committee, local_peering):
    peering = local_peering(notice_signers(committee, {2, 3, 4}))
    notices, _, _ = publisher(committee, 1, peering)
    notice = notice_from_state(committee.state(), next(iter(notices.topics)))

    with pytest.raises(Refusal) as refused:
        asyncio.run(notices.sign(notice))
    assert refused.value.reason == "not_enough_shares"
    assert set(refused.value.metadata) == {"2", "3", "4"}


def test_a_feed_message_that_fails_examination_does_not_stop_publishing(committee, local_peering, caplog):
    """A message held until the group key was known is examined in the publish loop; an error there (a bug)
    used to end the loop silently, and this node stopped publishing notices until its next reconnection."""
    peering = local_peering(notice_signers(committee, set(), slow=0.0))
    state = committee.state()
    notices = NoticePublisher(NodeView(state, committee.keys(1)), FanOut(peering, Metrics(), LimitsSection()),
                              chain_id=state.snapshot.chain_id, registry=state.snapshot.registry,
                              metrics_registry=CollectorRegistry(), url="mqtt://127.0.0.1:1883", stagger=0.0,
                              settle=0.0)

    def bug(topic, payload):
        raise RuntimeError("injected bug")

    notices._observe = bug
    notices._unverified = {kind: b"held" for kind in notices.topics}

    class Client:  # the two calls the loop makes on an aiomqtt client
        def __init__(self):
            self.published = asyncio.Event()

        async def publish(self, topic, payload, qos, retain):
            self.published.set()

    async def scenario():
        client = Client()
        loop = asyncio.create_task(notices._publish_loop(client))
        try:
            await asyncio.wait_for(client.published.wait(), 30)
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)

    with caplog.at_level("ERROR", logger="derot.mqtt"):
        asyncio.run(scenario())
    assert any("injected bug" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
