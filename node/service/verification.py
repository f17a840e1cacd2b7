"""Evidence verification off the event loop, with bounded concurrency, and Intel collateral fetched before
a verification worker is taken.

Verifying evidence (dcap-qvl, SEV-SNP/GPU chains, policy) is blocking CPU work: it runs on a pool of
``workers`` threads, never on the loop. Fetching Intel collateral from a PCCS is blocking I/O that may take a
whole timeout: :meth:`EvidenceVerifier.prefetch` does it first, on its own small pool, only for a quote whose
PCK chain verified up to a trusted root, and only within the requester's fetch budget (the calling host's, not
the connection's: :func:`requester_of`); the verification that follows then finds the collateral in memory (or
the recorded failure) and never waits on the network. So a PCCS that never answers costs only the requests
that need collateral this node does not hold.
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
        """Prefetch what ``evidence`` needs, then run ``fn(*args, **kwargs)`` (which verifies it) on a worker."""
        await self.prefetch(evidence, source)
        return await self.run(fn, *args, **kwargs)

    async def prefetch(self, evidence_bytes: bytes, source: str) -> None:
        """Fetch the Intel collateral and the NVIDIA RIMs ``evidence_bytes`` needs if this node lacks them. Never
        raises: a problem with the evidence is reported by the verification that follows, with its reason."""
        try:
            evidence = Evidence.decode(evidence_bytes)
        except AttestationError:
            return
        rims = self.trust.rims
        service = getattr(getattr(rims, "store", None), "service_url", None)
        if evidence.gpus and service and self.trust.nvidia is not None:
            await self._prefetch_rims(evidence)
        if evidence.platform not in (Platform.TDX, Platform.SGX) or evidence.collateral:
            return
        store = self.trust.collateral
        try:
            # parses the quote and verifies its PCK chain's signatures up to a pinned root: nothing is fetched
            # for a chain an attacker made
            key = await self.run(self.trust.intel.collateral_key, evidence.quote)
        except AttestationError:
            return
        if store.holds_fresh(key, int(time.time())):
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._fetchers, store.fetch, key, evidence.quote, requester_of(source))
        except AttestationError as exc:  # recorded by the store; the verification reports it
            log.info("collateral not fetched", extra={"fmspc": key.fmspc.hex(), "source": source,
                                                      "reason": exc.reason, "detail": str(exc)})

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
