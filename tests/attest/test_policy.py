"""Policy: each rule alone has an allowing and a refusing case; the engine composes them.

Claims come from real verification of devnet evidence (and of a real debug SNP vector), not from
hand-made values, except where a rule needs a fact no evidence here carries.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from derot.attest import policy as P
from derot.attest.binding import RequestBinding, network_id
from derot.attest.devnet import DevnetGpu, DevnetTee
from derot.attest.replay import ReplayCache
from derot.attest.snapshot import AppRecord, GovernanceSnapshot, PlatformRule
from derot.attest.verify import verify_evidence
from derot.constants import Platform, TcbStatus

APP = hashlib.sha256(b"app").digest()
NET = network_id(31337, "0x" + "11" * 20)


def binding(ts: int, nonce: bytes = bytes(16)) -> RequestBinding:
    return RequestBinding(network=NET, app_id=APP, key_version=1, context=b"ctx", tpk=b"\x02" * 48,
                          subject_key=b"\x03" * 33, timestamp=ts, nonce=nonce)


@pytest.fixture(scope="module")
def now(devnet):
    return devnet.created + 5 * 86400


@pytest.fixture(scope="module")
def tdx(devnet, devnet_trust, now):
    tee = DevnetTee(devnet, Platform.TDX, {"MRTD": b"\x01" * 48})
    return verify_evidence(tee.quote(binding(now).report_data()), devnet_trust, at=now)


def snapshot(claims, **changes) -> GovernanceSnapshot:
    app = AppRecord(APP, "0xowner", 1, measurements=frozenset({(claims.platform, claims.measurement_digest)}))
    base = dict(chain_id=31337, registry="0x" + "11" * 20, block_number=10,
                platforms={p: PlatformRule(True, TcbStatus.UP_TO_DATE) for p in Platform}, apps={APP: app})
    base.update(changes)
    return GovernanceSnapshot(**base)


def request(now, **changes) -> P.PolicyRequest:
    base = dict(purpose="app", now=now, app_id=APP, binding=binding(now))
    base.update(changes)
    return P.PolicyRequest(**base)


def check(rule, claims, snap, req):
    verdict = rule.check(claims, snap, req)
    return P.ALLOW if verdict is None else verdict


def test_platform_enabled(tdx, now):
    rule = P.PlatformEnabled()
    assert check(rule, tdx, snapshot(tdx), request(now)).allowed
    off = snapshot(tdx, platforms={Platform.TDX: PlatformRule(False)})
    assert check(rule, tdx, off, request(now)).reason == P.PolicyReason.PLATFORM_DISABLED
    assert check(rule, tdx, snapshot(tdx, platforms={}), request(now)).reason == P.PolicyReason.PLATFORM_DISABLED


def test_tcb_floor(devnet, devnet_trust, tdx, now):
    rule = P.TcbAtLeastFloor()
    assert check(rule, tdx, snapshot(tdx), request(now)).allowed
    old = verify_evidence(DevnetTee(devnet, Platform.TDX, tee_tcb_svn=bytes([6, 1, 2]) + bytes(13)).quote(bytes(64)),
                          devnet_trust, at=now)
    assert old.tcb_status == TcbStatus.OUT_OF_DATE
    assert check(rule, old, snapshot(old), request(now)).reason == P.PolicyReason.TCB_BELOW_FLOOR
    lenient = snapshot(old, platforms={Platform.TDX: PlatformRule(True, TcbStatus.OUT_OF_DATE)})
    assert check(rule, old, lenient, request(now)).allowed


def test_measurement_allowed_for_app(devnet, devnet_trust, tdx, now):
    rule = P.MeasurementAllowed()
    assert check(rule, tdx, snapshot(tdx), request(now)).allowed
    other = verify_evidence(DevnetTee(devnet, Platform.TDX, {"MRTD": b"\x02" * 48}).quote(bytes(64)), devnet_trust, at=now)
    assert check(rule, other, snapshot(tdx), request(now)).reason == P.PolicyReason.MEASUREMENT_NOT_ALLOWED
    assert check(rule, tdx, snapshot(tdx, apps={}), request(now)).reason == P.PolicyReason.APP_UNKNOWN
    frozen = snapshot(tdx, apps={APP: replace(snapshot(tdx).apps[APP], frozen=True)})
    assert check(rule, tdx, frozen, request(now)).reason == P.PolicyReason.APP_FROZEN


def test_measurement_allowed_by_delegate(tdx, now):
    class Oracle:
        def __init__(self, answer):
            self.answer, self.asked = answer, []

        def is_app_allowed(self, app, platform, measurement):
            self.asked.append((platform, measurement))
            return self.answer

    snap = snapshot(tdx, apps={APP: AppRecord(APP, "0xowner", 1, delegate="0xdelegate")})
    yes = Oracle(True)
    assert check(P.MeasurementAllowed(yes), tdx, snap, request(now)).allowed
    assert yes.asked == [(Platform.TDX, tdx.measurement_digest)]
    assert check(P.MeasurementAllowed(Oracle(False)), tdx, snap, request(now)).reason == P.PolicyReason.MEASUREMENT_NOT_ALLOWED
    assert check(P.MeasurementAllowed(None), tdx, snap, request(now)).reason == P.PolicyReason.DELEGATE_UNAVAILABLE


def test_measurement_allowed_for_node_membership(tdx, now):
    rule = P.MeasurementAllowed()
    node_req = P.PolicyRequest("node", now, expected_report_data=tdx.report_data)
    member = snapshot(tdx, node_measurements=frozenset({(Platform.TDX, tdx.measurement_digest)}))
    assert check(rule, tdx, member, node_req).allowed
    assert check(rule, tdx, snapshot(tdx), node_req).reason == P.PolicyReason.MEASUREMENT_NOT_ALLOWED


def test_debug(devnet, devnet_trust, vectors, production_trust, tdx, now, ts):
    rule = P.DebugAllowed()
    assert check(rule, tdx, snapshot(tdx), request(now)).allowed
    dbg = verify_evidence(DevnetTee(devnet, Platform.TDX, debug=True).quote(bytes(64)), devnet_trust, at=now)
    assert check(rule, dbg, snapshot(dbg), request(now)).reason == P.PolicyReason.DEBUG_NOT_ALLOWED
    allow = snapshot(dbg, apps={APP: replace(snapshot(dbg).apps[APP], allow_debug=True)})
    assert check(rule, dbg, allow, request(now)).allowed
    node_req = P.PolicyRequest("node", now, expected_report_data=dbg.report_data)
    assert check(rule, dbg, allow, node_req).reason == P.PolicyReason.DEBUG_NOT_ALLOWED  # never for nodes
    from derot.attest.evidence import Evidence

    real_debug = verify_evidence(  # go-sev-guest's report has the DEBUG policy bit set
        Evidence(Platform.SEV_SNP, quote=vectors.bytes("google_go_sev_guest/attestation.bin"),
                 vek=vectors.bytes("google_go_sev_guest/vcek_milan.der")), production_trust, at=ts("2025-01-01T00:00:00Z"))
    assert check(rule, real_debug, snapshot(real_debug), request(now)).reason == P.PolicyReason.DEBUG_NOT_ALLOWED


def test_not_revoked(devnet, devnet_trust, tdx, now):
    rule = P.NotRevoked()
    assert check(rule, tdx, snapshot(tdx), request(now)).allowed
    assert check(rule, tdx, snapshot(tdx, revoked_fmspcs=frozenset({tdx.hardware_ids.fmspc})),
                 request(now)).reason == P.PolicyReason.FMSPC_REVOKED
    assert check(rule, tdx, snapshot(tdx, revoked_measurements=frozenset({tdx.measurement_digest})),
                 request(now)).reason == P.PolicyReason.MEASUREMENT_REVOKED
    snp = verify_evidence(DevnetTee(devnet, Platform.SEV_SNP).quote(bytes(64)), devnet_trust, at=now)
    revoked_fmspc = snapshot(snp, revoked_fmspcs=frozenset({tdx.hardware_ids.fmspc}))
    assert check(rule, snp, revoked_fmspc, request(now)).allowed  # revoking TDX's FMSPC leaves SNP working
    assert check(rule, snp, snapshot(snp, revoked_chip_ids=frozenset({snp.hardware_ids.chip_id})),
                 request(now)).reason == P.PolicyReason.CHIP_REVOKED
    gpu = DevnetGpu(devnet)
    pair = verify_evidence(replace(DevnetTee(devnet, Platform.TDX).quote(bytes(64)), gpus=(gpu.evidence_for(bytes(64)),)),
                           devnet_trust, at=now)
    assert check(rule, pair, snapshot(pair, revoked_gpu_fwids=frozenset({gpu.fwid})),
                 request(now)).reason == P.PolicyReason.GPU_FWID_REVOKED


def test_report_data_binds(tdx, now):
    rule = P.ReportDataBinds()
    assert check(rule, tdx, snapshot(tdx), request(now)).allowed
    other = request(now, binding=binding(now, nonce=b"\x01" * 16))
    assert check(rule, tdx, snapshot(tdx), other).reason == P.PolicyReason.REPORT_DATA_MISMATCH
    assert check(rule, tdx, snapshot(tdx), request(now, binding=None)).reason == P.PolicyReason.BINDING_MISSING
    other_app = request(now, app_id=b"\x09" * 32)
    assert check(rule, tdx, snapshot(tdx), other_app).reason == P.PolicyReason.REPORT_DATA_MISMATCH


def test_request_fresh(tdx, now):
    rule = P.RequestFresh(max_age=300, max_skew=30)
    for ts in (now, now - 300, now + 30):
        assert check(rule, tdx, snapshot(tdx), request(now, binding=binding(ts))).allowed
    for ts in (now - 301, now + 31):
        assert check(rule, tdx, snapshot(tdx), request(now, binding=binding(ts))).reason == P.PolicyReason.REQUEST_STALE


def test_evidence_window(tdx, now):
    rule = P.EvidenceWindow()
    assert check(rule, tdx, snapshot(tdx), request(tdx.not_after)).allowed
    assert check(rule, tdx, snapshot(tdx), request(tdx.not_after + 1)).reason == P.PolicyReason.EVIDENCE_OUTSIDE_VALIDITY
    assert check(rule, tdx, snapshot(tdx), request(tdx.not_before - 1)).reason == P.PolicyReason.EVIDENCE_OUTSIDE_VALIDITY


def test_not_replayed(tdx, now):
    rule = P.NotReplayed(ReplayCache(), max_age=300, max_skew=30)
    assert check(rule, tdx, snapshot(tdx), request(now)).allowed
    assert check(rule, tdx, snapshot(tdx), request(now)).reason == P.PolicyReason.REPLAYED
    # after the window the entry is gone (and RequestFresh refuses the request anyway)
    assert check(rule, tdx, snapshot(tdx), request(now + 331)).allowed


def test_replay_cache_bounds():
    cache = ReplayCache(max_entries=3)
    assert all(cache.add_if_absent(bytes([i]), 100 + i, 0) for i in range(5))
    assert len(cache) == 3
    assert not cache.add_if_absent(bytes([4]), 200, 0)
    assert cache.add_if_absent(bytes([4]), 200, 105)  # expired at 104


def test_engine_composes_and_names_the_first_refusal(devnet, devnet_trust, tdx, now):
    engine = P.PolicyEngine.default(replay=ReplayCache())
    snap = snapshot(tdx)
    assert engine.decide(tdx, snap, request(now)) == P.ALLOW
    assert engine.decide(tdx, snap, request(now)).reason == P.PolicyReason.REPLAYED
    refused = engine.decide(tdx, snapshot(tdx, revoked_fmspcs=frozenset({tdx.hardware_ids.fmspc})), request(now))
    assert (refused.allowed, refused.code) == (False, "fmspc_revoked") and "revoked" in refused.detail
    # a refused request does not use up its nonce
    fresh_engine = P.PolicyEngine.default(replay=ReplayCache())
    assert fresh_engine.decide(tdx, snapshot(tdx, platforms={}), request(now)).reason == P.PolicyReason.PLATFORM_DISABLED
    assert fresh_engine.decide(tdx, snap, request(now)).allowed


def test_gpu_claims_need_their_own_allow_listing(devnet, devnet_trust, now):
    rd = binding(now).report_data()
    gpu = DevnetGpu(devnet)
    pair = verify_evidence(replace(DevnetTee(devnet, Platform.TDX).quote(rd), gpus=(gpu.evidence_for(rd),)),
                           devnet_trust, at=now)
    engine = P.PolicyEngine.default()
    cpu_only = snapshot(pair)
    assert engine.decide(pair, cpu_only, request(now)).reason == P.PolicyReason.MEASUREMENT_NOT_ALLOWED
    both = frozenset({(Platform.TDX, pair.measurement_digest), (Platform.NVIDIA_GPU, pair.gpus[0].measurement_digest)})
    snap = snapshot(pair, apps={APP: AppRecord(APP, "0xowner", 1, measurements=both)})
    assert engine.decide(pair, snap, request(now)).allowed
    no_gpu_platform = snapshot(pair, apps=snap.apps, platforms={Platform.TDX: PlatformRule(True)})
    assert engine.decide(pair, no_gpu_platform, request(now)).reason == P.PolicyReason.PLATFORM_DISABLED
