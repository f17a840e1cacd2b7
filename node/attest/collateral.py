"""Intel DCAP collateral: parsing, validity windows, an on-disk cache and PCCS/PCS fetching.

Collateral is kept in dcap-qvl's ``QuoteCollateralV3`` JSON form (keys ``tcb_info``, ``qe_identity``,
their signatures and issuer chains, ``root_ca_crl`` and ``pck_crl`` as hex DER). Its validity window
is the intersection of the TCB info and QE identity ``issueDate..nextUpdate`` and both CRLs'
``thisUpdate..nextUpdate``, ``nextUpdate`` itself excluded (as dcap-qvl and Intel's QVL treat it):
``not_before <= t <= not_after`` with ``not_after = min(nextUpdate) - 1``. Outside it the collateral
is *stale*.

:class:`CollateralStore` answers "collateral for this quote at time t" from, in order: memory, the
on-disk cache, offline bundles added with :meth:`CollateralStore.add`, and finally a
:class:`CollateralFetcher` (:class:`PccsFetcher` for the configured PCCS/PCS URL; tests use
:class:`InMemoryPccs`). A PCCS that is down, or only stale copies, give :class:`CollateralUnavailable` /
:class:`CollateralStale`, never a crash. Fetches are bounded three ways: one fetch per key at a time; after a
failure the *source* (the PCCS, not the FMSPC an attacker picks) is not asked again for ``retry_after``
seconds, so a dead PCCS costs one timeout, not one per request or per FMSPC; and each requester gets
``fetch_budget`` fetches per ``budget_window`` seconds. A store built with ``fetch_on_get=False`` (the node)
never fetches inside :meth:`CollateralStore.get`: the node fetches first, off its event loop, with
:meth:`CollateralStore.fetch`. Collateral signatures are not checked here:
dcap-qvl checks them against the pinned root on every verification, so a tampered cache file can
only make verification fail.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import json
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

import dcap_qvl
from cryptography import x509

from derot import untrusted
from derot.limits import LIMITS
from derot.attest.errors import CollateralError, CollateralStale, CollateralUnavailable

_REQUIRED = (
    "pck_crl_issuer_chain", "root_ca_crl", "pck_crl", "tcb_info_issuer_chain", "tcb_info",
    "tcb_info_signature", "qe_identity_issuer_chain", "qe_identity", "qe_identity_signature",
)


def _parse_time(value: str, what: str) -> int:
    try:
        return int(datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except (ValueError, AttributeError):
        raise CollateralError(f"collateral {what} {value!r} is not an ISO 8601 time") from None


def iso(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Collateral:
    """One parsed collateral bundle for one (TEE type, FMSPC, PCK CA)."""

    json_text: str
    tee: str  # "TDX" | "SGX"
    fmspc: bytes
    tcb_info: Mapping
    qe_identity: Mapping
    not_before: int
    not_after: int
    ca: str  # "platform" | "processor": the PCK CA whose CRL this bundle carries
    qvl: object = field(compare=False, repr=False)  # dcap_qvl.QuoteCollateralV3
    #: the optional ``pck_certificate_chain`` (PEM), read once here so no verification parses the JSON again
    pck_chain_pem: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Collateral":
        """Parse dcap-qvl JSON collateral; malformed input raises :class:`CollateralError`."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        try:
            doc = untrusted.json_loads(text, what="collateral")
        except untrusted.UntrustedInputError as exc:
            raise CollateralError(str(exc)) from None
        if not isinstance(doc, dict):
            raise CollateralError("collateral JSON is not an object")
        missing = [k for k in _REQUIRED if k not in doc]
        if missing:
            raise CollateralError(f"collateral lacks {', '.join(missing)}")
        try:
            tcb = untrusted.json_loads(doc["tcb_info"], what="collateral tcb_info")
            qe = untrusted.json_loads(doc["qe_identity"], what="collateral qe_identity")
            crls = [x509.load_der_x509_crl(bytes.fromhex(doc[k])) for k in ("root_ca_crl", "pck_crl")]
            fmspc = bytes.fromhex(tcb["fmspc"])
            tee = tcb.get("id", "SGX")
            starts = [_parse_time(tcb["issueDate"], "tcbInfo.issueDate"), _parse_time(qe["issueDate"], "qeIdentity.issueDate")]
            ends = [_parse_time(tcb["nextUpdate"], "tcbInfo.nextUpdate"), _parse_time(qe["nextUpdate"], "qeIdentity.nextUpdate")]
        except CollateralError:
            raise
        except untrusted.UntrustedInputError as exc:
            raise CollateralError(str(exc)) from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CollateralError(f"collateral is malformed: {type(exc).__name__}: {exc}") from None
        chain = doc.get("pck_certificate_chain")
        if chain is not None and not isinstance(chain, str):
            raise CollateralError("collateral pck_certificate_chain is not a PEM string")
        for crl in crls:
            starts.append(int(crl.last_update_utc.timestamp()))
            if crl.next_update_utc is not None:
                ends.append(int(crl.next_update_utc.timestamp()))
        try:
            qvl = dcap_qvl.QuoteCollateralV3.from_json(text)
        except ValueError as exc:
            raise CollateralError(f"dcap-qvl rejects the collateral: {exc}") from None
        return cls(
            json_text=text, tee=tee, fmspc=fmspc, tcb_info=MappingProxyType(tcb),
            qe_identity=MappingProxyType(qe), not_before=max(starts), not_after=min(ends) - 1,
            ca="processor" if "processor" in crls[1].issuer.rfc4514_string().lower() else "platform", qvl=qvl,
            pck_chain_pem=chain.encode() if chain else None,
        )

    def is_fresh(self, at: int) -> bool:
        return self.not_before <= at <= self.not_after

    def require_fresh(self, at: int) -> None:
        if not self.is_fresh(at):
            raise CollateralStale(
                f"{self.tee} collateral for FMSPC {self.fmspc.hex()} is valid {iso(self.not_before)}.."
                f"{iso(self.not_after)}, not at {iso(at)}"
            )


