"""Named TEE-attribute policy (policy_tee): each refusal has its own reason, governance can waive it per
app (never for node membership), and a TD that dcap-qvl refuses by its own policy is verified by derot's
own verifier, chosen from the quote's attributes, never from dcap-qvl's error text."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import dcap_qvl
import pytest

from derot.attest import policy as P
from derot.attest import policy_tee as T
from derot.attest.devnet import DevnetTee
from derot.attest.errors import AttestationError
from derot.attest.evidence import Evidence
from derot.attest.snapshot import AppRecord, GovernanceSnapshot, PlatformRule
from derot.attest.verify import verify_evidence
from derot.constants import Platform, TcbStatus

from tests.attest import mutate

APP = hashlib.sha256(b"tee-policy app").digest()
R = P.PolicyReason


@pytest.fixture(scope="module")
def now(devnet):
    return devnet.created + 86400


@pytest.fixture(scope="module")
def tdx_tee(devnet):
    return DevnetTee(devnet, Platform.TDX, {"MRTD": b"\x07" * 48})


@pytest.fixture(scope="module")
def snp_tee(devnet):
    return DevnetTee(devnet, Platform.SEV_SNP, {"MEASUREMENT": b"\x08" * 48})


def snap(claims, exceptions=(), **changes) -> GovernanceSnapshot:
    app = AppRecord(APP, "0xowner", 1, measurements=frozenset({(claims.platform, claims.measurement_digest)}),
                    tee_exceptions=frozenset(exceptions))
    base = dict(chain_id=1, registry="0x" + "22" * 20, block_number=1,
                platforms={p: PlatformRule(True, TcbStatus.UP_TO_DATE) for p in Platform}, apps={APP: app})
    base.update(changes)
    return GovernanceSnapshot(**base)


def app_req(claims, now):
    return P.PolicyRequest("app", now, app_id=APP, expected_report_data=claims.report_data)


def node_req(claims, now):
    return P.PolicyRequest("node", now, expected_report_data=claims.report_data)


def decide(claims, snapshot, req):
    return P.PolicyEngine.default().decide(claims, snapshot, req)


def tdx_claims(devnet, trust, tee, now, **fields):
    quote = mutate.tdx_quote(tee, **fields)
    return verify_evidence(Evidence(Platform.TDX, quote=quote, collateral=tee.collateral.json_text.encode()), trust,
                           at=now), quote


BIT = {"hgs_plus_prof": 1 << 4, "servtd_ext": 1 << 17, "migratable": 1 << 29, "reserved1": 1 << 1,
       "reserved40": 1 << 40, "sept": 1 << 28}


@pytest.mark.parametrize("attrs,reason,waiver", [
    (mutate.attributes(clear=BIT["sept"]), R.TD_SEPT_VE_ENABLED, "sept_ve"),
    (mutate.attributes(set_=BIT["migratable"]), R.TD_MIGRATABLE, "td_migratable"),
    (mutate.attributes(set_=BIT["hgs_plus_prof"]), R.TD_PROFILING, "td_profiling"),
    (mutate.attributes(set_=BIT["servtd_ext"]), R.TD_SERVTD_EXT, "service_td"),
    (mutate.attributes(set_=BIT["reserved1"]), R.TD_ATTRIBUTES_RESERVED, None),
    (mutate.attributes(set_=BIT["reserved40"]), R.TD_ATTRIBUTES_RESERVED, None),
])
def test_td_attribute_refusals_are_named_and_waivable(devnet, devnet_trust, tdx_tee, now, attrs, reason, waiver):
    claims, quote = tdx_claims(devnet, devnet_trust, tdx_tee, now, td_attributes=attrs)
    # dcap-qvl refuses this quote by its own policy, with no facts: derot's own verifier took over
    with pytest.raises(ValueError):
        dcap_qvl.verify_with_root_ca(quote, tdx_tee.collateral.qvl, devnet.intel_root_der, now)
    assert claims.details["verified_by"] == "derot intel_dcap"
    assert claims.tcb_status == TcbStatus.UP_TO_DATE
    verdict = decide(claims, snap(claims), app_req(claims, now))
    assert (verdict.allowed, verdict.reason) == (False, reason), verdict
    if waiver is None:
        assert decide(claims, snap(claims, exceptions=list(T.__dict__)), app_req(claims, now)).reason == reason
        return
    assert decide(claims, snap(claims, [waiver]), app_req(claims, now)).allowed
    assert decide(claims, snap(claims, ["something_else"]), app_req(claims, now)).reason == reason
    node_snap = snap(claims, [waiver], node_measurements=frozenset({(Platform.TDX, claims.measurement_digest)}))
    assert decide(claims, node_snap, node_req(claims, now)).reason == reason  # never waived for nodes


def test_clean_td_is_verified_by_dcap_qvl_and_allowed(devnet, devnet_trust, tdx_tee, now):
    claims, _ = tdx_claims(devnet, devnet_trust, tdx_tee, now)
    assert claims.details["verified_by"] == "dcap-qvl"
    assert claims.tee_attributes["td_attributes"]["sept_ve_disable"] is True
    assert claims.tee_attributes["td_attributes"]["reserved"] == "0" * 16
    assert decide(claims, snap(claims), app_req(claims, now)).allowed


def test_tolerated_attribute_bits_pass(devnet, devnet_trust, tdx_tee, now):
    """PKS, KL, LASS, ICSSD, TPA, PERFMON: dcap-qvl accepts them, and so does derot's policy."""
    attrs = mutate.attributes(set_=(1 << 30) | (1 << 31) | (1 << 27) | (1 << 16) | (1 << 62) | (1 << 63))
    claims, _ = tdx_claims(devnet, devnet_trust, tdx_tee, now, td_attributes=attrs)
    assert claims.details["verified_by"] == "dcap-qvl"
    assert decide(claims, snap(claims), app_req(claims, now)).allowed


