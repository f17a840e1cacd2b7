"""A contract's ABI without web3: call data for its functions, and its answers and events decoded.

eth_abi encodes and decodes; this module only finds functions by name and events by topic. It exists so
a node process need not import web3 (about 24 MB of resident memory per node, measured in
bench/README.md): the node's chain code reads and writes through :class:`derot.chain.client.ChainClient`.

Invariants:
- function answers decode to eth_abi's values unchanged (addresses as lowercase hex, as before);
- event arguments decode like web3's ``process_log``: addresses (also in arrays) checksummed, so code
  reading events sees the same values under either client;
- a log whose first topic is not one of the contract's events decodes to None; a log that has the topic but
  not the shape raises :class:`AbiDecodeError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import event_abi_to_log_topic, function_abi_to_4byte_selector, to_checksum_address

from derot.errors import DerotError


class AbiDecodeError(DerotError, ValueError):
    """An answer or a log does not decode as the ABI says it should."""

    reason = "abi_decode_failed"


def abi_type(item: dict) -> str:
    """The canonical type string of an ABI input or output (tuples spelled out, e.g. ``(uint8,bytes32)[]``)."""
    if item["type"].startswith("tuple"):
        inner = ",".join(abi_type(c) for c in item["components"])
        return f"({inner})" + item["type"][len("tuple"):]
    return item["type"]


@dataclass(frozen=True)
class Call:
    """One bound function call: its name, its calldata and the types of its answer."""

    name: str
    data: bytes
    output_types: tuple[str, ...]

    @property
    def data_hex(self) -> str:
        return "0x" + self.data.hex()


@dataclass(frozen=True)
class DecodedLog:
    """An event log decoded: the event's name and its arguments by name."""

    name: str
    args: dict


class _Functions:
    """``abi.functions.name(*args)`` builds a :class:`Call` (the spelling web3's contracts use)."""

    def __init__(self, abi: ContractAbi) -> None:
        self._abi = abi

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: self._abi.call(name, *args)


class ContractAbi:
    """Functions by name and events by first topic of one contract ABI (overloaded names are refused)."""

    def __init__(self, abi: list[dict]) -> None:
        self._functions: dict[str, tuple[bytes, tuple[str, ...], tuple[str, ...]]] = {}
        self._events: dict[bytes, dict] = {}
        for item in abi:
            if item.get("type") == "function":
                if item["name"] in self._functions:
                    raise ValueError(f"overloaded function {item['name']} is not supported")
                self._functions[item["name"]] = (
                    function_abi_to_4byte_selector(item),
                    tuple(abi_type(i) for i in item["inputs"]),
                    tuple(abi_type(o) for o in item.get("outputs", ())),
                )
            elif item.get("type") == "event" and not item.get("anonymous"):
                self._events[event_abi_to_log_topic(item)] = item
        self.functions = _Functions(self)

    def call(self, name: str, *args) -> Call:
        """The call of function ``name`` with ``args`` (eth_abi's encoding rules: bytesN as bytes)."""
        try:
            selector, inputs, outputs = self._functions[name]
        except KeyError:
            raise AttributeError(f"the contract has no function {name}") from None
        if len(args) != len(inputs):
            raise TypeError(f"{name} takes {len(inputs)} arguments, got {len(args)}")
        return Call(name, selector + abi_encode(list(inputs), list(args)), outputs)

    def decode_output(self, call: Call, raw: bytes):
        """``call``'s answer: the single value, or a tuple of them."""
        values = abi_decode(list(call.output_types), raw)
        return values[0] if len(values) == 1 else values

    def event_topic(self, name: str) -> bytes:
        """The first topic of event ``name``."""
        for topic, item in self._events.items():
            if item["name"] == name:
                return topic
        raise KeyError(f"the contract has no event {name}")

    def decode_log(self, topics: list[bytes], data: bytes) -> DecodedLog | None:
        """The event behind a log's ``topics`` and ``data``; None when the first topic is no event of the ABI."""
        item = self._events.get(topics[0]) if topics else None
        if item is None:
            return None
        indexed = [i for i in item["inputs"] if i["indexed"]]
        plain = [i for i in item["inputs"] if not i["indexed"]]
        if len(topics) != 1 + len(indexed):
            raise AbiDecodeError(f"{item['name']}: {len(topics)} topics, expected {1 + len(indexed)}")
        try:
            values = dict(zip((i["name"] for i in plain), abi_decode([abi_type(i) for i in plain], data)))
            for i, topic in zip(indexed, topics[1:]):
                values[i["name"]] = abi_decode([abi_type(i)], topic)[0]
        except Exception as exc:  # noqa: BLE001 - eth_abi raises several types for malformed data
            raise AbiDecodeError(f"{item['name']}: undecodable log ({type(exc).__name__})") from None
        args = {i["name"]: _checksummed(abi_type(i), values[i["name"]]) for i in item["inputs"]}
        return DecodedLog(item["name"], args)


def _checksummed(kind: str, value):
    if kind == "address":
        return to_checksum_address(value)
    if kind.startswith("address["):
        return tuple(to_checksum_address(v) for v in value)
    return value
