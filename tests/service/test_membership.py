"""Committee membership evidence: a node's TEE evidence binds its keys, is the registered one, and passes
the node-membership policy; otherwise peers refuse to deal to it (the refusal names the reason)."""

import hashlib
import time

import pytest

from derot.attest.devnet import (
    NODE_FMSPC,
    DevnetRoots,
    DevnetTee,
    devnet_measurement_digest,
    image_registers,
    node_measurements,
)
from derot.attest.policy import PolicyEngine
from derot.attest.snapshot import GovernanceSnapshot, PlatformRule
from derot.attest.trust import TrustConfig
from derot.constants import Platform
from derot.service.membership import MembershipRefused, check_member_evidence, node_report_data

OPERATOR = "0x" + "ab" * 20
NETWORK = b"\x00" * 8 + b"\x11" * 20
KEYS = (b"\x01" * 32, b"\x02" * 32, b"\x03" * 32)


@pytest.fixture(scope="module")
def roots():
    return DevnetRoots.generate()


def _snapshot(*allowed, revoked_fmspcs=frozenset()):
    return GovernanceSnapshot(
        chain_id=1, registry=OPERATOR, block_number=10,
        platforms={Platform.TDX: PlatformRule(True), Platform.SEV_SNP: PlatformRule(True)},
        node_measurements=frozenset(allowed), revoked_fmspcs=revoked_fmspcs,
    )


def _check(roots, evidence: bytes, snapshot, *, registered=None, keys=KEYS):
    check_member_evidence(
        evidence, registered_hash=registered or hashlib.sha256(evidence).digest(),
        expected_report_data=node_report_data(NETWORK, OPERATOR, *keys), trust=TrustConfig.devnet(roots),
        policy=PolicyEngine.default(), snapshot=snapshot, now=int(time.time()),
    )


def test_node_evidence_passes_and_each_failure_is_named(roots):
    node_image = node_measurements(Platform.TDX)
    tee = DevnetTee(roots, Platform.TDX, node_image, fmspc=NODE_FMSPC)
    evidence = tee.quote(node_report_data(NETWORK, OPERATOR, *KEYS)).encode()
    allowed = (Platform.TDX, devnet_measurement_digest(Platform.TDX, node_image))
    _check(roots, evidence, _snapshot(allowed))

    cases = {
        "evidence_hash_mismatch": dict(snapshot=_snapshot(allowed), registered=b"\x00" * 32),
        "measurement_not_allowed": dict(snapshot=_snapshot()),
        "fmspc_revoked": dict(snapshot=_snapshot(allowed, revoked_fmspcs=frozenset({NODE_FMSPC}))),
        "report_data_mismatch": dict(snapshot=_snapshot(allowed), keys=(b"\x09" * 32, KEYS[1], KEYS[2])),
    }
    for reason, kwargs in cases.items():
        with pytest.raises(MembershipRefused) as info:
            _check(roots, evidence, **kwargs)
        assert info.value.reason == reason


def test_app_image_is_not_a_node_image(roots):
    app_image = image_registers(Platform.SEV_SNP, "some app")
    tee = DevnetTee(roots, Platform.SEV_SNP, app_image)
    evidence = tee.quote(node_report_data(NETWORK, OPERATOR, *KEYS)).encode()
    node_allowed = (Platform.SEV_SNP, devnet_measurement_digest(Platform.SEV_SNP, node_measurements(Platform.SEV_SNP)))
    with pytest.raises(MembershipRefused) as info:
        _check(roots, evidence, _snapshot(node_allowed))
    assert info.value.reason == "measurement_not_allowed"


def test_garbage_evidence_is_refused(roots):
    with pytest.raises(MembershipRefused) as info:
        _check(roots, b"\x01garbage", _snapshot())
    assert info.value.reason == "evidence_malformed"


def test_a_member_whose_own_machine_is_revoked_is_refused_by_name_and_its_peer_is_not(roots):
    """Issue 16: revoking one node's machine (its PPID) makes peers refuse to deal to that member at the next
    DKG/reshare, naming the PPID; a node on another machine of the same family (same FMSPC) still passes."""
    from derot.attest.verify import verify_evidence
    from derot.attest.evidence import Evidence

    node_image = node_measurements(Platform.TDX)
    allowed = (Platform.TDX, devnet_measurement_digest(Platform.TDX, node_image))
    machines = [DevnetTee(roots, Platform.TDX, node_image, fmspc=NODE_FMSPC) for _ in range(2)]
    evidence = [m.quote(node_report_data(NETWORK, OPERATOR, *KEYS)).encode() for m in machines]
    ppids = [verify_evidence(Evidence.decode(e), TrustConfig.devnet(roots)).hardware_ids.ppid for e in evidence]
    assert ppids[0] != ppids[1]
    snapshot = GovernanceSnapshot(
        chain_id=1, registry=OPERATOR, block_number=10, platforms={Platform.TDX: PlatformRule(True)},
        node_measurements=frozenset({allowed}), revoked_ppids=frozenset({ppids[0]}),
    )
    with pytest.raises(MembershipRefused) as info:
        _check(roots, evidence[0], snapshot)
    assert info.value.reason == "ppid_revoked" and ppids[0].hex() in info.value.detail
    _check(roots, evidence[1], snapshot)