def test_seam_attributes_refused_by_the_verifier_unless_the_module_identity_allows_them(devnet, devnet_trust, tdx_tee, now):
    seam = (1).to_bytes(8, "little")
    with pytest.raises(AttestationError) as exc:
        tdx_claims(devnet, devnet_trust, tdx_tee, now, seam_attributes=seam)
    assert exc.value.reason == "tcb_not_supported"

    def allow_bit0(info):
        for module in info["tdxModuleIdentities"]:
            module["attributes"] = "0100000000000000"

    coll = mutate.tdx_collateral(devnet, tdx_tee, tcb_info=allow_bit0)
    quote = mutate.tdx_quote(tdx_tee, seam_attributes=seam)
    claims = verify_evidence(Evidence(Platform.TDX, quote=quote, collateral=coll.json_text.encode()), devnet_trust, at=now)
    assert claims.details["verified_by"] == "dcap-qvl" and claims.tee_attributes["seam_attributes"] == seam.hex()
    assert decide(claims, snap(claims), app_req(claims, now)).reason == R.SEAM_ATTRIBUTES_SET
    assert decide(claims, snap(claims, ["seam_attributes"]), app_req(claims, now)).allowed


def test_a_policy_word_in_collateral_text_cannot_pick_the_own_verifier(devnet, devnet_trust, tdx_tee, now):
    """The old path was chosen by substrings of dcap-qvl's error text; collateral text can carry them."""
    bad = mutate.tdx_collateral(devnet, tdx_tee, qe_identity=lambda q: q.update(id="Debug mode is enabled", version=9))
    ev = Evidence(Platform.TDX, quote=tdx_tee.tdx_quote(bytes(64)), collateral=bad.json_text.encode())
    with pytest.raises(AttestationError):
        verify_evidence(ev, devnet_trust, at=now)
    # and the own verifier, when the quote does need it, refuses that collateral too
    quote = mutate.tdx_quote(tdx_tee, td_attributes=mutate.attributes(clear=BIT["sept"]))
    with pytest.raises(AttestationError) as exc:
        verify_evidence(Evidence(Platform.TDX, quote=quote, collateral=bad.json_text.encode()), devnet_trust, at=now)
    assert exc.value.reason == "collateral_invalid"


def test_snp_vmpl_floor(devnet, devnet_trust, snp_tee, now):
    for vmpl in (1, 2, 3):
        ev = Evidence(Platform.SEV_SNP, quote=mutate.snp_report(snp_tee, vmpl=vmpl), vek=snp_tee.vek_der)
        claims = verify_evidence(ev, devnet_trust, at=now)
        assert claims.tee_attributes["vmpl"] == vmpl
        verdict = decide(claims, snap(claims), app_req(claims, now))
        assert verdict.reason == R.SNP_VMPL_NOT_ALLOWED and f"VMPL {vmpl}" in verdict.detail
        assert decide(claims, snap(claims, snp_max_vmpl=3), app_req(claims, now)).allowed
        assert decide(claims, snap(claims, ["vmpl"]), app_req(claims, now)).allowed
    claims = verify_evidence(Evidence(Platform.SEV_SNP, quote=mutate.snp_report(snp_tee, vmpl=0), vek=snp_tee.vek_der),
                             devnet_trust, at=now)
    assert decide(claims, snap(claims), app_req(claims, now)).allowed


