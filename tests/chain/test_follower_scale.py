"""The follower at scale against a real anvil: batched cold sync, event-driven updates, bounded reads.

The registry is filled with a moderate, randomized world (printed seed): apps that span several 16-app
pages, revocations of every kind with one kind spanning two 100-id pages, and a dozen nodes.
"""

from __future__ import annotations

import os
import random

import pytest
from web3 import Web3

from derot.chain.bulk import PageMismatch, ReadLimits, RegistryOversize
from derot.chain.deploy import DeployParams, deploy
from derot.chain.follower import Follower, LogsOversize
from derot.chain.quorum import AnswerTooLarge, ChainUnavailable, ChainUnverified, QuorumProvider
from derot.chain.registry import Registry
from derot.chain.state import read_state
from derot.chain import actions as A
from derot.constants import Platform, RevocationKind
from derot.devnet.anvil import Anvil, dev_accounts, revert, snapshot
from derot.devnet.fill import ANVIL_ARGS, Filler, app_id_of, app_txs, node_txs, revocation_ids, revoke_txs

from .lying_rpc import LyingRpc

APPS, REVOCATIONS, EXTRA_SERIALS, NODES, OWNERS = 70, 90, 120, 12, 3
REVOKED_TOPIC = "0x" + Web3.keccak(text="Revoked(uint8,bytes,address)").hex().removeprefix("0x")


class World:
    def __init__(self, anvil: Anvil, seed: int) -> None:
        self.anvil = anvil
        self.rng = random.Random(seed)
        self.w3 = Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 60}))
        deployer = dev_accounts(1)[0]
        addresses = self.w3.eth.accounts
        self.council, self.owners, self.operators = addresses[1], addresses[2:2 + OWNERS], addresses[2 + OWNERS:]
        bootstrap = (A.AllowPlatform(int(Platform.TDX)), A.AllowPlatform(int(Platform.SEV_SNP)))
        params = DeployParams.devnet([(deployer.address, 10**24)], self.council, bootstrap=bootstrap)
        self.deployment = deploy(self.w3, deployer, params)
        self.registry = Registry(self.w3, self.deployment.registry)
        self.filler = Filler(anvil.url, self.registry)
        self.filler.rpc("evm_setAutomine", [False])
        self.revoked = revocation_ids(REVOCATIONS, self.rng) + [
            (RevocationKind.CERT_SERIAL, self.rng.randbytes(32)) for _ in range(EXTRA_SERIALS)]
        self.filler.send_mined(node_txs(self.filler, self.operators[:NODES], self.rng))
        self.filler.send_mined(app_txs(self.filler, self.owners, APPS, self.rng))
        self.filler.send_mined(revoke_txs(self.filler, self.council, self.revoked))
        self.app_ids = {app_id_of(self.owners[i % OWNERS], i.to_bytes(32, "big")) for i in range(APPS)}
        self.proxy = LyingRpc(anvil.url)

    def mine(self, blocks: int = 1) -> None:
        self.filler.rpc("anvil_mine", [hex(blocks)])

    def follower(self, urls=None, quorum: int = 1, **kwargs) -> Follower:
        kwargs.setdefault("confirmations", 0)
        return Follower.connect(urls or self.anvil.url, self.deployment.registry, quorum=quorum, timeout=30,
                                start_block=self.deployment.deploy_block, **kwargs)

    def full_read(self, number: int):
        block = self.w3.eth.get_block(number)
        return read_state(self.registry, bytes(block["hash"]), number, block["timestamp"])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    seed = int(os.environ.get("DEROT_TEST_SEED", random.randrange(2**32)))
    print(f"registry world seed {seed} (DEROT_TEST_SEED to repeat)")
    directory = tmp_path_factory.mktemp("scale-anvil")
    with Anvil(accounts=2 + OWNERS + NODES, extra_args=ANVIL_ARGS, log_path=directory / "anvil.log") as node:
        w = World(node, seed)
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
        world.filler.nonces.clear()


def drain(follower: Follower) -> list:
    updates = []
    while (update := follower.poll()) is not None:
        updates.append(update)
    return updates


