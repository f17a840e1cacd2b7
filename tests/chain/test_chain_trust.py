"""Trust the chain only as far as it is proven (issue 17): attacks through a lying JSON-RPC proxy on
localhost in front of a real anvil. A fake activation, a reorged activation, a dropped log, a frozen head,
a forged header and two RPCs that disagree: no shares are erased, no revocation is lost, and the view
goes stale on the wall clock."""

from __future__ import annotations

import os
import time

import pytest
from eth_abi import encode as abi_encode
from web3 import Web3

from derot.chain import actions as A
from derot.chain.deploy import DeployParams, deploy
from derot.chain.finality import EraseGuard, FinalityMode, FinalityRule, OwnResult, ShareRetirement, erase_quorum
from derot.chain.follower import Follower, LogsIncomplete
from derot.chain.freshness import ChainStale, FreshnessClock
from derot.chain.governance import Governance
from derot.chain.quorum import ChainUnverified, connect
from derot.chain.registry import Registry
from derot.chain.types import RevocationKind
from derot.crypto.bls import G2, random_scalar
from derot.devnet.anvil import Anvil, mine, reorg, revert, snapshot
from derot.devnet.governance import enact
from derot.service.storage import NodeStore

from .lying_rpc import LyingRpc

DEPTH = 4
REVOKED_TOPIC = Web3.keccak(text="Revoked(uint8,bytes,address)")


class World:
    def __init__(self, anvil: Anvil) -> None:
        self.anvil = anvil
        self.w3 = Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 30}))
        accounts = anvil.accounts()
        self.deployer, self.council, self.voter = accounts[:3]
        self.nodes = accounts[3:7]
        params = DeployParams.devnet([(self.voter.address, 10**24)], self.council.address)
        self.deployment = deploy(self.w3, self.deployer, params, self_delegate=[self.voter])
        self.registry = Registry(self.w3, self.deployment.registry)
        for i, node in enumerate(self.nodes):
            self.registry.register_node(node, identity_key=os.urandom(32), x25519_key=os.urandom(32),
                                        endpoint=f"127.0.0.1:{7100 + i}", tls_key_hash=os.urandom(32))
        members = tuple(n.address for n in self.nodes[:3])
        enact(Governance(self.w3, self.deployment), self.voter,
              [*(A.AddNode(n.address) for n in self.nodes), A.StartDkg(members, 2)], "committee", [self.voter])
        self.proxy = LyingRpc(anvil.url)

    def activate(self, epoch: int = 1) -> OwnResult:
        """Epoch ``epoch`` activated by two reports; returns what the reporting members computed."""
        own = OwnResult(os.urandom(32), G2.generator() * random_scalar(), G2.generator() * random_scalar())
        for node in self.nodes[:2]:
            self.registry.report_epoch(node, epoch, own.group_key_sig, own.group_key_kd, own.transcript_hash)
        return own

    def guard(self, urls, operator: str, quorum: int = 1) -> EraseGuard:
        registry = Registry(connect(urls, quorum, timeout=10), self.deployment.registry)
        return EraseGuard(registry, FinalityRule(FinalityMode.DEPTH, DEPTH), operator)

    def follower(self, urls, quorum: int = 1, **kwargs) -> Follower:
        kwargs.setdefault("confirmations", 0)
        return Follower.connect(urls, self.deployment.registry, quorum=quorum, timeout=10,
                                start_block=self.deployment.deploy_block, **kwargs)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    directory = tmp_path_factory.mktemp("trust-anvil")
    with Anvil(log_path=directory / "anvil.log") as node:
        w = World(node)
        yield w
        w.proxy.close()


@pytest.fixture
def w(world):
    snap = snapshot(world.w3)
    try:
        yield world
    finally:
        world.proxy.honest()
        assert revert(world.w3, snap)


@pytest.fixture
def store(tmp_path):
    """A real node store holding this node's sealed share of epoch 1, active."""
    s = NodeStore.open(tmp_path / "node.db", key=b"k" * 32, create=True)
    s.save_epoch(1, {"epoch": 1}, b"\x01" * 64)
    s.activate_epoch(1)
    yield s
    s.close()


def drain(follower: Follower) -> list:
    updates = []
    while (update := follower.poll()) is not None:
        updates.append(update)
    return updates


