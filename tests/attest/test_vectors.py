"""Every vector in tests/vectors reaches the outcome tests/vectors/EXPECTED.md gives.

Intel rows are verified by derot (dcap-qvl underneath) and, independently, by the pure-Python
verifier in derot.attest.intel_dcap; the two must agree. Rows whose status is TCB_NOT_SUPPORTED must
raise TcbNotSupported, and their MRTD/report_data facts are checked on the parsed quote.
"""

from __future__ import annotations

import json

import pytest

from derot.attest import intel_dcap, nvidia_gpu, sev_snp
from derot.attest.errors import CollateralStale, TcbNotSupported
from derot.attest.evidence import Evidence, GpuEvidence
from derot.attest.intel_quote import parse_quote
from derot.attest.verify import verify_evidence
from derot.constants import Platform, TcbStatus

P = "phala_dcap_qvl/"
G = "google_go_tdx_guest/"
# quote, collateral ("go" = go-tdx-guest files), at, status (None = TCB_NOT_SUPPORTED), advisories,
# version/body, fmspc, MRTD/MRENCLAVE prefix, report_data prefix
INTEL_ROWS = [
    (P + "tdx_quote", P + "tdx_quote_collateral.json", "2025-07-01T00:00:00Z", "UpToDate", (), 4, "TD10",
     "b0c06f000000", "91eb2b44d141d4ec", "9a9d48e7f6799642d3d1b34e1e5e1742"),
    (P + "tdx_quote_outdated", P + "tdx_quote_outdated_collateral.json", "2026-03-01T00:00:00Z", None, (), 5, "TD15",
     "90c06f000000", "273828c46252fcbd", "d2142b643598eb5fae2bc8529dd79a55"),
    (P + "sgx_quote", P + "sgx_quote_collateral.json", "2025-07-01T00:00:00Z", "ConfigurationAndSWHardeningNeeded",
     ("INTEL-SA-00289", "INTEL-SA-00615"), 3, "SGX", "00a067110000", "33d8736db756ed49",
     "48656c6c6f2c20776f726c6421000000"),
    (P + "near_quote.bin", P + "near_quote_collateral.json", "2025-09-15T00:00:00Z", "UpToDate", (), 4, "TD10",
     "20a06f000000", "f06dfda6dce1cf90", "0001d579ba6e734a1046feb6112f852d"),
    (P + "tdx-quote.bin", P + "tdx_quote_collateral.json", "2025-07-01T00:00:00Z", None, (), 4, "TD10",
     "b0c06f000000", "7ba9e262ce697908", "7148f47ef58b475fce69b386e2d6b4c9"),
    (P + "quote-from-tappd.bin", P + "tdx_quote_collateral.json", "2025-07-01T00:00:00Z", None, (), 4, "TD10",
     "b0c06f000000", "c68518a0ebb42136", "7668c6b4eafb62301c72714ecc7d90ce"),
    (G + "tdx_prod_quote_SPR_E4.dat", "go", "2023-07-01T01:00:00Z", None, (), 4, "TD10",
     "50806f000000", "6363b8043668a3ad", "6c62dec1b8191749a31dab490be532a3"),
    (G + "quote_v5_sample.dat", P + "tdx_quote_outdated_collateral.json", "2026-03-01T00:00:00Z", "UpToDate", (), 5,
     "TD15", "90c06f000000", "7348651a34b2d2d3", "945eaacf5abc1f719d8666a942fda03d"),
]


def _collateral(vectors, name):
    return vectors.go_tdx_collateral() if name == "go" else vectors.collateral(name)


@pytest.mark.parametrize("row", INTEL_ROWS, ids=[r[0] for r in INTEL_ROWS])
def test_intel_vector(row, vectors, production_trust, ts):
    quote_file, coll_file, at, status, advisories, version, body, fmspc, mr_prefix, rd_prefix = row
    raw = vectors.bytes(quote_file)
    collateral = _collateral(vectors, coll_file)
    parsed = parse_quote(raw)
    assert (parsed.version, parsed.body_kind) == (version, body)
    mr = parsed.body.mr_td if parsed.is_tdx else parsed.body.mr_enclave
    assert mr.hex().startswith(mr_prefix)
    assert parsed.body.report_data.hex().startswith(rd_prefix)
    evidence = Evidence(Platform.TDX if parsed.is_tdx else Platform.SGX, quote=raw,
                        collateral=collateral.json_text.encode())

    if status is None:
        with pytest.raises(TcbNotSupported):
            verify_evidence(evidence, production_trust, at=ts(at))
        with pytest.raises(TcbNotSupported):  # the independent verifier agrees
            intel_dcap.verify_quote(parsed, collateral, production_trust.intel_roots["production"], ts(at))
        return
    claims = verify_evidence(evidence, production_trust, at=ts(at))
    assert claims.tcb_status == TcbStatus.from_intel(status)
    assert claims.advisory_ids == advisories
    assert claims.hardware_ids.fmspc.hex() == fmspc
    assert claims.report_data == parsed.body.report_data
    assert claims.measurements["MRTD" if parsed.is_tdx else "MRENCLAVE"] == mr
    assert claims.root == "production" and claims.details["verified_by"] == "dcap-qvl"
    assert claims.not_before <= ts(at) <= claims.not_after
    result, _ = intel_dcap.verify_quote(parsed, collateral, production_trust.intel_roots["production"], ts(at))
    assert (result.status, result.advisory_ids) == (status, advisories)


