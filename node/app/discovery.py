"""Where an app finds the committee: the registry on-chain names its members' public endpoints and pins
their TLS keys.

A node registers ``endpoint`` as ``;``-separated ``name=host:port`` fields (``peer=…;public=…``); the
public one is what apps call. Endpoints come from the current epoch's members only: a registered node
that is not in the committee cannot serve a request anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def endpoint_fields(endpoint: str) -> dict[str, str]:
    """``"peer=h:1;public=h:2"`` → ``{"peer": "h:1", "public": "h:2"}`` (malformed items are skipped)."""
    out = {}
    for item in endpoint.split(";"):
        name, sep, value = item.partition("=")
        if sep and name.strip() and value.strip():
            out[name.strip()] = value.strip()
    return out


def committee_endpoints(registry) -> dict[str, bytes]:
    """``{public endpoint: TLS key hash}`` of the current committee, as registered on-chain
    (``registry`` is a :class:`derot.chain.registry.Registry`) at the latest block; empty when no epoch
    is active."""
    epoch = registry.current_epoch()
    if not epoch:
        return {}
    out = {}
    for operator in registry.epoch(epoch).members:
        node = registry.node(operator)
        public = endpoint_fields(node.endpoint).get("public")
        if public:
            out[public] = bytes(node.tls_key_hash)
    return out


@dataclass(frozen=True)
class Committee:
    """The committee an app talks to: its public endpoints and their pinned TLS key hashes."""

    endpoints: tuple[str, ...]
    tls_key_hashes: dict[str, bytes] = field(default_factory=dict)


def discover(rpc_url: str, registry: str) -> Committee:
    """Read the current committee's endpoints from the registry at ``registry`` through ``rpc_url``."""
    from web3 import Web3

    from derot.chain.registry import Registry

    found = committee_endpoints(Registry(Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 15})),
                                         registry))
    return Committee(tuple(found), found)
