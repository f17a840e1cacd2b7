"""``derot attest verify`` on the vectors and on devnet evidence (exit codes, text and JSON)."""

from __future__ import annotations

import json

import pytest

from derot.cli.main import main

V = None


@pytest.fixture(autouse=True)
def _vectors(vectors_dir):
    global V
    V = vectors_dir


def run(capsys, *argv):
    code = main(["attest", "verify", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_tdx_vector_allowed(capsys):
    code, out, _ = run(capsys, V / "phala_dcap_qvl/tdx_quote", "--collateral",
                       V / "phala_dcap_qvl/tdx_quote_collateral.json", "--at", "2025-07-01T00:00:00Z")
    assert code == 0 and "tcb_status      up-to-date" in out and "UP_TO_DATE" not in out and "91eb2b44d141d4ec" in out and "ALLOW" in out


def test_sgx_vector_refused_then_allowed_by_floor(capsys):
    args = [V / "phala_dcap_qvl/sgx_quote", "--collateral", V / "phala_dcap_qvl/sgx_quote_collateral.json",
            "--at", "2025-07-01T00:00:00Z", "--json"]
    code, out, _ = run(capsys, *args)
    doc = json.loads(out)
    assert code == 1 and doc["verdict"]["reason"] == "tcb_below_floor"
    assert doc["claims"]["advisory_ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
    code, out, _ = run(capsys, *args, "--min-tcb", "CONFIGURATION_AND_SW_HARDENING_NEEDED")
    assert code == 0 and json.loads(out)["verdict"]["allowed"]


def test_snp_debug_vector(capsys):
    args = [V / "google_go_sev_guest/attestation.bin", "--vek", V / "google_go_sev_guest/vcek_milan.der",
            "--at", "2025-01-01T00:00:00Z"]
    code, out, _ = run(capsys, *args)
    assert code == 1 and "debug_not_allowed" in out
    assert run(capsys, *args, "--allow-debug")[0] == 0


def test_gpu_vector_hex_input(capsys):
    code, out, _ = run(capsys, V / "nvidia_nvtrust/hopperAttestationReport.txt", "--gpu-certs",
                       V / "nvidia_nvtrust/hopperCertChain.txt", "--nonce",
                       "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["claims"]["details"]["driver_version"] == "550.90.07"


def test_stale_collateral_exit_2(capsys):
    code, _, err = run(capsys, V / "phala_dcap_qvl/tdx_quote", "--collateral",
                       V / "phala_dcap_qvl/tdx_quote_collateral.json", "--at", "2026-01-01T00:00:00Z")
    assert code == 2 and "collateral_stale" in err


def test_devnet_evidence_round_trip(capsys, tmp_path, devnet_dir):
    out = tmp_path / "ev.pb"
    assert main(["attest", "devnet-evidence", "--devnet", str(devnet_dir), "--platform", "snp",
                 "--measurement", "MEASUREMENT=" + "aa" * 48, "--report-data", "11" * 64, "--out", str(out)]) == 0
    capsys.readouterr()
    code, text, _ = run(capsys, out, "--devnet", devnet_dir, "--expect-report-data", "11" * 64)
    assert code == 0 and "platform        sev-snp" in text and "SEV_SNP" not in text
    code, _, err = run(capsys, out)  # production roots
    assert code == 2 and "root_not_trusted" in err
    code, text, _ = run(capsys, out, "--devnet", devnet_dir, "--expect-report-data", "22" * 64)
    assert code == 1 and "report_data_mismatch" in text
