"""Evidence verification (derot.service.verification) with collateral behind a fetcher: a PCCS
that never answers delays only the requests that need collateral this node lacks; nothing is fetched for a
PCK chain that does not verify up to a pinned root; fetches are budgeted per requester."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from derot.attest.collateral import CollateralStore, InMemoryPccs
from derot.attest.devnet import DevnetRoots, DevnetTee
from derot.attest.errors import ChainInvalid, CollateralUnavailable
from derot.attest.evidence import Evidence
from derot.attest.trust import TrustConfig
from derot.attest.verify import verify_evidence
from derot.constants import Platform
from derot.service.verification import EvidenceVerifier

HELD = bytes.fromhex("00806f050000")
NEW = bytes.fromhex("00906ed50000")


@pytest.fixture(scope="module")
def roots() -> DevnetRoots:
    return DevnetRoots.generate()


def trust_with(roots: DevnetRoots, pccs: InMemoryPccs, **store) -> TrustConfig:
    collateral = CollateralStore(fetcher=pccs, fetch_on_get=False, **store)
    return TrustConfig(production=False, intel_roots={"devnet": roots.intel_root_der}, amd=roots.amd_roots(),
                       nvidia=None, collateral=collateral)


def tdx_evidence(tee: DevnetTee) -> bytes:
    """TDX evidence without embedded collateral: the verifier must find or fetch it."""
    return Evidence(platform=Platform.TDX, quote=tee.tdx_quote(os.urandom(64))).encode()


def verify(trust: TrustConfig, evidence: bytes):
    return verify_evidence(Evidence.decode(evidence), trust)


def test_a_pccs_that_never_answers_does_not_delay_requests_needing_no_new_collateral(roots):
    pccs = InMemoryPccs()
    pccs.publish(roots.tdx_collateral(HELD))
    pccs.publish(roots.tdx_collateral(NEW))
    trust = trust_with(roots, pccs)
    verifier = EvidenceVerifier(trust, workers=2, fetch_workers=2)
    held, new = DevnetTee(roots, Platform.TDX, fmspc=HELD), DevnetTee(roots, Platform.TDX, fmspc=NEW)
    snp = DevnetTee(roots, Platform.SEV_SNP)

    async def scenario():
        first = tdx_evidence(held)
        await verifier.verify(verify, first, trust, first, source="warm-up")  # fetches HELD once
        pccs.hang()
        stuck = [asyncio.ensure_future(verifier.verify(verify, e, trust, e, source=f"attacker-{i}"))
                 for i, e in enumerate(tdx_evidence(new) for _ in range(6))]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        for _ in range(4):  # more than the worker count: the hung fetches hold no verification worker
            again = tdx_evidence(held)
            claims = await asyncio.wait_for(verifier.verify(verify, again, trust, again, source="app"), 30)
            assert claims.hardware_ids.fmspc == HELD
            report = snp.quote(os.urandom(64)).encode()
            assert (await verifier.verify(verify, report, trust, report, source="app")).platform == Platform.SEV_SNP
        elapsed = time.monotonic() - started
        assert not any(task.done() for task in stuck), "the hung PCCS answered?"
        pccs.release()
        results = await asyncio.gather(*stuck, return_exceptions=True)
        return elapsed, results

    elapsed, results = asyncio.run(scenario())
    verifier.close()
    print(f"8 verifications while the PCCS hung: {elapsed:.2f} s")
    assert sum(1 for r in results if not isinstance(r, Exception)) >= 1  # served once the PCCS answered
    assert pccs.requests[next(k for k in pccs.requests if k.fmspc == NEW)] == 1  # one fetch per key


def test_nothing_is_fetched_for_an_attacker_chain_ending_in_a_trusted_root(roots, monkeypatch):
    """Issue 9 item 2: the attacker's own leaf and CA with the trusted root appended, and a fresh FMSPC."""
    attacker = DevnetRoots.generate()
    trusted_root_pem = x509.load_der_x509_certificate(roots.intel_root_der).public_bytes(Encoding.PEM)
    issue = attacker.issue_pck

    def forged(*args):
        key, chain = issue(*args)
        certs = x509.load_pem_x509_certificates(chain)
        return key, b"".join(c.public_bytes(Encoding.PEM) for c in certs[:-1]) + trusted_root_pem

    monkeypatch.setattr(attacker, "issue_pck", forged)
    pccs = InMemoryPccs()
    trust = trust_with(roots, pccs)
    fresh = bytes.fromhex("00a0b0c0d0e0")
    evidence = tdx_evidence(DevnetTee(attacker, Platform.TDX, fmspc=fresh))
    verifier = EvidenceVerifier(trust, workers=1, fetch_workers=1)

    with pytest.raises(ChainInvalid):
        asyncio.run(verifier.verify(verify, evidence, trust, evidence, source="attacker"))
    verifier.close()
    assert pccs.requests == {}


