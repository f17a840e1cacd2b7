"""Azure CVM evidence (SEV-SNP / TDX behind the paravisor's vTPM): the real trustee vectors verify to the
outcomes trustee_azure_vtpm/SOURCE.txt and EXPECTED.md record, and tampering with each bound piece is refused
by name (AK, TPM quote signature, a PCR, the nonce, the HCL report)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import time
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from derot.attest import azure, tpm
from derot.attest.binding import RequestBinding
from derot.attest.devnet_azure import DevnetAzureVm
from derot.attest.errors import CollateralUnavailable, EvidenceParseError, TcbMismatch, SignatureInvalid
from derot.attest.intel_quote import parse_quote
from derot.attest.policy import PolicyEngine, PolicyRequest, PolicyReason
from derot.attest.snapshot import AppRecord, GovernanceSnapshot, PlatformRule
from derot.attest.verify import verify_evidence
from derot.constants import Platform, TcbStatus

D = "trustee_azure_vtpm/"
V2_NONCE = bytes.fromhex("982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9aa398f647caa2338748cd0fd9f5f819ef")


@pytest.fixture(scope="module")
def at(ts):
    return ts("2025-02-01T00:00:00Z")  # inside both VCEKs' validity (2025-01-28 .. 2032-01-28)


def _load(vectors, name):
    return azure.from_trustee_json(vectors.bytes(D + name))


def _flip(data: bytes, i: int, mask: int = 1) -> bytes:
    out = bytearray(data)
    out[i] ^= mask
    return bytes(out)


# --------------------------------------------------------------------------- the vectors verify


@pytest.mark.parametrize("name, nonce, pcr0, user_bound", [
    ("az-snp-vtpm/evidence-v1.json", b"challenge",
     "e15c44796beabf46abcec7c57e590942041e47497e4ec27571c8b7664f48dced", False),
    ("az-snp-vtpm/evidence-v2.json", V2_NONCE,
     "84275b2f4312cd4fc6cbe6b152ad3c3683e513d9f1e23c34fca160c8cca7a6a7", True),
])
def test_snp_vectors_verify(vectors, production_trust, at, name, nonce, pcr0, user_bound):
    ev = _load(vectors, name)
    assert ev.platform == Platform.AZURE_SNP and ev.hcl_user_data_bound == user_bound
    claims = verify_evidence(ev, production_trust, at=at)
    assert claims.platform == Platform.AZURE_SNP
    assert claims.details["tpm_nonce"] == nonce
    assert claims.report_data == nonce.ljust(64, b"\0")
    assert claims.measurements["PCR00"].hex() == pcr0
    assert len([k for k in claims.measurements if k.startswith("PCR")]) == 24
    assert claims.details["product"] == "Milan" and claims.details["vmpl"] == 0
    assert claims.details["reported_tcb"]["snp"] == 24 and claims.details["reported_tcb"]["microcode"] == 219
    assert claims.tcb_status == TcbStatus.UP_TO_DATE and claims.root == "production"
    # the hardware report binds the runtime data (SHA-256(var_data) == report_data[0:32])
    hcl = azure.parse_hcl_report(ev.quote)
    assert claims.details["hardware_report_data"][:32] == hashlib.sha256(hcl.runtime_data).digest()
    # the measurement covers the paravisor and the identity PCRs, not the per-instance ones
    pcr15 = dict(claims.measurements)
    from derot.attest.claims import measurement_digest
    pcr15["PCR15"] = b"\x99" * 32
    pcr10 = dict(claims.measurements, PCR10=b"\x99" * 32)
    assert measurement_digest(Platform.AZURE_SNP, pcr15) == claims.measurement_digest
    assert measurement_digest(Platform.AZURE_SNP, pcr10) == claims.measurement_digest
    pcr4 = dict(claims.measurements, PCR04=b"\x99" * 32)
    assert measurement_digest(Platform.AZURE_SNP, pcr4) != claims.measurement_digest
    hw = dict(claims.measurements, MEASUREMENT=b"\x99" * 48)
    assert measurement_digest(Platform.AZURE_SNP, hw) != claims.measurement_digest


def test_snp_v2_expected_nonce(vectors, production_trust, at):
    """trustee: evaluate(v2, report_data) is OK; 0x123abc is refused (user-data / nonce mismatch)."""
    ev = _load(vectors, "az-snp-vtpm/evidence-v2.json")
    hw = azure.snp_hardware(ev.vek, production_trust.amd, at)
    assert azure.verify(ev, hw, expected_nonce=V2_NONCE).details["hcl_user_data"][:48] == V2_NONCE
    with pytest.raises(azure.TpmNonceMismatch) as e:
        azure.verify(ev, hw, expected_nonce=bytes.fromhex("123abc"))
    assert e.value.reason == "tpm_nonce_mismatch"


def test_tdx_vector_binds(vectors):
    """az-tdx-vtpm: the TD quote's report_data binds the HCL runtime data, whose AK signs the TPM quote."""
    ev = _load(vectors, "az-tdx-vtpm/evidence-v1.json")
    assert ev.platform == Platform.AZURE_TDX
    assert ev.quote == vectors.bytes(D + "az-tdx-vtpm/hcl-report.bin")
    td = parse_quote(ev.td_quote)
    assert td.body.report_data[:32].hex().startswith("9734504f")
    hcl = azure.parse_hcl_report(ev.quote)
    assert hcl.report_type == 4
    facts = azure.verify_vtpm(hcl, td.body.report_data, ev.tpm_quote, ev.tpm_signature, ev.tpm_pcrs,
                              expected_nonce=b"challenge")
    assert facts.pcrs[0].hex() == "782b20b10f55cc46e2142cc2145d548698073e5beb82752c8d7f9279f0d8a273"
    # trustee: hcl-report.bin byte 0x0880 += 1 -> the TD quote's report_data no longer binds it
    tampered = azure.parse_hcl_report(_flip(ev.quote, 0x0880))
    with pytest.raises(azure.AkNotBound):
        azure.verify_vtpm(tampered, td.body.report_data, ev.tpm_quote, ev.tpm_signature, ev.tpm_pcrs)


