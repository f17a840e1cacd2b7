"""Per-machine revocation at the policy level, on real evidence verified under the production roots at its
own time (tests/vectors, EXPECTED.md): with a machine's identity revoked, its evidence is refused by name,
and another machine of the same family still passes.

Also the Intel attack of issue 13: a quote that embeds another machine's PCK chain while the collateral
carries the original one must be refused, never reported with the other machine's PPID.
"""

from __future__ import annotations

import json
import struct

import pytest

from derot.attest import identity, policy as P
from derot.attest.collateral import Collateral
from derot.attest.errors import PckChainMismatch
from derot.attest.evidence import Evidence, GpuEvidence
from derot.attest.intel import check_chain_signatures, pck_info
from derot.attest.intel_quote import parse_quote
from derot.attest.snapshot import GovernanceSnapshot, PlatformRule
from derot.attest.verify import verify_evidence
from derot.constants import Platform, RevocationKind, TcbStatus

PH = "phala_dcap_qvl/"
RULE = P.NotRevoked()


def snap(**revoked) -> GovernanceSnapshot:
    return GovernanceSnapshot(chain_id=1, registry="0x" + "11" * 20, block_number=1,
                              platforms={p: PlatformRule(True, TcbStatus.OUT_OF_DATE) for p in Platform}, **revoked)


def decide(claims, snapshot):
    """NotRevoked alone and the whole default engine must agree on a revocation refusal."""
    req = P.PolicyRequest(purpose="node", now=claims.not_before, expected_report_data=claims.report_data)
    verdict = RULE.check(claims, snapshot, req)
    return P.ALLOW if verdict is None else verdict


def _intel(vectors, ts, quote, collateral, at):
    raw = vectors.bytes(PH + quote)
    ev = Evidence(Platform.TDX, quote=raw, collateral=vectors.text(PH + collateral).encode())
    claims = verify_evidence(ev, _trust(), at=ts(at))
    assert claims.root == "production"
    return claims


_TRUST = []


def _trust():
    from derot.attest.trust import TrustConfig

    if not _TRUST:
        _TRUST.append(TrustConfig.production_defaults(pccs_url=None))
    return _TRUST[0]


@pytest.fixture(scope="module")
def tdx_a(vectors, ts):
    return _intel(vectors, ts, "tdx_quote", "tdx_quote_collateral.json", "2025-07-01T00:00:00Z")


@pytest.fixture(scope="module")
def tdx_b(vectors, ts):
    return _intel(vectors, ts, "near_quote.bin", "near_quote_collateral.json", "2025-09-15T00:00:00Z")


def test_intel_identities_come_from_the_verified_pck(tdx_a, vectors):
    q = parse_quote(vectors.bytes(PH + "tdx_quote"))
    from cryptography import x509

    leaf = x509.load_pem_x509_certificates(q.pck_chain_pem.rstrip(b"\0"))[0]
    ids = {m.kind: m.ident for m in identity.identities(tdx_a)}
    assert ids[RevocationKind.PPID].hex() == "811dca2a26b952e85bb6448b097ba4fd"
    assert ids[RevocationKind.FMSPC].hex() == "b0c06f000000"
    assert ids[RevocationKind.PCK_CERT] == identity.pck_id(leaf.issuer.public_bytes(), leaf.serial_number)
    assert RevocationKind.CHIP_ID not in ids


def test_intel_ppid_revoked_by_name(tdx_a, tdx_b, vectors):
    ppid = tdx_a.hardware_ids.ppid
    verdict = decide(tdx_a, snap(revoked_ppids=frozenset({ppid})))
    assert verdict.reason is P.PolicyReason.PPID_REVOKED and ppid.hex() in verdict.detail
    # the other real TDX machine passes under the same revocation set
    assert decide(tdx_b, snap(revoked_ppids=frozenset({ppid}))).allowed
    # and revoking the other machine of tdx_a's own family (same FMSPC b0c06f, another PPID) leaves it alone
    # (that quote's TCB matches no level of the collateral, so it cannot pass itself; its PPID is read from a
    # PCK chain signed up to the pinned Intel root)
    sibling = parse_quote(vectors.bytes(PH + "tdx-quote.bin"))
    check_chain_signatures(sibling)
    other = pck_info(sibling)
    from derot.attest.trust import production_intel_root

    assert other.root_der == production_intel_root()
    assert other.fmspc == tdx_a.hardware_ids.fmspc and other.ppid != ppid
    assert decide(tdx_a, snap(revoked_ppids=frozenset({other.ppid}), revoked_pck_certs=frozenset({other.pck_cert}))).allowed