def follower_failure_reason(follower: Follower, timeout: float = 60) -> str | None:
    """Run the follower's own update loop (as the node does) until a poll fails; its recorded reason."""
    import asyncio

    async def run() -> str | None:
        task = asyncio.ensure_future(follower.updates().__anext__())
        deadline = time.monotonic() + timeout
        try:
            while follower.last_reason is None:
                assert time.monotonic() < deadline and not task.done(), "no failed poll"
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
        return follower.last_reason

    return asyncio.run(run())


def fake_epoch_answers(w: World, epoch: int, members, transcript: bytes, activated_block: int) -> dict[str, str]:
    """eth_call answers claiming ``epoch`` is the current, ACTIVE epoch."""
    fns = w.registry.contract.functions
    key = G2.generator() * random_scalar()
    view = (epoch, 3, 2, 0, 1, activated_block, w.registry.address, transcript, list(members))
    out = {
        fns.currentEpoch()._encode_transaction_data()[2:]: abi_encode(["uint64"], [epoch]).hex(),
        fns.epochCount()._encode_transaction_data()[2:]: abi_encode(["uint64"], [epoch]).hex(),
        fns.getEpoch(epoch)._encode_transaction_data()[2:]: abi_encode(
            ["(uint64,uint8,uint8,uint64,uint64,uint64,address,bytes32,address[])"], [view]).hex(),
        fns.epochKeys(epoch)._encode_transaction_data()[2:]: abi_encode(
            ["bytes", "bytes"], [key.to_eip2537(), key.to_eip2537()]).hex(),
    }
    return out


# ------------------------------------------------------------------------------------------------
# finality before erasing shares


def test_honest_final_activation_erases_only_after_finality(w, store):
    """Control: the guard does allow erasure once the activation is final and the transcript matches."""
    me = w.nodes[0].address
    own = w.activate()
    retirement = ShareRetirement(w.guard(w.anvil.url, me), store)
    store.save_epoch(2, {"epoch": 2}, b"\x02" * 64)  # the shares the next activation will retire
    retirement.want(2, None)  # pretend epoch 2 is what the confirmed view shows
    verdict = retirement.attempt()
    assert verdict.reason == "not_final", verdict
    retirement.want(1, own)
    assert retirement.attempt().reason == "not_final"  # activated, but not DEPTH blocks deep
    mine(w.w3, DEPTH)
    verdict = retirement.attempt()
    assert verdict.allowed and verdict.reason == "final", verdict
    assert retirement.pending is None


def test_a_finalized_block_before_the_registry_defers_as_not_final(w):
    """On a young chain the finalized block predates the registry: the guard says not_final (not a failed read)
    without asking the registry, and would erase nothing."""
    own = w.activate()
    head = w.w3.eth.block_number
    registry = Registry(connect(w.anvil.url, 1, timeout=10), w.deployment.registry)
    guard = EraseGuard(registry, FinalityRule(FinalityMode.DEPTH, head), w.nodes[0].address,
                       deploy_block=w.deployment.deploy_block)
    verdict = guard.may_erase(1, own)
    assert not verdict.allowed and verdict.reason == "not_final" and "predates the registry" in verdict.detail
    unguarded = EraseGuard(registry, FinalityRule(FinalityMode.DEPTH, head), w.nodes[0].address)
    assert unguarded.may_erase(1, own).reason == "chain_read_failed"  # what a node without the bound logged


def test_transcript_mismatch_never_erases(w, store):
    me = w.nodes[0].address
    own = w.activate()
    mine(w.w3, DEPTH + 1)
    guard = w.guard(w.anvil.url, me)
    other = OwnResult(os.urandom(32), own.group_key_sig, own.group_key_kd)
    assert guard.may_erase(1, other).reason == "transcript_mismatch"
    assert guard.may_erase(1, OwnResult(own.transcript_hash, own.group_key_kd, own.group_key_sig)).reason == "transcript_mismatch"
    # a member of the activated epoch without a result of its own keeps its old shares
    assert guard.may_erase(1, None).reason == "no_own_transcript"
    # a node that is not a member may erase once the activation is final
    assert w.guard(w.anvil.url, w.nodes[3].address).may_erase(1, None).allowed


