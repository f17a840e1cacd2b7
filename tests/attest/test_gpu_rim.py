"""NVIDIA golden measurements (RIM): NVIDIA's real test RIMs (signed SWID tags chained to the pinned RIM
root) verify and are compared with the real Hopper report, mismatches named per block; tampering and
foreign chains are refused; a devnet RIM signed with real XML-DSig matches devnet GPU evidence end to end;
the RIM service is fetched over a real socket and cached."""

from __future__ import annotations

import base64
import http.server
import json
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from derot.attest import nvidia_gpu, nvidia_rim
from derot.attest import policy as P
from derot.attest.devnet import DevnetGpu
from derot.attest.devnet_x509 import devnet_name, make_cert
from derot.attest.errors import AttestationError, ChainInvalid, SignatureInvalid
from derot.attest.evidence import Evidence
from derot.attest.policy_tee import GpuRimMatches
from derot.attest.snapshot import GovernanceSnapshot
from derot.attest.verify import verify_evidence
from derot.constants import Platform

NV = "nvidia_nvtrust/"


@pytest.fixture(scope="module")
def rim_roots(vectors):
    return x509.load_pem_x509_certificates(vectors.bytes("roots/nvidia_rim_root.pem"))


@pytest.fixture(scope="module")
def at(ts):
    return ts("2024-06-01T00:00:00Z")  # inside the test RIMs' L4 signer validity (2023-06..2025-06)


def test_real_test_rims_verify_and_name_mismatches(vectors, rim_roots, at):
    driver = nvidia_rim.load_rim(vectors.bytes(NV + "Driver_RIM_test_no_gpu.swidtag"), rim_roots, at)
    vbios = nvidia_rim.load_rim(vectors.bytes(NV + "vbios_RIM_test_no_gpu.swidtag"), rim_roots, at)
    assert (driver.product, driver.version, len(driver.measurements)) == ("GH100", "545.00", 64)
    assert vbios.version == "96.00.5E.00.01" and "HCC RIM L4 Signer" in driver.signer
    report = nvidia_gpu.parse_report(vectors.bytes(NV + "hopperAttestationReport.bin"))
    result = nvidia_rim.compare({b.index: b.value for b in report.blocks}, driver, vbios)
    # the report is from driver 550.90.07 / VBIOS 96.00.9F.00.01, the RIMs are 545.00 / 96.00.5E.00.01
    assert not result.ok and result.checked == 33
    assert "MEASUREMENT[2]" in result.mismatches and "vbios" in result.mismatches["MEASUREMENT[2]"]
    assert "MEASUREMENT[8]" in result.mismatches and "driver" in result.mismatches["MEASUREMENT[8]"]
    for same in ("MEASUREMENT[24]", "MEASUREMENT[25]", "MEASUREMENT[1]", "MEASUREMENT[13]"):
        assert same not in result.mismatches  # blocks whose golden value the report does carry


def test_rim_ids_of_the_real_hopper_report(vectors, ts):
    roots = nvidia_gpu.NvidiaRoots.from_pem(vectors.bytes("roots/nvidia_device_identity_ca.pem"))
    claims = nvidia_gpu.verify_report(vectors.bytes(NV + "hopperAttestationReport.bin"),
                                      vectors.bytes(NV + "hopperCertChain.txt"), roots, ts("2025-01-01T00:00:00Z"))
    assert nvidia_rim.gpu_rim_ids(claims) == ("NV_GPU_DRIVER_GH100_550.90.07", "NV_GPU_VBIOS_1010_0200_882_96009F0001")


def test_tampered_or_foreign_or_expired_rims_are_refused(vectors, rim_roots, at, ts, devnet):
    data = vectors.bytes(NV + "Driver_RIM_test_no_gpu.swidtag")
    golden = "0e0ee161b59bf124ce6b6dca6efa7616d28077862c0e57dca7d5efd63d00eeed4851922941e846a38c464cbedbc168d9"
    assert data.count(golden.encode()) == 1
    with pytest.raises(SignatureInvalid):
        nvidia_rim.load_rim(data.replace(golden.encode(), golden[:-1].encode() + b"0"), rim_roots, at)
    with pytest.raises(ChainInvalid, match="not a pinned RIM root"):
        nvidia_rim.load_rim(data, [devnet._pki.certs["nvidia_ca"]], at)
    with pytest.raises(ChainInvalid, match="not valid at the verification time"):
        nvidia_rim.load_rim(data, rim_roots, ts("2026-01-01T00:00:00Z"))