def revoked_sets(state) -> dict[RevocationKind, frozenset[bytes]]:
    snap = state.snapshot
    return {
        RevocationKind.FMSPC: snap.revoked_fmspcs, RevocationKind.CHIP_ID: snap.revoked_chip_ids,
        RevocationKind.GPU_FWID: snap.revoked_gpu_fwids, RevocationKind.MEASUREMENT: snap.revoked_measurements,
        RevocationKind.CERT_SERIAL: state.revoked_serials, RevocationKind.EVIDENCE_HASH: state.revoked_evidence_hashes,
        RevocationKind.PPID: snap.revoked_ppids, RevocationKind.PCK_CERT: snap.revoked_pck_certs,
        RevocationKind.GPU_DEVICE: snap.revoked_gpu_devices,
    }


# ------------------------------------------------------------------------------------------------
# cold sync


def test_batched_cold_sync_equals_reading_item_by_item(w):
    follower = w.follower()
    drain(follower)
    state = follower.state
    provider = follower.w3.provider
    # batched: far fewer HTTP requests than calls
    calls, posts = sum(e.calls for e in provider.endpoints), sum(e.posts for e in provider.endpoints)
    assert calls > 40 and posts * 3 < calls, (calls, posts)
    # oracle: one plain view call per item at the same block, and the ids the fill sent
    at = state.block_hash
    assert set(state.snapshot.apps) == w.app_ids
    for app_id in w.app_ids:
        assert state.snapshot.apps[app_id] == w.registry.app(app_id, at)
        assert len(state.snapshot.apps[app_id].measurements) == 2
    expected: dict[RevocationKind, set[bytes]] = {}
    for kind, ident in w.revoked:
        expected.setdefault(kind, set()).add(ident)
    assert {k: set(v) for k, v in revoked_sets(state).items() if v} == expected
    assert len(expected[RevocationKind.CERT_SERIAL]) > 100  # spans two pages
    for kind, ident in w.rng.sample(w.revoked, 20):
        assert w.registry.is_revoked(kind, ident, at)
    assert set(state.nodes) == set(w.operators[:NODES])
    for operator in w.operators[:NODES]:
        assert state.nodes[operator] == w.registry.node(operator, at)


def test_a_far_behind_follower_jumps_to_the_head_with_one_full_read(w):
    w.mine(300)  # the deployment is now far outside the reorg window
    follower = w.follower(max_range=50)
    update = follower.poll()
    assert update is not None and not follower.behind and follower.cursor == w.w3.eth.block_number
    assert update.events == () and len(update.state.snapshot.apps) == APPS


# ------------------------------------------------------------------------------------------------
# event-driven updates


def test_an_event_update_applies_exactly_the_changed_items(w):
    follower = w.follower()
    drain(follower)
    before = follower.state
    apps = sorted(w.app_ids)
    allowed, dropped = apps[0], apps[1]
    dropped_measurement = next(m for p, m in before.snapshot.apps[dropped].measurements if p == Platform.TDX)
    new_salt = w.rng.randbytes(32)
    new_revocations = [(RevocationKind.PPID, w.rng.randbytes(16)), (RevocationKind.FMSPC, w.rng.randbytes(6)),
                       (RevocationKind.GPU_DEVICE, w.rng.randbytes(12))]
    f = w.filler
    owner_of = {a: before.snapshot.apps[a].owner for a in (allowed, dropped)}
    w.filler.send_mined([
        *revoke_txs(f, w.council, new_revocations),
        f.tx(owner_of[allowed], "setAppMeasurement", [allowed, int(Platform.SGX), w.rng.randbytes(32), True]),
        f.tx(owner_of[dropped], "setAppMeasurement", [dropped, int(Platform.TDX), dropped_measurement, False]),
        f.tx(w.owners[0], "registerApp", [new_salt]),
        f.tx(w.operators[0], "updateNode", ["moved.example:7443", w.rng.randbytes(32), bytes(32)]),
    ])
    sent = []
    real_batch = follower.w3.provider.make_batch

    def recording(calls):  # a spy: the real batch is sent, its calls are remembered
        sent.extend(calls)
        return real_batch(calls)

    follower.w3.provider.make_batch = recording
    update = follower.poll()
    after = update.state
    assert after == w.full_read(after.block_number)
    new_app = app_id_of(w.owners[0], new_salt)
    changed_apps = {a for a in set(before.snapshot.apps) | set(after.snapshot.apps)
                    if before.snapshot.apps.get(a) != after.snapshot.apps.get(a)}
    assert changed_apps == {allowed, dropped, new_app}
    for kind, ids in revoked_sets(after).items():
        assert ids - revoked_sets(before)[kind] == {i for k, i in new_revocations if k == kind}
        assert revoked_sets(before)[kind] <= ids
    assert {op for op in after.nodes if after.nodes[op] != before.nodes.get(op)} == {w.operators[0]}
    # exactly the named items were read: three getApp and one getNode calls, no list was paged again
    selectors = {w.registry.contract.functions.getApp(bytes(32))._encode_transaction_data()[:10]: "getApp",
                 w.registry.contract.functions.getNode(w.operators[0])._encode_transaction_data()[:10]: "getNode"}
    reads = [selectors.get(p[0]["data"][:10], p[0]["data"][:10]) for m, p in sent if m == "eth_call"]
    assert sorted(reads) == ["getApp"] * 3 + ["getNode"]
    assert [e.name for e in update.events].count("Revoked") == 3


