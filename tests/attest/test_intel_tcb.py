"""TDX TCB matching follows Intel's rule, not a naive comparison of all 16 TEE TCB SVN bytes.

Intel's QvE skips TEE_TCB_SVN bytes 0-1 when byte 1 (the TDX module major version) is > 0 and rates the
module by ``tdxModuleIdentities`` (TDX_<byte 1>, by ISVSVN = byte 0). The devnet TCB info has platform
levels UpToDate (TDX components 5,0,3) and OutOfDate (5,0,2); module TDX_01 levels isvsvn 4 UpToDate and
2 OutOfDate; TDX_03 isvsvn 3 UpToDate. For each TEE_TCB_SVN the table gives Intel's status and what the
all-16 comparison would give; dcap-qvl (through derot) and derot's Python verifier must both give Intel's.
"""

from __future__ import annotations

import json

import pytest

from derot.attest import intel_dcap
from derot.attest.devnet import DevnetTee
from derot.attest.errors import TcbNotSupported
from derot.attest.intel_quote import parse_quote
from derot.attest.verify import verify_evidence
from derot.constants import Platform, TcbStatus

# tee_tcb_svn[0:3], Intel status (None = TCB_NOT_SUPPORTED), naive all-16 status
CASES = [
    ((6, 1, 3), "UpToDate", "UpToDate"),
    ((4, 1, 3), "UpToDate", None),          # module SVN 4 < 5: all-16 finds no level
    ((3, 1, 3), "OutOfDate", None),         # module TDX_01 isvsvn 3 -> OutOfDate level
    ((3, 3, 3), "UpToDate", None),          # TDX 1.5 module (TDX_03), isvsvn 3
    ((6, 1, 2), "OutOfDate", "OutOfDate"),  # late microcode below the UpToDate level
    ((5, 0, 3), "UpToDate", "UpToDate"),    # module version 0: no skip, both rules agree
    ((4, 0, 3), None, None),
    ((1, 1, 3), None, None),                # module ISVSVN below every TDX_01 level
    ((6, 2, 3), None, "UpToDate"),          # no TDX_02 identity: Intel refuses, all-16 accepts
]


def naive_all16(tee_tcb_svn: bytes, tcb_info: dict) -> str | None:
    """The comparison EXPECTED.md calls "all16" (platform SGX components assumed to match)."""
    for level in tcb_info["tcbLevels"]:
        comps = [c["svn"] for c in level["tcb"]["tdxtcbcomponents"]]
        if all(a >= b for a, b in zip(tee_tcb_svn, comps)):
            return level["tcbStatus"]
    return None


@pytest.mark.parametrize("svn,intel,all16", CASES, ids=[str(c[0]) for c in CASES])
def test_tdx_tcb_rule(svn, intel, all16, devnet, devnet_trust):
    tee = DevnetTee(devnet, Platform.TDX, tee_tcb_svn=bytes(svn) + bytes(13))
    ev = tee.quote(bytes(64))
    tcb_info = json.loads(json.loads(tee.collateral.json_text)["tcb_info"])
    assert naive_all16(bytes(svn) + bytes(13), tcb_info) == all16
    quote = parse_quote(ev.quote)
    if intel is None:
        with pytest.raises(TcbNotSupported):
            verify_evidence(ev, devnet_trust)
        with pytest.raises(TcbNotSupported):
            intel_dcap.verify_quote(quote, tee.collateral, devnet.intel_root_der, devnet.created + 86400 * 2)
        return
    claims = verify_evidence(ev, devnet_trust)
    assert claims.tcb_status == TcbStatus.from_intel(intel)
    assert claims.details["verified_by"] == "dcap-qvl"
    result, _ = intel_dcap.verify_quote(quote, tee.collateral, devnet.intel_root_der, devnet.created + 86400 * 2)
    assert result.status == intel


def test_rules_differ_somewhere():
    """The table is not vacuous: the two rules disagree on some rows."""
    assert any(intel != all16 for _, intel, all16 in CASES)


@pytest.mark.parametrize("debug", [False, True])
def test_dcap_qvl_policy_refusals_still_give_claims(debug, devnet, devnet_trust):
    """dcap-qvl refuses debug TDs on every API path; derot verifies them itself and reports the facts."""
    tee = DevnetTee(devnet, Platform.TDX, {"MRTD": b"\x42" * 48}, debug=debug)
    ev = tee.quote(bytes(range(64)))
    import dcap_qvl

    if debug:
        with pytest.raises(ValueError, match="Debug mode"):
            dcap_qvl.verify_with_root_ca(ev.quote, tee.collateral.qvl, devnet.intel_root_der, devnet.created + 172800)
    claims = verify_evidence(ev, devnet_trust)
    assert claims.debug is debug
    assert claims.tcb_status == TcbStatus.UP_TO_DATE
    assert claims.measurements["MRTD"] == b"\x42" * 48
    assert claims.details["verified_by"] == ("derot intel_dcap" if debug else "dcap-qvl")
    assert claims.details["sept_ve_disable"] is True


def _all16_full(quote, tcb_info, cpu_svn, pce_svn):
    """All-16 comparison including the platform's SGX components and PCESVN."""
    for level in tcb_info["tcbLevels"]:
        t = level["tcb"]
        if pce_svn < t["pcesvn"] or any(c < s["svn"] for c, s in zip(cpu_svn, t["sgxtcbcomponents"])):
            continue
        if all(a >= b["svn"] for a, b in zip(quote.body.tee_tcb_svn, t["tdxtcbcomponents"])):
            return level["tcbStatus"]
    return None


@pytest.mark.parametrize("quote_file,coll_file", [
    ("phala_dcap_qvl/tdx_quote", "phala_dcap_qvl/tdx_quote_collateral.json"),
    ("phala_dcap_qvl/tdx_quote_outdated", "phala_dcap_qvl/tdx_quote_outdated_collateral.json"),
    ("phala_dcap_qvl/near_quote.bin", "phala_dcap_qvl/near_quote_collateral.json"),
    ("phala_dcap_qvl/tdx-quote.bin", "phala_dcap_qvl/tdx_quote_collateral.json"),
    ("google_go_tdx_guest/quote_v5_sample.dat", "phala_dcap_qvl/tdx_quote_outdated_collateral.json"),
])
def test_rules_agree_on_the_real_vectors(quote_file, coll_file, vectors):
    """EXPECTED.md lists no "all16" column: on these vectors the two rules give the same answer."""
    from cryptography import x509

    quote = parse_quote(vectors.bytes(quote_file))
    doc = json.loads(vectors.text(coll_file))
    tcb_info, qe = json.loads(doc["tcb_info"]), json.loads(doc["qe_identity"])
    cpu_svn, pce_svn = intel_dcap.pck_svns(x509.load_pem_x509_certificates(quote.cert_data)[0])
    try:
        intel = intel_dcap.match_tcb(quote, tcb_info, qe, cpu_svn, pce_svn).status
    except TcbNotSupported:
        intel = None
    assert _all16_full(quote, tcb_info, cpu_svn, pce_svn) == intel
