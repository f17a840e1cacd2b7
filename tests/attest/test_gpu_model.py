"""GPU models from verified evidence (derot.attest.gpu_model): real Hopper reports are H100s, the real Blackwell
RTX PRO 6000 (a board derot has no model bit for) is unrecognised, and the model follows the signed bytes."""

from __future__ import annotations

import dataclasses

import pytest

from derot.attest import gpu_model, nvidia_gpu
from derot.attest.devnet import DevnetGpu, DevnetRoots
from derot.attest.errors import SignatureInvalid
from derot.constants import GPU_MODEL_UNRECOGNISED, GpuModel, Platform

N, BW = "nvidia_nvtrust/", "trustee_nvidia_blackwell/"
REAL = [
    (N + "hopperAttestationReport.bin", N + "hopperCertChain.txt", "2025-01-01T00:00:00Z", "GH100", "H100"),
    (N + "ppcie_gpu3_report.bin", N + "ppcie_gpu3_certs.pem", "2026-01-01T00:00:00Z", "GH100", "H100"),
    (BW + "blackwellAttestationReport.bin", BW + "blackwell_cert_chain_case1.txt", "2026-09-01T00:00:00Z", "GB20X", None),
]


@pytest.fixture(scope="module")
def roots(vectors):
    return nvidia_gpu.NvidiaRoots.from_pem(vectors.bytes("roots/nvidia_device_identity_ca.pem"))


@pytest.mark.parametrize("report, chain, when, chip, model", REAL, ids=[r[0] for r in REAL])
def test_real_reports_name_their_chip_and_model(vectors, roots, ts, report, chain, when, chip, model):
    claims = nvidia_gpu.verify_report(vectors.bytes(report), (vectors.root / chain).read_bytes(), roots, ts(when))
    assert claims.tee_attributes["gpu_chip"] == chip and claims.tee_attributes["gpu_model"] == model
    assert gpu_model.model_bits(claims) == (int(GpuModel[model]) if model else GPU_MODEL_UNRECOGNISED)


def test_certificate_fields_are_the_count_and_the_or_of_the_models(vectors, roots, ts):
    h100 = nvidia_gpu.verify_report(vectors.bytes(REAL[1][0]), (vectors.root / REAL[1][1]).read_bytes(), roots, ts(REAL[1][2]))
    cpu = dataclasses.replace(h100, platform=Platform.TDX, gpus=())
    assert gpu_model.certificate_gpus(cpu) == (0, 0)
    assert gpu_model.certificate_gpus(cpu.with_gpus((h100,) * 8)) == (8, int(GpuModel.H100))
    unknown = dataclasses.replace(h100, tee_attributes={"gpu_model": None})
    assert gpu_model.certificate_gpus(cpu.with_gpus((h100, unknown))) == (2, int(GpuModel.H100) | GPU_MODEL_UNRECOGNISED)


def test_identify_reads_the_chip_and_board_and_nothing_else():
    assert gpu_model.identify("CN=GH100 A01 GSP FMC LF,O=NVIDIA Corporation", {"project": b"G520\0"}) == ("GH100", GpuModel.H100)
    assert gpu_model.identify("CN=GH100 A01 GSP FMC LF", {"project": b"G999\0"}) == ("GH100", None)
    assert gpu_model.identify("CN=XGH100 FMC", {"project": b"G520\0"}) == (None, None)  # not a chip token
    assert gpu_model.identify("CN=GB20X A01 GSP FMC LF", {"project": b"G520\0"}) == ("GB20X", None)  # board of another chip
    assert gpu_model.identify("CN=GH100 A01", {}) == ("GH100", None)


def test_a_devnet_gpu_goes_through_the_same_code():
    roots = DevnetRoots.generate()
    nonce = bytes(range(32))
    for project, model in (("G520", "H100"), ("X999", None)):
        gpu = DevnetGpu(roots, project=project)
        claims = nvidia_gpu.verify_report(gpu.report(nonce), gpu.cert_chain, roots.nvidia_roots(), roots.created + 60)
        assert claims.tee_attributes["gpu_model"] == model
        assert claims.measurement_digest == gpu.measurement_digest


def test_the_board_is_under_the_signature():
    """Claiming another board means changing signed bytes: the report no longer verifies."""
    roots = DevnetRoots.generate()
    gpu = DevnetGpu(roots, project="X999")
    report = gpu.report(bytes(32))
    forged = report.replace(b"X999\0", b"G520\0")
    assert forged != report
    with pytest.raises(SignatureInvalid):
        nvidia_gpu.verify_report(forged, gpu.cert_chain, roots.nvidia_roots(), roots.created + 60)