def test_erasure_waits_for_t_plus_f_holders_reports(w, store):
    """A 3-of-4 reshare activates on three reports, but older shares go only once t + f = 4 members vouch for
    the activated result: byzantine reporters alone must never make honest members erase their shares."""
    assert [erase_quorum(t, n) for t, n in ((2, 3), (3, 4), (3, 5), (11, 16), (43, 64))] == [2, 4, 4, 16, 64]
    own = w.activate()
    members = tuple(n.address for n in w.nodes)
    enact(Governance(w.w3, w.deployment), w.voter, [A.StartReshare(members, 3)], "reshare 3-of-4", [w.voter])
    epoch = w.registry.current_epoch() + 1
    reshared = OwnResult(os.urandom(32), own.group_key_sig, own.group_key_kd)

    def report(node, transcript):
        w.registry.report_epoch(node, epoch, reshared.group_key_sig, reshared.group_key_kd, transcript)

    for node in w.nodes[:3]:
        report(node, reshared.transcript_hash)
    assert w.registry.current_epoch() == epoch
    report(w.nodes[3], os.urandom(32))  # a different result does not count
    mine(w.w3, DEPTH + 1)
    guard = w.guard(w.anvil.url, w.nodes[0].address)
    verdict = guard.may_erase(epoch, reshared)
    assert not verdict.allowed and verdict.reason == "too_few_holders", verdict
    report(w.nodes[3], reshared.transcript_hash)  # the member recomputed: its report now agrees
    assert guard.may_erase(epoch, reshared).reason == "too_few_holders"  # not final yet
    mine(w.w3, DEPTH + 1)
    assert guard.may_erase(epoch, reshared).allowed


def test_fake_activation_through_a_lying_rpc_erases_nothing(w, store):
    """The issue's attack: the RPC answers currentEpoch/getEpoch = 7 ACTIVE while the chain stays at 1."""
    own = w.activate()
    mine(w.w3, 2 * DEPTH)
    me = w.nodes[0].address
    strangers = [n.address for n in w.nodes[1:]]
    w.proxy.calls = fake_epoch_answers(w, 7, strangers, os.urandom(32), activated_block=w.w3.eth.block_number - DEPTH - 1)
    lying = w.guard(w.proxy.url, me)
    assert lying.registry.current_epoch() == 7  # the lie is in place
    retirement = ShareRetirement(lying, store)
    retirement.want(7, None)
    verdict = retirement.attempt()
    assert not verdict.allowed and verdict.reason == "activation_unproven", verdict
    # the fake names this node as a member: it cannot reproduce the view either
    w.proxy.calls = fake_epoch_answers(w, 7, [me, *strangers], os.urandom(32), w.w3.eth.block_number - DEPTH - 1)
    assert retirement.attempt().reason == "no_own_transcript"
    # with a second, honest RPC and a quorum of two the lie does not even count
    both = ShareRetirement(w.guard([w.proxy.url, w.anvil.url], me, quorum=2), store)
    both.want(7, None)
    assert both.attempt().reason == "chain_unverified"
    record = store.epoch(1)
    assert record.status == "active" and record.shares == b"\x01" * 64
    # and the real, final epoch 1 is still recognised through the honest pair
    w.proxy.honest()
    assert both.guard.may_erase(1, own).allowed


def test_reorged_activation_erases_nothing(w, store):
    me = w.nodes[0].address
    own = w.activate()
    follower = w.follower(w.anvil.url, confirmations=1)
    mine(w.w3, 1)
    drain(follower)
    assert follower.state.current_epoch == 1  # the node saw the activation at 1 confirmation
    retirement = ShareRetirement(w.guard(w.anvil.url, me), store)
    store.save_epoch(2, {"epoch": 2}, b"\x02" * 64)
    retirement.want(1, own)
    assert retirement.attempt().reason == "not_final"
    reorg(w.w3, 3, [])  # both reports and the activation vanish
    mine(w.w3, 3 * DEPTH)
    drain(follower)
    assert follower.state.current_epoch == 0
    verdict = retirement.attempt()
    assert not verdict.allowed and verdict.reason == "not_final", verdict
    assert store.epoch(1).shares == b"\x01" * 64 and store.epoch(1).status == "active"


# ------------------------------------------------------------------------------------------------
# logs, heads, headers and quorum


def test_dropped_revocation_log_is_never_lost(w):
    follower = w.follower(w.proxy.url)
    drain(follower)
    w.proxy.drop_log = lambda entry: entry["topics"] and entry["topics"][0] == "0x" + REVOKED_TOPIC.hex()
    fmspc = os.urandom(6)
    w.registry.apply(w.council, [A.Revoke(RevocationKind.FMSPC, fmspc)])
    cursor = follower.cursor
    for _ in range(3):  # however often it asks, the follower does not move past the incomplete block
        with pytest.raises(LogsIncomplete):
            follower.poll()
        assert follower.cursor == cursor
    assert fmspc not in follower.state.snapshot.revoked_fmspcs
    w.proxy.honest()
    updates = drain(follower)
    assert any(e.name == "Revoked" for u in updates for e in u.events)
    assert fmspc in follower.state.snapshot.revoked_fmspcs


