"""Read the whole DerotRegistry at one block in a few JSON-RPC batches, with every size bounded.

A cold sync of 10,000 apps, 10,000 revocations and 200 nodes is about 750 paged view calls; sent one by one
that is 750 round trips to each RPC endpoint, sent as batches (:meth:`Registry._call_many`) about 20 HTTP
requests, each call still voted on by the RPC quorum (:mod:`derot.chain.quorum`).

Bounds (what an attacker who fills the registry, or a lying RPC, can make a node do):
- every list's length is read first and must be at most its :class:`ReadLimits` entry, else
  :class:`RegistryOversize` (reason ``registry_oversize``): the node refuses to load a registry it could not
  hold, with a named error, instead of paging forever or running out of memory. Apps and nodes are
  registered without permission, so their limits are far above any honest registry (10,000 apps take
  about 100 MB in a node);
- every page must hold exactly the items its range covers, else :class:`PageMismatch` (``chain_unverified``);
- every page call is small: 100 items, or 16 apps (16 × 64 measurements stays under any eth_call gas cap).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eth_utils import to_checksum_address

from derot.attest.snapshot import AppRecord, PlatformRule
from derot.chain.registry import (APP_PAGE, PAGE, ChainReadError, Registry, _app_record, _node_record,
                                  _platform, _tcb)
from derot.chain.types import EpochRecord, NodeRecord, RevocationKind

KINDS = tuple(k for k in RevocationKind if k is not RevocationKind.NONE)


class RegistryOversize(ChainReadError):
    """A registry list is longer than this node is configured to load."""

    reason = "registry_oversize"


class PageMismatch(ChainReadError):
    """A paged view answered more or fewer items than its range covers."""

    reason = "chain_unverified"


@dataclass(frozen=True)
class ReadLimits:
    """The longest list of each kind a node loads (see the module doc)."""

    apps: int = 250_000
    nodes: int = 10_000
    epochs: int = 100_000
    revocations: int = 250_000  # per kind
    node_measurements: int = 10_000


@dataclass(frozen=True)
class Contents:
    """Everything :func:`read_all` read at one block."""

    apps: dict[bytes, AppRecord]
    unreadable_apps: frozenset[bytes]
    nodes: dict[str, NodeRecord]
    epochs: dict[int, EpochRecord]
    revoked: dict[RevocationKind, frozenset[bytes]]
    node_measurements: frozenset[tuple]
    platforms: dict
    current_epoch: int
    pending_epoch: int
    owner: str
    council: str | None
    counts: dict[str, int] = field(default_factory=dict)


def _checked(what: str, count: int, limit: int) -> int:
    if not 0 <= count <= limit:
        raise RegistryOversize(f"the registry holds {count} {what}; this node loads at most {limit}")
    return count


def _pages(registry: Registry, at, fn_name: str, count: int, size: int, *head, errors: bool = False,
           pairs: bool = False) -> list:
    """Every page of ``fn_name(*head, start, size)`` over ``count`` items, each checked for its length
    (``pairs``: the view returns two parallel arrays)."""
    fn = getattr(registry.functions, fn_name)
    starts = list(range(0, count, size))
    pages = registry._call_many([fn(*head, start, size) for start in starts], at, errors=errors)
    for start, page in zip(starts, pages):
        if isinstance(page, ChainReadError):
            continue
        lengths = {len(page[0]), len(page[1])} if pairs else {len(page)}
        if lengths != {min(size, count - start)}:
            raise PageMismatch(f"{fn_name}({start}, {size}) answered {sorted(lengths)} items of {count}")
    return pages


def read_all(registry: Registry, at, limits: ReadLimits = ReadLimits()) -> Contents:
    """The registry's whole state at block ``at`` (a hash: EIP-1898 pinned)."""
    f = registry.functions
    scalars = registry._call_many(
        [f.appCount(), f.nodeCount(), f.epochCount(), f.nodeMeasurementCount(), f.currentEpoch(),
         f.pendingEpoch(), f.owner(), f.securityCouncil(), f.platformRules()]
        + [f.revocationCount(int(kind)) for kind in KINDS], at)
    n_apps, n_nodes, n_epochs, n_measurements, current, pending, owner, council, (ids, rules) = scalars[:9]
    counts = {"apps": _checked("apps", n_apps, limits.apps), "nodes": _checked("nodes", n_nodes, limits.nodes),
              "epochs": _checked("epochs", n_epochs, limits.epochs),
              "node_measurements": _checked("node measurements", n_measurements, limits.node_measurements)}
    for kind, count in zip(KINDS, scalars[9:]):
        counts[kind.name] = _checked(f"{kind.name} revocations", count, limits.revocations)
    apps, unreadable = _apps(registry, at, n_apps)
    return Contents(
        apps=apps,
        unreadable_apps=unreadable,
        nodes=_nodes(registry, at, n_nodes),
        epochs=_epochs(registry, at, n_epochs),
        revoked=_revocations(registry, at, {kind: counts[kind.name] for kind in KINDS}),
        node_measurements=_node_measurements(registry, at, n_measurements),
        platforms={_platform(p): PlatformRule(enabled=r[0], tcb_floor=_tcb(r[1])) for p, r in zip(ids, rules)},
        current_epoch=current,
        pending_epoch=pending,
        owner=to_checksum_address(owner),
        council=None if int(council, 16) == 0 else to_checksum_address(council),
        counts=counts,
    )


