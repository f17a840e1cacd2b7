"""`derot gov state --members` logic: each member's registered evidence is checked and a revoked machine named."""

from __future__ import annotations

import hashlib

import pytest

from derot.attest.devnet import NODE_FMSPC, DevnetRoots, DevnetTee, devnet_measurement_digest, node_measurements
from derot.attest.evidence import Evidence
from derot.attest.snapshot import GovernanceSnapshot, PlatformRule
from derot.attest.trust import TrustConfig
from derot.attest.verify import verify_evidence
from derot.chain.state import RegistryState
from derot.chain.types import EpochPhase, EpochRecord, NodeRecord, NodeStatus
from derot.cli.gov_members import check_member_machines, describe
from derot.constants import Platform

OPS = ["0x" + f"{i:02x}" * 20 for i in (1, 2, 3)]


@pytest.fixture(scope="module")
def roots():
    return DevnetRoots.generate()


def test_revoked_member_machine_is_named_and_others_pass(roots):
    image = node_measurements(Platform.TDX)
    evidence = {op: DevnetTee(roots, Platform.TDX, image, fmspc=NODE_FMSPC).quote(bytes(64)).encode() for op in OPS}
    trust = TrustConfig.devnet(roots)
    ppid = verify_evidence(Evidence.decode(evidence[OPS[1]]), trust).hardware_ids.ppid
    nodes = {op: NodeRecord(op, NodeStatus.APPROVED, b"\x01" * 32, b"\x02" * 32, "public=a:1;peer=a:2", b"\x03" * 32,
                            hashlib.sha256(evidence[op]).digest()) for op in OPS}
    nodes[OPS[2]] = NodeRecord(OPS[2], NodeStatus.APPROVED, b"\x01" * 32, b"\x02" * 32, "public=a:1;peer=a:2",
                               b"\x03" * 32, b"\x00" * 32)  # registered another evidence
    snapshot = GovernanceSnapshot(chain_id=1, registry="0x" + "11" * 20, block_number=5,
                                  platforms={Platform.TDX: PlatformRule(True)}, revoked_ppids=frozenset({ppid}),
                                  node_measurements=frozenset({(Platform.TDX, devnet_measurement_digest(Platform.TDX, image))}))
    epoch = EpochRecord(1, EpochPhase.ACTIVE, 2, 0, 1, 2, None, bytes(32), tuple(OPS))
    state = RegistryState(snapshot=snapshot, nodes=nodes, epochs={1: epoch}, current_epoch=1)
    verdicts = check_member_machines(state, lambda node: evidence[node.operator], trust)
    assert [(v.index, v.status, v.reason) for v in verdicts] == [
        (1, "ok", "allowed"), (2, "revoked", "ppid_revoked"), (3, "unverified", "evidence_hash_mismatch")]
    assert ppid.hex() in describe(verdicts[1]) and "no shares" in describe(verdicts[1])

    def down(node):
        raise OSError("connection refused")

    assert {v.reason for v in check_member_machines(state, down, trust)} == {"evidence_unavailable"}
