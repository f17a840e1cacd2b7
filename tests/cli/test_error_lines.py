"""How exceptions become one CLI line (derot.cli.errors.classify): a JSON-RPC refusal reads as its message,
never as a Python dict repr."""

from __future__ import annotations

from web3.exceptions import Web3RPCError

from derot.cli import errors


def test_an_rpc_refusal_is_its_message_not_a_dict_repr():
    answer = {"code": -32003, "message": "Insufficient funds for gas * price + value"}
    exc = Web3RPCError(repr(answer), rpc_response={"jsonrpc": "2.0", "id": 1, "error": answer})
    line = errors.classify(exc)
    assert (line.reason, line.code) == ("chain_error", errors.FAILED)
    assert line.detail == "the RPC refused: Insufficient funds for gas * price + value (code -32003)"


def test_an_rpc_error_without_an_answer_keeps_its_text():
    line = errors.classify(Web3RPCError("execution reverted"))
    assert line.detail == "execution reverted"