@pytest.mark.parametrize("quote_file,coll_file,first_ok,last_ok", [
    (P + "tdx_quote", P + "tdx_quote_collateral.json", "2025-06-19T10:32:27Z", "2025-07-19T10:00:34Z"),
    (P + "sgx_quote", P + "sgx_quote_collateral.json", "2025-06-19T10:56:11Z", "2025-07-19T10:01:17Z"),
])
def test_intel_window_edges(quote_file, coll_file, first_ok, last_ok, vectors, production_trust, ts):
    """EXPECTED.md's window: verification holds inside it and is stale one second outside."""
    raw, coll = vectors.bytes(quote_file), vectors.collateral(coll_file)
    platform = Platform.TDX if parse_quote(raw).is_tdx else Platform.SGX
    ev = Evidence(platform, quote=raw, collateral=coll.json_text.encode())
    assert (coll.not_before, coll.not_after) == (ts(first_ok), ts(last_ok))
    for at in (ts(first_ok), ts(last_ok)):
        verify_evidence(ev, production_trust, at=at)
    for at in (ts(first_ok) - 1, ts(last_ok) + 1):
        with pytest.raises(CollateralStale):
            verify_evidence(ev, production_trust, at=at)


def test_go_tdx_v5_body_passes_tcb_info_but_window_is_empty(vectors, production_trust, ts):
    """EXPECTED.md: v5 sample + go-tdx-guest v5 TCB info -> UpToDate by the TCB rules, but no common window."""
    collateral = vectors.go_tdx_collateral("sample_tcbinfo_response_v5")
    assert collateral.not_before > collateral.not_after  # 2026-02-01 .. 2023-07-08
    quote = parse_quote(vectors.bytes(G + "quote_v5_sample.dat"))
    for at in (ts("2023-07-01T00:00:00Z"), ts("2026-02-15T00:00:00Z")):
        with pytest.raises(CollateralStale):
            verify_evidence(Evidence(Platform.TDX, quote=quote.raw, collateral=collateral.json_text.encode()),
                            production_trust, at=at)
    doc = json.loads(collateral.json_text)
    from cryptography import x509

    cpu_svn, pce_svn = intel_dcap.pck_svns(x509.load_pem_x509_certificates(quote.cert_data)[0])
    result = intel_dcap.match_tcb(quote, json.loads(doc["tcb_info"]), json.loads(doc["qe_identity"]), cpu_svn, pce_svn)
    assert result.status == "UpToDate"


# ----------------------------------------------------------------------------------------- AMD

SNP_ROWS = [
    ("google_go_sev_guest/attestation.bin", "google_go_sev_guest/vcek_milan.der", (2, 0, 5, 68),
     "b07af9620f3b839b47996422", "010203040500000000000000", "2029-09-24", 0xB0000, True),
    ("virtee_sev/report_milan.bin", "virtee_sev/vcek_milan.der", (3, 0, 8, 115),
     "7a1e5c266c0108dbc9bb94fa", "d447b55d197491bfe15cf298", "2030-04-03", 0x30000, False),
]


@pytest.mark.parametrize("row", SNP_ROWS, ids=[r[0] for r in SNP_ROWS])
def test_snp_vector(row, vectors, production_trust, ts):
    report_file, vek_file, tcb, meas, rd, vek_not_after, policy, debug = row
    report, vek = vectors.bytes(report_file), vectors.bytes(vek_file)
    claims = verify_evidence(Evidence(Platform.SEV_SNP, quote=report, vek=vek), production_trust,
                             at=ts("2025-01-01T00:00:00Z"))
    d = claims.details
    assert (d["reported_tcb"]["bootloader"], d["reported_tcb"]["tee"], d["reported_tcb"]["snp"],
            d["reported_tcb"]["microcode"]) == tcb
    assert claims.measurements["MEASUREMENT"].hex().startswith(meas)
    assert claims.report_data.hex().startswith(rd)
    assert d["product"] == "Milan" and d["signing_key"] == "VCEK" and d["policy"] == policy
    assert claims.debug is debug
    hwid = sev_snp.load_vek(vek).extensions.get_extension_for_oid(sev_snp.OID_HWID).value.value
    assert claims.hardware_ids.chip_id == report[0x1A0:0x1E0] == hwid
    from datetime import datetime, timezone

    assert datetime.fromtimestamp(claims.not_after, timezone.utc).strftime("%Y-%m-%d") == vek_not_after