@dataclass(frozen=True)
class CollateralKey:
    tee: str
    fmspc: bytes
    ca: str  # "platform" | "processor"

    def filename(self) -> str:
        return f"{self.tee.lower()}-{self.fmspc.hex()}-{self.ca}.json"


class CollateralFetcher(Protocol):
    """Where missing collateral comes from. ``fetch`` blocks (it runs on a worker thread) and raises on any
    failure; ``source`` names the service in messages and logs."""

    source: str

    def fetch(self, key: CollateralKey, raw_quote: bytes) -> Collateral: ...


class PccsFetcher:
    """An Intel PCCS or the PCS, through dcap-qvl's client."""

    def __init__(self, url: str, timeout: float = 10.0):
        self.source, self.timeout = url, timeout

    def fetch(self, key: CollateralKey, raw_quote: bytes) -> Collateral:
        qvl = _run_async(lambda: dcap_qvl.get_collateral(self.source, raw_quote), self.timeout)
        return Collateral.from_json(qvl.to_json())


class InMemoryPccs:
    """A PCCS simulator for tests: serves the bundles given to :meth:`publish`; :meth:`hang` makes every fetch
    block until :meth:`release`; ``requests`` counts fetches by key."""

    def __init__(self, source: str = "memory://pccs"):
        self.source = source
        self.bundles: dict[CollateralKey, Collateral] = {}
        self.requests: dict[CollateralKey, int] = {}
        self._open = threading.Event()
        self._open.set()

    def publish(self, collateral: Collateral) -> None:
        self.bundles[CollateralKey(collateral.tee, collateral.fmspc, collateral.ca)] = collateral

    def hang(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def fetch(self, key: CollateralKey, raw_quote: bytes) -> Collateral:
        self.requests[key] = self.requests.get(key, 0) + 1
        self._open.wait()
        try:
            return self.bundles[key]
        except KeyError:
            raise LookupError(f"{self.source} has no collateral for {key.tee} FMSPC {key.fmspc.hex()}") from None


class CollateralStore:
    """Collateral by (TEE, FMSPC, CA) from memory, disk cache, offline bundles, then a fetcher."""

    def __init__(
        self,
        pccs_url: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        *,
        timeout: float = 10.0,
        retry_after: float = 30.0,
        fetcher: CollateralFetcher | None = None,
        fetch_on_get: bool = True,
        fetch_budget: int = LIMITS.collateral_fetch_budget,
        budget_window: float = LIMITS.collateral_budget_window,
    ):
        if fetcher is None and pccs_url is not None:
            fetcher = PccsFetcher(pccs_url, timeout)
        self.fetcher = fetcher
        self.pccs_url = fetcher.source if fetcher is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.timeout = timeout
        self.retry_after = retry_after
        self.fetch_on_get = fetch_on_get
        self.fetch_budget, self.budget_window = fetch_budget, budget_window
        self._mem: dict[CollateralKey, Collateral] = {}
        self._failures: dict[CollateralKey, tuple[float, str]] = {}  # recent failure per key (messages)
        self._source_down: tuple[float, str] | None = None  # recent failure of the fetcher itself
        self._spent: dict[str, deque] = {}  # requester -> monotonic times of its recent fetches
        self._lock = threading.Lock()
        self._key_locks: dict[CollateralKey, threading.Lock] = {}

    def add(self, collateral: Collateral) -> None:
        """Add an offline bundle (also persisted to the cache directory when one is set)."""
        key = CollateralKey(collateral.tee, collateral.fmspc, collateral.ca)
        with self._lock:
            current = self._mem.get(key)
            if current is None or collateral.not_after >= current.not_after:
                self._mem[key] = collateral
        self._write_cache(key, collateral)

    def add_json(self, text: str | bytes) -> Collateral:
        c = Collateral.from_json(text)
        self.add(c)
        return c

    def _held(self, key: CollateralKey) -> Collateral | None:
        """The newest bundle held in memory or in the disk cache (no fetching)."""
        best = self._mem.get(key)
        cached = self._read_cache(key)
        if cached is not None and (best is None or cached.not_after > best.not_after):
            best = cached
            with self._lock:
                self._mem[key] = cached
        return best

    def holds_fresh(self, key: CollateralKey, at: int) -> bool:
        best = self._mem.get(key)
        if best is not None and best.is_fresh(at):
            return True
        best = self._held(key)
        return best is not None and best.is_fresh(at)

    def get(self, key: CollateralKey, raw_quote: bytes, at: int) -> Collateral:
        """Fresh collateral for ``key`` at ``at``; fetched (blocking) when missing if ``fetch_on_get``."""
        best = self._mem.get(key)
        if best is not None and best.is_fresh(at):
            return best
        best = self._held(key)
        if best is not None and best.is_fresh(at):
            return best
        if self.fetcher is None:
            if best is not None:
                best.require_fresh(at)
            raise CollateralUnavailable(
                f"no collateral for {key.tee} FMSPC {key.fmspc.hex()} ({key.ca} CA) and no PCCS configured"
            )
        if not self.fetch_on_get:
            failed = self._failures.get(key) or self._source_down
            self._raise_unavailable(key, failed[1] if failed else "not fetched yet", best)
        fetched = self.fetch(key, raw_quote, at=at)
        fetched.require_fresh(at)
        return fetched

    # ---- fetching

    def fetch(self, key: CollateralKey, raw_quote: bytes, requester: str | None = None,
              at: int | None = None) -> Collateral:
        """Fetch ``key`` now (blocking), within the bounds in the module docstring (a ``requester`` is charged
        against its fetch budget; None is this process itself); raises
        :class:`CollateralUnavailable`/:class:`CollateralStale` when it cannot."""
        if self.fetcher is None:
            raise CollateralUnavailable(f"no PCCS configured to fetch {key.tee} FMSPC {key.fmspc.hex()}")
        with self._lock:
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:  # one fetch per key: later callers find the result in memory
            stale = self._held(key)
            if stale is not None and stale.is_fresh(int(time.time()) if at is None else at):
                return stale
            now = time.monotonic()
            for failed in (self._failures.get(key), self._source_down):
                if failed is not None and now - failed[0] < self.retry_after:
                    self._raise_unavailable(key, failed[1], stale)
            if requester is not None:
                self._spend(requester, key, stale)
            try:
                collateral = self.fetcher.fetch(key, raw_quote)
            except Exception as exc:  # noqa: BLE001 - any transport/HTTP/format failure means "unavailable"
                message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                with self._lock:
                    self._failures[key] = (time.monotonic(), message)
                    if not isinstance(exc, (LookupError, CollateralError)):  # the source itself failed
                        self._source_down = (time.monotonic(), message)
                    if len(self._failures) > 4096:
                        self._failures.clear()
                self._raise_unavailable(key, message, stale)
            with self._lock:
                self._failures.pop(key, None)
                self._source_down = None
                self._mem[key] = collateral
            self._write_cache(key, collateral)
            return collateral

    def _spend(self, requester: str, key: CollateralKey, stale: Collateral | None) -> None:
        """Charge one fetch to ``requester``; refuse when its budget for the window is spent."""
        now = time.monotonic()
        with self._lock:
            spent = self._spent.setdefault(requester, deque())
            while spent and now - spent[0] > self.budget_window:
                spent.popleft()
            if len(spent) >= self.fetch_budget:
                over = True
            else:
                over = False
                spent.append(now)
            if len(self._spent) > 4096:
                self._spent = {r: d for r, d in self._spent.items() if d and now - d[-1] <= self.budget_window}
        if over:
            self._raise_unavailable(key, f"{requester} used its {self.fetch_budget} collateral fetches per "
                                         f"{self.budget_window:.0f} s", stale)

    def _raise_unavailable(self, key: CollateralKey, message: str, stale: Collateral | None):
        where = f"fetching from {self.pccs_url} failed: {message}"
        if stale is not None:
            raise CollateralStale(
                f"cached {key.tee} collateral for FMSPC {key.fmspc.hex()} expired at {iso(stale.not_after)} "
                f"and {where}"
            )
        raise CollateralUnavailable(f"no {key.tee} collateral for FMSPC {key.fmspc.hex()}: {where}")

    # ---- disk cache

    def _read_cache(self, key: CollateralKey) -> Collateral | None:
        if self.cache_dir is None:
            return None
        path = self.cache_dir / key.filename()
        try:
            return Collateral.from_json(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, CollateralError):
            return None  # an unreadable cache entry is ignored and replaced by the next fetch

    def _write_cache(self, key: CollateralKey, collateral: Collateral) -> None:
        if self.cache_dir is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            f.write(collateral.json_text)
        os.replace(tmp, self.cache_dir / key.filename())


_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="pccs")


