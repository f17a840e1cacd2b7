"""The report_data binding of a request (docs/design.md §5) and the GPU nonce derived from it.

``report_data = SHA-512(enc)`` where ``enc`` is, with ``lp(x) = u32be(len(x)) || x``::

    "DEROT-V1-REQ" || lp(network) || appId (32) || u32be keyVersion || lp(context) || lp(tpk)
                   || lp(subjectKey) || u64be timestamp || nonce (16)

Fixed-size fields are written as is; every variable-size field is length-prefixed, so two different
requests can never encode to the same bytes. ``network`` is :func:`network_id` (chain id and registry
address) so evidence made for one deployment is useless on another.

A GPU TEE's GPUs answer SPDM GET_MEASUREMENTS with nonce ``SHA-256("DEROT-V1-GPU" || report_data)``,
which ties each GPU report to the same request as the CPU evidence.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

REQ_DOMAIN = b"DEROT-V1-REQ"
GPU_DOMAIN = b"DEROT-V1-GPU"


def _lp(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def network_id(chain_id: int, registry: str | bytes) -> bytes:
    """u64be chain id || 20-byte registry address."""
    if isinstance(registry, str):
        registry = bytes.fromhex(registry.removeprefix("0x"))
    if len(registry) != 20:
        raise ValueError("registry address must be 20 bytes")
    return struct.pack(">Q", chain_id) + registry


@dataclass(frozen=True)
class RequestBinding:
    """What a TEE binds into its evidence when it asks for a key or a certificate."""

    network: bytes
    app_id: bytes
    key_version: int
    context: bytes
    tpk: bytes
    subject_key: bytes
    timestamp: int
    nonce: bytes

    def __post_init__(self) -> None:
        if len(self.app_id) != 32:
            raise ValueError("app_id must be 32 bytes")
        if len(self.nonce) != 16:
            raise ValueError("nonce must be 16 bytes")
        if not 0 <= self.key_version < 2**32 or not 0 <= self.timestamp < 2**64:
            raise ValueError("key_version must fit u32 and timestamp u64")

    def encoding(self) -> bytes:
        return b"".join([
            REQ_DOMAIN, _lp(self.network), self.app_id, struct.pack(">I", self.key_version), _lp(self.context),
            _lp(self.tpk), _lp(self.subject_key), struct.pack(">Q", self.timestamp), self.nonce,
        ])

    def report_data(self) -> bytes:
        return hashlib.sha512(self.encoding()).digest()


def gpu_nonce(report_data: bytes) -> bytes:
    """The SPDM nonce a GPU paired with CPU evidence carrying ``report_data`` must use."""
    return hashlib.sha256(GPU_DOMAIN + report_data).digest()
