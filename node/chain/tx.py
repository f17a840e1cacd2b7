"""Sending transactions signed by a local key, with revert reasons decoded from the contracts' ABIs.

Every write in ``derot.chain`` goes through :func:`send`: it estimates gas (which surfaces a revert before
anything is broadcast), signs locally, broadcasts and waits for the receipt. A revert becomes a
:class:`TransactionFailed` whose message names the custom error and its arguments, e.g.
``NotOwnerOrCouncil(0x70997970C51812dc3A010C7d01b50e0d17dc79C8)``.
"""

from __future__ import annotations

import functools
import sys

from eth_abi import decode as abi_decode
from eth_utils import function_abi_to_4byte_selector

from derot.chain.abi import abi_type
from derot.chain.artifacts import artifact_names, load_artifact
from derot.errors import DerotError

GAS_MARGIN = 1.25


class TransactionFailed(DerotError, RuntimeError):
    """A transaction reverted (at estimation or on-chain); ``reason`` is human-readable."""

    reason = "transaction_failed"

    def __init__(self, what: str, reason: str, receipt=None) -> None:
        self.what = what
        self.reason = reason
        self.receipt = receipt
        super().__init__(f"{what} failed: {reason}")


class ContractReverted(DerotError, RuntimeError):
    """An eth_call or gas estimate through :class:`derot.chain.client.ChainClient` reverted; ``data`` is the
    revert data (0x-hex, possibly empty)."""

    reason = "contract_reverted"

    def __init__(self, message: str, data: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.data = data


def _revert_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean "the contract reverted": ours, and web3's when the caller passed web3's ``Web3``
    (web3 is then imported; a node process never imports it, see derot.chain.client)."""
    web3_errors = sys.modules.get("web3.exceptions")
    if web3_errors is None:
        return (ContractReverted,)
    return (ContractReverted, web3_errors.ContractLogicError)


@functools.cache
def _error_table() -> dict[bytes, tuple[str, list[str], list[str]]]:
    """Selector → (error name, argument types, argument names) over every checked-in artifact."""
    table = {}
    for name in artifact_names():
        for item in load_artifact(name)["abi"]:
            if item.get("type") == "error":
                selector = function_abi_to_4byte_selector(item)
                types = [abi_type(i) for i in item["inputs"]]
                table[selector] = (item["name"], types, [i["name"] for i in item["inputs"]])
    return table


def decode_revert(data) -> str:
    """Readable form of revert data: a custom error with arguments, Error(string) or a raw hex blob."""
    if isinstance(data, str):
        data = bytes.fromhex(data.removeprefix("0x"))
    data = bytes(data or b"")
    if len(data) < 4:
        return "reverted without a reason"
    selector, payload = data[:4], data[4:]
    if selector == bytes.fromhex("08c379a0"):
        return abi_decode(["string"], payload)[0]
    entry = _error_table().get(selector)
    if entry is None:
        return f"unknown error 0x{data.hex()}"
    name, types, _names = entry
    try:
        args = abi_decode(types, payload)
    except Exception:
        return f"{name}(<undecodable 0x{payload.hex()}>)"
    return f"{name}({', '.join(_show(a) for a in args)})"


def _show(value) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def revert_reason(exc: Exception) -> str:
    """Readable reason of a revert error (custom error with arguments, Error(string), panic), ours or web3's."""
    kind = type(exc).__name__
    data = getattr(exc, "data", None)
    if kind == "ContractCustomError":
        return decode_revert(data if isinstance(data, str) else exc.message)
    if kind == "ContractPanicError":
        return str(exc)
    if isinstance(exc, _revert_errors()):
        if data and isinstance(data, str) and len(data) > 10:
            return decode_revert(data)
        return getattr(exc, "message", None) or str(exc)
    return str(exc)


def send(w3, account, call, *, what: str | None = None, value: int = 0, gas: int | None = None,
         min_gas: int = 0):
    """Sign ``call`` (a bound contract function, or a dict tx) with ``account`` and wait for the receipt.

    ``gas`` replaces the estimate; ``min_gas`` is a floor under it, for a call whose cost depends on
    transactions that may land before it (unused gas is not charged)."""
    label = what or getattr(call, "fn_name", "transaction")
    base = {"from": account.address, "value": value, "nonce": w3.eth.get_transaction_count(account.address, "pending")}
    try:
        if isinstance(call, dict):
            tx = {**base, **call}
            if gas is None and "gas" not in tx:
                tx["gas"] = int(w3.eth.estimate_gas(tx) * GAS_MARGIN)
            tx.setdefault("chainId", w3.eth.chain_id)
            if "gasPrice" not in tx and "maxFeePerGas" not in tx:
                tx.update(_fees(w3))
        else:
            if gas is not None:
                base["gas"] = gas
            tx = call.build_transaction(base)
            if gas is None:
                tx["gas"] = int(tx["gas"] * GAS_MARGIN)
    except _revert_errors() as exc:
        raise TransactionFailed(label, revert_reason(exc)) from None
    if gas is not None:
        tx["gas"] = gas
    tx["gas"] = max(tx["gas"], min_gas)
    signed = account.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)
    if receipt["status"] != 1:
        raise TransactionFailed(label, _replay_reason(w3, tx, receipt), receipt)
    return receipt


def _fees(w3) -> dict:
    base_fee = w3.eth.get_block("latest").get("baseFeePerGas")
    if base_fee is None:
        return {"gasPrice": w3.eth.gas_price}
    tip = w3.eth.max_priority_fee
    return {"maxFeePerGas": 2 * base_fee + tip, "maxPriorityFeePerGas": tip}


def _replay_reason(w3, tx: dict, receipt) -> str:
    call = {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}
    try:
        w3.eth.call(call, receipt["blockNumber"] - 1)
    except _revert_errors() as exc:
        return revert_reason(exc)
    except Exception as exc:  # the node may not keep old state
        return f"reverted on-chain ({type(exc).__name__})"
    return "reverted on-chain (out of gas?)"


def deploy_contract_receipt(w3, account, artifact: dict, *args, what: str | None = None):
    """Deploy ``artifact`` with constructor ``args``; returns (bound contract, receipt)."""
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    receipt = send(w3, account, factory.constructor(*args), what=what or f"deploy {artifact['contractName']}")
    return w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"]), receipt


def deploy_contract(w3, account, artifact: dict, *args, what: str | None = None):
    """Deploy ``artifact`` with constructor ``args``; returns a bound contract."""
    return deploy_contract_receipt(w3, account, artifact, *args, what=what)[0]
