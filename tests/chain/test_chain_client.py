"""derot's own chain client (no web3 in a node process), checked against web3.py as the oracle on a real anvil:
the same calldata, the same decoded events, the same shapes of blocks and logs, and transactions whose
reverts still name the contract's error."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from web3 import Web3

from derot.chain import actions as A
from derot.chain import quorum
from derot.chain.client import BlockNotFound, ChainClient, RpcError
from derot.chain.deploy import DeployParams, deploy
from derot.chain.quorum import QuorumProvider
from derot.chain.registry import Registry, registry_abi
from derot.chain.tx import ContractReverted, TransactionFailed
from derot.chain.types import RevocationKind
from derot.constants import Platform
from derot.devnet.anvil import Anvil


class World:
    def __init__(self, anvil: Anvil) -> None:
        self.w3 = Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 30}))
        self.client = quorum.connect([anvil.url], 1, timeout=30)
        accounts = anvil.accounts()
        self.deployer, self.council, self.voter, self.operator = accounts[:4]
        params = DeployParams.devnet([(self.voter.address, 10**24)], self.council.address)
        self.deployment = deploy(self.w3, self.deployer, params, self_delegate=[self.voter])
        self.registry = Registry(self.w3, self.deployment.registry)  # web3's Web3: the oracle side
        self.light = Registry(self.client, self.deployment.registry)  # derot's client


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    directory = tmp_path_factory.mktemp("client-anvil")
    with Anvil(state_path=directory / "state.json", log_path=directory / "anvil.log") as node:
        yield World(node)


def test_a_node_process_imports_no_web3():
    """The modules `derot node run` loads leave web3 and its HTTP stacks out (about 24 MB per node)."""
    code = ("import sys, derot.cli.main, derot.cli.node_cmd, derot.service.node, derot.service.setup; "
            "print(' '.join(m for m in ('web3', 'aiohttp', 'websockets', 'ens', 'requests') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []


def test_calldata_is_byte_for_byte_web3s(world):
    contract = world.registry.contract
    app, member = os.urandom(32), world.operator.address
    for name, args in [("getApp", [app]), ("nodes", [3, 100]), ("reportOf", [7, member]),
                       ("isRevoked", [int(RevocationKind.FMSPC), os.urandom(6)]),
                       ("setAppMeasurement", [app, int(Platform.SEV_SNP), os.urandom(32), True]),
                       ("registerNode", [os.urandom(32), os.urandom(32), "h:1", os.urandom(32), os.urandom(32)])]:
        ours = registry_abi().call(name, *args)
        assert ours.data_hex == contract.encode_abi(name, args=args), name


def test_registry_reads_and_events_agree_with_web3(world):
    app = world.registry.register_app(world.operator, os.urandom(32))
    world.registry.set_app_measurement(world.operator, app, Platform.TDX, os.urandom(32), True)
    world.registry.apply(world.council, [A.Revoke(RevocationKind.FMSPC, bytes.fromhex("00906ed50000"))])
    assert world.light.app(app) == world.registry.app(app)
    assert world.light.app_id_of(world.operator.address, b"\x01" * 32) == \
        world.registry.app_id_of(world.operator.address, b"\x01" * 32)
    logs = world.w3.eth.get_logs({"address": world.registry.address, "fromBlock": 0, "toBlock": "latest"})
    light_logs = world.client.eth.get_logs({"address": world.registry.address, "fromBlock": 0, "toBlock": "latest"})
    assert len(logs) == len(light_logs) > 2
    events = {item["name"]: item for item in world.registry.contract.abi if item.get("type") == "event"}
    for web3_log, light_log in zip(logs, light_logs):
        for key in ("blockNumber", "logIndex", "transactionIndex", "address", "blockHash", "transactionHash",
                    "topics", "data"):
            assert light_log[key] == web3_log[key], key
        decoded = registry_abi().decode_log([bytes(t) for t in light_log["topics"]], bytes(light_log["data"]))
        oracle = getattr(world.registry.contract.events, decoded.name)().process_log(web3_log)
        assert decoded.name in events and decoded.args == {k: _tuples(v) for k, v in oracle["args"].items()}


def _tuples(value):
    return tuple(value) if isinstance(value, list) else value


def test_blocks_have_web3s_shapes_and_a_missing_block_is_named(world):
    head = world.w3.eth.block_number
    assert world.client.eth.block_number == head and world.client.eth.chain_id == world.w3.eth.chain_id
    ours, theirs = world.client.eth.get_block(head), world.w3.eth.get_block(head)
    for key in ("number", "hash", "parentHash", "timestamp", "logsBloom", "receiptsRoot", "baseFeePerGas"):
        assert ours[key] == theirs[key], key
    assert world.client.eth.get_block(bytes(theirs["hash"]))["number"] == head
    with pytest.raises(BlockNotFound) as missing:
        world.client.eth.get_block(head + 1000)
    assert missing.value.reason == "chain_read_failed"


def test_a_write_through_the_client_is_mined_and_a_revert_names_the_contract_error(world):
    app = world.light.register_app(world.operator, os.urandom(32))
    assert world.registry.app(app).owner == world.operator.address
    # the voter does not own the app: the gas estimate reverts, and the reason names the custom error
    with pytest.raises(TransactionFailed) as refused:
        world.light.raise_key_version(world.voter, app, 2)
    assert refused.value.reason.startswith("NotAppOwner(") and refused.value.what == "raiseKeyVersion"
    with pytest.raises(ContractReverted):
        world.client.eth.estimate_gas({"from": world.voter.address, "to": world.registry.address,
                                       "data": registry_abi().call("raiseKeyVersion", app, 2).data})


def test_an_error_answer_is_an_rpc_error_not_a_crash(world):
    client = ChainClient(QuorumProvider([world.client.provider.endpoints[0].url], 1))
    with pytest.raises(RpcError) as refused:
        client.eth.get_logs({"address": "not an address"})
    assert refused.value.reason == "chain_read_failed"


class _Liar:
    """A provider whose every answer is ``reply`` (one lying endpoint behind a quorum of 1)."""

    def __init__(self, result) -> None:
        self.result = result

    def make_request(self, method, params):
        return {"jsonrpc": "2.0", "id": 1, "result": self.result}


@pytest.mark.parametrize("read, result", [
    (lambda eth: eth.block_number, "0xzz"),
    (lambda eth: eth.block_number, "0x" + "f" * 100),
    (lambda eth: eth.block_number, True),
    (lambda eth: eth.get_block(1), {"number": "0xq", "hash": "0x00"}),
    (lambda eth: eth.get_block(1), {"number": "0x1", "hash": "0xnothex"}),
    (lambda eth: eth.get_block(1), ["not", "a", "block"]),
    (lambda eth: eth.get_logs({}), [{"topics": [1, 2], "data": "0x"}]),
    (lambda eth: eth.get_logs({}), {"not": "a list"}),
    (lambda eth: eth.get_code("0x" + "00" * 20), "0xnothex"),
    (lambda eth: eth.wait_for_transaction_receipt(b"\x00" * 32, timeout=1), {"logs": ["not a log"]}),
])
def test_a_lying_answer_of_the_wrong_shape_is_an_rpc_error(read, result):
    """Every malformed answer is refused by name (``chain_read_failed``), never a KeyError, TypeError or ValueError
    escaping into the follower."""
    with pytest.raises(RpcError) as refused:
        read(ChainClient(_Liar(result)).eth)
    assert refused.value.reason == "chain_read_failed"


def test_a_registry_log_of_the_wrong_shape_is_refused_by_name():
    """A log with a registry event's topic but not its shape (only a lying RPC answers one) is LogsIncomplete
    (``chain_unverified``, the poll retried), not an unexpected error."""
    from hexbytes import HexBytes

    from derot.chain.follower import Follower, LogsIncomplete

    follower = Follower(ChainClient(_Liar(None)), "0x" + "11" * 20, start_block=0)
    block = b"\x01" * 32
    entry = {"blockNumber": 5, "blockHash": HexBytes(block), "address": follower.registry.address,
             "topics": [HexBytes(registry_abi().event_topic("Revoked"))], "data": HexBytes(b"\x00" * 5),
             "logIndex": 0, "transactionHash": HexBytes(b"\x02" * 32)}
    with pytest.raises(LogsIncomplete) as refused:
        follower._logs([entry], 5, 5, {5: (block, 0, b"", b"")}, verify=False)
    assert refused.value.reason == "chain_unverified" and "Revoked" in str(refused.value)


def test_exclusion_logs_of_another_event_or_epoch_are_refused():
    """``Registry.epoch_exclusions`` believes only EpochExclusions logs of the epoch it asked for."""
    from derot.chain.registry import ChainReadError
    from derot.chain.types import EpochPhase, EpochRecord

    abi = registry_abi()
    epoch = EpochRecord(id=3, phase=EpochPhase.ACTIVE, threshold=2, previous=2, started_block=1, activated_block=2,
                        key_store=None, transcript_hash=bytes(32), members=(), group_key_sig=None,
                        group_key_kd=None)
    member = "0x" + "00" * 12 + "22" * 20
    data = "0x" + "".join(v.to_bytes(32, "big").hex() for v in (0x40, 0x60, 0, 0))  # two empty uint8[]
    for topics in ([abi.event_topic("EpochRetired"), (3).to_bytes(32, "big")],  # another event
                   [abi.event_topic("EpochExclusions"), (4).to_bytes(32, "big"), bytes.fromhex(member[2:])]):
        log = {"blockNumber": "0x5", "logIndex": "0x0", "blockHash": "0x" + "01" * 32, "data": data,
               "topics": ["0x" + t.hex() for t in topics], "address": "0x" + "11" * 20}
        registry = Registry(ChainClient(_Liar([log])), "0x" + "11" * 20)
        with pytest.raises(ChainReadError) as refused:
            registry.epoch_exclusions(epoch)
        assert refused.value.reason == "chain_read_failed"