def test_intel_pck_certificate_revoked_by_name(tdx_a, tdx_b):
    pck = tdx_a.hardware_ids.pck_cert
    verdict = decide(tdx_a, snap(revoked_pck_certs=frozenset({pck})))
    assert verdict.reason is P.PolicyReason.PCK_REVOKED and pck.hex() in verdict.detail
    assert decide(tdx_b, snap(revoked_pck_certs=frozenset({pck}))).allowed


def test_intel_ppid_under_the_old_chip_kind_does_not_match(tdx_a):
    """A PPID is its own kind now: the same bytes in the chip-id set revoke nothing (no cross-kind match)."""
    assert decide(tdx_a, snap(revoked_chip_ids=frozenset({tdx_a.hardware_ids.ppid}))).allowed


def test_revocation_refusal_in_the_default_engine(tdx_a):
    engine = P.PolicyEngine.default()
    s = snap(revoked_ppids=frozenset({tdx_a.hardware_ids.ppid}),
             node_measurements=frozenset({(tdx_a.platform, tdx_a.measurement_digest)}))
    req = P.PolicyRequest(purpose="node", now=tdx_a.not_before, expected_report_data=tdx_a.report_data)
    assert engine.decide(tdx_a, s, req).reason is P.PolicyReason.PPID_REVOKED
    assert engine.decide(tdx_a, snap(node_measurements=s.node_measurements), req).allowed


# ------------------------------------------------------------------ Intel: the collateral's PCK chain


def _embed_chain(raw: bytes, pem: bytes) -> bytes:
    """``raw`` with its embedded PCK chain (certification data type 5) replaced by ``pem``, lengths fixed."""
    q = parse_quote(raw)
    raw = q.raw  # without the zero padding some quotes carry
    old = q.cert_data
    start = raw.rindex(old)
    assert raw[start + len(old):] == b"" and struct.unpack_from("<H", raw, start - 6)[0] == 5
    delta = len(pem) - len(old)
    out = bytearray(raw[:start - 4] + struct.pack("<I", len(pem)) + pem)
    sig_len_at = q.signed_length
    qe_len_at = sig_len_at + 4 + 128 + 2
    for at in (sig_len_at, qe_len_at):
        struct.pack_into("<I", out, at, struct.unpack_from("<I", out, at)[0] + delta)
    return bytes(out)


def test_quote_embedding_another_machines_chain_is_refused(vectors, ts):
    """Issue 13: collateral with the quote's real chain + a quote embedding another machine of the same
    FMSPC. dcap-qvl verifies that (it checks the collateral's chain), so derot must refuse the mismatch."""
    import dcap_qvl

    raw = vectors.bytes(PH + "tdx_quote")
    own_pem = parse_quote(raw).pck_chain_pem.rstrip(b"\0")
    other_pem = parse_quote(vectors.bytes(PH + "tdx-quote.bin")).pck_chain_pem.rstrip(b"\0")
    forged = _embed_chain(raw, other_pem)
    doc = json.loads(vectors.text(PH + "tdx_quote_collateral.json"))
    doc["pck_certificate_chain"] = own_pem.decode()
    coll = json.dumps(doc)
    at = ts("2025-07-01T00:00:00Z")
    # the premise: dcap-qvl accepts the forged quote with that collateral, and derot's parser would read
    # the other machine's PPID from it
    root = (vectors.root / "phala_dcap_qvl/TrustedRootCA.der").read_bytes()
    assert dcap_qvl.verify_with_root_ca(forged, Collateral.from_json(coll).qvl, root, at).status == "UpToDate"
    assert pck_info(parse_quote(forged)).ppid.hex() == "de5d028ab970ae67f36c3da32d5ee27e"
    with pytest.raises(PckChainMismatch) as info:
        verify_evidence(Evidence(Platform.TDX, quote=forged, collateral=coll.encode()), _trust(), at=at)
    assert info.value.reason == "pck_chain_mismatch"


def test_collateral_with_the_same_chain_still_verifies(vectors, ts):
    raw = vectors.bytes(PH + "tdx_quote")
    doc = json.loads(vectors.text(PH + "tdx_quote_collateral.json"))
    doc["pck_certificate_chain"] = parse_quote(raw).pck_chain_pem.rstrip(b"\0").decode()
    claims = verify_evidence(Evidence(Platform.TDX, quote=raw, collateral=json.dumps(doc).encode()), _trust(),
                             at=ts("2025-07-01T00:00:00Z"))
    assert claims.hardware_ids.ppid.hex() == "811dca2a26b952e85bb6448b097ba4fd"


# ------------------------------------------------------------------------------------ AMD SEV-SNP

