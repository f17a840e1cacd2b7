"""``derot attest verify`` on Azure vTPM evidence and TDX event logs; ``derot attest measurement`` computes
the same digest verification yields."""

from __future__ import annotations

import json

from derot.cli.main import main

A = "trustee_azure_vtpm/az-snp-vtpm/"


def _run(capsys, *argv):
    code = main([*map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_verify_trustee_azure_json(capsys, vectors_dir):
    code, out, _ = _run(capsys, "attest", "verify", vectors_dir / (A + "evidence-v1.json"), "--at", "2025-02-01T00:00:00Z",
                        "--expect-report-data", b"challenge".hex(), "--json")
    doc = json.loads(out)
    assert code == 0, doc
    assert doc["claims"]["platform"] == "AZURE_SNP" and doc["verdict"]["allowed"]
    assert doc["claims"]["measurements"]["PCR00"].startswith("e15c4479")
    code, out, _ = _run(capsys, "attest", "verify", vectors_dir / (A + "evidence-v1.json"), "--at", "2025-02-01T00:00:00Z",
                        "--expect-report-data", b"egnellahc".hex(), "--json")
    assert code == 1 and json.loads(out)["verdict"]["reason"] == "report_data_mismatch"
    # the measurement helper computes the digest verification yields, from the registers and the PCRs
    claims = doc["claims"]
    code, out, _ = _run(capsys, "attest", "measurement", "--platform", "azure-snp",
                        "--register", "MEASUREMENT=" + claims["measurements"]["MEASUREMENT"],
                        "--register", "HOST_DATA=" + claims["measurements"]["HOST_DATA"],
                        "--pcrs", vectors_dir / (A + "evidence-v1.json"))
    assert code == 0 and out.split()[-1] == claims["measurement_digest"]


def test_verify_tampered_azure_json_exit_2(capsys, vectors_dir, tmp_path):
    doc = json.loads((vectors_dir / (A + "evidence-v1.json")).read_text())
    doc["tpm_quote"]["pcrs"][7] = "00" * 32
    path = tmp_path / "ev.json"
    path.write_text(json.dumps(doc))
    code, out, _ = _run(capsys, "attest", "verify", path, "--at", "2025-02-01T00:00:00Z", "--json")
    assert code == 2 and json.loads(out)["reason"] == "pcr_digest_mismatch"


def test_devnet_azure_round_trip(capsys, tmp_path, devnet_dir):
    out_file = tmp_path / "az.bin"
    for platform in ("azure-snp", "azure-tdx"):
        assert main(["attest", "devnet-evidence", "--devnet", str(devnet_dir), "--platform", platform,
                     "--report-data", "ab" * 64, "--measurement", "PCR04=" + "44" * 32, "--out", str(out_file)]) == 0
        capsys.readouterr()
        code, out, _ = _run(capsys, "attest", "verify", out_file, "--devnet", devnet_dir, "--json",
                            "--expect-report-data", "ab" * 64)
        doc = json.loads(out)
        assert code == 0 and doc["claims"]["platform"] == platform.upper().replace("-", "_")
        assert doc["claims"]["measurements"]["PCR04"] == "44" * 32


def test_measurement_tdx_eventlog(capsys, vectors_dir):
    log = vectors_dir / "trustee_tdx_eventlog/CCEL_data_ovmf"
    code, out, _ = _run(capsys, "attest", "measurement", "--platform", "tdx-eventlog", "--register",
                        "MRTD=" + "11" * 48, "--event-log", log, "--app-event", "app.compose=" + "22" * 32, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["registers"]["RTMR2"].startswith("94eaf7a7bf398ed8")
    code2, out2, _ = _run(capsys, "attest", "measurement", "--platform", "tdx-eventlog", "--register",
                          "MRTD=" + "11" * 48, "--event-log", log, "--app-event", "app.compose=" + "23" * 32, "--json")
    assert code2 == 0 and json.loads(out2)["measurement"] != doc["measurement"]
    code, _, err = _run(capsys, "attest", "measurement", "--platform", "tdx", "--register", "MRTD=" + "11" * 48)
    assert code == 2 and "RTMR0" in err
    code, _, err = _run(capsys, "attest", "measurement", "--platform", "tdx-eventlog", "--register",
                        "MRTD=" + "11" * 48, "--event-log", log, "--app-event", "instance.id=00")
    assert code == 2 and "app." in err