def test_tdx_vector_needs_collateral(vectors, production_trust, ts):
    """The vectors carry no Intel collateral for FMSPC 00806f050000: verification says so by name."""
    ev = _load(vectors, "az-tdx-vtpm/evidence-v1.json")
    with pytest.raises(CollateralUnavailable) as e:
        verify_evidence(ev, production_trust, at=ts("2025-02-01T00:00:00Z"))
    assert "00806f050000" in str(e.value)


def test_legacy_quote_json_matches_bincode(vectors):
    """quote.bin (legacy bincode) holds exactly tpm-quote-v1.json (SOURCE.txt)."""
    for folder in ("az-snp-vtpm", "az-tdx-vtpm"):
        doc = json.loads(vectors.text(D + folder + "/tpm-quote-v1.json"))
        raw = vectors.bytes(D + folder + "/quote.bin")
        n = int.from_bytes(raw[:8], "little")
        sig, raw = raw[8:8 + n], raw[8 + n:]
        n = int.from_bytes(raw[:8], "little")
        msg, raw = raw[8:8 + n], raw[8 + n:]
        count = int.from_bytes(raw[:8], "little")
        assert len(raw) == 8 + 32 * count  # fixed 32-byte arrays
        pcrs = [raw[8 + 32 * i: 8 + 32 * (i + 1)] for i in range(count)]
        assert sig.hex() == doc["signature"] and msg.hex() == doc["message"]
        assert [p.hex() for p in pcrs] == doc["pcrs"]
        attest = tpm.parse_quote_attest(msg)
        assert attest.extra_data == b"challenge"
        tpm.check_pcrs(attest, tuple(pcrs))


