"""Evidence verification with nothing blocking the event loop, with bounded concurrency, and Intel collateral
fetched before verification starts.

Verifying evidence (dcap-qvl, SEV-SNP/GPU chains, policy) is CPU work; fetching collateral is network I/O
that may take a whole timeout. :meth:`EvidenceVerifier.verify` first does all the I/O the evidence needs
(:meth:`EvidenceVerifier.prefetch`), then verifies, and the node's collateral store never fetches during a
verification (``fetch_on_get=False``). So a verification never waits on the network, and a PCCS that never
answers costs only the requests that need collateral this node does not hold.

Where the verification runs:

- **On the loop**, when it is one CPU quote (TDX, SGX or SEV-SNP: no GPU reports, no event log, no vTPM) of at
  most ``LIMITS.verify_on_loop_max_bytes``: about 1 ms of CPU, the size of the BLS pairing checks the loop does
  anyway. Handing it to a thread cost more than it saved: about 1 ms of CPU per verification and 3–4 ms of
  latency per DeriveKey with 5 nodes on 2 cores (docs/throughput.md), and dcap-qvl holds the GIL, so a worker
  adds no parallelism.
- **On a worker** (at most ``workers`` at once) for everything else: GPU evidence (a chain and an SPDM
  signature per GPU, up to 16), Azure vTPM evidence, TDX event logs, anything larger.

Fetching runs on its own small pool, only for a quote whose PCK chain verified up to a trusted root, and only
within the requester's fetch budget (the calling host's, not the connection's: :func:`requester_of`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from derot.attest.errors import AttestationError
from derot.attest.evidence import Evidence
from derot.attest.trust import TrustConfig
from derot.constants import Platform
from derot.limits import LIMITS

log = logging.getLogger("derot.verify")

T = TypeVar("T")


def requester_of(source: str) -> str:
    """Whom a collateral fetch is charged to: the host of a gRPC peer string (``ipv4:HOST:PORT`` and
    ``ipv6:[HOST]:PORT`` lose the port, which is new with every connection, so a budget keyed by it would restart
    with each one); any other source (an operator address, a unix socket) as given."""
    if source.startswith(("ipv4:", "ipv6:")):
        host, sep, port = source.rpartition(":")
        if sep and port.isdigit() and host not in ("ipv4", "ipv6"):
            return host
    return source


#: platforms whose evidence is one CPU quote, verified in about a millisecond
_QUOTE_ONLY = frozenset({Platform.TDX, Platform.SGX, Platform.SEV_SNP})


def verifies_on_loop(evidence: Evidence, size: int) -> bool:
    """True for one CPU quote of bounded size (no GPU reports, no event log): cheaper to verify on the event
    loop than to hand to a thread (module docstring)."""
    return (evidence.platform in _QUOTE_ONLY and not evidence.gpus and not evidence.event_log
            and size <= LIMITS.verify_on_loop_max_bytes)


class EvidenceVerifier:
    def __init__(self, trust: TrustConfig, *, workers: int, fetch_workers: int):
        self.trust = trust
        self._workers = ThreadPoolExecutor(workers, thread_name_prefix="verify")
        self._fetchers = ThreadPoolExecutor(fetch_workers, thread_name_prefix="collateral")

    async def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """``fn(*args, **kwargs)`` on a verification worker (at most ``workers`` at once)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._workers, lambda: fn(*args, **kwargs))

    async def verify(self, fn: Callable[..., T], evidence: bytes, *args, source: str, **kwargs) -> T:
        """Prefetch what ``evidence`` needs, then run ``fn(*args, **kwargs)`` (which verifies it): on the loop
        when :func:`verifies_on_loop` says it is one bounded CPU quote, else on a worker."""
        decoded = await self.prefetch(evidence, source)
        if decoded is not None and verifies_on_loop(decoded, len(evidence)):
            return fn(*args, **kwargs)
        return await self.run(fn, *args, **kwargs)

    async def prefetch(self, evidence_bytes: bytes, source: str) -> Evidence | None:
        """Fetch the Intel collateral and the NVIDIA RIMs ``evidence_bytes`` needs if this node lacks them; the
        decoded evidence, or None if it does not decode. Never raises: a problem with the evidence is reported
        by the verification that follows, with its reason."""
        try:
            evidence = Evidence.decode(evidence_bytes)
        except AttestationError:
            return None
        rims = self.trust.rims
        service = getattr(getattr(rims, "store", None), "service_url", None)
        if evidence.gpus and service and self.trust.nvidia is not None:
            await self._prefetch_rims(evidence)
        if evidence.platform not in (Platform.TDX, Platform.SGX) or evidence.collateral:
            return evidence
        store = self.trust.collateral
        try:
            # parses the quote and verifies its PCK chain's signatures up to a pinned root: nothing is fetched
            # for a chain an attacker made
            if verifies_on_loop(evidence, len(evidence_bytes)):  # one bounded chain check (memoised per chain)
                key = self.trust.intel.collateral_key(evidence.quote)
            else:
                key = await self.run(self.trust.intel.collateral_key, evidence.quote)
        except AttestationError:
            return evidence
        if store.holds_fresh(key, int(time.time())):
            return evidence
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._fetchers, store.fetch, key, evidence.quote, requester_of(source))
        except AttestationError as exc:  # recorded by the store; the verification reports it
            log.info("collateral not fetched", extra={"fmspc": key.fmspc.hex(), "source": source,
                                                      "reason": exc.reason, "detail": str(exc)})
        return evidence

    async def _prefetch_rims(self, evidence: Evidence) -> None:
        """Each GPU's report is verified first (chain to a pinned NVIDIA root, SPDM signature) on a worker, so
        RIM ids come only from genuine reports; the RIMs are then fetched and verified on the fetch pool. Only
        with a RIM service configured (a bundle is local files); costs one more GPU report verification each."""
        from derot.attest import nvidia_gpu

        now = int(time.time())
        loop = asyncio.get_running_loop()
        for gpu in evidence.gpus:
            try:
                claims = await self.run(nvidia_gpu.verify_report, gpu.report, gpu.cert_chain, self.trust.nvidia, now)
            except AttestationError:
                continue
            await loop.run_in_executor(self._fetchers, self.trust.rims.prefetch, claims, now)

    def close(self) -> None:
        self._workers.shutdown(wait=False, cancel_futures=True)
        self._fetchers.shutdown(wait=False, cancel_futures=True)