SNP = [("google_go_sev_guest/attestation.bin", "google_go_sev_guest/vcek_milan.der"),
       ("virtee_sev/report_milan.bin", "virtee_sev/vcek_milan.der")]


@pytest.fixture(scope="module")
def snps(vectors, ts):
    out = [verify_evidence(Evidence(Platform.SEV_SNP, quote=vectors.bytes(r), vek=vectors.bytes(v)), _trust(),
                           at=ts("2025-01-01T00:00:00Z")) for r, v in SNP]
    assert {c.root for c in out} == {"production"}
    return out


def test_snp_chip_revoked_by_name(snps):
    a, b = snps
    assert a.hardware_ids.chip_id != b.hardware_ids.chip_id  # two Milan chips
    verdict = decide(a, snap(revoked_chip_ids=frozenset({a.hardware_ids.chip_id})))
    assert verdict.reason is P.PolicyReason.CHIP_REVOKED and a.hardware_ids.chip_id.hex() in verdict.detail
    assert decide(b, snap(revoked_chip_ids=frozenset({a.hardware_ids.chip_id}))).allowed


def test_snp_masked_chip_id_is_no_identity(snps):
    """A VLEK report's chip_id is all zeros: it names no machine, and a revoked all-zero id matches nothing."""
    from dataclasses import replace

    masked = replace(snps[0], hardware_ids=replace(snps[0].hardware_ids, chip_id=bytes(64)))
    assert identity.identities(masked) == ()
    assert decide(masked, snap(revoked_chip_ids=frozenset({bytes(64)}))).allowed
    with pytest.raises(ValueError, match="all zero"):
        RevocationKind.CHIP_ID.check_length(bytes(64))


def test_a_vlek_reports_chip_id_is_never_an_identity(devnet, devnet_trust):
    """A VLEK certificate names no chip (no hwID), so nothing endorses a VLEK report's chip_id, masked or not: a
    holder of the provider's VLEK could write any chip_id. Real-format devnet reports through the same verifier:
    the VLEK report with a non-zero chip_id exposes no identity and its chip_id revokes nothing, while a
    VCEK-signed report with that very chip_id is refused by name."""
    from derot.attest.devnet import DevnetTee

    chip = bytes(range(1, 65))
    vlek = verify_evidence(DevnetTee(devnet, Platform.SEV_SNP, chip_id=chip, vlek=True).quote(bytes(64)), devnet_trust)
    vcek = verify_evidence(DevnetTee(devnet, Platform.SEV_SNP, chip_id=chip).quote(bytes(64)), devnet_trust)
    assert vlek.details["signing_key"] == "VLEK" and vcek.details["signing_key"] == "VCEK"
    assert vlek.hardware_ids.chip_id is None and identity.identities(vlek) == () and identity.hardware_keys(vlek) == ()
    revoked = snap(revoked_chip_ids=frozenset({chip}))
    assert decide(vlek, revoked).allowed
    assert decide(vcek, revoked).reason is P.PolicyReason.CHIP_REVOKED


# ------------------------------------------------------------------------------------------ NVIDIA

N = "nvidia_nvtrust/"
PPCIE_NONCE = bytes.fromhex("4760e30534a0621357d458b1a7936551b5dc4cd1e69718adf7ed9fb0252a537e")


@pytest.fixture(scope="module")
def gpus(vectors, ts):
    """Two H100s of one PPCIe machine, verified at the vectors' commit date (their chains run 2022..9999)."""
    out = []
    for i in (0, 1):
        gpu = GpuEvidence(vectors.bytes(N + f"ppcie_gpu{i}_report.hex"), vectors.bytes(N + f"ppcie_gpu{i}_certs.pem"))
        out.append(verify_evidence(Evidence(Platform.NVIDIA_GPU, gpus=(gpu,)), _trust(), at=ts("2026-04-20T00:00:00Z"),
                                   gpu_nonce_override=PPCIE_NONCE))
    assert {c.root for c in out} == {"production"}
    return out


def test_gpu_identities(gpus, vectors):
    from cryptography import x509

    certs = x509.load_pem_x509_certificates(vectors.bytes(N + "ppcie_gpu0_certs.pem"))
    ids = gpus[0].hardware_ids
    assert ids.gpu_ueid == identity.serial_bytes(certs[0].serial_number)
    assert ids.gpu_ueid.hex() == "72ca27239f0e96f6535f73af84eb1542471a17b2"
    assert ids.gpu_device.hex() == "412921ce551e4eeda3"  # the "GH100 A01 GSP BROM" device certificate
    assert gpus[0].hardware_ids.gpu_fwid == gpus[1].hardware_ids.gpu_fwid  # one firmware build, two GPUs