def test_fetches_are_budgeted_per_requester_and_a_failing_source_is_not_asked_again(roots):
    pccs = InMemoryPccs()
    store = CollateralStore(fetcher=pccs, fetch_on_get=False, fetch_budget=2, budget_window=60, retry_after=60)
    trust = TrustConfig(production=False, intel_roots={"devnet": roots.intel_root_der}, amd=None, nvidia=None,
                        collateral=store)
    fmspcs = [bytes([0, 0xB0, i, 0, 0, 0]) for i in range(4)]
    for fmspc in fmspcs:
        pccs.publish(roots.tdx_collateral(fmspc))
    keys = [trust.intel.collateral_key(DevnetTee(roots, Platform.TDX, fmspc=f).tdx_quote(bytes(64)))
            for f in fmspcs]
    store.fetch(keys[0], b"", "mallory")
    store.fetch(keys[1], b"", "mallory")
    with pytest.raises(CollateralUnavailable, match="mallory used its 2 collateral fetches"):
        store.fetch(keys[2], b"", "mallory")
    assert store.fetch(keys[2], b"", "alice").fmspc == fmspcs[2]  # another requester still gets it

    class Down:
        source = "memory://down"
        calls = 0

        def fetch(self, key, raw):
            Down.calls += 1
            raise TimeoutError("no answer within 10 s")

    store.fetcher = Down()
    with pytest.raises(CollateralUnavailable):
        store.fetch(keys[3], b"", "alice")
    fresh = DevnetTee(roots, Platform.TDX, fmspc=bytes.fromhex("00c0ffee0000")).tdx_quote(bytes(64))
    with pytest.raises(CollateralUnavailable, match="no answer"):  # another FMSPC: the source is known down
        store.fetch(trust.intel.collateral_key(fresh), b"", "bob")
    assert Down.calls == 1


def test_the_fetch_budget_is_per_host_not_per_connection(roots):
    """gRPC names a caller ``ipv4:HOST:PORT``: a budget keyed by that string restarts with every new connection.
    Three FMSPCs from one host over three connections: the third is over the host's budget of two."""
    pccs = InMemoryPccs()
    fmspcs = [bytes([0, 0xD0, i, 0, 0, 0]) for i in range(3)]
    for fmspc in fmspcs:
        pccs.publish(roots.tdx_collateral(fmspc))
    store = CollateralStore(fetcher=pccs, fetch_on_get=False, fetch_budget=2, budget_window=60)
    trust = TrustConfig(production=False, intel_roots={"devnet": roots.intel_root_der}, amd=None, nvidia=None,
                        collateral=store)
    verifier = EvidenceVerifier(trust, workers=1, fetch_workers=1)
    sources = ["ipv4:10.9.8.7:40001", "ipv4:10.9.8.7:40002", "ipv4:10.9.8.7:40003"]

    async def scenario():
        for fmspc, source in zip(fmspcs, sources):
            await verifier.prefetch(tdx_evidence(DevnetTee(roots, Platform.TDX, fmspc=fmspc)), source)

    asyncio.run(scenario())
    verifier.close()
    assert sorted(k.fmspc for k in pccs.requests) == fmspcs[:2]  # the third was refused, not fetched
    fresh = DevnetTee(roots, Platform.TDX, fmspc=fmspcs[2])
    asyncio.run(EvidenceVerifier(trust, workers=1, fetch_workers=1).prefetch(tdx_evidence(fresh), "ipv4:10.9.8.6:1"))
    assert fmspcs[2] in [k.fmspc for k in pccs.requests]  # another host still has its own budget