def test_snp_vek_expiry(vectors, production_trust):
    """The VCEK's notAfter bounds verification: the second after it, CertificateExpired."""
    from derot.attest.errors import CertificateExpired

    report, vek = vectors.bytes(SNP_ROWS[0][0]), vectors.bytes(SNP_ROWS[0][1])
    not_after = int(sev_snp.load_vek(vek).not_valid_after_utc.timestamp())
    ev = Evidence(Platform.SEV_SNP, quote=report, vek=vek)
    verify_evidence(ev, production_trust, at=not_after)
    with pytest.raises(CertificateExpired):
        verify_evidence(ev, production_trust, at=not_after + 1)


@pytest.mark.parametrize("vek_file,chain_file", [
    ("virtee_sev/vcek_turin.der", "virtee_sev/cert_chain_turin"),
    ("virtee_sev/vcek_milan.der", "virtee_sev/cert_chain_milan"),
])
def test_amd_chain_vectors(vek_file, chain_file, vectors, production_trust, ts):
    """virtee's chains: the VCEK verifies to the pinned ARK, and their ASK/ARK equal the pinned ones."""
    vek = vectors.bytes(vek_file)
    cert = sev_snp.load_vek(vek)
    product, label, nb, na = production_trust.amd.verify_vek_chain(vek, cert, ts("2025-06-01T00:00:00Z"))
    assert label == "production" and product in vek_file.title()
    from cryptography import x509

    pinned = {c for s in production_trust.amd.sets for c in (s.ark, s.ask)}
    assert set(x509.load_pem_x509_certificates(vectors.bytes(chain_file))) <= pinned
    tcb = sev_snp.vek_tcb(cert, turin=product == "Turin")
    assert (product == "Turin") == (tcb.fmc is not None)


@pytest.mark.parametrize("bundle", ["ask_ark_milan", "ask_ark_genoa", "ask_ark_milan_vlek", "ask_ark_genoa_vlek",
                                    "ask_ark_turin_vcek", "ask_ark_turin_vlek"])
def test_go_sev_guest_bundles_are_pinned(bundle, vectors, production_trust):
    from cryptography import x509

    pinned = {c for s in production_trust.amd.sets for c in (s.ark, s.ask, s.asvk)}
    assert set(x509.load_pem_x509_certificates(vectors.bytes(f"google_go_sev_guest/{bundle}.pem"))) <= pinned


# -------------------------------------------------------------------------------------- NVIDIA

N = "nvidia_nvtrust/"
GPU_ROWS = [(N + "hopperAttestationReport.txt", N + "hopperCertChain.txt",
             "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb", "550.90.07", "f5c384aebb579217")]
GPU_ROWS += [(N + f"ppcie_gpu{i}_report.hex", N + f"ppcie_gpu{i}_certs.pem",
              "4760e30534a0621357d458b1a7936551b5dc4cd1e69718adf7ed9fb0252a537e", "590.12", "956ecf09ee4191f1")
             for i in range(8)]


@pytest.mark.parametrize("row", GPU_ROWS, ids=[r[0] for r in GPU_ROWS])
def test_gpu_vector(row, vectors, production_trust):
    report_file, chain_file, nonce, driver, fwid = row
    gpu = GpuEvidence(vectors.bytes(report_file), vectors.bytes(chain_file))
    claims = verify_evidence(Evidence(Platform.NVIDIA_GPU, gpus=(gpu,)), production_trust,
                             gpu_nonce_override=bytes.fromhex(nonce))
    assert claims.details["nonce"].hex() == nonce
    assert claims.report_data == bytes.fromhex(nonce) + bytes(32)
    assert claims.details["driver_version"] == driver
    assert claims.hardware_ids.gpu_fwid.hex().startswith(fwid)
    assert claims.details["measurement_blocks"] == 64 and len(claims.measurements) == 64
    leaf = nvidia_gpu.load_chain(gpu.cert_chain)[0]
    assert nvidia_gpu.cert_fwid(leaf) == claims.hardware_ids.gpu_fwid


def test_gpu_wrong_nonce(vectors, production_trust):
    from derot.attest.errors import NonceMismatch

    report_file, chain_file, nonce, *_ = GPU_ROWS[0]
    gpu = GpuEvidence(vectors.bytes(report_file), vectors.bytes(chain_file))
    with pytest.raises(NonceMismatch):
        verify_evidence(Evidence(Platform.NVIDIA_GPU, gpus=(gpu,)), production_trust, gpu_nonce_override=bytes(32))
