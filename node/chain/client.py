"""The node's Ethereum client: the JSON-RPC reads and writes a node makes, without web3.

A node process follows the chain all its life and writes one transaction per epoch. web3.py would cost it
about 24 MB of resident memory (web3 with aiohttp, websockets, ens and requests; bench/README.md), which at n = 64 nodes
on one machine is 1.5 GB. :class:`ChainClient` offers the part of web3's ``w3.eth`` that derot's chain code
uses, with answers in the same shapes (quantities as ints, hashes and data as HexBytes, log addresses
checksummed), so that code takes either client: the CLI and tests keep passing web3's ``Web3``.

Invariants:
- every call goes through ``provider.make_request`` (a :class:`derot.chain.quorum.QuorumProvider` in a node:
  each read voted on by the quorum);
- an error answer raises: :class:`ContractReverted` (with the revert data) for a reverted call or gas
  estimate, :class:`BlockNotFound` for a missing block, :class:`RpcError` for any other error;
- a malformed answer raises :class:`RpcError`, never a KeyError or TypeError.
"""

from __future__ import annotations

import time

from eth_utils import to_checksum_address
from hexbytes import HexBytes

from derot.chain.registry import ChainReadError
from derot.chain.tx import ContractReverted

#: block and log fields that JSON-RPC sends as hex quantities; every other 0x-string field is bytes
_QUANTITIES = frozenset({
    "number", "timestamp", "baseFeePerGas", "gasLimit", "gasUsed", "difficulty", "size",
    "blobGasUsed", "excessBlobGas", "totalDifficulty", "blockNumber", "logIndex", "transactionIndex", "status",
    "cumulativeGasUsed", "effectiveGasPrice", "type", "blobGasPrice",
})
RECEIPT_POLL = 0.1  # seconds between eth_getTransactionReceipt polls while waiting for a receipt


class RpcError(ChainReadError):
    """A JSON-RPC call answered an error, or an answer of the wrong shape."""


class BlockNotFound(ChainReadError):
    """The block asked for does not exist (yet) on the endpoint."""


def _quantity(value) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.startswith("0x") and 2 < len(value) <= 66:
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise RpcError(f"expected a hex quantity, got {str(value)[:20]!r}")


def _formatted(record: dict) -> dict:
    """A block, log or receipt with quantities as ints and 0x-strings as HexBytes (web3's shapes); a field that
    is not what its name says raises RpcError."""
    try:
        return _format_fields(record)
    except (ValueError, TypeError) as exc:
        raise RpcError(f"malformed answer ({type(exc).__name__}: {str(exc)[:80]})") from None


def result_of(method: str, reply):
    """The ``result`` of one JSON-RPC ``reply`` to ``method``; an error reply raises RpcError (ContractReverted
    for a reverted call), and so does a reply that is not an object."""
    if not isinstance(reply, dict):
        raise RpcError(f"{method}: malformed answer")
    if "error" in reply:
        error = reply["error"] if isinstance(reply["error"], dict) else {"message": str(reply["error"])}
        message = str(error.get("message", error))
        data = error.get("data")
        if method in ("eth_call", "eth_estimateGas") and (error.get("code") == 3 or "revert" in message.lower()):
            raise ContractReverted(f"{method}: {message}", data if isinstance(data, str) else "")
        raise RpcError(f"{method}: {message}")
    return reply.get("result")


def log_filter(filter_params: dict) -> dict:
    """An eth_getLogs filter as JSON-RPC wants it (block numbers as hex quantities)."""
    return {k: (hex(v) if isinstance(v, int) else v) for k, v in filter_params.items()}


def logs_of(result) -> list[dict]:
    """An eth_getLogs result in web3's shapes; raises RpcError if it is not a list of log objects."""
    if not isinstance(result, list) or not all(isinstance(e, dict) for e in result):
        raise RpcError("eth_getLogs: malformed answer")
    return [_formatted(e) for e in result]


