"""A registrant that comes up after the last registry update is pinned, and its membership evidence checked,
without another update.

The bootstrap committee boots on a chain that may not move until the vote (and a quiet chain moves seldom): if
retries waited for the next registry state, a node that was not up when its peers first looked would stay
unpinned and unchecked until then, and the DKG the vote starts would find its evidence missing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
import threading
import time

from derot.chain.types import NodeRecord, NodeStatus
from derot.limits import LIMITS
from derot.net import tls
from derot.service.backoff import BackOff
from derot.service.member_evidence import MemberEvidence
from derot.service.metrics import Metrics
from derot.service.peering import Peering
from derot.service.tasks import TaskSet


def _registrant(port: int, identity: tls.TlsIdentity) -> NodeRecord:
    endpoint = f"public=127.0.0.1:{port};peer=127.0.0.1:{port}"
    return NodeRecord("0x" + "f1" * 20, NodeStatus.PENDING, bytes(32), bytes(32), endpoint, identity.key_hash,
                      b"\x07" * 32)


def _tls_context(identity: tls.TlsIdentity, tmp_path) -> ssl.SSLContext:
    (tmp_path / "c.pem").write_bytes(identity.cert_pem)
    (tmp_path / "k.pem").write_bytes(identity.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    return context


def _serve(listener: socket.socket, context: ssl.SSLContext) -> None:
    """Complete a TLS handshake on every connection (what a certificate fetch needs) until ``listener`` closes."""
    listener.listen()
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        try:
            context.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            conn.close()


async def _until(predicate, seconds: float) -> float:
    """Seconds until ``predicate()`` held; fails after ``seconds``."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < seconds, "not reached in time"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def test_a_registrant_that_starts_listening_later_is_pinned_without_a_new_state(committee, tmp_path):
    me, late = tls.generate_identity(), tls.generate_identity()
    context = _tls_context(late, tmp_path)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))  # bound, not listening: a connection is refused, as before a node boots
    node = _registrant(listener.getsockname()[1], late)
    state = dataclasses.replace(committee.state(), nodes={**committee.state().nodes, node.operator: node},
                                current_epoch=0)

    async def scenario():
        peering = Peering(me, committee.state().committee.members[0], peer_deadline=1.0)
        peering.on_state(state)  # the only registry update
        await asyncio.sleep(0.3)
        assert late.key_hash not in peering.pinned  # refused: not up yet
        threading.Thread(target=_serve, args=(listener, context), daemon=True).start()
        return await _pinned(peering, late.key_hash)

    with listener:
        print(f"pinned {asyncio.run(scenario()):.1f} s after the registrant started listening")


async def _pinned(peering: Peering, key_hash: bytes) -> float:
    """Seconds until ``key_hash`` is pinned; closes ``peering``."""
    try:
        return await _until(lambda: key_hash in peering.pinned, 60.0)
    finally:
        await peering.close()


class _LatePeer:
    """A Peering stand-in whose registrant answers its evidence only from the second fetch on."""

    def __init__(self):
        self.fetches: list[float] = []

    async def fetch_evidence(self, info):
        self.fetches.append(time.monotonic())
        return None if len(self.fetches) == 1 else b"evidence"


class _Verifier:
    trust = None

    async def verify(self, fn, evidence, *args, source, **kwargs):
        return ("claims", evidence, source)


def test_an_unreachable_registrants_evidence_is_fetched_again_without_a_new_state(committee):
    peer, metrics = _LatePeer(), Metrics()
    node = _registrant(9, tls.generate_identity())
    state = dataclasses.replace(committee.state(), nodes={node.operator: node})

    def verified() -> float:
        return metrics.registry.get_sample_value("derot_member_evidence_checked", {"verdict": "verified"})

    async def scenario():
        tasks = TaskSet()
        evidence = MemberEvidence(peer, _Verifier(), b"net", "0x" + "aa" * 20, tasks, metrics)
        evidence.watch(state)  # the only registry update
        await _until(lambda: verified() == 1, 60.0)
        await tasks.cancel_all()

    asyncio.run(scenario())
    assert len(peer.fetches) == 2
    assert peer.fetches[1] - peer.fetches[0] >= LIMITS.member_evidence_retry * 0.9  # after its back-off, not at once
    assert metrics.registry.get_sample_value("derot_member_evidence_checked", {"verdict": "refused"}) == 0


def test_a_newly_allowed_node_is_pinned_at_once_while_another_waits_out_its_back_off(committee, tmp_path):
    """The refresh that retries a silent registrant on its back-off must not hold up a node allowed later."""
    me, silent_id, new_id = tls.generate_identity(), tls.generate_identity(), tls.generate_identity()
    context = _tls_context(new_id, tmp_path)
    listener = socket.create_server(("127.0.0.1", 0))
    silent = dataclasses.replace(_registrant(9, silent_id), operator="0x" + "f2" * 20)
    new = _registrant(listener.getsockname()[1], new_id)
    base = dataclasses.replace(committee.state(), current_epoch=0)

    threading.Thread(target=_serve, args=(listener, context), daemon=True).start()

    async def scenario():
        peering = Peering(me, committee.state().committee.members[0], peer_deadline=1.0)
        peering._cert_retry = BackOff(120.0, 120.0)  # every other allowed node backed off for two minutes:
        for node in (*base.nodes.values(), silent):
            peering._cert_retry.failed(node.tls_key_hash)
        peering.on_state(dataclasses.replace(base, nodes={**base.nodes, silent.operator: silent}))
        await asyncio.sleep(0.2)
        assert not peering._refresh.done()  # waiting out the silent registrant's back-off
        peering.on_state(dataclasses.replace(base, nodes={**base.nodes, silent.operator: silent, new.operator: new}))
        return await _pinned(peering, new_id.key_hash)

    with listener:
        print(f"pinned {asyncio.run(scenario()):.2f} s after the state that allowed it")