# --------------------------------------------------------------------------- devnet RIMs


class DevnetRimSigner:
    """A devnet RIM root, intermediate and signer (ECDSA P-384), signing SWID tags with signxml."""

    def __init__(self, devnet):
        nb, na = devnet.created, devnet.not_after
        self.root_key, self.ca_key, self.key = (ec.generate_private_key(ec.SECP384R1()) for _ in range(3))
        sha = {"algorithm": hashes.SHA384()}
        self.root = make_cert(devnet_name("derot devnet RIM Root CA"), devnet_name("derot devnet RIM Root CA"), self.root_key.public_key(),
                          self.root_key, nb, na, ca=True, serial=1, sign_kwargs=sha)
        self.ca = make_cert(devnet_name("derot devnet RIM CA"), self.root.subject, self.ca_key.public_key(), self.root_key, nb, na,
                        ca=True, serial=2, sign_kwargs=sha, issuer_pub=self.root_key.public_key())
        self.leaf = make_cert(devnet_name("derot devnet RIM signer"), self.ca.subject, self.key.public_key(), self.ca_key, nb, na,
                          ca=False, serial=3, sign_kwargs=sha, issuer_pub=self.ca_key.public_key())

    def sign(self, tag_id: str, version: str, golden: dict[int, list[bytes]]) -> bytes:
        from lxml import etree
        from signxml import XMLSigner, methods
        from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod

        ns = nvidia_rim.SWID_NS
        root = etree.Element(f"{{{ns}}}SoftwareIdentity", nsmap={None: ns, "h": nvidia_rim.SHA384_NS},
                             name="GH100", tagId=tag_id, version="1.0")
        etree.SubElement(root, f"{{{ns}}}Meta", colloquialVersion=version, product="GH100")
        payload = etree.SubElement(root, f"{{{ns}}}Payload")
        for index, values in sorted(golden.items()):
            attrs = {"type": "Measurement", "index": str(index), "active": "True", "alternatives": str(len(values)),
                     "name": f"Measurement_{index}", "size": "48"}
            attrs.update({f"{{{nvidia_rim.SHA384_NS}}}Hash{i}": v.hex() for i, v in enumerate(values)})
            etree.SubElement(payload, f"{{{ns}}}Resource", attrs)
        signer = XMLSigner(method=methods.enveloped, signature_algorithm=SignatureMethod.ECDSA_SHA384,
                           digest_algorithm=DigestAlgorithm.SHA384, c14n_algorithm=CanonicalizationMethod.CANONICAL_XML_1_1)
        pem = lambda c: c.public_bytes(serialization.Encoding.PEM).decode()  # noqa: E731
        key = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        signed = signer.sign(root, key=key, cert=[pem(self.leaf), pem(self.ca), pem(self.root)])
        return etree.tostring(signed)


@pytest.fixture(scope="module")
def rim_signer(devnet):
    return DevnetRimSigner(devnet)


def _gpu_setup(devnet, rim_signer, tmp_path, *, bad_index: int | None = None):
    gpu = DevnetGpu(devnet)
    golden = {i: [m] for i, m in enumerate(gpu.measurements)}
    if bad_index is not None:
        golden[bad_index] = [bytes(48), b"\x11" * 48]
    (tmp_path / "NV_GPU_DRIVER_GH100_550.90.07").write_bytes(rim_signer.sign("drv", "550.90.07", golden))
    store = nvidia_rim.RimStore(bundle_dir=tmp_path)
    return gpu, nvidia_rim.RimVerifier([rim_signer.root], store)