def test_legacy_snp_quote_is_not_signed_by_these_aks(vectors):
    """EXPECTED.md: az-snp-vtpm/tpm-quote-v1.json verifies under no AK in this folder."""
    doc = json.loads(vectors.text(D + "az-snp-vtpm/tpm-quote-v1.json"))
    ev = replace(_load(vectors, "az-snp-vtpm/evidence-v1.json"), tpm_quote=bytes.fromhex(doc["message"]),
                 tpm_signature=bytes.fromhex(doc["signature"]), tpm_pcrs=tuple(bytes.fromhex(p) for p in doc["pcrs"]))
    hcl = azure.parse_hcl_report(ev.quote)
    rd = hcl.hardware_report[0x50:0x90]
    with pytest.raises(tpm.TpmSignatureInvalid):
        azure.verify_vtpm(hcl, rd, ev.tpm_quote, ev.tpm_signature, ev.tpm_pcrs)
    msg = tpm.parse_quote_attest(vectors.bytes(D + "az-snp-vtpm/tpm-quote.msg"))
    assert msg.extra_data == b"challenge"
    assert [(s.hash_alg, s.pcrs) for s in msg.selections] == [(tpm.ALG_SHA256, (0, 1, 2, 3, 4, 5, 6, 7, 14))]


# --------------------------------------------------------------------------- tampering, refused by name


def _refused(ev, trust, at, exc_type, reason):
    with pytest.raises(exc_type) as e:
        verify_evidence(ev, trust, at=at)
    assert e.value.reason == reason, e.value
    return e.value


def test_tamper_quote_signature(vectors, production_trust, at):
    ev = _load(vectors, "az-snp-vtpm/evidence-v1.json")
    _refused(replace(ev, tpm_signature=_flip(ev.tpm_signature, 0)), production_trust, at,
             tpm.TpmSignatureInvalid, "tpm_quote_signature_invalid")
    # a changed nonce inside the signed message breaks the signature too
    nonce_at = ev.tpm_quote.index(b"challenge")
    _refused(replace(ev, tpm_quote=_flip(ev.tpm_quote, nonce_at)), production_trust, at,
             tpm.TpmSignatureInvalid, "tpm_quote_signature_invalid")


def test_tamper_pcr(vectors, production_trust, at):
    ev = _load(vectors, "az-snp-vtpm/evidence-v1.json")
    rng = random.Random(os.environ.get("SEED", "azure-pcr"))
    i = rng.randrange(24)
    print("tampered PCR", i)
    pcrs = list(ev.tpm_pcrs)
    pcrs[i] = _flip(pcrs[i], 0)
    _refused(replace(ev, tpm_pcrs=tuple(pcrs)), production_trust, at, tpm.PcrDigestMismatch, "pcr_digest_mismatch")
    _refused(replace(ev, tpm_pcrs=ev.tpm_pcrs[:23]), production_trust, at, tpm.PcrDigestMismatch,
             "pcr_digest_mismatch")


def test_tamper_nonce(vectors, production_trust, at):
    ev = _load(vectors, "az-snp-vtpm/evidence-v1.json")
    hw = azure.snp_hardware(ev.vek, production_trust.amd, at)
    azure.verify(ev, hw, expected_nonce=b"challenge")
    with pytest.raises(azure.TpmNonceMismatch):
        azure.verify(ev, hw, expected_nonce=b"challenge"[::-1])
    # evidence that claims its HCL user-data carries the nonce, when it does not
    _refused(replace(ev, hcl_user_data_bound=True), production_trust, at, azure.HclUserDataMismatch,
             "hcl_user_data_mismatch")


