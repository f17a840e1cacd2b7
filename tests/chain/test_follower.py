"""The chain follower against a real anvil: confirmations, incremental state, reorgs, RPC restarts."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from web3 import Web3

from derot.chain import actions as A
from derot.devnet.anvil import Anvil, mine, reorg
from derot.chain.deploy import DeployParams, deploy
from derot.chain.follower import Follower
from derot.chain.client import ChainClient, RpcError
from derot.chain.quorum import BATCH_MAX, ChainUnverified, Endpoint, QuorumProvider
from derot.chain.governance import Governance
from derot.devnet.governance import enact
from derot.chain.registry import Registry
from derot.chain.state import read_state
from derot.chain.types import EpochPhase, RevocationKind
from derot.constants import Platform
from derot.crypto.bls import G2, random_scalar

from .lying_rpc import LyingRpc
from .proxy import TcpProxy

FMSPC = bytes.fromhex("00906ed50000")


class World:
    def __init__(self, anvil: Anvil) -> None:
        self.anvil = anvil
        self.w3 = Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 30}))
        accounts = anvil.accounts()
        self.deployer, self.council, self.voter, self.operator = accounts[:4]
        self.nodes = accounts[4:7]
        params = DeployParams.devnet([(self.voter.address, 10**24)], self.council.address)
        self.deployment = deploy(self.w3, self.deployer, params, self_delegate=[self.voter])
        self.registry = Registry(self.w3, self.deployment.registry)
        self.gov = Governance(self.w3, self.deployment)

    def follower(self, url: str | None = None, timeout: float = 2.0, **kwargs) -> Follower:
        kwargs.setdefault("confirmations", 0)
        kwargs.setdefault("poll_interval", 0.05)
        return Follower.connect(url or self.anvil.url, self.deployment.registry,
                                start_block=self.deployment.deploy_block, timeout=timeout, **kwargs)

    def revoke(self, kind=RevocationKind.FMSPC, ident=FMSPC):
        return self.registry.apply(self.council, [A.Revoke(kind, ident)])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    directory = tmp_path_factory.mktemp("follower-anvil")
    with Anvil(state_path=directory / "state.json", log_path=directory / "anvil.log") as node:
        yield World(node)


def drain(follower: Follower) -> list:
    updates = []
    while (update := follower.poll()) is not None:
        updates.append(update)
    return updates


def fresh_state(world: World, follower: Follower):
    block = world.w3.eth.get_block(follower.cursor)
    return read_state(world.registry, bytes(block["hash"]), block["number"], block["timestamp"])


def test_incremental_state_equals_a_full_read(world):
    follower = world.follower(max_range=3)  # several polls to catch up with what follows
    first = drain(follower)  # a first read jumps to the head: one update, no history
    assert len(first) == 1 and first[0].events == () and first[0].state.snapshot.registry == world.deployment.registry
    reg = world.registry
    for i, node in enumerate(world.nodes):
        reg.register_node(node, identity_key=os.urandom(32), x25519_key=os.urandom(32), endpoint=f"h:{i}",
                          tls_key_hash=os.urandom(32))
    app = reg.register_app(world.operator, os.urandom(32))
    reg.set_app_measurement(world.operator, app, Platform.SEV_SNP, os.urandom(32), True)
    enact(world.gov, world.voter, [
        *(A.AddNode(n.address) for n in world.nodes), A.AllowPlatform(1), A.AllowNodeMeasurement(1, bytes(32)),
        A.StartDkg(tuple(n.address for n in world.nodes), 2),
    ], f"setup {os.urandom(4).hex()}", [world.voter])
    epoch = reg.epoch_count()
    pk = G2.generator() * random_scalar()
    for node in world.nodes[:2]:
        reg.report_epoch(node, epoch, pk, pk, bytes(32))
    world.revoke(RevocationKind.CHIP_ID, os.urandom(64))
    reg.apply(world.council, [A.FreezeApp(app), A.SetTcbFloor(1, 5)])
    updates = drain(follower)
    names = [e.name for u in updates for e in u.events]
    for expected in ("NodeRegistered", "AppRegistered", "EpochStarted", "EpochActivated", "Revoked", "AppFrozen"):
        assert expected in names
    state = follower.state
    assert state == fresh_state(world, follower)
    assert state.committee.phase is EpochPhase.ACTIVE and state.group_key_sig == pk
    assert state.snapshot.apps[app].frozen and len(state.snapshot.revoked_chip_ids) >= 1
    # no duplicates, chain order
    keys = [(e.block_number, e.log_index) for u in updates for e in u.events]
    assert keys == sorted(set(keys))


def test_confirmations_delay_what_the_follower_sees(world):
    follower = world.follower(confirmations=2)
    drain(follower)
    ident = os.urandom(6)
    world.revoke(ident=ident)
    assert drain(follower) == [] or ident not in follower.state.snapshot.revoked_fmspcs
    mine(world.w3, 1)
    drain(follower)
    assert ident not in follower.state.snapshot.revoked_fmspcs
    mine(world.w3, 1)
    updates = drain(follower)
    assert ident in follower.state.snapshot.revoked_fmspcs
    assert [e.name for u in updates for e in u.events] == ["Revoked"]


def test_reorg_that_removes_a_revocation_is_followed(world):
    follower = world.follower(confirmations=0)
    drain(follower)
    ident = os.urandom(6)
    world.revoke(ident=ident)
    updates = drain(follower)
    assert ident in follower.state.snapshot.revoked_fmspcs
    revoked_block = updates[-1].events[-1].block_number
    # replace the revocation's block (and one more on top) by empty blocks
    mine(world.w3, 1)
    drain(follower)
    reorg(world.w3, 2, [])
    assert world.w3.eth.block_number == revoked_block + 1
    updates = drain(follower)
    assert updates and updates[0].reorg is not None
    assert updates[0].reorg.fork_block == revoked_block - 1
    assert ident not in follower.state.snapshot.revoked_fmspcs
    assert not any(e.name == "Revoked" for u in updates for e in u.events)
    assert follower.state == fresh_state(world, follower)
    assert follower.state.block_hash == bytes(world.w3.eth.get_block("latest")["hash"])


def test_reorg_below_the_confirmation_depth_is_invisible(world):
    follower = world.follower(confirmations=3)
    drain(follower)
    cursor = follower.cursor
    ident = os.urandom(6)
    world.revoke(ident=ident)
    reorg(world.w3, 1, [])  # the revocation never reached 3 confirmations
    mine(world.w3, 3)
    updates = drain(follower)
    assert all(u.reorg is None for u in updates) and follower.cursor > cursor
    assert ident not in follower.state.snapshot.revoked_fmspcs


def test_rpc_restart_loses_nothing(world):
    follower = world.follower()
    drain(follower)
    received: list = []
    stop = threading.Event()

    def consume():
        for update in follower.run(stop=stop):
            received.extend(update.events)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    before = [os.urandom(6) for _ in range(2)]
    for ident in before:
        world.revoke(ident=ident)
    time.sleep(0.3)
    world.anvil.stop()  # the RPC node goes away (anvil dumps its chain to --state)
    deadline = time.monotonic() + 10
    while follower.failures < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert follower.failures >= 2 and "Connection" in (follower.last_error or "")
    world.anvil.start()  # same port, chain reloaded from --state
    after = [os.urandom(6) for _ in range(2)]
    for ident in after:
        world.revoke(ident=ident)
    deadline = time.monotonic() + 20
    while follower.cursor < world.w3.eth.block_number and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(5)
    got = [bytes(e.args["id"]) for e in received if e.name == "Revoked"]
    assert set(before + after) <= set(got) and len(got) == len(set(got))
    assert follower.failures == 0 and follower.state == fresh_state(world, follower)


def test_rpc_timeouts_back_off_and_resume(world):
    proxy = TcpProxy(world.anvil.port)
    try:
        follower = world.follower(url=proxy.url, timeout=0.5)
        follower.backoff_initial = 0.05
        drain(follower)

        async def follow(expected: set[bytes]) -> list:
            got = []
            async for update in follower.updates():
                got.extend(bytes(e.args["id"]) for e in update.events if e.name == "Revoked")
                if expected <= set(got):
                    return got

        proxy.stall()
        idents = {os.urandom(6) for _ in range(3)}
        for ident in idents:
            world.revoke(ident=ident)

        async def scenario():
            task = asyncio.create_task(follow(idents))
            while follower.failures < 2:  # requests time out (0.5 s) against the stalled proxy
                await asyncio.sleep(0.05)
            error = follower.last_error
            proxy.resume()
            got = await asyncio.wait_for(task, 30)
            return got, error

        got, error = asyncio.run(scenario())
        assert sorted(got) == sorted(idents)
        assert "timed out" in error.lower() or "timeout" in error.lower(), error
        assert follower.failures == 0
    finally:
        proxy.close()


def test_a_governance_change_of_the_epoch_timeout_is_followed(world):
    """EpochTimeoutSet is the one Epoch* event that names no epoch; it once raised KeyError inside every node's
    follower and stopped it for good (a single governance vote froze the whole committee's chain view)."""
    follower = world.follower()
    drain(follower)
    enact(world.gov, world.voter, [A.SetEpochTimeout(77)], f"timeout {os.urandom(4).hex()}", [world.voter])
    world.revoke(ident=os.urandom(6))  # and the follower goes on after it
    updates = drain(follower)
    names = [e.name for u in updates for e in u.events]
    assert "EpochTimeoutSet" in names and names[-1] == "Revoked"
    assert follower.state == fresh_state(world, follower)
    assert world.registry.epoch_timeout() == 77


def test_an_unexpected_error_is_logged_and_retried_from_the_same_cursor(world, caplog):
    """A bug in handling one range must neither end ``updates()`` nor lose the range's events."""
    follower = world.follower()
    follower.backoff_initial = 0.01
    drain(follower)
    ident = os.urandom(6)
    world.revoke(ident=ident)
    real, calls = follower._incremental, []

    def buggy_once(*args, **kwargs):
        calls.append(follower.cursor)
        if len(calls) == 1:
            raise RuntimeError("injected bug")
        return real(*args, **kwargs)

    follower._incremental = buggy_once

    async def first_revocation():
        async for update in follower.updates():
            revoked = [bytes(e.args["id"]) for e in update.events if e.name == "Revoked"]
            if revoked:
                return revoked

    with caplog.at_level("ERROR", logger="derot.chain.follower"):
        assert asyncio.run(asyncio.wait_for(first_revocation(), 30)) == [ident]
    assert len(calls) == 2 and calls[0] == calls[1]  # the retry started from the cursor the bug left unmoved
    assert follower.failures == 0 and follower.last_reason is None
    assert any("injected bug" in r.getMessage() and r.exc_info for r in caplog.records)


# ------------------------------------------------------------------------------------------------
# what a poll costs, and the liars the cheaper poll still catches


def _posts(follower: Follower) -> list[int]:
    return [endpoint.posts for endpoint in follower.w3.provider.endpoints]


def test_an_idle_poll_is_one_request_and_an_empty_block_two(world):
    """An idle node polls twice a block: the head and the reorg check share one HTTP request per endpoint;
    a new block without registry logs adds one more, its logs and its header in one batch."""
    follower = world.follower()
    drain(follower)
    start = _posts(follower)[0]
    assert follower.poll() is None and _posts(follower) == [start + 1]
    mine(world.w3, 1)
    update = follower.poll()
    assert update is not None and update.events == () and update.reorg is None
    assert follower.cursor == world.w3.eth.block_number
    assert _posts(follower) == [start + 3]
    assert follower.state == fresh_state(world, follower)


def test_one_liar_cannot_hide_a_reorg_in_the_batched_check(world):
    """After a same-height reorg a lying endpoint keeps answering the replaced block (a valid header):
    beside one honest endpoint (2 of 2) the poll is refused and the cursor stays; beside two it is outvoted
    and the reorg is followed."""
    liar, twin = LyingRpc(world.anvil.url), LyingRpc(world.anvil.url)
    try:
        alone = world.follower([world.anvil.url, liar.url], quorum=2)
        outvoted = world.follower([world.anvil.url, liar.url, twin.url], quorum=2)
        mine(world.w3, 1)
        drain(alone), drain(outvoted)
        cursor = alone.cursor
        assert outvoted.cursor == cursor == world.w3.eth.block_number
        old = world.w3.provider.make_request("eth_getBlockByNumber", [hex(cursor), False])["result"]
        liar.header_lie = lambda block: dict(old) if block.get("number") == old["number"] else block
        reorg(world.w3, 1, [])
        assert world.w3.eth.block_number == cursor and world.w3.eth.get_block(cursor)["hash"].to_0x_hex() != old["hash"]
        with pytest.raises(ChainUnverified) as refused:
            alone.poll()
        assert refused.value.reason == "chain_unverified" and alone.cursor == cursor
        mine(world.w3, 1)
        updates = drain(outvoted)
        assert updates and updates[0].reorg is not None and updates[0].reorg.old_cursor == cursor
        assert outvoted.state == fresh_state(world, outvoted)
    finally:
        liar.close(), twin.close()


def test_an_error_for_the_batched_logs_is_never_read_as_no_logs(world):
    """The one endpoint answers a new block's eth_getLogs (in the batch with its header) with a JSON-RPC error:
    the poll fails and the cursor stays, so a revocation in that block is not skipped; once the endpoint
    answers honestly the revocation is followed."""
    liar = LyingRpc(world.anvil.url)
    try:
        follower = world.follower(liar.url)
        drain(follower)
        cursor = follower.cursor

        def refuse_logs(replies):  # the logs answer is the batch's only list result
            return [{"jsonrpc": "2.0", "id": r.get("id"), "error": {"code": -32005, "message": "query timeout"}}
                    if isinstance(r.get("result"), list) else r for r in replies]

        liar.batch_lie = refuse_logs
        world.revoke(ident=bytes.fromhex("00906ed5aaaa"))
        with pytest.raises(RpcError, match="eth_getLogs: query timeout"):
            follower.poll()
        assert follower.cursor == cursor
        liar.honest()
        updates = drain(follower)
        assert any(e.name == "Revoked" for u in updates for e in u.events)
        assert follower.state == fresh_state(world, follower)
    finally:
        liar.close()


def test_a_frozen_endpoint_cannot_hold_back_the_batched_head(world):
    liar, twin = LyingRpc(world.anvil.url), LyingRpc(world.anvil.url)
    try:
        follower = world.follower([world.anvil.url, liar.url, twin.url], quorum=2)
        drain(follower)
        liar.frozen_head = follower.cursor
        mine(world.w3, 2)
        assert drain(follower) and follower.cursor == world.w3.eth.block_number
    finally:
        liar.close(), twin.close()


def test_head_batch_takes_only_reads_pinned_to_a_block(world):
    provider = QuorumProvider([world.anvil.url])
    refused = ([("eth_getBlockByNumber", ["latest", False])], [("eth_getBlockByNumber", ["finalized", False])],
               [("eth_getLogs", [{"fromBlock": "0x1", "toBlock": "latest"}])], [("eth_call", [{}, "safe"])],
               [("eth_blockNumber", [])], [("eth_sendRawTransaction", ["0x00"])],
               [("eth_getBlockByNumber", ["0x1", False])] * BATCH_MAX)
    for calls in refused:
        with pytest.raises(ValueError):
            provider.head_batch(calls)
    assert provider.endpoints[0].posts == 0  # refused before anything was sent
    head, (reply,) = provider.head_batch([("eth_getBlockByNumber", ["0x1", False])])
    assert head == world.w3.eth.block_number
    assert reply["result"]["hash"] == world.w3.eth.get_block(1)["hash"].to_0x_hex()
    assert provider.endpoints[0].posts == 1


def test_a_finalized_block_is_asked_once_when_endpoints_agree_and_voted_when_not(world):
    """Resolving the ``finalized`` tag already verified every endpoint's block; when all agree that block is
    the answer. A liar answering an older, valid block makes the tag resolve to the lower number, whose block
    is then voted on as before."""
    mine(world.w3, 80)  # anvil finalizes blocks 64 deep
    liar = LyingRpc(world.anvil.url)
    try:
        provider = QuorumProvider([world.anvil.url, liar.url], 2)
        final = world.w3.provider.make_request("eth_getBlockByNumber", ["finalized", False])["result"]
        reply = provider.make_request("eth_getBlockByNumber", ["finalized", False])
        assert reply["result"]["hash"] == final["hash"] and [e.posts for e in provider.endpoints] == [1, 1]
        older = world.w3.provider.make_request("eth_getBlockByNumber", [hex(int(final["number"], 16) - 5), False])
        liar.header_lie = lambda block: dict(older["result"]) if block.get("number") == final["number"] else block
        reply = provider.make_request("eth_getBlockByNumber", ["finalized", False])
        assert reply["result"]["hash"] == older["result"]["hash"] and [e.posts for e in provider.endpoints] == [3, 3]
    finally:
        liar.close()


def test_a_new_range_over_the_reply_limit_is_read_in_smaller_answers(world):
    """The logs and headers of a new range share one batch; when that answer is over the reply limit the range
    is read as before (the logs alone, then the headers), and nothing is lost."""
    follower = world.follower()
    drain(follower)
    idents = [os.urandom(6) for _ in range(3)]
    for ident in idents:  # three blocks, one revocation each
        world.revoke(ident=ident)
    first, last = follower.cursor + 1, world.w3.eth.block_number
    probe = Endpoint(world.anvil.url, 5.0)
    logs = {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs",
            "params": [{"address": world.registry.address, "fromBlock": hex(first), "toBlock": hex(last)}]}
    headers = [{"jsonrpc": "2.0", "id": 2 + i, "method": "eth_getBlockByNumber", "params": [hex(n), False]}
               for i, n in enumerate(range(first, last + 1))]
    combined = len(probe._post([logs, *headers], "batch"))
    assert max(len(probe._post(logs, "logs")), len(probe._post(headers, "batch"))) < combined
    follower.w3 = ChainClient(QuorumProvider([world.anvil.url], 1, max_reply_bytes=combined - 1))
    update = follower.poll()
    assert [bytes(e.args["id"]) for e in update.events if e.name == "Revoked"] == idents
    assert follower.cursor == last and follower.state == fresh_state(world, follower)
    assert follower.w3.provider.endpoints[0].posts >= 4  # head, the refused batch, the logs, the headers


def _recording_calls(follower: Follower) -> list[str]:
    """The names of the view calls the follower makes from now on (its registry's batched reads)."""
    names: list[str] = []
    registry = follower.registry
    call_many = registry._call_many

    def recorded(fns, *args, **kwargs):
        fns = list(fns)
        names.extend(fn.name for fn in fns)
        return call_many(fns, *args, **kwargs)

    registry._call_many = recorded
    return names


def test_a_status_change_is_applied_from_its_event_without_a_call(world):
    """A NodeStatusChanged carries the whole change, so approving, suspending and removing a node costs the
    follower no getNode call (64 approvals at once made every node re-read 64 records in the same seconds);
    a registration or an update, which write the record itself, are still re-read. Each step's state must
    equal a fresh read of the chain."""
    follower = world.follower()
    drain(follower)
    names = _recording_calls(follower)
    reg, node = world.registry, world.anvil.accounts()[9]
    reg.register_node(node, identity_key=os.urandom(32), x25519_key=os.urandom(32), endpoint="h:9",
                      tls_key_hash=os.urandom(32))
    drain(follower)
    assert names.count("getNode") == 1  # NodeRegistered: the record is read
    assert follower.state.nodes[node.address].status.name == "PENDING"
    assert follower.state == fresh_state(world, follower)
    approve = [A.AddNode(node.address)]
    remove = [A.RemoveNode(node.address)]
    steps = [  # (what happens, the status after it, getNode calls the follower may make)
        (lambda: enact(world.gov, world.voter, approve, f"approve {os.urandom(4).hex()}", [world.voter]), "APPROVED", 0),
        (lambda: reg.update_node(node, endpoint="h:10", tls_key_hash=os.urandom(32)), "APPROVED", 1),  # re-read
        (lambda: reg.apply(world.council, [A.SuspendNode(node.address)]), "SUSPENDED", 0),
        (lambda: enact(world.gov, world.voter, remove, f"remove {os.urandom(4).hex()}", [world.voter]), "REMOVED", 0),
    ]
    for act, expected, reads in steps:
        names.clear()
        act()
        drain(follower)
        assert names.count("getNode") == reads, names
        assert follower.state.nodes[node.address].status.name == expected
        assert follower.state == fresh_state(world, follower)
    assert follower.state.nodes[node.address].endpoint == "h:10"