def test_devnet_rim_end_to_end(devnet, devnet_trust, rim_signer, tmp_path):
    from dataclasses import replace

    now = devnet.created + 60
    gpu, rims = _gpu_setup(devnet, rim_signer, tmp_path)
    ev = Evidence(Platform.NVIDIA_GPU, gpus=(gpu.evidence_for(bytes(64)),))
    trust = replace(devnet_trust, rims=rims)
    from derot.attest.binding import gpu_nonce

    claims = verify_evidence(ev, trust, at=now, gpu_nonce_override=gpu_nonce(bytes(64)))
    rim = claims.tee_attributes["rim"]
    # devnet GPUs are "derot devnet GH100 ..." leaves: the driver RIM id is NV_GPU_DRIVER_GH100_<version>
    assert rim["driver_rim"] == "drv" and rim["checked"] == 8 and rim["mismatches"] == {}
    assert rim["unavailable"] == ["RIM id unknown (report lacks its fields)"]  # devnet GPUs report no VBIOS SKU
    snap = GovernanceSnapshot(chain_id=1, registry="x", block_number=1)
    req = P.PolicyRequest("node", now, expected_report_data=claims.report_data)
    assert GpuRimMatches().check(claims, snap, req).reason == P.PolicyReason.GPU_RIM_UNAVAILABLE

    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    gpu2, rims2 = _gpu_setup(devnet, rim_signer, bad_dir, bad_index=2)
    claims2 = verify_evidence(Evidence(Platform.NVIDIA_GPU, gpus=(gpu2.evidence_for(bytes(64)),)),
                              replace(devnet_trust, rims=rims2), at=now, gpu_nonce_override=gpu_nonce(bytes(64)))
    assert list(claims2.tee_attributes["rim"]["mismatches"]) == ["MEASUREMENT[3]"]
    verdict = GpuRimMatches().check(claims2, snap, req)
    assert verdict.reason == P.PolicyReason.GPU_RIM_MISMATCH and "MEASUREMENT[3]" in verdict.detail


def test_rim_service_fetch_and_cache(vectors, rim_roots, at, tmp_path):
    body = json.dumps({"id": "NV_GPU_DRIVER_GH100_545.00",
                       "rim": base64.b64encode(vectors.bytes(NV + "Driver_RIM_test_no_gpu.swidtag")).decode()}).encode()
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            ok = self.path.endswith("/NV_GPU_DRIVER_GH100_545.00")
            self.send_response(200 if ok else 404)
            self.end_headers()
            if ok:
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/rim"
        store = nvidia_rim.RimStore(service_url=url, cache_dir=tmp_path / "cache", timeout=5)
        verifier = nvidia_rim.RimVerifier(rim_roots, store)
        rim, why = verifier._rim("NV_GPU_DRIVER_GH100_545.00", at)
        assert why is None and rim.version == "545.00"
        assert (tmp_path / "cache" / "NV_GPU_DRIVER_GH100_545.00").exists()
        rim, _ = verifier._rim("NV_GPU_DRIVER_GH100_545.00", at)  # from the disk cache: no second request
        assert hits == ["/v1/rim/NV_GPU_DRIVER_GH100_545.00"]
        assert store.get("NV_GPU_DRIVER_GH100_000", at) is None and store.get("NV_GPU_DRIVER_GH100_000", at + 1) is None
        assert hits.count("/v1/rim/NV_GPU_DRIVER_GH100_000") == 1  # a failure is not retried at once
        assert store.get("../etc/passwd", at) is None  # ids are names, never paths
    finally:
        server.shutdown()


def test_rim_refuses_xml_bombs_and_oversize(rim_roots, at):
    from derot.attest.errors import EvidenceParseError

    bomb = (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxxxx"><!ENTITY y "&x;&x;&x;&x;&x;&x;&x;&x;">]>'
            b"<a>&y;&y;&y;&y;</a>")
    with pytest.raises(AttestationError):
        nvidia_rim.load_rim(bomb, rim_roots, at)
    with pytest.raises(EvidenceParseError):
        nvidia_rim.load_rim(b"<a>" + b"x" * (nvidia_rim.MAX_RIM_SIZE + 1) + b"</a>", rim_roots, at)