# ------------------------------------------------------------------------------------------------
# a lying RPC in the quorum, oversize registries and answers


def test_a_quorum_member_answering_other_logs_is_caught(w):
    follower = w.follower([w.anvil.url, w.proxy.url], quorum=2)
    drain(follower)
    ident = w.rng.randbytes(32)
    w.filler.send_mined(revoke_txs(w.filler, w.council, [(RevocationKind.CERT_SERIAL, ident)]))

    def other_id(entry):  # the same Revoked log, for another serial
        if entry["topics"] and entry["topics"][0] == REVOKED_TOPIC:
            entry["data"] = entry["data"][:-64] + os.urandom(32).hex()
        return entry

    cursor = follower.cursor
    for lie in ({"log_lie": other_id}, {"drop_log": lambda e: e["topics"][0] == REVOKED_TOPIC}):
        w.proxy.honest()
        for name, value in lie.items():
            setattr(w.proxy, name, value)
        with pytest.raises(ChainUnverified) as refused:
            follower.poll()
        assert refused.value.reason == "chain_unverified"
        assert follower.cursor == cursor and ident not in follower.state.revoked_serials
    # with a third, honest endpoint the liar is outvoted and the revocation arrives
    twin = LyingRpc(w.anvil.url)
    try:
        w.proxy.log_lie = other_id
        outvoted = w.follower([w.proxy.url, w.anvil.url, twin.url], quorum=2)
        drain(outvoted)
        assert ident in outvoted.state.revoked_serials
    finally:
        twin.close()


def test_a_registry_over_the_limits_is_refused_by_name(w):
    follower = w.follower(limits=ReadLimits(apps=APPS - 1))
    with pytest.raises(RegistryOversize) as refused:
        follower.poll()
    assert refused.value.reason == "registry_oversize" and follower.state is None
    # a lying RPC claiming 2**200 revocations is refused at once, not paged for ever
    count = w.registry.contract.functions.revocationCount(int(RevocationKind.FMSPC))._encode_transaction_data()
    w.proxy.calls = {count[2:]: (2**200).to_bytes(32, "big").hex()}
    with pytest.raises(RegistryOversize):
        w.follower(w.proxy.url).poll()


def test_a_page_with_the_wrong_number_of_items_is_refused(w):
    fns = w.registry.functions
    last_page = fns.apps(64, 16).data_hex
    honest = w.w3.eth.call({"to": w.registry.address, "data": last_page})
    assert len(w.registry._call(fns.apps(64, 16))) == APPS - 64
    w.proxy.calls = {fns.apps(0, 16).data.hex(): bytes(honest).hex()}
    with pytest.raises(PageMismatch) as refused:
        w.follower(w.proxy.url).poll()
    assert refused.value.reason == "chain_unverified"


