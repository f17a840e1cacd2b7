"""Fixtures for the attestation tests: vector loaders, trust configurations and one shared devnet."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from derot.attest.collateral import Collateral, from_pcs_responses
from derot.attest.devnet import DevnetRoots
from derot.attest.trust import TrustConfig


def _ts(iso: str) -> int:
    """Unix seconds of an ISO 8601 UTC time."""
    dt = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return int(dt.timestamp())


class Vectors:
    def __init__(self, root: Path):
        self.root = root

    def bytes(self, rel: str) -> bytes:
        data = (self.root / rel).read_bytes()
        if rel.endswith((".hex", ".txt")) and "CertChain" not in rel:
            return bytes.fromhex(data.decode().strip())
        return data

    def text(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def collateral(self, rel: str) -> Collateral:
        return Collateral.from_json(self.text(rel))

    def go_tdx_collateral(self, tcb_info: str = "sample_tcbInfo_response") -> Collateral:
        d = "google_go_tdx_guest/"
        return from_pcs_responses(
            tcb_info_response=self.text(d + tcb_info),
            tcb_info_issuer_chain=self.text(d + "tcbinfo_issuer_chain.pem"),
            qe_identity_response=self.text(d + "sample_qeIdentity_response"),
            qe_identity_issuer_chain=self.text(d + "qeidentity_issuer_chain.pem"),
            pck_crl_der=self.bytes(d + "pckcrl"),
            pck_crl_issuer_chain=self.text(d + "pckcrl_issuer_chain.pem"),
            root_ca_crl_der=self.bytes(d + "rootcrl.der"),
        )


@pytest.fixture(scope="session")
def vectors(vectors_dir) -> Vectors:
    return Vectors(vectors_dir)


@pytest.fixture(scope="session")
def production_trust() -> TrustConfig:
    """Pinned production roots; no PCCS (collateral comes from the vectors)."""
    return TrustConfig.production_defaults(pccs_url=None)


@pytest.fixture(scope="session")
def devnet_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("devnet")
    DevnetRoots.generate(path)
    return path


@pytest.fixture(scope="session")
def devnet(devnet_dir) -> DevnetRoots:
    return DevnetRoots.load(devnet_dir)


@pytest.fixture(scope="session")
def devnet_trust(devnet) -> TrustConfig:
    return TrustConfig.devnet(devnet)


@pytest.fixture(scope="session")
def ts():
    """ISO 8601 (UTC) -> unix seconds."""
    return _ts