@pytest.mark.parametrize("which", ["gpu_device", "gpu_ueid"])
def test_gpu_device_revoked_by_name(gpus, which):
    a, b = gpus
    ident = getattr(a.hardware_ids, which)
    verdict = decide(a, snap(revoked_gpu_devices=frozenset({ident})))
    assert verdict.reason is P.PolicyReason.GPU_DEVICE_REVOKED and ident.hex() in verdict.detail
    assert decide(b, snap(revoked_gpu_devices=frozenset({ident}))).allowed
    # FWID revocation, by contrast, takes out both GPUs
    fwid = frozenset({a.hardware_ids.gpu_fwid})
    assert decide(b, snap(revoked_gpu_fwids=fwid)).reason is P.PolicyReason.GPU_FWID_REVOKED


def test_hardware_keys_are_kind_separated(tdx_a):
    keys = identity.hardware_keys(tdx_a)
    assert len(keys) == 3 and list(keys) == sorted(keys)
    ppid = tdx_a.hardware_ids.ppid
    assert identity.hardware_key(RevocationKind.PPID, ppid) in keys
    assert identity.hardware_key(RevocationKind.GPU_DEVICE, ppid) not in keys


def test_attest_verify_prints_every_revocable_identity_as_a_gov_action(vectors, capsys):
    """An operator copies the action from `derot attest verify` of the compromised machine into `derot gov`."""
    from derot.chain.actions import Revoke, parse_action
    from derot.cli.main import main

    args = ["attest", "verify", str(vectors.root / "nvidia_nvtrust/ppcie_gpu0_report.bin"), "--gpu-certs",
            str(vectors.root / "nvidia_nvtrust/ppcie_gpu0_certs.pem"), "--nonce", PPCIE_NONCE.hex(), "--json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {(r["kind"], r["id"]): r for r in doc["revocable"]}
    assert set(rows) == {("GPU_FWID", doc["claims"]["hardware_ids"]["gpu_fwid"]),
                         ("GPU_DEVICE", "412921ce551e4eeda3"),
                         ("GPU_DEVICE", "72ca27239f0e96f6535f73af84eb1542471a17b2")}
    for (kind, ident), row in rows.items():
        action = parse_action(row["action"].split())
        assert isinstance(action, Revoke) and action.kind.name == kind and action.ident.hex() == ident
    assert not rows[("GPU_FWID", doc["claims"]["hardware_ids"]["gpu_fwid"])]["per_machine"]
    assert main(args[:-1]) == 0
    assert "derot gov council revoke-gpu-device 412921ce551e4eeda3" in capsys.readouterr().out


@pytest.mark.parametrize("platform", ["tdx", "sev-snp"])
def test_attest_verify_prints_the_cpu_machines_identities_as_gov_actions(vectors, capsys, platform):
    """The same for a CPU TEE: Intel's FMSPC, PPID and PCK certificate, and the SEV-SNP chip_id, each checked
    against an independent reading of the vector (the PCK leaf's extension and serial, the report's bytes)."""
    from cryptography import x509

    from derot.chain.actions import Revoke, parse_action
    from derot.cli.main import main

    if platform == "tdx":
        quote = vectors.root / (PH + "tdx_quote")
        args = [str(quote), "--collateral", str(vectors.root / (PH + "tdx_quote_collateral.json")),
                "--at", "2025-07-01T00:00:00Z"]
        leaf = x509.load_pem_x509_certificates(parse_quote(quote.read_bytes()).pck_chain_pem.rstrip(b"\0"))[0]
        expected = {("FMSPC", "b0c06f000000"), ("PPID", "811dca2a26b952e85bb6448b097ba4fd"),
                    ("PCK_CERT", identity.pck_id(leaf.issuer.public_bytes(), leaf.serial_number).hex())}
    else:
        report = vectors.root / "virtee_sev/report_milan.bin"
        args = [str(report), "--vek", str(vectors.root / "virtee_sev/vcek_milan.der"), "--at", "2025-01-01T00:00:00Z"]
        expected = {("CHIP_ID", report.read_bytes()[0x1A0:0x1E0].hex())}  # chip_id: report bytes 0x1A0..0x1DF
    assert main(["attest", "verify", *args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["revocable"]
    assert {(r["kind"], r["id"]) for r in rows} == expected
    for row in rows:
        action = parse_action(row["action"].split())
        assert isinstance(action, Revoke) and (action.kind.name, action.ident.hex()) == (row["kind"], row["id"])
        assert row["per_machine"] is (row["kind"] != "FMSPC")
    assert main(["attest", "verify", *args]) == 0
    text = capsys.readouterr().out
    for row in rows:
        assert f"derot gov council {row['action']}" in text