def test_a_log_outside_the_bloom_is_refused(w):
    """An RPC that invents a log (here: replays one into a block whose bloom lacks it) is caught."""
    follower = w.follower(w.proxy.url)
    drain(follower)
    w.registry.apply(w.council, [A.Revoke(RevocationKind.FMSPC, os.urandom(6))])
    real = w.w3.eth.get_logs({"address": w.registry.address, "fromBlock": w.w3.eth.block_number,
                              "toBlock": w.w3.eth.block_number})
    mine(w.w3, 1)
    drain(follower)
    mine(w.w3, 1)
    fake = {
        "address": real[0]["address"], "topics": ["0x" + bytes(t).hex() for t in real[0]["topics"]],
        "data": "0x" + bytes(real[0]["data"]).hex(), "blockNumber": hex(w.w3.eth.block_number),
        "blockHash": "0x" + bytes(w.w3.eth.get_block("latest")["hash"]).hex(),
        "transactionHash": "0x" + bytes(real[0]["transactionHash"]).hex(), "logIndex": "0x0",
        "transactionIndex": "0x0", "removed": False,
    }
    original = w.proxy._forward

    def forward(request):
        reply = original(request)
        if request.get("method") == "eth_getLogs":
            reply["result"] = reply["result"] + [fake]
        return reply

    w.proxy._forward = forward
    try:
        with pytest.raises(LogsIncomplete):
            follower.poll()
    finally:
        w.proxy._forward = original


def test_frozen_head_goes_stale_on_the_wall_clock(w):
    follower = w.follower(w.proxy.url)
    drain(follower)
    freshness = FreshnessClock(max_staleness=2.0)
    freshness.observe(follower.state.block_number, follower.state.snapshot.block_timestamp)
    w.proxy.frozen_head = w.w3.eth.block_number
    deadline = time.monotonic() + 60
    while not freshness.status().stale:
        assert time.monotonic() < deadline, "the frozen view never went stale"
        mine(w.w3, 1)  # the real chain moves on
        assert follower.poll() is None  # the RPC claims nothing is new
        time.sleep(0.05)
    # the lag the RPC's own head would give is zero; the wall clock says otherwise
    assert follower.head - follower.cursor == 0
    assert w.w3.eth.block_number > follower.cursor
    with pytest.raises(ChainStale) as refused:
        freshness.check()
    assert refused.value.reason == "chain_stale"
    w.proxy.honest()
    mine(w.w3, 1)
    drain(follower)
    freshness.observe(follower.state.block_number, follower.state.snapshot.block_timestamp)
    assert freshness.check().lag_seconds <= 2.0


def test_forged_header_is_refused_even_from_a_single_rpc(w):
    follower = w.follower(w.proxy.url)
    drain(follower)
    w.proxy.header_lie = lambda block: {**block, "timestamp": hex(int(block["timestamp"], 16) + 3600)}
    mine(w.w3, 1)
    with pytest.raises(ChainUnverified) as refused:
        follower.poll()
    assert refused.value.reason == "chain_unverified"


def test_two_rpcs_that_disagree_give_chain_unverified(w):
    w.activate()
    w.proxy.calls = fake_epoch_answers(w, 7, [w.nodes[3].address], os.urandom(32), 1)
    follower = w.follower([w.anvil.url, w.proxy.url], quorum=2)
    with pytest.raises(ChainUnverified) as refused:
        follower.poll()
    assert refused.value.reason == "chain_unverified" and follower.state is None
    assert follower_failure_reason(follower) == "chain_unverified"  # what the node's refusals then name
    # one liar among three endpoints with a quorum of two is outvoted
    honest_twin = LyingRpc(w.anvil.url)
    try:
        follower = w.follower([w.proxy.url, w.anvil.url, honest_twin.url], quorum=2)
        drain(follower)
        assert follower.state.current_epoch == 1
        # a frozen endpoint cannot hold the head back either
        w.proxy.honest()
        w.proxy.frozen_head = w.w3.eth.block_number
        mine(w.w3, 2)
        drain(follower)
        assert follower.cursor == w.w3.eth.block_number
    finally:
        honest_twin.close()


