"""Malformed certificates are parse errors everywhere: a repeated extension (cryptography raises
``x509.DuplicateExtension``, not a ``ValueError``) in a VEK, a VEK bundle, a GPU chain or Intel collateral
gives EvidenceParseError; the CLI exits 2 with the reason; membership records a named verdict."""

from __future__ import annotations

import hashlib
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from derot.attest.devnet import DevnetTee
from derot.attest.errors import EvidenceParseError
from derot.attest.evidence import Evidence, GpuEvidence
from derot.attest.verify import verify_evidence
from derot.constants import Platform

from tests.attest import mutate


def duplicate_extension(der: bytes) -> bytes:
    """``der`` with its SubjectKeyIdentifier's OID written over the AuthorityKeyIdentifier's (2.5.29.35 ->
    2.5.29.14): two SKI extensions. The signature no longer matches, but parsing must fail first."""
    aki, ski = bytes.fromhex("0603551d23"), bytes.fromhex("0603551d0e")
    assert der.count(aki) == 1 and der.count(ski) == 1
    return der.replace(aki, ski)


def test_the_mutation_really_raises_duplicate_extension(snp_tee):
    cert = x509.load_der_x509_certificate(duplicate_extension(snp_tee.vek_der))
    with pytest.raises(x509.DuplicateExtension):
        cert.extensions  # noqa: B018


@pytest.fixture(scope="module")
def snp_tee(devnet):
    return DevnetTee(devnet, Platform.SEV_SNP)


@pytest.fixture(scope="module")
def now(devnet):
    return devnet.created + 3600


def test_vek_and_vek_bundle(devnet, devnet_trust, snp_tee, now):
    bad = duplicate_extension(snp_tee.vek_der)
    report = snp_tee.snp_report(bytes(64))
    with pytest.raises(EvidenceParseError, match="DuplicateExtension"):
        verify_evidence(Evidence(Platform.SEV_SNP, quote=report, vek=bad), devnet_trust, at=now)
    pem = x509.load_der_x509_certificate(bad).public_bytes(serialization.Encoding.PEM)
    ask = devnet._pki.certs["amd_ask"].public_bytes(serialization.Encoding.PEM)
    with pytest.raises(EvidenceParseError):
        verify_evidence(Evidence(Platform.SEV_SNP, quote=report, vek=pem + ask), devnet_trust, at=now)


def test_gpu_chain(devnet, devnet_trust, now):
    from derot.attest.devnet import DevnetGpu

    gpu = DevnetGpu(devnet)
    leaf, ca = x509.load_pem_x509_certificates(gpu.cert_chain)
    bad = x509.load_der_x509_certificate(duplicate_extension(leaf.public_bytes(serialization.Encoding.DER)))
    chain = bad.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    ev = Evidence(Platform.NVIDIA_GPU, gpus=(GpuEvidence(gpu.report(bytes(32)), chain),))
    with pytest.raises(EvidenceParseError):
        verify_evidence(ev, devnet_trust, at=now, gpu_nonce_override=bytes(32))


def test_intel_collateral_on_the_own_verifier_path(devnet, devnet_trust, now):
    tee = DevnetTee(devnet, Platform.TDX)
    quote = mutate.tdx_quote(tee, td_attributes=mutate.attributes(clear=1 << 28))  # own verifier path

    def poison(d):
        first, rest = d["tcb_info_issuer_chain"].split("-----END CERTIFICATE-----\n", 1)
        cert = x509.load_pem_x509_certificate((first + "-----END CERTIFICATE-----\n").encode())
        bad = x509.load_der_x509_certificate(duplicate_extension(cert.public_bytes(serialization.Encoding.DER)))
        d["tcb_info_issuer_chain"] = bad.public_bytes(serialization.Encoding.PEM).decode() + rest

    coll = mutate.tdx_collateral(devnet, tee, doc=poison)
    with pytest.raises(EvidenceParseError):
        verify_evidence(Evidence(Platform.TDX, quote=quote, collateral=coll.json_text.encode()), devnet_trust, at=now)


def test_cli_exits_2_with_the_reason(devnet_dir, devnet, snp_tee, now, tmp_path, capsys):
    import datetime

    from derot.cli.main import main

    (tmp_path / "report.bin").write_bytes(snp_tee.snp_report(bytes(64)))
    (tmp_path / "vek.der").write_bytes(duplicate_extension(snp_tee.vek_der))
    at = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    code = main(["attest", "verify", str(tmp_path / "report.bin"), "--vek", str(tmp_path / "vek.der"),
                 "--devnet", str(devnet_dir), "--at", at, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 2 and out == {"verified": False, "reason": "evidence_malformed", "error": out["error"]}


def test_membership_records_a_named_verdict(devnet_trust, snp_tee, now):
    from derot.service.membership import MembershipRefused, verify_member_evidence

    blob = Evidence(Platform.SEV_SNP, quote=snp_tee.snp_report(bytes(64)), vek=duplicate_extension(snp_tee.vek_der)).encode()
    with pytest.raises(MembershipRefused) as exc:
        verify_member_evidence(blob, registered_hash=hashlib.sha256(blob).digest(), trust=devnet_trust, now=now)
    assert exc.value.reason == "evidence_malformed"
