"""NVIDIA GPU evidence: real Blackwell and Hopper reports, bounded zero padding after the signature, the
FWID extension required in the leaf, and a complete chain (leaf to the pinned root) with named errors."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from derot.attest import nvidia_gpu
from derot.attest.errors import AttestationError, EvidenceParseError

BW = "trustee_nvidia_blackwell/"
BW_NONCE = "4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e"
BW_FWID = "9b92cc3e53b9265259e1abde163653288c2474fcafd8e5c0fd62ce9c9036fb62723fe3715b50f4ac27c68b62e2fd9240"
HOPPER_NONCE = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"


@pytest.fixture(scope="module")
def roots(vectors):
    return nvidia_gpu.NvidiaRoots.from_pem(vectors.bytes("roots/nvidia_device_identity_ca.pem"))


@pytest.fixture(scope="module")
def at(ts):
    return ts("2026-09-01T00:00:00Z")


def test_blackwell_reports_verify(vectors, roots, at):
    claims = nvidia_gpu.verify_report(vectors.bytes(BW + "blackwellAttestationReport.bin"),
                                      (vectors.root / BW / "blackwell_cert_chain_case1.txt").read_bytes(), roots, at,
                                      expected_nonce=bytes.fromhex(BW_NONCE))
    assert claims.hardware_ids.gpu_fwid.hex() == BW_FWID  # DICE TcbInfo fwids[0] == opaque field 20
    assert claims.details["driver_version"] == "595.58.03"
    assert len(claims.measurements) == 64
    coco = nvidia_gpu.verify_report(vectors.bytes(BW + "blackwell_coco_report.bin"),
                                    (vectors.root / BW / "blackwell_coco_certs.txt").read_bytes(), roots, at)
    assert coco.report_data[:32].hex() == "d622979b6c3ab8b8e7b30a43f2dc7f553ebbc187536231d531effa496ec03fb5"
    differing = [i for i in range(1, 65) if claims.measurements[f"MEASUREMENT[{i}]"] != coco.measurements[f"MEASUREMENT[{i}]"]]
    assert differing == [3, 4, 9, 12, 19]  # EXPECTED.md


def test_blackwell_chain_without_the_provisioner_ica_is_named_incomplete(vectors, roots, at):
    with pytest.raises(AttestationError) as exc:
        nvidia_gpu.verify_report(vectors.bytes(BW + "blackwellAttestationReport.bin"),
                                 (vectors.root / BW / "blackwell_cert_chain_case3.txt").read_bytes(), roots, at)
    assert exc.value.reason == "cert_chain_incomplete" and "Provisioner ICA" in str(exc.value)


def test_chain_of_only_the_root_or_without_the_fmc_leaf(vectors, roots, ts):
    report = vectors.bytes("nvidia_nvtrust/hopperAttestationReport.bin")
    chain = x509.load_pem_x509_certificates(vectors.bytes("nvidia_nvtrust/hopperCertChain.txt"))
    pem = lambda certs: b"".join(c.public_bytes(Encoding.PEM) for c in certs)  # noqa: E731
    at = ts("2025-01-01T00:00:00Z")
    with pytest.raises(AttestationError) as exc:
        nvidia_gpu.verify_report(report, pem(chain[-1:]), roots, at)
    assert exc.value.reason == "cert_chain_incomplete" and "only the pinned root" in str(exc.value)
    with pytest.raises(AttestationError) as exc:
        nvidia_gpu.verify_report(report, pem(chain[1:]), roots, at)
    assert exc.value.reason == "cert_chain_incomplete" and "FMC" in str(exc.value)
    with pytest.raises(AttestationError) as exc:
        nvidia_gpu.verify_report(report, pem(chain[:2] + chain[3:]), roots, at)
    assert exc.value.reason == "cert_chain_incomplete"


def test_leaf_without_fwid_is_refused_by_name(devnet, ts):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from derot.attest.devnet import DevnetGpu
    from derot.attest.devnet_x509 import cert_pem, devnet_name, make_cert

    gpu = DevnetGpu(devnet)
    k, c = devnet._pki.keys, devnet._pki.certs
    key = ec.generate_private_key(ec.SECP384R1())
    leaf = make_cert(devnet_name("derot devnet GPU FMC LF without FWID"), c["nvidia_ca"].subject, key.public_key(), k["nvidia_ca"],
                 devnet.created, devnet.not_after, ca=False, serial=7, sign_kwargs={"algorithm": hashes.SHA384()},
                 issuer_pub=k["nvidia_ca"].public_key())
    gpu._key = key
    with pytest.raises(AttestationError) as exc:
        nvidia_gpu.verify_report(gpu.report(bytes(32)), cert_pem(leaf) + cert_pem(c["nvidia_ca"]), devnet.nvidia_roots(),
                                 devnet.created + 60)
    assert exc.value.reason == "gpu_fwid_missing"


@pytest.mark.parametrize("tail,ok", [(b"\0", True), (b"\0" * nvidia_gpu.MAX_PADDING, True),
                                     (b"\0" * (nvidia_gpu.MAX_PADDING + 1), False), (b"\x01", False), (b"\0\0\x05", False)])
def test_zero_padding_after_the_signature_is_bounded(vectors, roots, ts, tail, ok):
    """Real Hopper reports may carry one trailing zero byte (trustee ignores it); anything else is named."""
    report = vectors.bytes("nvidia_nvtrust/hopperAttestationReport.bin") + tail
    chain = vectors.bytes("nvidia_nvtrust/hopperCertChain.txt")
    if ok:
        claims = nvidia_gpu.verify_report(report, chain, roots, ts("2025-01-01T00:00:00Z"),
                                          expected_nonce=bytes.fromhex(HOPPER_NONCE))
        assert claims.hardware_ids.gpu_fwid.hex().startswith("f5c384aebb579217")
    else:
        with pytest.raises(EvidenceParseError, match="after the signature"):
            nvidia_gpu.parse_report(report)
