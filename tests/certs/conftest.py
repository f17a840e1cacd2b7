"""Fixtures for certificate tests: a random certificate factory and a matching registry view."""

from __future__ import annotations

import os

import pytest

from derot.attest.snapshot import AppRecord, GovernanceSnapshot, PlatformRule
from derot.certs import CertEpoch, Certificate, CertificateTrust, EpochPhase
from derot.constants import CERT_VERSION, Platform, TcbStatus
from derot.crypto.bls import G2, random_scalar

REGISTRY = "0x5FC8d32690cc91D4c39d9d3abcBD16989F875707"
CHAIN_ID = 31337
NOW = 1_750_000_000


def make_cert(**overrides) -> Certificate:
    fields = dict(
        version=CERT_VERSION,
        chain_id=CHAIN_ID,
        registry=REGISTRY,
        epoch=2,
        serial=os.urandom(32),
        app_id=b"\xaa" * 32,
        key_version=3,
        key_type=1,
        subject_key=os.urandom(33),
        platform=int(Platform.TDX),
        measurement=os.urandom(32),
        evidence_hash=os.urandom(32),
        tcb_status=int(TcbStatus.UP_TO_DATE),
        not_before=NOW - 60,
        not_after=NOW + 3600,
        policy_block=1234,
    )
    fields.update(overrides)
    return Certificate(**fields)


class World:
    """A hand-built registry view: epoch 1 retired (same key), 2 active, 3 pending, 4 with another key."""

    def __init__(self) -> None:
        self.secret = random_scalar()
        self.group_key_sig = G2.generator() * self.secret
        self.other_key = G2.generator() * random_scalar()
        self.snapshot = GovernanceSnapshot(
            chain_id=CHAIN_ID,
            registry=REGISTRY,
            block_number=100,
            platforms={
                Platform.TDX: PlatformRule(True, TcbStatus.SW_HARDENING_NEEDED),
                Platform.SEV_SNP: PlatformRule(False),
            },
            revoked_measurements=frozenset({b"\x66" * 32}),
            revoked_ppids=frozenset({b"\x77" * 16}),
            revoked_gpu_devices=frozenset({b"\x99" * 9}),
            apps={
                b"\xaa" * 32: AppRecord(app_id=b"\xaa" * 32, owner="0x" + "11" * 20, key_version=3),
                b"\xbb" * 32: AppRecord(app_id=b"\xbb" * 32, owner="0x" + "11" * 20, key_version=1, frozen=True),
            },
        )
        self.trust = CertificateTrust(
            epochs={
                1: CertEpoch(EpochPhase.RETIRED, self.group_key_sig),
                2: CertEpoch(EpochPhase.ACTIVE, self.group_key_sig),
                3: CertEpoch(EpochPhase.RESHARE),
                4: CertEpoch(EpochPhase.RETIRED, self.other_key),
                5: CertEpoch(EpochPhase.ABORTED),
            },
            revoked_serials=frozenset({b"\x51" * 32}),
            revoked_evidence_hashes=frozenset({b"\xe1" * 32}),
        )


@pytest.fixture
def world() -> World:
    return World()