def test_log_ranges_shrink_to_max_logs_and_lose_nothing(w):
    follower = w.follower()
    drain(follower)
    follower.max_logs = 5
    sent = []
    for _ in range(3):  # three blocks of four Revoked logs each
        batch = [(RevocationKind.EVIDENCE_HASH, w.rng.randbytes(32)) for _ in range(4)]
        sent += batch
        w.filler.send_mined(revoke_txs(w.filler, w.council, batch))
    first = follower.poll()
    assert follower.behind and len(first.events) <= 5
    updates = [first, *drain(follower)]
    got = [bytes(e.args["id"]) for u in updates for e in u.events if e.name == "Revoked"]
    assert got == [i for _k, i in sent]
    assert follower.state == w.full_read(follower.cursor)
    # one block over max_logs is refused by name, and the cursor stays
    w.filler.send_mined(revoke_txs(w.filler, w.council, [(RevocationKind.EVIDENCE_HASH, w.rng.randbytes(32))
                                                         for _ in range(6)]))
    cursor = follower.cursor
    with pytest.raises(LogsOversize) as refused:
        follower.poll()
    assert refused.value.reason == "logs_oversize" and follower.cursor == cursor


def test_an_answer_over_the_reply_limit_is_refused_by_name(w):
    provider = QuorumProvider([w.anvil.url], 1, max_reply_bytes=2_000)
    with pytest.raises(AnswerTooLarge) as refused:
        provider.make_request("eth_getLogs", [{"address": w.registry.address, "fromBlock": hex(0),
                                               "toBlock": "latest"}])
    assert refused.value.reason == "rpc_answer_oversize"


def test_a_batch_answer_that_does_not_match_its_calls_is_not_a_vote(w):
    follower = w.follower([w.anvil.url, w.proxy.url], quorum=2)
    for lie in (lambda replies: replies[:-1],  # one reply missing
                lambda replies: [{**r, "id": replies[0]["id"]} for r in replies],  # ids not one to one
                lambda replies: {"jsonrpc": "2.0", "result": "0x"}):  # not a list
        w.proxy.batch_lie = lie
        with pytest.raises(ChainUnavailable) as refused:
            follower.poll()
        assert refused.value.reason == "chain_unavailable" and follower.state is None
    w.proxy.batch_lie = None
    drain(follower)
    assert len(follower.state.snapshot.apps) == APPS


# ------------------------------------------------------------------------------------------------
# the measurement flood (issue 17, finding 2)


def test_a_measurement_flood_stops_at_the_cap_and_never_stops_a_follower(w):
    """The issue's attack at the cap: a page and one more of apps, each filled to MAX_APP_MEASUREMENTS. The
    next measurement reverts; a whole page of full apps reads under a 30M eth_call gas cap; the follower that
    was following keeps following (a revocation sent after the flood reaches it) and a new one loads it all."""
    from derot.chain.registry import APP_PAGE

    fns = w.registry.contract.functions
    cap = fns.MAX_APP_MEASUREMENTS().call()
    follower = w.follower()
    drain(follower)
    attacker = w.owners[0]
    salts = [w.rng.randbytes(32) for _ in range(APP_PAGE + 1)]
    flood = [app_id_of(attacker, salt) for salt in salts]
    w.filler.send_mined(w.filler.tx(attacker, "registerApp", [salt]) for salt in salts)
    w.filler.send_mined(w.filler.tx(attacker, "setAppMeasurement", [app, int(Platform.TDX), w.rng.randbytes(32), True])
                        for app in flood for _ in range(cap))
    refused = "0x" + Web3.keccak(text="TooManyMeasurements(bytes32)")[:4].hex()
    with pytest.raises(Exception) as over:
        fns.setAppMeasurement(flood[0], int(Platform.TDX), os.urandom(32), True).call({"from": attacker})
    assert refused in str(getattr(over.value, "data", "")) + str(over.value), over.value

    count = fns.appCount().call()
    page = fns.apps(count - APP_PAGE, APP_PAGE).call({"gas": 30_000_000})  # anvil's and many providers' cap
    assert len(page) == APP_PAGE and all(len(app[-1]) == cap for app in page)

    fmspc = w.rng.randbytes(6)
    w.filler.send_mined(revoke_txs(w.filler, w.council, [(RevocationKind.FMSPC, fmspc)]))
    drain(follower)
    state = follower.state
    assert fmspc in state.snapshot.revoked_fmspcs and not state.unreadable_apps
    assert all(len(state.snapshot.apps[app].measurements) == cap for app in flood)
    fresh = w.follower()
    drain(fresh)
    assert fresh.state.snapshot == state.snapshot and fresh.state.block_number == state.block_number
