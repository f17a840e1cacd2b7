"""Fill a DerotRegistry on a real anvil with thousands of apps, revocations and nodes, fast.

Transactions go out as JSON-RPC batches of ``eth_sendTransaction`` from anvil's unlocked dev accounts (anvil
signs them), with explicit nonces and gas, while automine is off; one ``evm_mine`` per batch puts the whole
batch into one block (``--order fifo``, a block gas limit far above mainnet's). Every receipt of the batch is
then checked (status 1), so a fill that silently reverted cannot pass for a full registry.

Used by ``bench/registry_scale.py`` and ``tests/chain/test_follower_scale.py``; the world is: apps owned by a few owners (each app: ``registerApp`` +
two ``setAppMeasurement``), revocations of every kind sent by the SecurityCouncil, and one node per operator
account (``registerNode``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

import requests
from eth_abi import encode as abi_encode
from eth_utils import function_abi_to_4byte_selector, keccak

from derot.chain.types import RevocationKind
from derot.constants import Platform
from derot.errors import DerotError

BATCH = 400  # transactions per HTTP batch and per mined block
GAS = 400_000  # per transaction (registerApp ≈ 95 k, setAppMeasurement ≈ 120 k, revoke ≤ 160 k)
ANVIL_ARGS = ("--order", "fifo", "--gas-limit", str(BATCH * GAS * 2))

#: (kind, id length) used in rotation: every kind, with the lengths the contract accepts.
KIND_LENGTHS = (
    (RevocationKind.FMSPC, 6), (RevocationKind.CHIP_ID, 64), (RevocationKind.GPU_FWID, 20),
    (RevocationKind.MEASUREMENT, 32), (RevocationKind.CERT_SERIAL, 32), (RevocationKind.EVIDENCE_HASH, 32),
    (RevocationKind.PPID, 16), (RevocationKind.PCK_CERT, 32), (RevocationKind.GPU_DEVICE, 32),
)


class FillError(DerotError, RuntimeError):
    """A fill transaction failed or did not fit into its block."""

    reason = "fill_failed"


@dataclass
class Filler:
    """Sends batches of transactions to one anvil; remembers each sender's next nonce."""

    url: str
    registry: object  # derot.chain.registry.Registry
    session: requests.Session = field(default_factory=requests.Session)
    nonces: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    _id: int = 0
    _abis: dict = field(default_factory=dict)

    def rpc_batch(self, calls: list[tuple[str, list]]) -> list:
        body = []
        for method, params in calls:
            self._id += 1
            body.append({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params})
        replies = self.session.post(self.url, json=body, timeout=300).json()
        replies = sorted(replies, key=lambda r: r["id"])
        errors = [r["error"] for r in replies if "error" in r]
        if errors:
            raise FillError(f"{len(errors)} of {len(calls)} calls failed, first: {errors[0]}")
        return [r["result"] for r in replies]

    def rpc(self, method: str, params: list):
        return self.rpc_batch([(method, params)])[0]

    def nonce(self, sender: str) -> int:
        if sender not in self.nonces:
            self.nonces[sender] = int(self.rpc("eth_getTransactionCount", [sender, "latest"]), 16)
        value = self.nonces[sender]
        self.nonces[sender] = value + 1
        return value

    def tx(self, sender: str, fn: str, args: list) -> tuple[str, list]:
        if fn not in self._abis:  # web3's encode_abi costs about 1 ms a call; eth_abi alone about 50 µs
            item = next(i for i in self.registry.contract.abi if i.get("type") == "function" and i["name"] == fn)
            self._abis[fn] = ("0x" + function_abi_to_4byte_selector(item).hex(), [i["type"] for i in item["inputs"]])
        selector, types = self._abis[fn]
        data = selector + abi_encode(types, args).hex()
        return ("eth_sendTransaction", [{"from": sender, "to": self.registry.address, "data": data,
                                         "gas": hex(GAS), "nonce": hex(self.nonce(sender))}])

    def send_mined(self, txs: Iterable[tuple[str, list]]) -> int:
        """Send ``txs`` in batches, one block per batch; returns the last block number. Raises FillError
        unless every transaction succeeded."""
        batch: list = []
        last = 0
        for tx in txs:
            batch.append(tx)
            if len(batch) == BATCH:
                last = self._flush(batch)
                batch = []
        if batch:
            last = self._flush(batch)
        return last

    def _flush(self, batch: list) -> int:
        hashes = self.rpc_batch(batch)
        self.rpc("evm_mine", [])
        receipts = self.rpc_batch([("eth_getTransactionReceipt", [h]) for h in hashes])
        bad = [r for r in receipts if r is None or r["status"] != "0x1"]
        if bad:
            raise FillError(f"{len(bad)} of {len(batch)} transactions not mined or reverted")
        if len({r["blockNumber"] for r in receipts}) != 1:
            raise FillError("a batch did not fit into one block")
        self.sent += len(batch)
        return int(receipts[0]["blockNumber"], 16)


def app_id_of(owner: str, salt: bytes) -> bytes:
    """keccak256(abi.encode(owner, salt)), as DerotRegistry.appIdOf."""
    return keccak(abi_encode(["address", "bytes32"], [owner, salt]))


def app_txs(filler: Filler, owners: list[str], count: int, rng: random.Random) -> Iterable:
    """registerApp + TDX and SEV-SNP measurements for ``count`` apps, spread over ``owners``."""
    for i in range(count):
        owner = owners[i % len(owners)]
        salt = i.to_bytes(32, "big")
        app_id = app_id_of(owner, salt)
        yield filler.tx(owner, "registerApp", [salt])
        yield filler.tx(owner, "setAppMeasurement", [app_id, int(Platform.TDX), rng.randbytes(32), True])
        yield filler.tx(owner, "setAppMeasurement", [app_id, int(Platform.SEV_SNP), rng.randbytes(32), True])


def revocation_ids(count: int, rng: random.Random) -> list[tuple[RevocationKind, bytes]]:
    """``count`` distinct (kind, id) pairs, every kind in rotation; ids are random and never all zero."""
    out = []
    for i in range(count):
        kind, length = KIND_LENGTHS[i % len(KIND_LENGTHS)]
        ident = bytearray(rng.randbytes(length))
        ident[0] |= 1
        out.append((kind, bytes(ident)))
    return out


def revoke_txs(filler: Filler, council: str, ids: list[tuple[RevocationKind, bytes]]) -> Iterable:
    for kind, ident in ids:
        yield filler.tx(council, "revoke", [int(kind), ident])


def node_txs(filler: Filler, operators: list[str], rng: random.Random) -> Iterable:
    for i, operator in enumerate(operators):
        keys = [bytes([1]) + rng.randbytes(31) for _ in range(3)]
        yield filler.tx(operator, "registerNode", [keys[0], keys[1], f"node{i}.example:7443", keys[2], bytes(32)])
