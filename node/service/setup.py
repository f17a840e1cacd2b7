"""Setting a node up: opening its sealed store, creating its identity, registering it on-chain.

Used by ``derot node init/register/run`` and by the devnet; no network serving here.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from derot.errors import DerotError
from derot.service.config import NodeConfig


class SetupError(DerotError):
    """A node cannot be set up as configured; the message says what to do."""

    reason = "setup_failed"


def open_store(config: NodeConfig, *, create: bool = False):
    """Open the node's sealed store as its config says (key file, or passphrase from the environment)."""
    from derot.service.sealing import key_from_file
    from derot.service.storage import NodeStore

    if config.seal.method == "passphrase":
        passphrase = os.environ.get("DEROT_SEAL_PASSPHRASE", "")
        if not passphrase:
            raise SetupError("set DEROT_SEAL_PASSPHRASE to unseal the node store")
        return NodeStore.open(config.store_path, passphrase=passphrase, create=create)
    if config.seal.method == "snp":
        from derot.app.tee.errors import TeeError
        from derot.service.sealing import key_from_snp

        try:
            key = key_from_snp()
        except TeeError as exc:
            raise SetupError(f"[seal].method = 'snp': no sealing key from the SEV-SNP guest: {exc}") from None
        return NodeStore.open(config.store_path, key=key, create=create)
    return NodeStore.open(config.store_path, key=key_from_file(config.seal_key_file, create=create), create=create)


def trust_config(config: NodeConfig):
    """The attestation roots a node trusts: pinned vendor roots, plus the devnet roots in devnet mode; and, if
    ``[attest] rim_dir`` or ``rim_url`` is set, NVIDIA's pinned RIM root with RIMs from that bundle or service
    (fetched off the event loop: :meth:`derot.service.verification.EvidenceVerifier.prefetch`)."""
    from dataclasses import replace

    from derot.attest.devnet import DevnetRoots
    from derot.attest.trust import TrustConfig, production_rim_verifier

    attest = config.attest
    cache = attest.collateral_cache or str(config.data_dir / "collateral")
    if attest.mode == "devnet":
        trust = TrustConfig.devnet(DevnetRoots.load(attest.devnet_roots), include_production=True,
                                   pccs_url=attest.pccs_url, cache_dir=cache)
    else:
        trust = TrustConfig.production_defaults(pccs_url=attest.pccs_url, cache_dir=cache)
    if not (attest.rim_dir or attest.rim_url):
        return trust
    rims = production_rim_verifier(bundle_dir=attest.rim_dir or None, service_url=attest.rim_url or None,
                                   cache_dir=attest.rim_cache or str(config.data_dir / "rim"))
    return replace(trust, rims=rims)


def endpoint_of(config: NodeConfig) -> str:
    """The endpoint string the node registers: ``public=HOST:PORT;peer=HOST:PORT``."""
    from derot.net.peers import Endpoint

    public_port = config.node.public_listen.rpartition(":")[2]
    peer_port = config.node.peer_listen.rpartition(":")[2]
    host = config.node.advertise_host
    return str(Endpoint(f"{host}:{public_port}", f"{host}:{peer_port}"))


@dataclass(frozen=True)
class PublicIdentity:
    identity_key: bytes
    x25519_key: bytes
    tls_key_hash: bytes


def init_node(config: NodeConfig, *, force: bool = False) -> PublicIdentity:
    """Create the sealed store and the node's Ed25519, X25519 and TLS keys."""
    from derot.service.node import NodeIdentity, create_identity

    from derot.service.storage import private_dir

    private_dir(config.data_dir)
    store = open_store(config, create=True)
    try:
        if store.has_identity("ed25519") and not force:
            raise SetupError(f"{config.store_path} already holds identity keys (use --force to replace them)")
        create_identity(store)
        identity = NodeIdentity(store)
        return PublicIdentity(identity.identity_key, identity.x25519_key, identity.tls.key_hash)
    finally:
        store.close()


@dataclass(frozen=True)
class Registration:
    operator: str
    endpoint: str
    evidence_hash: bytes
    outcome: str  # "registered", "updated" or "unchanged"


def register_node(config: NodeConfig, *, update: bool = False) -> Registration:
    """Record the node (keys, endpoint, TLS key hash, fresh membership evidence if ``[attest].node_tee`` is
    set) in the registry from the operator account; with ``update``, replace the endpoint, TLS key hash and
    evidence of a registered node.

    Safe to re-run: the registry must have contract code; nothing is stored before the transaction
    succeeds; registering a node already registered with this store's keys, endpoint and evidence
    changes nothing, and with anything else is refused with a pointer to ``derot node update``."""
    from eth_account import Account
    from web3 import Web3

    from derot.attest.binding import network_id
    from derot.chain.registry import Registry
    from derot.chain.types import NodeStatus
    from derot.service.config import operator_key
    from derot.service.node import NodeIdentity, make_node_evidence

    account = Account.from_key(operator_key(config))
    w3 = Web3(Web3.HTTPProvider(config.chain.rpc_url, request_kwargs={"timeout": 15}))
    registry_address = Web3.to_checksum_address(config.chain.registry)
    if not w3.eth.get_code(registry_address):
        raise SetupError(f"no contract at {registry_address} on {config.chain.rpc_url}: check [chain].registry")
    registry = Registry(w3, registry_address)
    store = open_store(config)
    try:
        identity = NodeIdentity(store)
        endpoint = endpoint_of(config)
        existing = registry.node(account.address)
        registered = existing.status != NodeStatus.NONE
        if update and not registered:
            raise SetupError(f"{account.address} is not registered yet: run `derot node register` first")
        if registered and not update:
            stored = store.meta("node_evidence")
            stored_hash = hashlib.sha256(stored).digest() if stored else bytes(32)
            if (bytes(existing.identity_key), existing.endpoint, bytes(existing.tls_key_hash),
                    bytes(existing.evidence_hash)) == (identity.identity_key, endpoint, identity.tls.key_hash,
                                                       stored_hash):
                return Registration(account.address, endpoint, stored_hash, "unchanged")
            if bytes(existing.identity_key) != identity.identity_key:
                raise SetupError(f"{account.address} is registered with another identity key than this store's")
            raise SetupError(f"{account.address} is already registered ({existing.status.name.lower()}) with another "
                             "endpoint, TLS key or evidence: use `derot node update`")
        evidence = b""
        if config.attest.node_tee:
            network = network_id(w3.eth.chain_id, registry.address)
            evidence = make_node_evidence(config, network, account.address, identity.identity_key,
                                          identity.x25519_key, identity.tls.key_hash).encode()
        evidence_hash = hashlib.sha256(evidence).digest() if evidence else bytes(32)
        if update:
            registry.update_node(account, endpoint=endpoint, tls_key_hash=identity.tls.key_hash,
                                 evidence_hash=evidence_hash)
        else:
            registry.register_node(account, identity_key=identity.identity_key, x25519_key=identity.x25519_key,
                                   endpoint=endpoint, tls_key_hash=identity.tls.key_hash, evidence_hash=evidence_hash)
        if evidence:  # only once the chain holds its hash: the stored evidence always matches the chain
            store.put_meta("node_evidence", evidence)
        return Registration(account.address, endpoint, evidence_hash, "updated" if update else "registered")
    finally:
        store.close()
