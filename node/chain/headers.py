"""Block headers as untrusted data: recompute the hash a header claims, and test its logs bloom.

Invariants:
- :func:`verified_header` returns a :class:`Header` only if keccak256(RLP(header fields)) equals the
  ``hash`` the RPC answered, so every field (parentHash, timestamp, logsBloom, receiptsRoot) is bound to
  the block hash that endpoints agreed on. A header with fields this module does not know fails closed.
- :func:`bloom_may_contain` is the Ethereum logs bloom test (yellow paper §4.3.1): False means the block
  certainly holds no log with that address or topic.
"""

from __future__ import annotations

from dataclasses import dataclass

import rlp
from eth_utils import keccak

from derot.errors import DerotError

#: Header fields after the 15 pre-London ones, in RLP order (London, Shanghai, Cancun, Prague).
_OPTIONAL = ("baseFeePerGas", "withdrawalsRoot", "blobGasUsed", "excessBlobGas", "parentBeaconBlockRoot",
             "requestsHash")
_QUANTITIES = {"difficulty", "number", "gasLimit", "gasUsed", "timestamp", "baseFeePerGas", "blobGasUsed",
               "excessBlobGas"}
_BASE = ("parentHash", "sha3Uncles", "miner", "stateRoot", "transactionsRoot", "receiptsRoot", "logsBloom",
         "difficulty", "number", "gasLimit", "gasUsed", "timestamp", "extraData", "mixHash", "nonce")
BLOOM_BYTES = 256


class HeaderInvalid(DerotError):
    """An RPC answered a header that does not hash to the hash it claims."""

    reason = "chain_unverified"


@dataclass(frozen=True)
class Header:
    number: int
    hash: bytes
    parent_hash: bytes
    timestamp: int
    logs_bloom: bytes
    receipts_root: bytes


def _data(value) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str) or not value.startswith("0x"):
        raise HeaderInvalid(f"header field is not 0x-hex: {value!r:.40}")
    text = value[2:]
    try:
        return bytes.fromhex(text if len(text) % 2 == 0 else "0" + text)
    except ValueError:
        raise HeaderInvalid(f"header field is not hex: {value!r:.40}") from None


def _quantity(value) -> int:
    if isinstance(value, int):
        return value
    return int.from_bytes(_data(value), "big")


def _rlp_quantity(value: int) -> bytes:
    return b"" if value == 0 else value.to_bytes((value.bit_length() + 7) // 8, "big")


def verified_header(block: dict) -> Header:
    """Check that ``block`` (a JSON-RPC block object, hex strings or web3 values) hashes to its ``hash``."""
    if not isinstance(block, dict):
        raise HeaderInvalid("block is not an object")
    try:
        fields = []
        for name in _BASE + tuple(n for n in _OPTIONAL if n in block):
            if name not in block:
                raise HeaderInvalid(f"header lacks {name}")
            value = block[name]
            fields.append(_rlp_quantity(_quantity(value)) if name in _QUANTITIES else _data(value))
        claimed = _data(block["hash"])
    except KeyError:
        raise HeaderInvalid("header lacks its hash") from None
    if keccak(rlp.encode(fields)) != claimed:
        raise HeaderInvalid(f"block {_quantity(block['number'])} does not hash to the hash it claims")
    bloom = _data(block["logsBloom"])
    if len(bloom) != BLOOM_BYTES:
        raise HeaderInvalid("logsBloom is not 256 bytes")
    return Header(
        number=_quantity(block["number"]),
        hash=claimed,
        parent_hash=_data(block["parentHash"]),
        timestamp=_quantity(block["timestamp"]),
        logs_bloom=bloom,
        receipts_root=_data(block["receiptsRoot"]),
    )


def bloom_may_contain(bloom: bytes, value: bytes) -> bool:
    """The 3-of-2048-bits test of ``value`` (an address or a topic) against a 256-byte logs bloom."""
    digest = keccak(value)
    for i in (0, 2, 4):
        bit = ((digest[i] << 8) | digest[i + 1]) & 2047
        if not bloom[BLOOM_BYTES - 1 - bit // 8] & (1 << (bit % 8)):
            return False
    return True