def test_cli_rim_dir_names_mismatches_on_the_real_hopper_report(vectors, tmp_path, capsys):
    from derot.cli.main import main

    (tmp_path / "NV_GPU_DRIVER_GH100_550.90.07").write_bytes(vectors.bytes(NV + "Driver_RIM_test_no_gpu.swidtag"))
    (tmp_path / "NV_GPU_VBIOS_1010_0200_882_96009F0001.swidtag").write_bytes(
        vectors.bytes(NV + "vbios_RIM_test_no_gpu.swidtag"))
    base = ["attest", "verify", str(vectors.root / NV / "hopperAttestationReport.bin"), "--gpu-certs",
            str(vectors.root / NV / "hopperCertChain.txt"), "--at", "2025-01-01T00:00:00Z", "--json"]
    assert main(base) == 0  # without RIMs: verified and allowed
    capsys.readouterr()
    assert main(base + ["--rim-dir", str(tmp_path)]) == 1
    doc = json.loads(capsys.readouterr().out)
    rim = doc["claims"]["tee_attributes"]["rim"]
    assert rim["checked"] == 33 and "MEASUREMENT[2]" in rim["mismatches"] and rim["unavailable"] == []
    assert doc["verdict"]["reason"] == "gpu_rim_mismatch" and "MEASUREMENT[2]" in doc["verdict"]["detail"]
    assert main(base + ["--rim-dir", str(tmp_path), "--allow-exception", "gpu_rim"]) == 0
    capsys.readouterr()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(base + ["--rim-dir", str(empty)]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"]["reason"] == "gpu_rim_unavailable"


def test_a_node_fetches_rims_on_its_fetch_pool_never_on_the_loop_or_a_worker(devnet, devnet_trust, rim_signer):
    """EvidenceVerifier.prefetch verifies each GPU report, then fetches its RIMs from a slow RIM service (a real
    socket) on the fetch pool while the event loop keeps running; the verification that follows reads the RIM
    from memory (one request in all) and compares it."""
    import asyncio
    import time
    from dataclasses import replace

    from derot.attest.binding import gpu_nonce
    from derot.service.verification import EvidenceVerifier

    gpu = DevnetGpu(devnet)
    rim = rim_signer.sign("drv", "550.90.07", {i: [m] for i, m in enumerate(gpu.measurements)})
    hits, fetch_threads = [], []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            time.sleep(0.5)  # a slow service
            ok = self.path.endswith("/NV_GPU_DRIVER_GH100_550.90.07")
            self.send_response(200 if ok else 404)
            self.end_headers()
            if ok:
                self.wfile.write(json.dumps({"rim": base64.b64encode(rim).decode()}).encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    store = nvidia_rim.RimStore(service_url=f"http://127.0.0.1:{server.server_address[1]}/v1/rim", timeout=10)
    fetch = store._fetch
    store._fetch = lambda *a: fetch_threads.append(threading.current_thread().name) or fetch(*a)
    trust = replace(devnet_trust, rims=nvidia_rim.RimVerifier([rim_signer.root], store))
    verifier = EvidenceVerifier(trust, workers=1, fetch_workers=1)
    evidence = Evidence(Platform.NVIDIA_GPU, gpus=(gpu.evidence_for(bytes(64)),))

    async def run():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        claims = await verifier.verify(verify_evidence, evidence.encode(), evidence, trust, at=int(time.time()),
                                       gpu_nonce_override=gpu_nonce(bytes(64)), source="test")
        task.cancel()
        return claims, ticks

    try:
        claims, ticks = asyncio.run(run())
    finally:
        verifier.close()
        server.shutdown()
    assert ticks >= 10  # the loop ran while the service answered
    assert hits == ["/v1/rim/NV_GPU_DRIVER_GH100_550.90.07"]
    assert fetch_threads and all(name.startswith("collateral") for name in fetch_threads)
    rim_result = claims.tee_attributes["rim"]
    assert rim_result["driver_rim"] == "drv" and rim_result["checked"] == 8 and rim_result["mismatches"] == {}