def test_tamper_ak(vectors, production_trust, at):
    """Swapping the AK for the attacker's own key (and re-signing the quote with it) is refused."""
    ev = _load(vectors, "az-snp-vtpm/evidence-v1.json")
    _refused(replace(ev, quote=_flip(ev.quote, 0x0540)), production_trust, at, azure.AkNotBound, "ak_not_bound")
    hcl = azure.parse_hcl_report(ev.quote)
    doc = json.loads(hcl.runtime_data)
    mine = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = mine.public_key().public_numbers().n
    doc["keys"][0]["n"] = base64.urlsafe_b64encode(n.to_bytes(256, "big")).rstrip(b"=").decode()
    runtime = json.dumps(doc, separators=(",", ":")).encode().ljust(len(hcl.runtime_data), b" ")
    assert len(runtime) == len(hcl.runtime_data)
    forged = ev.quote[:azure.VAR_DATA_OFFSET] + runtime + ev.quote[azure.VAR_DATA_OFFSET + len(runtime):]
    sig = mine.sign(ev.tpm_quote, padding.PKCS1v15(), hashes.SHA256())
    _refused(replace(ev, quote=forged, tpm_signature=sig), production_trust, at, azure.AkNotBound, "ak_not_bound")
    # the untampered AK still rejects the forged signature
    _refused(replace(ev, tpm_signature=sig), production_trust, at, tpm.TpmSignatureInvalid,
             "tpm_quote_signature_invalid")


def test_tamper_hcl_report(vectors, production_trust, at):
    ev = _load(vectors, "az-snp-vtpm/evidence-v1.json")
    # report type SNP (2) -> TDX (4): the HCL report is not the evidence kind's
    bad_type = bytearray(ev.quote)
    bad_type[azure.IGVM_OFFSET + 8] = 4
    _refused(replace(ev, quote=bytes(bad_type)), production_trust, at, azure.HclReportInvalid, "hcl_report_invalid")
    _refused(replace(ev, platform=Platform.AZURE_TDX), production_trust, at, azure.HclReportInvalid,
             "hcl_report_invalid")
    # trustee: byte 0x01A6 := 0 (reported_tcb.snp) -> the SNP report no longer verifies
    snp = bytearray(ev.quote)
    snp[0x01A6] = 0
    with pytest.raises((SignatureInvalid, TcbMismatch)):
        verify_evidence(replace(ev, quote=bytes(snp)), production_trust, at=at)
    # trustee: byte 0x06E0 += 1 (inside the runtime data) -> not bound
    _refused(replace(ev, quote=_flip(ev.quote, 0x06E0)), production_trust, at, azure.AkNotBound, "ak_not_bound")
    with pytest.raises(EvidenceParseError):
        verify_evidence(replace(ev, quote=b"XCLA" + ev.quote[4:]), production_trust, at=at)


def test_hcl_parser_truncation_and_garbage(vectors):
    raw = vectors.bytes(D + "az-snp-vtpm/evidence-v1.json")
    hcl = _load(vectors, "az-snp-vtpm/evidence-v1.json").quote
    seed = int.from_bytes(hashlib.sha256(raw).digest()[:4], "big")
    print("seed", seed)
    rng = random.Random(seed)
    for cut in [0, 4, 0x20, 0x4C0, 0x4D3, 0x4D4, 0x4D5, len(hcl) - 1500]:
        with pytest.raises(EvidenceParseError):
            azure.parse_hcl_report(hcl[:cut])
    for _ in range(200):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        with pytest.raises(EvidenceParseError):
            tpm.parse_quote_attest(blob)
    with pytest.raises(EvidenceParseError):
        azure.from_trustee_json(b"[" * 100000)
    with pytest.raises(EvidenceParseError):
        azure.from_trustee_json(b'{"tpm_quote": {"pcrs": 5}}')


# --------------------------------------------------------------------------- devnet end to end, and policy