@pytest.mark.parametrize("peer,host", [
    ("ipv4:10.9.8.7:40001", "ipv4:10.9.8.7"),
    ("ipv6:[::1]:5678", "ipv6:[::1]"),
    ("ipv6:%5B2001:db8::1%5D:443", "ipv6:%5B2001:db8::1%5D"),
    ("0xAbC0000000000000000000000000000000000001", "0xAbC0000000000000000000000000000000000001"),
    ("unix:/tmp/socket", "unix:/tmp/socket"),
])
def test_requester_is_the_callers_host(peer, host):
    from derot.service.verification import requester_of

    assert requester_of(peer) == host


def test_one_cpu_quote_verifies_on_the_loop_and_everything_else_on_a_worker(roots):
    """A TDX, SGX or SEV-SNP quote alone (about 1 ms of CPU) is verified on the event loop: a thread hand-off
    cost more than it saved. GPU reports, an event log, vTPM evidence and oversized evidence go to a worker."""
    import threading

    from derot.attest.evidence import GpuEvidence
    from derot.limits import LIMITS
    from derot.service.verification import verifies_on_loop

    pccs = InMemoryPccs()
    pccs.publish(roots.tdx_collateral(HELD))
    trust = trust_with(roots, pccs)
    verifier = EvidenceVerifier(trust, workers=1, fetch_workers=1)
    tdx = DevnetTee(roots, Platform.TDX, fmspc=HELD)
    quote = tdx.tdx_quote(os.urandom(64))
    cases = {
        "tdx": (Evidence(platform=Platform.TDX, quote=quote).encode(), True),
        "sev-snp": (DevnetTee(roots, Platform.SEV_SNP).quote(os.urandom(64)).encode(), True),
        "tdx+gpu": (Evidence(platform=Platform.TDX, quote=quote, gpus=(GpuEvidence(b"r", b"c"),)).encode(), False),
        "tdx+event log": (Evidence(platform=Platform.TDX, quote=quote, event_log=b"\0" * 64).encode(), False),
        "azure": (Evidence(platform=Platform.AZURE_TDX, quote=b"hcl", td_quote=quote).encode(), False),
        "oversized": (Evidence(platform=Platform.TDX, quote=quote,
                               collateral=b" " * LIMITS.verify_on_loop_max_bytes).encode(), False),
    }

    async def where(evidence: bytes) -> str:
        loop_thread = threading.current_thread()
        ran_on = await verifier.verify(lambda: threading.current_thread(), evidence, source="app")
        return "loop" if ran_on is loop_thread else "worker"

    async def scenario():
        return {name: await where(evidence) for name, (evidence, _) in cases.items()}

    placed = asyncio.run(scenario())
    verifier.close()
    assert placed == {name: "loop" if on_loop else "worker" for name, (_, on_loop) in cases.items()}
    for name, (evidence, on_loop) in cases.items():
        assert verifies_on_loop(Evidence.decode(evidence), len(evidence)) is on_loop, name
    assert (asyncio.run(EvidenceVerifier(trust, workers=1, fetch_workers=1).prefetch(b"\xff junk", "app"))
            is None)  # undecodable evidence: a worker verifies (and refuses) it
