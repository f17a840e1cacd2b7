"""Fuzz, in a subprocess, every parser a request reaches without authentication (issue 9, finding 1): the
evidence envelope, Intel quotes, SNP reports, NVIDIA reports and chains, collateral JSON, VEK DER, the
certificate a GetStatus carries, and the gRPC request messages themselves.

The subprocess imports the node's whole import graph first (py_ecc raises the recursion limit to 100,000,
as in the node; each example raises it again), so a parser that overflows the C stack kills it: the test then fails on its exit status
instead of taking pytest down. The fuzzer starts from the real vectors in tests/vectors and adds nesting
bombs. The seed is printed and replayable with DEROT_FUZZ_SEED.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

VECTORS = Path(__file__).resolve().parents[1] / "vectors"

SCRIPT = """
import json, os, struct, sys
import derot.service.node  # the node's import graph: py_ecc raises the recursion limit
print("recursion limit after import", sys.getrecursionlimit())
from pathlib import Path
from hypothesis import HealthCheck, given, seed, settings, strategies as st
from derot import _proto
from derot.attest.errors import AttestationError
from derot.attest.evidence import Evidence, GpuEvidence
from derot.attest.trust import TrustConfig
from derot.attest.verify import verify_evidence
from derot.certs.verify import CertificateTrust
from derot.constants import Platform

V = Path(sys.argv[1])
SEED, EXAMPLES = int(sys.argv[2]), int(sys.argv[3])
node_pb = _proto.load("node_pb2")

def hexfile(rel):
    return bytes.fromhex((V / rel).read_text().strip())

tdx = (V / "phala_dcap_qvl/tdx_quote").read_bytes()
coll = (V / "phala_dcap_qvl/tdx_quote_collateral.json").read_bytes()
snp = (V / "virtee_sev/report_milan.bin").read_bytes()
vek = (V / "virtee_sev/vcek_milan.der").read_bytes()
gpu = hexfile("nvidia_nvtrust/hopperAttestationReport.txt")
chain = (V / "nvidia_nvtrust/hopperCertChain.txt").read_bytes()
SEEDS = {
    "tdx": Evidence(Platform.TDX, quote=tdx, collateral=coll),
    "snp": Evidence(Platform.SEV_SNP, quote=snp, vek=vek),
    "gpu": Evidence(Platform.TDX, quote=tdx, collateral=coll, gpus=(GpuEvidence(gpu, chain),)),
}
PARTS = {"tdx": ("quote", "collateral"), "snp": ("quote", "vek"), "gpu": ("gpus",)}
BOMBS = [b"[" * 100000 + b"]" * 100000, b"\\x30\\x80" * 50000, b"\\x30\\x84\\xff\\xff\\xff\\xff" * 20000,
         b"\\x7b" * 60000, b"\\x7b\\x22a\\x22:" * 40000]

@st.composite
def mutate(draw, data):
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, max(len(out) - 1, 0)))
        kind = draw(st.integers(0, 4))
        if kind == 0 and out:
            out[pos] ^= draw(st.integers(1, 255))
        elif kind == 1:
            del out[pos:]
        elif kind == 2:
            out[pos:pos + 4] = draw(st.sampled_from([0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF])).to_bytes(4, "little")
        elif kind == 3:
            out[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            out[pos:pos] = draw(st.sampled_from(BOMBS))
    return bytes(out)

def der_bomb(depth):
    value = b"\\x04\\x00"
    for _ in range(depth):
        n = len(value)
        value = (bytes([0x30, n]) if n < 128 else b"\\x30\\x82" + n.to_bytes(2, "big") if n < 65536
                 else b"\\x30\\x83" + n.to_bytes(3, "big")) + value
    return value

import base64
DER = der_bomb(20000)
PEM = b"-----BEGIN CERTIFICATE-----\\n" + base64.encodebytes(DER) + b"-----END CERTIFICATE-----\\n"
JSON = b"[" * 100000 + b"]" * 100000
PLANTED = [  # a bomb where a parser will meet it
    Evidence(Platform.TDX, quote=tdx, collateral=JSON),
    Evidence(Platform.TDX, quote=tdx, collateral=json.dumps(dict(json.loads(coll), tcb_info=JSON.decode())).encode()),
    Evidence(Platform.TDX, quote=tdx, collateral=json.dumps(dict(json.loads(coll), qe_identity=JSON.decode())).encode()),
    Evidence(Platform.SEV_SNP, quote=snp, vek=DER),
    Evidence(Platform.SEV_SNP, quote=snp, vek=vek, ask=DER),
    Evidence(Platform.TDX, quote=tdx, collateral=coll, gpus=(GpuEvidence(gpu, PEM * 3),)),
]

@st.composite
def evidence(draw):
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(PLANTED)).encode()
    name = draw(st.sampled_from(sorted(SEEDS)))
    ev = SEEDS[name]
    part = draw(st.sampled_from(PARTS[name] + ("envelope",)))
    if part == "envelope":
        return draw(mutate(ev.encode()))
    if part == "gpus":
        g = ev.gpus[0]
        which = draw(st.sampled_from(["report", "cert_chain"]))
        g = GpuEvidence(**{**{"report": g.report, "cert_chain": g.cert_chain}, which: draw(mutate(getattr(g, which)))})
        return Evidence(ev.platform, quote=ev.quote, collateral=ev.collateral, gpus=(g,)).encode()
    return Evidence(**{**{f: getattr(ev, f) for f in ("platform", "quote", "vek", "collateral", "gpus")},
                       part: draw(mutate(getattr(ev, part)))}).encode()