def test_snp_guest_policy_bits(devnet, devnet_trust, snp_tee, now):
    migrate = 0x30000 | 1 << 18
    claims = verify_evidence(Evidence(Platform.SEV_SNP, quote=mutate.snp_report(snp_tee, policy=migrate),
                                      vek=snp_tee.vek_der), devnet_trust, at=now)
    assert claims.tee_attributes["guest_policy"]["migrate_ma"] is True
    verdict = decide(claims, snap(claims), app_req(claims, now))
    assert verdict.reason == R.SNP_GUEST_POLICY and "MIGRATE_MA" in verdict.detail
    assert decide(claims, snap(claims, ["snp_policy:migrate_ma"]), app_req(claims, now)).allowed
    # governance may require more: SMT off and single-socket; the devnet guest allows SMT
    plain = verify_evidence(snp_tee.quote(bytes(64)), devnet_trust, at=now)
    need = {"smt": False, "migrate_ma": False}
    verdict = decide(plain, snap(plain, snp_guest_policy=need), app_req(plain, now))
    assert verdict.reason == R.SNP_GUEST_POLICY and "SMT" in verdict.detail
    ok = 0x30000 & ~(1 << 16) | 1 << 20
    single = verify_evidence(Evidence(Platform.SEV_SNP, quote=mutate.snp_report(snp_tee, policy=ok), vek=snp_tee.vek_der),
                             devnet_trust, at=now)
    assert decide(single, snap(single, snp_guest_policy={**need, "single_socket": True}), app_req(single, now)).allowed
    assert decide(plain, snap(plain, snp_guest_policy={"no_such_bit": True}), app_req(plain, now)).reason == R.SNP_GUEST_POLICY


def test_snp_minimum_tcb_gives_out_of_date(devnet, devnet_trust, snp_tee, vectors, production_trust, ts, now):
    claims = verify_evidence(snp_tee.quote(bytes(64)), devnet_trust, at=now)
    assert claims.tee_attributes["product"] == "Milan"
    assert claims.tee_attributes["tcb"] == {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
    at_floor = snap(claims, snp_min_tcb={"Milan": {"bootloader": 3, "snp": 8, "microcode": 115}})
    assert decide(claims, at_floor, app_req(claims, now)).allowed
    above = snap(claims, snp_min_tcb={"Milan": {"microcode": 116}, "Genoa": {"microcode": 1}})
    assert T.effective_tcb_status(claims, above) == TcbStatus.OUT_OF_DATE
    verdict = decide(claims, above, app_req(claims, now))
    assert verdict.reason == R.TCB_BELOW_FLOOR and "OUT_OF_DATE" in verdict.detail and "microcode 115 < minimum 116" in verdict.detail
    lenient = replace(above, platforms={p: PlatformRule(True, TcbStatus.OUT_OF_DATE) for p in Platform})
    assert decide(claims, lenient, app_req(claims, now)).allowed
    # a real Milan report (virtee): reported TCB bl 3 / tee 0 / snp 8 / ucode 115 per EXPECTED.md
    real = verify_evidence(Evidence(Platform.SEV_SNP, quote=vectors.bytes("virtee_sev/report_milan.bin"),
                                    vek=vectors.bytes("virtee_sev/vcek_milan.der")), production_trust,
                           at=ts("2025-06-01T00:00:00Z"))
    assert real.tee_attributes["tcb"] == {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
    assert T.effective_tcb_status(real, snap(real, snp_min_tcb={"Milan": {"snp": 9}})) == TcbStatus.OUT_OF_DATE
    assert T.effective_tcb_status(real, snap(real, snp_min_tcb={"Turin": {"snp": 99}})) == TcbStatus.UP_TO_DATE


@pytest.mark.parametrize("floor", [8, 200, 255])
def test_unknown_tcb_floor_refuses_by_name(devnet, devnet_trust, tdx_tee, now, floor):
    """Issue 9 item 7: setTcbFloor(TDX, 8) gave internal_error ('int' object has no attribute 'name')."""
    claims, _ = tdx_claims(devnet, devnet_trust, tdx_tee, now)
    s = snap(claims, platforms={p: PlatformRule(True, floor) for p in Platform})
    verdict = decide(claims, s, app_req(claims, now))
    assert verdict.reason == R.TCB_FLOOR_UNKNOWN and str(floor) in verdict.detail


def test_td15_mr_service_td_is_refused_by_name(devnet, devnet_trust, tdx_tee, now):
    """The issue's case: a TD 1.5 bound to a service TD verified as UpToDate and was allowed."""
    bound = mutate.td15_quote(tdx_tee, mr_service_td=b"\x05" * 48)
    with pytest.raises(ValueError, match="MR service TD"):
        dcap_qvl.verify_with_root_ca(bound, tdx_tee.collateral.qvl, devnet.intel_root_der, now)
    claims = verify_evidence(Evidence(Platform.TDX, quote=bound, collateral=tdx_tee.collateral.json_text.encode()),
                             devnet_trust, at=now)
    assert claims.details["body"] == "TD15" and claims.details["verified_by"] == "derot intel_dcap"
    assert claims.tee_attributes["mr_service_td"] == "05" * 48
    verdict = decide(claims, snap(claims), app_req(claims, now))
    assert verdict.reason == R.TD_MR_SERVICE_TD
    assert decide(claims, snap(claims, ["service_td"]), app_req(claims, now)).allowed
    free = mutate.td15_quote(tdx_tee)
    claims = verify_evidence(Evidence(Platform.TDX, quote=free, collateral=tdx_tee.collateral.json_text.encode()),
                             devnet_trust, at=now)
    assert claims.details["verified_by"] == "dcap-qvl" and decide(claims, snap(claims), app_req(claims, now)).allowed