def _run_async(make_coro, timeout: float):
    """Run ``make_coro()`` to completion on a worker thread's own event loop (safe inside or outside
    an event loop; dcap-qvl's awaitables must be created inside a running loop)."""

    async def bounded():
        return await asyncio.wait_for(make_coro(), timeout)

    future = _pool.submit(asyncio.run, bounded())
    try:
        return future.result(timeout + 5)
    except concurrent.futures.TimeoutError:
        raise TimeoutError(f"no answer within {timeout} s") from None


def _raw_member(text: str, key: str) -> tuple[str, object]:
    """The exact source text of a top-level JSON object member (signatures cover these bytes)."""
    try:
        doc = untrusted.json_loads(text, what="PCS response")
    except untrusted.UntrustedInputError as exc:
        raise CollateralError(str(exc)) from None
    if not isinstance(doc, dict) or key not in doc:
        raise CollateralError(f"PCS response lacks {key!r}")
    idx = text.index(f'"{key}"') + len(key) + 2
    idx = text.index(":", idx) + 1
    while text[idx].isspace():
        idx += 1
    _, end = json.JSONDecoder().raw_decode(text, idx)
    return text[idx:end], doc


def from_pcs_responses(
    *,
    tcb_info_response: str,
    tcb_info_issuer_chain: str,
    qe_identity_response: str,
    qe_identity_issuer_chain: str,
    pck_crl_der: bytes,
    pck_crl_issuer_chain: str,
    root_ca_crl_der: bytes,
) -> Collateral:
    """Assemble collateral from Intel PCS/PCCS API responses (``{"tcbInfo": ..., "signature": ...}``)."""
    tcb_text, tcb_doc = _raw_member(tcb_info_response, "tcbInfo")
    qe_text, qe_doc = _raw_member(qe_identity_response, "enclaveIdentity")
    return Collateral.from_json(json.dumps({
        "pck_crl_issuer_chain": pck_crl_issuer_chain,
        "root_ca_crl": root_ca_crl_der.hex(),
        "pck_crl": pck_crl_der.hex(),
        "tcb_info_issuer_chain": tcb_info_issuer_chain,
        "tcb_info": tcb_text,
        "tcb_info_signature": tcb_doc["signature"],
        "qe_identity_issuer_chain": qe_identity_issuer_chain,
        "qe_identity": qe_text,
        "qe_identity_signature": qe_doc["signature"],
    }))
