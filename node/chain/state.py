"""``RegistryState``: the whole DerotRegistry state at one block, as plain immutable values.

It bundles the :class:`~derot.attest.snapshot.GovernanceSnapshot` the policy engine consumes with the nodes,
epochs and certificate revocations a node or relying party needs. :func:`read_state` reads it with view
calls pinned to one block hash, so it is consistent even while the chain reorganises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from derot.attest.snapshot import AppRecord, GovernanceSnapshot
from derot.certs import CertEpoch, CertificateTrust, Verdict, verify_certificate
from derot.chain.bulk import ReadLimits, read_all
from derot.chain.bulk import node_measurements as bulk_node_measurements
from derot.chain.registry import ChainReadError, _app_record, _node_record
from derot.chain.types import EpochRecord, NodeRecord, NodeStatus, RevocationKind
from derot.crypto.bls import G2


@dataclass(frozen=True)
class RegistryState:
    """DerotRegistry at ``snapshot.block_number`` / ``snapshot.block_hash``."""

    snapshot: GovernanceSnapshot
    nodes: Mapping[str, NodeRecord] = field(default_factory=dict)
    epochs: Mapping[int, EpochRecord] = field(default_factory=dict)
    current_epoch: int = 0
    pending_epoch: int = 0
    owner: str = ""
    council: str | None = None
    revoked_serials: frozenset[bytes] = frozenset()
    revoked_evidence_hashes: frozenset[bytes] = frozenset()
    #: apps the node answered an error for (skipped, reported, re-read on every update; requests for them
    #: are refused as unknown apps)
    unreadable_apps: frozenset[bytes] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", MappingProxyType(dict(self.nodes)))
        object.__setattr__(self, "epochs", MappingProxyType(dict(self.epochs)))

    @property
    def block_number(self) -> int:
        return self.snapshot.block_number

    @property
    def block_hash(self) -> bytes:
        return self.snapshot.block_hash

    @property
    def committee(self) -> EpochRecord | None:
        """The current (ACTIVE) epoch."""
        return self.epochs.get(self.current_epoch)

    @property
    def pending(self) -> EpochRecord | None:
        """The epoch whose DKG or reshare is running."""
        return self.epochs.get(self.pending_epoch)

    @property
    def group_key_sig(self) -> G2 | None:
        """The current PK_sig (certificates)."""
        return self.committee.group_key_sig if self.committee else None

    @property
    def group_key_kd(self) -> G2 | None:
        """The current PK_kd (key derivation)."""
        return self.committee.group_key_kd if self.committee else None

    def approved_nodes(self) -> dict[str, NodeRecord]:
        return {op: n for op, n in self.nodes.items() if n.status is NodeStatus.APPROVED}

    def certificate_trust(self) -> CertificateTrust:
        return CertificateTrust(
            epochs={i: CertEpoch(e.phase, e.group_key_sig, e.group_key_kd) for i, e in self.epochs.items()},
            current_epoch=self.current_epoch or None,
            revoked_serials=self.revoked_serials,
            revoked_evidence_hashes=self.revoked_evidence_hashes,
        )

    def verify_certificate(self, cert: bytes, sig: bytes, *, now: int | None = None) -> Verdict:
        """Off-chain verification against this state (``now`` defaults to the block's timestamp)."""
        key = self.group_key_sig or G2.generator()  # no active epoch: every epoch check fails first anyway
        when = self.snapshot.block_timestamp if now is None else now
        return verify_certificate(
            cert, sig, group_key_sig=key, snapshot=self.snapshot, now=when, trust=self.certificate_trust()
        )

    def with_block(self, number: int, block_hash: bytes, timestamp: int) -> RegistryState:
        """The same state seen at a later block without registry events."""
        snap = replace(self.snapshot, block_number=number, block_hash=block_hash, block_timestamp=timestamp)
        return replace(self, snapshot=snap)


def read_state(registry, block_hash: bytes, block_number: int, timestamp: int,
               limits: ReadLimits = ReadLimits()) -> RegistryState:
    """Read everything at ``block_hash`` (a ``derot.chain.registry.Registry``): paged views pinned to the hash,
    sent as a few JSON-RPC batches, every list bounded by ``limits`` (:mod:`derot.chain.bulk`)."""
    if not registry.w3.eth.get_code(registry.address, block_number):
        raise ChainReadError(f"no registry code at {registry.address} in block {block_number} (before deployment?)")
    c = read_all(registry, block_hash, limits)
    revoked = c.revoked
    snapshot = GovernanceSnapshot(
        chain_id=registry.w3.eth.chain_id,
        registry=registry.address,
        block_number=block_number,
        block_hash=bytes(block_hash),
        block_timestamp=timestamp,
        platforms=c.platforms,
        revoked_fmspcs=revoked[RevocationKind.FMSPC],
        revoked_chip_ids=revoked[RevocationKind.CHIP_ID],
        revoked_gpu_fwids=revoked[RevocationKind.GPU_FWID],
        revoked_measurements=revoked[RevocationKind.MEASUREMENT],
        node_measurements=c.node_measurements,
        apps=c.apps,
        revoked_ppids=revoked[RevocationKind.PPID],
        revoked_pck_certs=revoked[RevocationKind.PCK_CERT],
        revoked_gpu_devices=revoked[RevocationKind.GPU_DEVICE],
        **registry.snp_policy(block_hash),
    )
    return RegistryState(
        snapshot=snapshot,
        nodes=c.nodes,
        epochs=c.epochs,
        current_epoch=c.current_epoch,
        pending_epoch=c.pending_epoch,
        owner=c.owner,
        council=c.council,
        revoked_serials=revoked[RevocationKind.CERT_SERIAL],
        revoked_evidence_hashes=revoked[RevocationKind.EVIDENCE_HASH],
        unreadable_apps=c.unreadable_apps,
    )


def _reread_apps(
    registry, state: RegistryState, app_ids: set[bytes], at: bytes
) -> tuple[dict[bytes, AppRecord], set[bytes]]:
    """The snapshot's apps with ``app_ids`` re-read at ``at`` (one batch), and the ids that could not be read
    (kept for the next block). A chain that is unverified or unavailable fails the whole update instead."""
    new_apps: dict[bytes, AppRecord] = dict(state.snapshot.apps)
    unreadable = set()
    ids = sorted(app_ids)
    answers = registry._call_many([registry.functions.getApp(i) for i in ids], at, errors=True)
    for app_id, raw in zip(ids, answers):
        if isinstance(raw, ChainReadError):
            if raw.reason in ("chain_unverified", "chain_unavailable"):
                raise raw
            unreadable.add(app_id)
            record = None
        else:
            record = _app_record(raw)
        if record is None:
            new_apps.pop(app_id, None)
        else:
            new_apps[app_id] = record
    return new_apps, unreadable


def _changed_nodes(registry, state: RegistryState, operators: set[str],
                   statuses: Sequence[tuple[str, NodeStatus]], at: bytes) -> dict[str, NodeRecord]:
    """The nodes after an update: ``operators`` re-read at ``at`` (one batch), then ``statuses`` (from
    NodeStatusChanged events, in chain order) applied to the nodes not re-read. A node this state does not hold
    yet is re-read whatever its events, so a record is never made up from an event alone."""
    reread = set(operators) | {op for op, _ in statuses if op not in state.nodes}
    ops = sorted(reread)
    raws = registry._call_many([registry.functions.getNode(op) for op in ops], at) if ops else []
    nodes = {**state.nodes, **{op: _node_record(op, raw) for op, raw in zip(ops, raws)}}
    for op, status in statuses:
        if op not in reread:
            nodes[op] = replace(nodes[op], status=status)
    return nodes


def _reread_epochs(registry, state: RegistryState, epoch_ids: set[int], at: bytes) -> tuple[dict, int, int]:
    f = registry.functions
    ids = sorted(epoch_ids)
    *views, current, pending = registry._call_many([f.getEpoch(i) for i in ids] + [f.currentEpoch(),
                                                                                    f.pendingEpoch()], at)
    keyed = [i for i, v in zip(ids, views) if int(v[6], 16) != 0]
    keys = dict(zip(keyed, registry._call_many([f.epochKeys(i) for i in keyed], at)))
    epochs = {**state.epochs, **{i: registry.epoch_record(i, v, keys.get(i)) for i, v in zip(ids, views)}}
    return epochs, current, pending


def _revoked_after(
    state: RegistryState, revocations: Sequence[tuple[RevocationKind, bytes, bool]]
) -> dict[RevocationKind, frozenset[bytes]]:
    """Every revocation list of ``state``, with the Revoked/Unrevoked events applied in chain order."""
    snap = state.snapshot
    revoked = {
        RevocationKind.FMSPC: snap.revoked_fmspcs,
        RevocationKind.CHIP_ID: snap.revoked_chip_ids,
        RevocationKind.GPU_FWID: snap.revoked_gpu_fwids,
        RevocationKind.MEASUREMENT: snap.revoked_measurements,
        RevocationKind.CERT_SERIAL: state.revoked_serials,
        RevocationKind.EVIDENCE_HASH: state.revoked_evidence_hashes,
        RevocationKind.PPID: snap.revoked_ppids,
        RevocationKind.PCK_CERT: snap.revoked_pck_certs,
        RevocationKind.GPU_DEVICE: snap.revoked_gpu_devices,
    }
    for kind, ident, added in revocations:
        revoked[kind] = revoked[kind] | {ident} if added else revoked[kind] - {ident}
    return revoked


def apply_changes(
    registry,
    state: RegistryState,
    block_hash: bytes,
    block_number: int,
    timestamp: int,
    *,
    nodes: set[str] = frozenset(),
    node_statuses: Sequence[tuple[str, NodeStatus]] = (),
    epochs: set[int] = frozenset(),
    apps: set[bytes] = frozenset(),
    revocations: Sequence[tuple[RevocationKind, bytes, bool]] = (),
    platforms: bool = False,
    node_measurements: bool = False,
    governance: bool = False,
    snp: bool = False,
) -> RegistryState:
    """Re-read only what events said changed (everything else is unchanged by construction: every
    registry change emits an event) and return the new state at ``block_hash``. ``node_statuses`` are the
    (operator, status) of NodeStatusChanged events in chain order, applied without a re-read (see
    :func:`_changed_nodes`). ``revocations`` are the
    (kind, id, revoked) of Revoked/Unrevoked events in chain order, applied as they are (no re-read), so the
    cost is proportional to the change, not to the size of the revocation lists. ``snp``: a ``SnpPolicySet`` or
    ``SnpMinTcbSet`` event (governance's SEV-SNP policy is re-read)."""
    at = block_hash
    snap = state.snapshot
    new_apps, unreadable = _reread_apps(registry, state, set(apps) | state.unreadable_apps, at)
    revoked = _revoked_after(state, revocations)
    snapshot = replace(
        snap,
        block_number=block_number,
        block_hash=bytes(block_hash),
        block_timestamp=timestamp,
        platforms=registry.platform_rules(at) if platforms else snap.platforms,
        revoked_fmspcs=revoked[RevocationKind.FMSPC],
        revoked_chip_ids=revoked[RevocationKind.CHIP_ID],
        revoked_gpu_fwids=revoked[RevocationKind.GPU_FWID],
        revoked_measurements=revoked[RevocationKind.MEASUREMENT],
        node_measurements=bulk_node_measurements(registry, at) if node_measurements else snap.node_measurements,
        apps=new_apps,
        revoked_ppids=revoked[RevocationKind.PPID],
        revoked_pck_certs=revoked[RevocationKind.PCK_CERT],
        revoked_gpu_devices=revoked[RevocationKind.GPU_DEVICE],
    )
    if snp:
        snapshot = replace(snapshot, **registry.snp_policy(at))
    new_nodes = _changed_nodes(registry, state, set(nodes), node_statuses, at)
    new_epochs, current, pending = dict(state.epochs), state.current_epoch, state.pending_epoch
    if epochs:
        new_epochs, current, pending = _reread_epochs(registry, state, set(epochs), at)
    owner, council = state.owner, state.council
    if governance:
        owner, council = registry.owner(at), registry.security_council(at)
    return RegistryState(
        snapshot=snapshot,
        nodes=new_nodes,
        epochs=new_epochs,
        current_epoch=current,
        pending_epoch=pending,
        owner=owner,
        council=council,
        revoked_serials=revoked[RevocationKind.CERT_SERIAL],
        revoked_evidence_hashes=revoked[RevocationKind.EVIDENCE_HASH],
        unreadable_apps=frozenset(unreadable),
    )