@pytest.mark.parametrize("platform", [Platform.AZURE_SNP, Platform.AZURE_TDX])
def test_devnet_azure_and_policy(devnet, devnet_trust, platform):
    vm = DevnetAzureVm(devnet, platform, pcrs={4: b"\x04" * 32, 15: os.urandom(32)})
    app_id = b"\xaa" * 32
    now = int(time.time())
    binding = RequestBinding(b"net", app_id, 1, b"", b"tpk", b"subject", now, os.urandom(16))
    claims = verify_evidence(vm.evidence(binding.report_data()), devnet_trust)
    assert claims.platform == platform and claims.report_data == binding.report_data()
    # the same app on another instance (another PCR15, another AK) has the same measurement
    other = DevnetAzureVm(devnet, platform, pcrs={4: b"\x04" * 32, 15: os.urandom(32)})
    assert verify_evidence(other.evidence(binding.report_data()), devnet_trust).measurement_digest \
        == claims.measurement_digest
    snapshot = GovernanceSnapshot(
        chain_id=1, registry="0x" + "22" * 20, block_number=1,
        platforms={platform: PlatformRule(True, TcbStatus.UP_TO_DATE)},
        apps={app_id: AppRecord(app_id=app_id, owner="0x" + "11" * 20, key_version=1,
                                measurements=frozenset({(platform, claims.measurement_digest)}))})
    engine = PolicyEngine.default()
    ok = engine.decide(claims, snapshot, PolicyRequest("app", now=now, app_id=app_id, binding=binding))
    assert ok.allowed, ok
    stale = replace(binding, nonce=os.urandom(16))
    bad = engine.decide(claims, snapshot, PolicyRequest("app", now=now, app_id=app_id, binding=stale))
    assert bad.reason == PolicyReason.REPORT_DATA_MISMATCH


def test_azure_gpu_tee_pair(devnet, devnet_trust):
    """An Azure GPU CVM (vTPM-attested CPU + H100s): each GPU's nonce is bound to the TPM-quoted report_data."""
    from derot.attest.binding import gpu_nonce
    from derot.attest.devnet import DevnetGpu
    from derot.attest.errors import NonceMismatch as GpuNonceMismatch

    vm = DevnetAzureVm(devnet, Platform.AZURE_SNP)
    gpus = [DevnetGpu(devnet), DevnetGpu(devnet)]
    rd = os.urandom(64)
    ev = replace(vm.evidence(rd), gpus=tuple(g.evidence_for(rd) for g in gpus))
    claims = verify_evidence(ev, devnet_trust)
    assert [g.details["nonce"] for g in claims.gpus] == [gpu_nonce(rd)] * 2
    assert {g.hardware_ids.gpu_fwid for g in claims.gpus} == {g.fwid for g in gpus}
    stale = replace(ev, gpus=(gpus[0].evidence_for(rd), gpus[1].evidence_for(os.urandom(64))))
    with pytest.raises(GpuNonceMismatch):
        verify_evidence(stale, devnet_trust)


def test_quote_must_cover_every_pcr_and_be_a_quote(vectors):
    """A quote over fewer PCRs (the legacy {0-7,14} selection) cannot vouch for the identity PCRs; a TPMS_ATTEST
    of another type (e.g. TPM2_Certify's 0x8017) is not a quote."""
    legacy = tpm.parse_quote_attest(vectors.bytes(D + "az-snp-vtpm/tpm-quote.msg"))
    with pytest.raises(tpm.PcrDigestMismatch) as e:
        tpm.check_pcrs(legacy, tuple(bytes(32) for _ in range(24)))
    assert "0-23" in str(e.value)
    ev = _load(vectors, "az-snp-vtpm/evidence-v1.json")
    certify = ev.tpm_quote[:4] + bytes.fromhex("8017") + ev.tpm_quote[6:]
    with pytest.raises(EvidenceParseError):
        tpm.parse_quote_attest(certify)
    with pytest.raises(EvidenceParseError):
        tpm.parse_quote_attest(ev.tpm_quote + b"\x00")  # trailing bytes