def test_an_unreadable_app_is_skipped_and_reported_not_a_stop(w):
    """The measurement-flood failure mode: the RPC refuses to read one app (out of gas). The follower
    loads everything else, reports the app, keeps following, and reads it again once it can."""
    reg = w.registry
    owner = w.nodes[3]
    apps = [reg.register_app(owner, os.urandom(32)) for _ in range(3)]
    reg.set_app_measurement(owner, apps[1], 1, os.urandom(32), True)
    fns = reg.contract.functions
    w.proxy.call_errors = {fns.getApp(apps[1])._encode_transaction_data()[2:],
                           fns.apps(0, 0)._encode_transaction_data()[2:10]}  # every apps() page
    follower = w.follower(w.proxy.url)
    drain(follower)
    state = follower.state
    assert state.unreadable_apps == {apps[1]}
    assert apps[0] in state.snapshot.apps and apps[2] in state.snapshot.apps and apps[1] not in state.snapshot.apps
    fmspc = os.urandom(6)
    w.registry.apply(w.council, [A.Revoke(RevocationKind.FMSPC, fmspc)])
    drain(follower)
    assert fmspc in follower.state.snapshot.revoked_fmspcs  # still following
    w.proxy.honest()
    reg.set_app_measurement(owner, apps[0], 1, os.urandom(32), True)  # any event: unreadable apps are retried
    drain(follower)
    assert follower.state.unreadable_apps == frozenset() and apps[1] in follower.state.snapshot.apps


def test_the_store_keeps_older_shares_until_retirement(store):
    store.save_epoch(2, {"epoch": 2}, b"\x02" * 64)
    store.activate_epoch(2, erase_older=False)  # what a node does on a confirmed, not yet final activation
    assert store.active_epoch().epoch == 2 and store.epoch(1).shares == b"\x01" * 64
    store.activate_epoch(2)  # what ShareRetirement does once it is final
    assert store.epoch(1).shares is None and store.epoch(2).shares == b"\x02" * 64


def test_receipts_rebuild_the_receipts_root(w):
    """The trie code against anvil's own roots, on blocks with 0, 1 and several receipts of several types."""
    from derot.chain.receipts import ReceiptsInvalid, verified_receipts

    owner = w.nodes[3]
    w.w3.provider.make_request("evm_setAutomine", [False])
    try:
        for i in range(5):
            tx = w.registry.contract.functions.registerApp(os.urandom(32)).build_transaction({
                "from": owner.address, "nonce": w.w3.eth.get_transaction_count(owner.address, "pending"),
                "gas": 200_000, **({"gasPrice": 2 * 10**9} if i % 2 else {})})
            w.w3.eth.send_raw_transaction(owner.sign_transaction(tx).raw_transaction)
        mine(w.w3, 1)
    finally:
        w.w3.provider.make_request("evm_setAutomine", [True])
    for number in (w.w3.eth.block_number, w.w3.eth.block_number - 1, 0):
        block = w.w3.eth.get_block(number)
        receipts = w.w3.provider.make_request("eth_getBlockReceipts", [hex(number)])["result"]
        assert verified_receipts(receipts, bytes(block["receiptsRoot"])) is receipts
    assert len(receipts) == 0 and len(w.w3.provider.make_request(
        "eth_getBlockReceipts", [hex(w.w3.eth.block_number)])["result"]) == 5
    receipts = w.w3.provider.make_request("eth_getBlockReceipts", [hex(w.w3.eth.block_number)])["result"]
    root = bytes(w.w3.eth.get_block("latest")["receiptsRoot"])
    receipts[2]["logs"] = []  # a liar drops a log from the receipts too
    with pytest.raises(ReceiptsInvalid):
        verified_receipts(receipts, root)