def _format_fields(record: dict) -> dict:
    out: dict = {}
    for key, value in record.items():
        if key in _QUANTITIES and isinstance(value, str):
            out[key] = _quantity(value)
        elif key in ("address", "from", "to", "contractAddress") and isinstance(value, str):
            out[key] = to_checksum_address(value)
        elif key == "topics" and isinstance(value, list):
            out[key] = [HexBytes(_hex_string(t)) for t in value]
        elif key == "logs" and isinstance(value, list):
            out[key] = [_format_fields(e) if isinstance(e, dict) else _not_a(e, "log") for e in value]
        elif isinstance(value, str) and value.startswith("0x"):
            out[key] = HexBytes(value)
        else:
            out[key] = value
    return out


def _hex_string(value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a 0x-hex string, got {type(value).__name__}")
    return value


def _not_a(value, what: str):
    raise TypeError(f"expected a {what} object, got {type(value).__name__}")


def _tx_params(tx: dict) -> dict:
    """A transaction dict as JSON-RPC wants it (ints as hex quantities, bytes as 0x-hex)."""
    out = {}
    for key, value in tx.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            out[key] = hex(value)
        elif isinstance(value, (bytes, bytearray)):
            out[key] = "0x" + bytes(value).hex()
        else:
            out[key] = value
    return out


def _block_id(block) -> str:
    return hex(block) if isinstance(block, int) else block


class _Eth:
    """The ``w3.eth`` subset (see the module docstring)."""

    def __init__(self, provider) -> None:
        self._provider = provider

    def _result(self, method: str, params: list):
        return result_of(method, self._provider.make_request(method, params))

    @property
    def block_number(self) -> int:
        return _quantity(self._result("eth_blockNumber", []))

    @property
    def chain_id(self) -> int:
        return _quantity(self._result("eth_chainId", []))

    @property
    def gas_price(self) -> int:
        return _quantity(self._result("eth_gasPrice", []))

    @property
    def max_priority_fee(self) -> int:
        return _quantity(self._result("eth_maxPriorityFeePerGas", []))

    def get_block(self, block, full_transactions: bool = False) -> dict:
        if isinstance(block, (bytes, bytearray)) or (isinstance(block, str) and len(block) == 66):
            method, ident = "eth_getBlockByHash", HexBytes(block).to_0x_hex()
        else:
            method, ident = "eth_getBlockByNumber", _block_id(block)
        result = self._result(method, [ident, full_transactions])
        if result is None:
            raise BlockNotFound(f"block {block!r} not found")
        if not isinstance(result, dict):
            raise RpcError(f"{method}: malformed block")
        return _formatted(result)

    def get_logs(self, filter_params: dict) -> list[dict]:
        return logs_of(self._result("eth_getLogs", [log_filter(filter_params)]))

    def _bytes(self, method: str, params: list) -> HexBytes:
        result = self._result(method, params)
        try:
            return HexBytes(result or "0x")
        except (ValueError, TypeError) as exc:
            raise RpcError(f"{method}: malformed answer ({type(exc).__name__})") from None

    def get_code(self, address: str, block="latest") -> HexBytes:
        return self._bytes("eth_getCode", [address, _block_id(block)])

    def get_transaction_count(self, address: str, block="latest") -> int:
        return _quantity(self._result("eth_getTransactionCount", [address, _block_id(block)]))

    def estimate_gas(self, tx: dict) -> int:
        return _quantity(self._result("eth_estimateGas", [_tx_params(tx)]))

    def call(self, tx: dict, block="latest") -> HexBytes:
        return self._bytes("eth_call", [_tx_params(tx), _block_id(block)])

    def send_raw_transaction(self, raw: bytes) -> HexBytes:
        return self._bytes("eth_sendRawTransaction", ["0x" + bytes(raw).hex()])

    def wait_for_transaction_receipt(self, tx_hash, timeout: float = 120) -> dict:
        """The receipt of ``tx_hash``, polled until it exists; raises TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        ident = HexBytes(tx_hash).to_0x_hex()
        while True:
            receipt = self._result("eth_getTransactionReceipt", [ident])
            if isinstance(receipt, dict):
                return _formatted(receipt)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"transaction {ident} not mined within {timeout} s")
            time.sleep(RECEIPT_POLL)


class ChainClient:
    """``provider`` (anything with ``make_request(method, params)``) behind the ``w3.eth`` subset."""

    def __init__(self, provider) -> None:
        self.provider = provider
        self.eth = _Eth(provider)

    def __repr__(self) -> str:
        return f"ChainClient({self.provider!r})"
