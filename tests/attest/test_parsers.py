"""Parsers raise exactly one error type (EvidenceParseError, with an offset) on bad input.

Deterministic cases (every truncation of real vectors, wrong versions) plus hypothesis fuzzing with
10,000 inputs per parser: random bytes and mutations (flips, truncations, overwritten length fields,
splices) of real evidence, so the fuzzer reaches deep into each format. A smaller fuzz of the whole
verification path checks that nothing but AttestationError escapes it either.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from derot.attest import nvidia_gpu, sev_snp
from derot.attest.errors import AttestationError, EvidenceParseError
from derot.attest.evidence import Evidence, GpuEvidence
from derot.attest.intel_quote import parse_quote
from derot.constants import Platform

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def _seed(rel: str) -> bytes:
    data = (VECTORS / rel).read_bytes()
    return bytes.fromhex(data.decode().strip()) if rel.endswith((".hex", ".txt")) else data


INTEL_SEEDS = [_seed(p) for p in ("phala_dcap_qvl/tdx_quote", "phala_dcap_qvl/tdx_quote_outdated",
                                  "phala_dcap_qvl/sgx_quote", "google_go_tdx_guest/quote_v5_sample.dat")]
SNP_SEEDS = [_seed("virtee_sev/report_milan.bin"), _seed("google_go_sev_guest/attestation.bin")]
GPU_SEEDS = [_seed("nvidia_nvtrust/hopperAttestationReport.txt"), _seed("nvidia_nvtrust/ppcie_gpu0_report.hex")]
ENVELOPE_SEEDS = [
    Evidence(Platform.TDX, quote=INTEL_SEEDS[0], collateral=b'{"a":1}').encode(),
    Evidence(Platform.SEV_SNP, quote=SNP_SEEDS[0], vek=b"cert").encode(),
    Evidence(Platform.NVIDIA_GPU, gpus=(GpuEvidence(GPU_SEEDS[0], b"pem"),)).encode(),
]
PARSERS = {
    "intel": (parse_quote, INTEL_SEEDS),
    "snp": (sev_snp.parse_report, SNP_SEEDS),
    "gpu": (nvidia_gpu.parse_report, GPU_SEEDS),
    "envelope": (Evidence.decode, ENVELOPE_SEEDS),
}


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A real input with a few random edits, or plain random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=2048))
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.integers(0, 4))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == 0 and data:  # flip a byte
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == 1:  # truncate
            del data[pos:]
        elif kind == 2 and len(data) >= pos + 4:  # overwrite a possible length/count field
            struct.pack_into("<I", data, pos, draw(st.sampled_from([0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF,
                                                                   draw(st.integers(0, 2**32 - 1))])))
        elif kind == 3:  # insert junk
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == 4 and len(data) > pos + 2:  # small-field overwrite
            struct.pack_into("<H", data, pos, draw(st.integers(0, 0xFFFF)))
    return bytes(data)


def _only_parse_errors(parser, data: bytes) -> None:
    try:
        parser(data)
    except EvidenceParseError as exc:
        assert isinstance(exc.offset, int) and 0 <= exc.offset <= max(len(data), 0x4A0)
        assert "offset" in str(exc)


@pytest.mark.slow
@pytest.mark.parametrize("name", PARSERS)
def test_fuzz_parser_10k(name):
    parser, seeds = PARSERS[name]

    @settings(max_examples=10_000, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(mutated(seeds))
    def run(data):
        _only_parse_errors(parser, data)

    run()


@pytest.mark.parametrize("name", ["intel", "snp", "gpu"])
def test_every_truncation_is_a_parse_error(name):
    parser, seeds = PARSERS[name]
    seed = seeds[0]
    parsed = parser(seed)
    end = len(parsed.raw) if name == "intel" else len(seed)  # Intel ignores trailing padding
    for n in range(end):
        with pytest.raises(EvidenceParseError) as info:
            parser(seed[:n])
        assert 0 <= info.value.offset <= n or (name == "snp" and info.value.offset == n)


@pytest.mark.parametrize("name,offset,value,size", [
    ("intel", 0, 7, 2), ("intel", 0, 2, 2), ("intel", 2, 3, 2), ("intel", 4, 0x42, 4),
    ("snp", 0, 1, 4), ("snp", 0, 4, 4), ("snp", 0, 9, 4),
    ("gpu", 0, 0x20, 1), ("gpu", 1, 0x81, 1),
])
def test_wrong_version_or_type(name, offset, value, size):
    parser, seeds = PARSERS[name]
    data = bytearray(seeds[0])
    data[offset:offset + size] = value.to_bytes(size, "little")
    with pytest.raises(EvidenceParseError) as info:
        parser(bytes(data))
    assert info.value.offset == offset


def test_envelope_version_and_garbage():
    from derot import _proto

    pb = _proto.load("attestation_pb2")
    bad_version = pb.Evidence(version=2, platform=1, quote=b"x").SerializeToString()
    with pytest.raises(EvidenceParseError, match="version 2"):
        Evidence.decode(bad_version)
    with pytest.raises(EvidenceParseError, match="platform 9"):
        Evidence.decode(pb.Evidence(version=1, platform=9).SerializeToString())
    with pytest.raises(EvidenceParseError):
        Evidence.decode(b"\xff\xff\xff\xff garbage")
    with pytest.raises(EvidenceParseError):
        Evidence.decode(bytes(2 << 20))
    gpu = pb.GpuEvidence(report=b"r", cert_chain_pem=b"c")
    assert len(Evidence.decode(pb.Evidence(version=1, platform=1, gpus=[gpu] * 16).SerializeToString()).gpus) == 16
    with pytest.raises(EvidenceParseError, match="17 GPU reports, at most 16"):  # gpuCount is a uint8; bounded work
        Evidence.decode(pb.Evidence(version=1, platform=1, gpus=[gpu] * 17).SerializeToString())


def test_padding_and_trailers_still_parse():
    raw = INTEL_SEEDS[0]
    q = parse_quote(raw)
    assert len(raw) > len(q.raw)  # the phala TDX quote is zero-padded
    assert parse_quote(q.raw + bytes(500)).raw == q.raw
    assert parse_quote(q.raw + b"trailer").raw == q.raw


def test_fuzz_verification_path(production_trust, ts):
    """Mutated evidence through the full verifiers: only AttestationError subclasses escape."""
    from derot.attest.verify import verify_evidence

    coll = (VECTORS / "phala_dcap_qvl/tdx_quote_collateral.json").read_bytes()
    vek = (VECTORS / "virtee_sev/vcek_milan.der").read_bytes()
    chain = (VECTORS / "nvidia_nvtrust/hopperCertChain.txt").read_bytes()
    at = ts("2025-07-01T00:00:00Z")

    @settings(max_examples=1500, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(["tdx", "snp", "gpu", "vek", "coll"]), st.data())
    def run(kind, data):
        if kind == "tdx":
            ev = Evidence(Platform.TDX, quote=data.draw(mutated(INTEL_SEEDS[:1])), collateral=coll)
        elif kind == "snp":
            ev = Evidence(Platform.SEV_SNP, quote=data.draw(mutated(SNP_SEEDS[:1])), vek=vek)
        elif kind == "gpu":
            ev = Evidence(Platform.NVIDIA_GPU, gpus=(GpuEvidence(data.draw(mutated(GPU_SEEDS[:1])), chain),))
        elif kind == "vek":
            ev = Evidence(Platform.SEV_SNP, quote=SNP_SEEDS[0], vek=data.draw(mutated([vek])))
        else:
            ev = Evidence(Platform.TDX, quote=INTEL_SEEDS[0], collateral=data.draw(mutated([coll])))
        try:
            verify_evidence(ev, production_trust, at=at, gpu_nonce_override=None)
        except AttestationError:
            pass

    run()
