"""A block's receipts checked against its header's ``receiptsRoot``: what an RPC answers for
``eth_getBlockReceipts`` is believed only if it rebuilds the root that the (re-hashed) header commits to.

Encoding (post-Byzantium receipts; EIP-2718 typed receipts are ``type ‖ rlp(...)``):
``rlp([status, cumulativeGasUsed, logsBloom, [[address, [topics], data], ...]])``, stored in a Merkle
Patricia trie under the key ``rlp(index)``. The trie root is computed here from scratch (yellow paper
appendix D); it is small because receipts tries are built once and never updated.
"""

from __future__ import annotations

import rlp
from eth_utils import keccak

from derot.chain.headers import HeaderInvalid, _data, _quantity


class ReceiptsInvalid(HeaderInvalid):
    """The receipts do not rebuild the header's receiptsRoot."""


def _hex_prefix(nibbles: list[int], leaf: bool) -> bytes:
    flag = 2 if leaf else 0
    if len(nibbles) % 2:
        packed = [(flag + 1) << 4 | nibbles[0]] + [nibbles[i] << 4 | nibbles[i + 1] for i in range(1, len(nibbles), 2)]
    else:
        packed = [flag << 4] + [nibbles[i] << 4 | nibbles[i + 1] for i in range(0, len(nibbles), 2)]
    return bytes(packed)


def _reference(node) -> object:
    encoded = rlp.encode(node)
    return node if len(encoded) < 32 else keccak(encoded)


def _node(items: list[tuple[list[int], bytes]], depth: int):
    """The trie node for ``items`` (nibble keys, all sharing their first ``depth`` nibbles), as an RLP list."""
    if len(items) == 1:
        key, value = items[0]
        return [_hex_prefix(key[depth:], True), value]
    common = depth
    while all(len(k) > common for k, _ in items) and len({k[common] for k, _ in items}) == 1:
        common += 1
    if common > depth:
        return [_hex_prefix(items[0][0][depth:common], False), _reference(_node(items, common))]
    branch: list = [b""] * 17
    for nibble in range(16):
        group = [(k, v) for k, v in items if len(k) > depth and k[depth] == nibble]
        if group:
            branch[nibble] = _reference(_node(group, depth + 1))
    for key, value in items:
        if len(key) == depth:
            branch[16] = value
    return branch


def trie_root(values: list[bytes]) -> bytes:
    """Root of the trie mapping rlp(i) → values[i] (receipts and transactions tries)."""
    if not values:
        return keccak(rlp.encode(b""))
    items = []
    for i, value in enumerate(values):
        key = rlp.encode(i)
        items.append(([n for b in key for n in (b >> 4, b & 15)], value))
    return keccak(rlp.encode(_node(sorted(items), 0)))


def encode_receipt(receipt: dict) -> bytes:
    """The consensus encoding of one JSON-RPC receipt object."""
    logs = [[_data(e["address"]), [_data(t) for t in e["topics"]], _data(e["data"])] for e in receipt["logs"]]
    status = _quantity(receipt["status"])
    body = rlp.encode([b"\x01" if status else b"", _quantity(receipt["cumulativeGasUsed"]),
                       _data(receipt["logsBloom"]), logs])
    kind = _quantity(receipt.get("type", "0x0"))
    return body if kind == 0 else bytes([kind]) + body


def verified_receipts(receipts, receipts_root: bytes) -> list[dict]:
    """``receipts`` (a JSON-RPC list) if they rebuild ``receipts_root``; else :class:`ReceiptsInvalid`."""
    if not isinstance(receipts, list) or not all(isinstance(r, dict) for r in receipts):
        raise ReceiptsInvalid("receipts are not a list of objects")
    try:
        encoded = [encode_receipt(r) for r in sorted(receipts, key=lambda r: _quantity(r["transactionIndex"]))]
    except (KeyError, TypeError) as exc:
        raise ReceiptsInvalid(f"receipt lacks a field: {exc}") from None
    if trie_root(encoded) != receipts_root:
        raise ReceiptsInvalid("receipts do not rebuild the block's receiptsRoot")
    return receipts