def test_a_log_dropped_from_logs_and_receipts_in_a_busy_block_is_caught(w):
    """Two registry logs in one block; the liar drops the revocation from eth_getLogs AND the receipts."""
    follower = w.follower(w.proxy.url)
    drain(follower)
    fmspc = os.urandom(6)
    w.w3.provider.make_request("evm_setAutomine", [False])
    try:
        for account, call in ((w.nodes[3], w.registry.contract.functions.registerApp(os.urandom(32))),
                              (w.council, w.registry.contract.functions.revoke(1, fmspc))):
            tx = call.build_transaction({"from": account.address, "gas": 300_000,
                                         "nonce": w.w3.eth.get_transaction_count(account.address, "pending")})
            w.w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
        mine(w.w3, 1)
    finally:
        w.w3.provider.make_request("evm_setAutomine", [True])
    revoked = "0x" + REVOKED_TOPIC.hex()
    w.proxy.drop_log = lambda entry: entry["topics"] and entry["topics"][0] == revoked
    original = w.proxy._forward

    def forward(request):
        reply = original(request)
        if request.get("method") == "eth_getBlockReceipts" and isinstance(reply.get("result"), list):
            for receipt in reply["result"]:
                receipt["logs"] = [e for e in receipt["logs"] if not e["topics"] or e["topics"][0] != revoked]
        return reply

    w.proxy._forward = forward
    try:
        with pytest.raises(LogsIncomplete):
            follower.poll()
    finally:
        w.proxy._forward = original
    w.proxy.honest()
    drain(follower)
    assert fmspc in follower.state.snapshot.revoked_fmspcs


def test_a_node_that_follows_a_lying_rpc_keeps_its_shares(w, store):
    """The issue's attack end to end inside the node: the follower reads a fake epoch 7 ACTIVE through the
    lying proxy and hands it to the node's epoch orchestrator (the code that used to erase at once). The node
    stops serving epoch 1 (reversible), but its sealed epoch-1 share stays: the erasure check refuses."""
    import asyncio

    from derot.service.metrics import Metrics
    from derot.service.orchestrator import EpochOrchestrator
    from derot.service.tasks import TaskSet
    from derot.service.view import NodeView

    w.activate()
    mine(w.w3, 2 * DEPTH)
    me = w.nodes[0]
    w.proxy.calls = fake_epoch_answers(w, 7, [n.address for n in w.nodes[1:]], os.urandom(32),
                                       activated_block=w.w3.eth.block_number - DEPTH - 1)
    follower = w.follower(w.proxy.url)
    (*_, update) = drain(follower)
    assert update.state.committee.id == 7  # the node believes the lie
    view = NodeView(update.state, None)
    retirement = ShareRetirement(w.guard(w.proxy.url, me.address), store)

    async def deliver() -> None:
        epochs = EpochOrchestrator(view=view, store=store, peering=None, evidence=None, registry=None, w3=None,
                                   account=me, network=b"", identity=None, metrics=Metrics(), phase_timeout=10.0,
                                   faults_active=frozenset(), tasks=TaskSet(), retirement=retirement)
        epochs.on_state(update.state)
        deadline = time.monotonic() + 60
        while epochs._retiring:  # the finality check runs in a worker thread
            assert time.monotonic() < deadline, "the share retirement check never finished"
            await asyncio.sleep(0.05)

    asyncio.run(deliver())
    assert retirement.last_verdict is not None and not retirement.last_verdict.allowed
    assert retirement.last_verdict.reason == "activation_unproven", retirement.last_verdict
    assert retirement.pending == 7  # asked again on every update, never granted on this view
    assert view.keys is None  # it does not serve epoch 1 while it believes epoch 7 is current
    record = store.epoch(1)
    assert record.status == "active" and record.shares == b"\x01" * 64


def test_the_finalized_tag_decides_in_tag_mode(w, store):
    """The production rule (finality = "tag"): erasure waits for the chain's own `finalized` block, which on
    anvil trails the head; activated-but-not-finalized is refused however many confirmations it has."""
    me = w.nodes[0].address
    own = w.activate()
    activated = w.registry.epoch(1).activated_block
    guard = EraseGuard(Registry(connect(w.anvil.url, 1, timeout=10), w.deployment.registry),
                       FinalityRule(FinalityMode.TAG), me)
    early = guard.may_erase(1, own)  # anvil's finalized block may predate the registry: any refusal will do
    assert not early.allowed and early.reason in ("not_final", "no_finality", "chain_read_failed"), early
    mine(w.w3, 2 * DEPTH)  # deep under the DEPTH rule, not yet under the tag
    finalized = w.w3.eth.get_block("finalized")["number"]
    refused = guard.may_erase(1, own)
    assert finalized < activated and not refused.allowed and refused.reason in ("not_final", "chain_read_failed")
    for _ in range(100):
        if w.w3.eth.get_block("finalized")["number"] >= activated:
            break
        mine(w.w3, 8)
    verdict = guard.may_erase(1, own)
    assert verdict.allowed and verdict.finalized_block >= activated, verdict