def _apps(registry: Registry, at, count: int) -> tuple[dict[bytes, AppRecord], frozenset[bytes]]:
    """Every app; a page the node refuses (e.g. over its gas cap) is read app by app, and an app that still
    fails is skipped and reported. RPC failures and disagreements raise."""
    out: dict[bytes, AppRecord] = {}
    skipped: set[bytes] = set()
    pages = _pages(registry, at, "apps", count, APP_PAGE, errors=True)
    for start, page in zip(range(0, count, APP_PAGE), pages):
        if isinstance(page, ChainReadError):
            page, unreadable = registry.app_page_by_ids(start, at)
            skipped |= unreadable
        else:
            page = [_app_record(raw) for raw in page]
        out.update((record.app_id, record) for record in page if record is not None)
    return out, frozenset(skipped)


def _nodes(registry: Registry, at, count: int) -> dict[str, NodeRecord]:
    out: dict[str, NodeRecord] = {}
    for ops, recs in _pages(registry, at, "nodes", count, PAGE, pairs=True):
        for op, rec in zip(ops, recs):
            out[to_checksum_address(op)] = _node_record(to_checksum_address(op), rec)
    return out


def _epochs(registry: Registry, at, count: int) -> dict[int, EpochRecord]:
    f = registry.functions
    ids = list(range(1, count + 1))
    views = registry._call_many([f.getEpoch(i) for i in ids], at)
    keyed = [i for i, v in zip(ids, views) if int(v[6], 16) != 0]
    keys = dict(zip(keyed, registry._call_many([f.epochKeys(i) for i in keyed], at)))
    return {i: registry.epoch_record(i, v, keys.get(i)) for i, v in zip(ids, views)}


def _revocations(registry: Registry, at, counts: dict[RevocationKind, int]) -> dict[RevocationKind, frozenset[bytes]]:
    """Every kind's revoked ids, all pages of all kinds in one run of batches, each page length-checked."""
    fn = registry.functions.revocationsPage
    wanted = [(kind, start) for kind in KINDS for start in range(0, counts[kind], PAGE)]
    pages = registry._call_many([fn(int(kind), start, PAGE) for kind, start in wanted], at)
    out: dict[RevocationKind, set[bytes]] = {kind: set() for kind in KINDS}
    for (kind, start), page in zip(wanted, pages):
        if len(page) != min(PAGE, counts[kind] - start):
            raise PageMismatch(f"revocationsPage({int(kind)}, {start}) answered {len(page)} of {counts[kind]} ids")
        out[kind].update(bytes(x) for x in page)
    return {kind: frozenset(ids) for kind, ids in out.items()}


def _node_measurements(registry: Registry, at, count: int) -> frozenset[tuple]:
    return frozenset((_platform(p), bytes(d)) for platforms, digests in
                     _pages(registry, at, "nodeMeasurementsPage", count, PAGE, pairs=True)
                     for p, d in zip(platforms, digests))


def node_measurements(registry: Registry, at, limits: ReadLimits = ReadLimits()) -> frozenset[tuple]:
    """The allowed node measurements at ``at``, bounded by ``limits.node_measurements``."""
    count = registry._call(registry.functions.nodeMeasurementCount(), at)
    return _node_measurements(registry, at, _checked("node measurements", count, limits.node_measurements))
