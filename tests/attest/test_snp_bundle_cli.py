"""A VEK PEM bundle (VCEK + ASK + ARK, as Azure ships it) on a real Azure SNP report; ``derot attest verify``
prints the new facts and applies the TEE policy flags with the documented exit codes (0/1/2)."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from derot.attest import sev_snp
from derot.attest.errors import AttestationError, EvidenceParseError
from derot.attest.evidence import Evidence
from derot.attest.verify import verify_evidence
from derot.cli.main import main
from derot.constants import Platform

AZ = "trustee_azure_vtpm/az-snp-vtpm/evidence-v1.json"
AT = "2025-06-01T00:00:00Z"


def _b64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


@pytest.fixture(scope="module")
def azure(vectors):
    """(SNP report from the HCL report at 0x20, VCEK PEM, Milan ASK PEM, Milan ARK PEM)."""
    doc = json.loads(vectors.text(AZ))
    report = _b64(doc["hcl_report"])[0x20: 0x20 + sev_snp.REPORT_SIZE]
    vcek = sev_snp.load_vek(_b64(doc["vcek"])).public_bytes(Encoding.PEM)
    return report, vcek, vectors.bytes("roots/amd_milan_ask.pem"), vectors.bytes("roots/amd_milan_ark.pem")


@pytest.mark.parametrize("order", [(1, 2, 3), (3, 1, 2), (2, 3, 1)])
def test_azure_bundle_any_order(azure, production_trust, ts, order):
    report, *certs = azure
    bundle = b"".join(certs[i - 1] for i in order)
    claims = verify_evidence(Evidence(Platform.SEV_SNP, quote=report, vek=bundle), production_trust, at=ts(AT))
    assert claims.tee_attributes["product"] == "Milan" and claims.tee_attributes["vmpl"] == 0
    assert claims.tee_attributes["tcb"] == {"bootloader": 4, "tee": 0, "snp": 24, "microcode": 219}  # EXPECTED.md


def test_bundle_with_a_foreign_ask_or_two_leaves_is_refused(azure, production_trust, devnet, ts):
    report, vcek, ask, ark = azure
    foreign_ask = devnet._pki.certs["amd_ask"].public_bytes(Encoding.PEM)  # an "ASK" nobody pinned
    with pytest.raises(AttestationError) as exc:
        verify_evidence(Evidence(Platform.SEV_SNP, quote=report, vek=vcek + foreign_ask + ark), production_trust, at=ts(AT))
    assert exc.value.reason == "root_not_trusted"
    with pytest.raises(EvidenceParseError, match="exactly one VCEK/VLEK"):
        sev_snp.split_vek_bundle(vcek + vcek + ask)
    with pytest.raises(EvidenceParseError, match="exactly one VCEK/VLEK"):
        sev_snp.split_vek_bundle(ask + ark)


def test_cli_json_prints_new_facts_and_policy_flags(azure, tmp_path, capsys):
    report, vcek, ask, ark = azure
    (tmp_path / "report.bin").write_bytes(report)
    (tmp_path / "bundle.pem").write_bytes(vcek + ask + ark)
    base = ["attest", "verify", str(tmp_path / "report.bin"), "--vek", str(tmp_path / "bundle.pem"), "--at", AT, "--json"]
    assert main(base) == 0
    doc = json.loads(capsys.readouterr().out)
    facts = doc["claims"]["tee_attributes"]
    assert facts["vmpl"] == 0 and facts["guest_policy"]["smt"] is True and facts["tcb"]["microcode"] == 219
    assert main(base + ["--snp-require", "smt=0"]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"]["reason"] == "snp_guest_policy"
    assert main(base + ["--snp-require", "smt=0", "--allow-exception", "snp_policy:smt"]) == 0
    capsys.readouterr()
    assert main(base + ["--snp-min-tcb", "Milan:microcode=220"]) == 1
    verdict = json.loads(capsys.readouterr().out)["verdict"]
    assert verdict["reason"] == "tcb_below_floor" and "OUT_OF_DATE" in verdict["detail"]
    assert main(base + ["--snp-min-tcb", "Milan:microcode=219,snp=24"]) == 0
    capsys.readouterr()
    assert main(base + ["--snp-min-tcb", "Milan:nonsense=1"]) == 2
    capsys.readouterr()
    assert main(base[:-1]) == 0  # text output names the facts
    out = capsys.readouterr().out
    assert "snp_policy" in out and "vmpl" in out and "microcode=219" in out


def test_cli_text_names_td_attributes(vectors, capsys):
    code = main(["attest", "verify", str(vectors.root / "phala_dcap_qvl/tdx_quote"), "--collateral",
                 str(vectors.root / "phala_dcap_qvl/tdx_quote_collateral.json"), "--at", "2025-07-01T00:00:00Z"])
    out = capsys.readouterr().out
    assert code == 0 and "td_attributes" in out and "sept_ve_disable" in out and "seam_attributes" in out


def test_sdk_picks_the_vcek_out_of_a_bundle(azure):
    """The app SDK's VEK selection accepts the Azure-style bundle and sends only the VCEK (DER)."""
    from derot.app.tee.snp import _signs

    report, vcek, ask, ark = azure
    der = _signs(ark + vcek + ask, sev_snp.parse_report(report))
    assert der is not None and sev_snp.load_vek(der).public_bytes(Encoding.PEM) == vcek
    assert _signs(ask + ark, sev_snp.parse_report(report)) is None
