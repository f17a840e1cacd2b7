"""Devnet evidence round-trips through the production verifiers and fails under production roots."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from derot.attest.devnet import DevnetGpu, DevnetRoots, DevnetTee
from derot.attest.errors import (
    CertificateExpired,
    ChainInvalid,
    HardwareIdMismatch,
    NonceMismatch,
    RootNotTrusted,
    TcbMismatch,
)
from derot.attest.evidence import Evidence
from derot.attest.sev_snp import TcbVersion
from derot.attest.trust import TrustConfig
from derot.attest.verify import verify_evidence
from derot.constants import Platform, TcbStatus

TDX_REGS = {"MRTD": b"\x01" * 48, "RTMR0": b"\x02" * 48, "RTMR3": b"\x03" * 48, "MRCONFIGID": b"\x04" * 48}
SNP_REGS = {"MEASUREMENT": b"\x05" * 48, "HOST_DATA": b"\x06" * 32}


@pytest.mark.parametrize("platform,regs", [(Platform.TDX, TDX_REGS), (Platform.SEV_SNP, SNP_REGS)])
def test_round_trip(platform, regs, devnet, devnet_trust, production_trust):
    tee = DevnetTee(devnet, platform, regs)
    rd = bytes(range(64))
    ev = Evidence.decode(tee.quote(rd).encode())
    claims = verify_evidence(ev, devnet_trust)
    assert claims.platform == platform and claims.root == "devnet"
    assert claims.report_data == rd and not claims.debug
    assert claims.tcb_status == TcbStatus.UP_TO_DATE
    for name, value in regs.items():
        assert claims.measurements[name] == value
    with pytest.raises(RootNotTrusted, match="devnet"):
        verify_evidence(ev, production_trust)


def test_fmspc_and_chip_are_chosen(devnet, devnet_trust):
    fmspc = bytes.fromhex("00c06f0a0000")
    tdx = verify_evidence(DevnetTee(devnet, Platform.TDX, fmspc=fmspc).quote(bytes(64)), devnet_trust)
    assert tdx.hardware_ids.fmspc == fmspc
    chip = bytes([7]) * 64
    snp = verify_evidence(DevnetTee(devnet, Platform.SEV_SNP, chip_id=chip).quote(bytes(64)), devnet_trust)
    assert snp.hardware_ids.chip_id == chip


def test_devnet_and_production_together(devnet, vectors, ts):
    trust = TrustConfig.devnet(devnet, include_production=True)
    assert verify_evidence(DevnetTee(devnet, Platform.SEV_SNP).quote(bytes(64)), trust).root == "devnet"
    real = Evidence(Platform.SEV_SNP, quote=vectors.bytes("virtee_sev/report_milan.bin"),
                    vek=vectors.bytes("virtee_sev/vcek_milan.der"))
    assert verify_evidence(real, trust, at=ts("2025-01-01T00:00:00Z")).root == "production"


def test_production_config_refuses_devnet_roots(devnet):
    from derot.attest.collateral import CollateralStore

    with pytest.raises(ValueError, match="devnet"):
        TrustConfig(production=True, intel_roots={"x": devnet.intel_root_der}, amd=None, nvidia=None,
                    collateral=CollateralStore())
    with pytest.raises(ValueError, match="devnet"):
        TrustConfig(production=True, intel_roots={}, amd=devnet.amd_roots(), nvidia=None, collateral=CollateralStore())


def test_separate_process_shares_the_devnet(devnet_dir, tmp_path):
    """A second process loads the directory and makes evidence this process verifies."""
    out = tmp_path / "ev.pb"
    code = (
        "import sys; from derot.attest.devnet import DevnetRoots, DevnetTee; from derot.constants import Platform;"
        f"r = DevnetRoots.load({str(devnet_dir)!r});"
        "t = DevnetTee(r, Platform.TDX, {'MRTD': bytes([9]) * 48});"
        f"open({str(out)!r}, 'wb').write(t.quote(bytes(64)).encode())"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    trust = TrustConfig.devnet(DevnetRoots.load(devnet_dir))
    assert verify_evidence(Evidence.decode(out.read_bytes()), trust).measurements["MRTD"] == bytes([9]) * 48


def test_other_devnet_is_not_trusted(devnet, tmp_path):
    other = DevnetRoots.generate()
    for platform in (Platform.TDX, Platform.SEV_SNP):
        with pytest.raises(RootNotTrusted):
            verify_evidence(DevnetTee(other, platform).quote(bytes(64)), TrustConfig.devnet(devnet))


# --------------------------------------------------------------------------- SNP checks


def test_snp_tcb_and_hwid_must_match_the_vcek(devnet, devnet_trust):
    tee = DevnetTee(devnet, Platform.SEV_SNP)
    ev = tee.quote(bytes(64))
    _, wrong_tcb = devnet.issue_vek(tee.chip_id, TcbVersion(3, 0, 7, 115), key=tee._vek_key)
    with pytest.raises(TcbMismatch):
        verify_evidence(replace(ev, vek=wrong_tcb), devnet_trust)
    _, wrong_chip = devnet.issue_vek(bytes(64), tee.tcb, key=tee._vek_key)
    with pytest.raises(HardwareIdMismatch):
        verify_evidence(replace(ev, vek=wrong_chip), devnet_trust)
    _, other_key = devnet.issue_vek(tee.chip_id, tee.tcb)
    from derot.attest.errors import SignatureInvalid

    with pytest.raises(SignatureInvalid):
        verify_evidence(replace(ev, vek=other_key), devnet_trust)


def test_snp_vlek(devnet, devnet_trust):
    tee = DevnetTee(devnet, Platform.SEV_SNP, SNP_REGS, vlek=True)
    claims = verify_evidence(tee.quote(bytes(64)), devnet_trust)
    assert claims.details["signing_key"] == "VLEK" and claims.details["csp_id"] == "derot-devnet-csp"
    vcek_tee = DevnetTee(devnet, Platform.SEV_SNP, SNP_REGS)
    with pytest.raises(ChainInvalid, match="VLEK"):  # a VCEK-signed report presented with a VLEK
        verify_evidence(replace(vcek_tee.quote(bytes(64)), vek=tee.vek_der), devnet_trust)


def test_snp_expired_vcek_at_the_right_time(devnet, devnet_trust):
    expiry = devnet.created + 30 * 86400
    tee = DevnetTee(devnet, Platform.SEV_SNP, vek_not_after=expiry)
    ev = tee.quote(bytes(64))
    verify_evidence(ev, devnet_trust, at=expiry)
    with pytest.raises(CertificateExpired):
        verify_evidence(ev, devnet_trust, at=expiry + 1)


def test_snp_debug_is_reported(devnet, devnet_trust):
    claims = verify_evidence(DevnetTee(devnet, Platform.SEV_SNP, debug=True).quote(bytes(64)), devnet_trust)
    assert claims.debug and claims.details["policy_flags"]["debug"]


# --------------------------------------------------------------------------- GPU TEE pairing


def test_gpu_tee_pair(devnet, devnet_trust):
    cpu = DevnetTee(devnet, Platform.TDX, TDX_REGS)
    gpu = DevnetGpu(devnet)
    rd = bytes([3]) * 64
    ev = replace(cpu.quote(rd), gpus=(gpu.evidence_for(rd),))
    claims = verify_evidence(Evidence.decode(ev.encode()), devnet_trust)
    assert len(claims.gpus) == 1 and claims.gpus[0].platform == Platform.NVIDIA_GPU
    assert claims.gpus[0].hardware_ids.gpu_fwid == gpu.fwid
    # the GPU answered another request: refused
    with pytest.raises(NonceMismatch):
        verify_evidence(replace(ev, gpus=(gpu.evidence_for(bytes(64)),)), devnet_trust)
    # the CPU half fails: the pair fails
    bad_cpu = bytearray(ev.quote)
    bad_cpu[100] ^= 1
    from derot.attest.errors import AttestationError

    with pytest.raises(AttestationError):
        verify_evidence(replace(ev, quote=bytes(bad_cpu)), devnet_trust)