trust = TrustConfig.production_defaults(pccs_url=None)
counts = {}

@seed(SEED)
@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(evidence(), st.sampled_from(BOMBS)))
def fuzz_evidence(data):
    sys.setrecursionlimit(100000)  # as if py_ecc were imported again: each entry point must pin it itself
    try:
        verify_evidence(Evidence.decode(data), trust, at=1751328000, gpu_nonce_override=None)
        counts["verified"] = counts.get("verified", 0) + 1
    except AttestationError as exc:
        counts[exc.reason] = counts.get(exc.reason, 0) + 1

from derot.attest.snapshot import GovernanceSnapshot
from derot.certs import Certificate
from derot.certs.verify import verify_certificate
from derot.constants import CERT_VERSION
from derot.crypto.bls import G2

SNAPSHOT = GovernanceSnapshot(chain_id=1, registry="0x" + "00" * 20, block_number=1)
CERT = Certificate(version=CERT_VERSION, chain_id=1, registry="0x" + "00" * 20, epoch=2, serial=bytes(32),
                   app_id=bytes(32), key_version=1, key_type=1, subject_key=bytes(33), platform=1,
                   measurement=bytes(32), evidence_hash=bytes(32), tcb_status=0, not_before=0, not_after=2**40,
                   policy_block=1).encode()

@seed(SEED)
@settings(max_examples=EXAMPLES // 2, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(mutate(CERT), st.binary(max_size=1200), st.sampled_from(BOMBS)), st.binary(max_size=130))
def fuzz_certificate(cert, sig):
    sys.setrecursionlimit(100000)
    verdict = verify_certificate(cert, sig, group_key_sig=G2.generator(), snapshot=SNAPSHOT, now=1751328000,
                                 trust=CertificateTrust())
    assert not verdict.ok

@seed(SEED)
@settings(max_examples=EXAMPLES // 4, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.binary(max_size=3000), st.sampled_from(BOMBS),
                 st.integers(1, 200000).map(lambda d: b"\\x7b" * d + b"\\x7c" * d)))
def fuzz_messages(data):
    sys.setrecursionlimit(100000)
    for cls in (node_pb.DeriveKeyRequest, node_pb.IssueCertificateRequest, node_pb.GetStatusRequest,
                node_pb.DkgEnvelope, node_pb.DkgSyncRequest, node_pb.PartialSignRequest, node_pb.DeriveShareRequest,
                node_pb.SignNoticeRequest, node_pb.GetEpochKeysRequest):
        try:
            cls.FromString(data)
        except Exception as exc:
            assert type(exc).__name__ == "DecodeError", repr(exc)

fuzz_evidence()
fuzz_certificate()
fuzz_messages()
print("refusals", json.dumps(counts, sort_keys=True))
print("fuzz done")
"""


@pytest.mark.slow
def test_every_unauthenticated_parser_survives_fuzzing_in_a_subprocess():
    fuzz_seed = int(os.environ.get("DEROT_FUZZ_SEED", random.SystemRandom().randrange(2**32)))
    print(f"fuzz seed {fuzz_seed} (replay with DEROT_FUZZ_SEED={fuzz_seed})")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), str(VECTORS), str(fuzz_seed), "2000"],
                          capture_output=True, text=True, timeout=900)
    print(proc.stdout[-2000:])
    assert proc.returncode == 0, f"exit {proc.returncode} (a negative status is a signal):\n{proc.stderr[-3000:]}"
    assert "recursion limit after import 100000" in proc.stdout  # the hostile setting was really in place
    assert "fuzz done" in proc.stdout


def test_the_subprocess_harness_fails_on_a_crash():
    """The control: the same setting with the standard library's unbounded JSON parser dies, and the exit
    status shows it."""
    proc = subprocess.run([sys.executable, "-c", "import derot.service.node, json; json.loads('[' * 200000)"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
