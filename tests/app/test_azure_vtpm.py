"""The Azure vTPM device speaks TPM2 commands on the wire. No TPM here: a strict simulator parses every
command byte by byte and answers in the TPM 2.0 response layout, from the recorded trustee evidence or from
a devnet Azure VM, and the device's evidence verifies with the same verifier as everything else."""

from __future__ import annotations

import base64
import json
import os
import struct
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from derot.app.tee import vtpm
from derot.app.tee.azure_vm import AK_HANDLE, HCL_REPORT_INDEX, HCL_USER_DATA_INDEX, IMDS_TD_QUOTE, AzureVtpmDevice
from derot.app.tee.errors import MalformedResponse, ReportDataMismatch
from derot.attest import azure, tpm
from derot.attest.devnet import DevnetRoots
from derot.attest.trust import TrustConfig
from derot.attest.devnet_azure import DevnetAzureVm, quote_attest
from derot.attest.evidence import Evidence
from derot.attest.verify import verify_evidence
from derot.constants import Platform


@pytest.fixture(scope="module")
def devnet(tmp_path_factory):
    return DevnetRoots.generate(tmp_path_factory.mktemp("devnet"))


@pytest.fixture(scope="module")
def devnet_trust(devnet):
    return TrustConfig.devnet(devnet)


@pytest.fixture(scope="module")
def production_trust():
    return TrustConfig.production_defaults(pccs_url=None)


def _text(vectors_dir, rel):
    return (vectors_dir / rel).read_text()


class SimulatedVtpm:
    """Answers TPM2 commands from state: NV indices, PCRs, and a signer for quotes."""

    def __init__(self, nv: dict[int, bytes], pcrs: list[bytes], sign, quote_override=None):
        self.nv, self.pcrs, self.sign, self.quote_override = nv, pcrs, sign, quote_override
        self.log: list[str] = []
        self.on_write = None

    def transact(self, command: bytes) -> bytes:
        tag, size, cc = struct.unpack(">HII", command[:10])
        assert size == len(command), "command size field"
        body = command[10:]
        handles_n = {vtpm.CC_NV_READ_PUBLIC: 1, vtpm.CC_NV_READ: 2, vtpm.CC_NV_WRITE: 2, vtpm.CC_NV_DEFINE_SPACE: 1,
                     vtpm.CC_QUOTE: 1, vtpm.CC_READ_PUBLIC: 1, vtpm.CC_PCR_READ: 0}[cc]
        handles = struct.unpack(f">{handles_n}I", body[:4 * handles_n])
        body = body[4 * handles_n:]
        if tag == vtpm.ST_SESSIONS:
            n = struct.unpack(">I", body[:4])[0]
            assert body[4:4 + n] == vtpm.PW_SESSION
            body = body[4 + n:]
        else:
            assert tag == vtpm.ST_NO_SESSIONS
        name = {v: k for k, v in vars(vtpm).items() if k.startswith("CC_")}[cc]
        self.log.append(name)
        return getattr(self, name.lower())(handles, body, tag)

    @staticmethod
    def _ok(params: bytes, tag: int) -> bytes:
        if tag == vtpm.ST_SESSIONS:
            params = struct.pack(">I", len(params)) + params + b"\x00\x00\x01\x00\x00"  # nonce, attrs, hmac
        return struct.pack(">HII", tag, 10 + len(params), 0) + params

    @staticmethod
    def _rc(rc: int) -> bytes:
        return struct.pack(">HII", vtpm.ST_NO_SESSIONS, 10, rc)

    def cc_nv_read_public(self, handles, body, tag):
        if handles[0] not in self.nv:
            return self._rc(0x18B)
        pub = struct.pack(">IHI", handles[0], tpm.ALG_SHA256, 0) + b"\x00\x00" + struct.pack(">H", len(self.nv[handles[0]]))
        return self._ok(struct.pack(">H", len(pub)) + pub + b"\x00\x00", tag)

    def cc_nv_read(self, handles, body, tag):
        assert handles[0] == vtpm.RH_OWNER
        n, off = struct.unpack(">HH", body)
        assert n <= vtpm.NV_CHUNK
        data = self.nv[handles[1]][off:off + n]
        return self._ok(struct.pack(">H", len(data)) + data, tag)

    def cc_nv_define_space(self, handles, body, tag):
        assert handles == (vtpm.RH_OWNER,) and body[:2] == b"\x00\x00"
        pub = body[4:]
        index, _, _, _, size = struct.unpack(">IHIHH", pub)
        self.nv[index] = bytes(size)
        return self._ok(b"", tag)

    def cc_nv_write(self, handles, body, tag):
        n = struct.unpack(">H", body[:2])[0]
        self.nv[handles[1]] = body[2:2 + n]
        assert body[2 + n:] == b"\x00\x00"
        if self.on_write:
            self.on_write(handles[1], body[2:2 + n])
        return self._ok(b"", tag)

    def cc_pcr_read(self, handles, body, tag):
        count, alg, size = struct.unpack(">IHB", body[:7])
        assert (count, alg, size) == (1, tpm.ALG_SHA256, 3)
        bits = body[7:10]
        chosen = [8 * i + b for i, byte in enumerate(bits) for b in range(8) if byte >> b & 1][:8]  # at most 8
        out_bits = bytearray(3)
        for i in chosen:
            out_bits[i // 8] |= 1 << (i % 8)
        params = struct.pack(">IIHB", 7, 1, tpm.ALG_SHA256, 3) + bytes(out_bits) + struct.pack(">I", len(chosen))
        params += b"".join(struct.pack(">H", 32) + self.pcrs[i] for i in chosen)
        return self._ok(params, tag)

    def cc_quote(self, handles, body, tag):
        assert handles == (AK_HANDLE,)
        n = struct.unpack(">H", body[:2])[0]
        nonce = body[2:2 + n]
        assert body[2 + n:] == struct.pack(">HIHB", tpm.ALG_NULL, 1, tpm.ALG_SHA256, 3) + b"\xff\xff\xff"
        attest = self.quote_override or quote_attest(nonce, self.pcrs)
        sig = self.sign(attest)
        params = struct.pack(">H", len(attest)) + attest + struct.pack(">HHH", tpm.ALG_RSASSA, tpm.ALG_SHA256, len(sig)) + sig
        return self._ok(params, tag)


def test_recorded_snp_evidence_through_the_device(vectors_dir, production_trust):
    """The device reassembles trustee's recorded SNP evidence from TPM2 responses; it verifies as recorded."""
    doc = json.loads(_text(vectors_dir, "trustee_azure_vtpm/az-snp-vtpm/evidence-v1.json"))
    recorded = azure.from_trustee_json(json.dumps(doc))
    sim = SimulatedVtpm({HCL_REPORT_INDEX: recorded.quote}, list(recorded.tpm_pcrs),
                        sign=lambda _: recorded.tpm_signature, quote_override=recorded.tpm_quote)
    device = AzureVtpmDevice(sim)
    assert device.platform == Platform.AZURE_SNP
    attest, sig, pcrs = device.quote(b"challenge")
    assert (attest, sig, tuple(pcrs)) == (recorded.tpm_quote, recorded.tpm_signature, recorded.tpm_pcrs)
    assert sim.log.count("CC_PCR_READ") == 3  # 8 PCRs per answer
    ev = Evidence(Platform.AZURE_SNP, quote=sim.nv[HCL_REPORT_INDEX], vek=recorded.vek, tpm_quote=attest,
                  tpm_signature=sig, tpm_pcrs=tuple(pcrs))
    claims = verify_evidence(ev, production_trust, at=1738368000)  # 2025-02-01
    assert claims.details["tpm_nonce"] == b"challenge"
    # the recorded quote carries "challenge": asking for another nonce is refused by the device itself
    with pytest.raises(ReportDataMismatch):
        device.quote(b"another nonce")


@pytest.mark.parametrize("platform", [Platform.AZURE_SNP, Platform.AZURE_TDX])
def test_devnet_vm_through_the_device(devnet, devnet_trust, tmp_path, platform):
    vm = DevnetAzureVm(devnet, platform, pcrs={9: b"\x09" * 32})
    state = {}

    def refresh(index, data):  # the paravisor regenerates its report with the new user-data
        if index == HCL_USER_DATA_INDEX:
            hcl, hw = vm.hcl_report(vm.runtime_data(data))
            sim.nv[HCL_REPORT_INDEX] = hcl
            state["hw"] = hw

    hcl0, _ = vm.hcl_report(vm.runtime_data())
    sim = SimulatedVtpm({HCL_REPORT_INDEX: hcl0}, list(vm.pcrs),
                        sign=lambda m: vm.ak.sign(m, padding.PKCS1v15(), hashes.SHA256()))
    sim.on_write = refresh

    def imds(url, body=None):
        assert url == IMDS_TD_QUOTE
        report = json.loads(body)["report"]
        assert len(base64.urlsafe_b64decode(report + "==")) == 1024
        return {"quote": base64.urlsafe_b64encode(state["hw"]).decode()}

    vek = tmp_path / "vcek.der"
    if platform == Platform.AZURE_SNP:
        vek.write_bytes(vm.tee.vek_der)
    device = AzureVtpmDevice(sim, vek_path=vek if platform == Platform.AZURE_SNP else None, imds=imds)
    rd = os.urandom(64)
    ev = device.evidence(rd)
    assert "CC_NV_DEFINE_SPACE" in sim.log  # the user-data index did not exist yet
    assert ev.platform == platform and ev.hcl_user_data_bound
    if platform == Platform.AZURE_TDX:
        ev = replace(ev, collateral=vm.tee.collateral.json_text.encode())  # the app ships collateral
    ev = Evidence.decode(ev.encode())
    claims = verify_evidence(ev, devnet_trust)
    assert claims.report_data == rd and claims.measurements["PCR09"] == b"\x09" * 32
    assert device.evidence(os.urandom(64)).tpm_quote != ev.tpm_quote
    assert "CC_NV_DEFINE_SPACE" not in sim.log[sim.log.index("CC_QUOTE"):]


def test_malformed_tpm_responses():
    class Bad:
        def __init__(self, raw):
            self.raw = raw

        def transact(self, command):
            return self.raw

    for raw in [b"", b"\x80\x01\x00\x00\x00\x0b\x00\x00\x00\x00", struct.pack(">HII", 0x8001, 12, 0) + b"\x00\x05"]:
        with pytest.raises(MalformedResponse):
            vtpm.Tpm(Bad(raw)).nv_size(HCL_REPORT_INDEX)
    with pytest.raises(vtpm.TpmError) as e:
        vtpm.Tpm(Bad(struct.pack(">HII", 0x8001, 10, 0x18B))).nv_size(HCL_USER_DATA_INDEX)
    assert e.value.bad_handle and "0x18b" in str(e.value)


def test_tpmt_public_of_the_ak(vectors_dir):
    """ReadPublic's TPMT_PUBLIC layout for an RSA-2048 RSASSA/SHA-256 signing key; its key is the HCL AK."""
    ev = azure.from_trustee_json(_text(vectors_dir, "trustee_azure_vtpm/az-snp-vtpm/evidence-v1.json"))
    hcl = azure.parse_hcl_report(ev.quote)
    ak = azure.runtime_data(hcl, hcl.hardware_report[0x50:0x90]).ak.public_numbers()
    body = struct.pack(">HHI", tpm.ALG_RSA, tpm.ALG_SHA256, 0x00050072) + b"\x00\x00" + struct.pack(
        ">HHHHI", tpm.ALG_NULL, tpm.ALG_RSASSA, tpm.ALG_SHA256, 2048, 0) + struct.pack(">H", 256) + ak.n.to_bytes(256, "big")
    pub = tpm.parse_public(body)
    assert pub.public_key().public_numbers() == ak and pub.scheme == tpm.ALG_RSASSA
    assert pub.name()[:2] == b"\x00\x0b" and len(pub.name()) == 34
    # the quote's qualifiedSigner is such a name (SHA-256 nameAlg)
    assert tpm.parse_quote_attest(ev.tpm_quote).qualified_signer[:2] == b"\x00\x0b"
    with pytest.raises(Exception):
        tpm.parse_public(body[:-1])


def test_detect_skips_a_tpm_without_hcl_report(tmp_path):
    from derot.app.tee import detect_device
    from derot.app.tee.errors import TeeUnavailable

    fake = tmp_path / "tpmrm0"
    fake.write_bytes(b"")  # answers nothing: not an Azure vTPM
    with pytest.raises(TeeUnavailable) as e:
        detect_device(configfs_root=tmp_path / "none", sev_guest=tmp_path / "none2", tpm_device=fake)
    assert "not an Azure CVM vTPM" in str(e.value)


@pytest.mark.parametrize("platform", [Platform.AZURE_SNP, Platform.AZURE_TDX])
def test_devnet_azure_device_measurement_is_the_owner_value(devnet, devnet_trust, platform):
    """What `derot app allow --devnet-image` computes is what the devnet Azure device's evidence carries."""
    from derot.app.tee.devnet_azure import DevnetAzureDevice
    from derot.attest.devnet_azure import measurement_digest_for

    device = DevnetAzureDevice(devnet, platform, "my-app v1", gpus=1)
    ev = device.evidence(os.urandom(64))
    claims = verify_evidence(ev, devnet_trust)
    assert claims.measurement_digest == measurement_digest_for(platform, "my-app v1")
    assert claims.measurement_digest != measurement_digest_for(platform, "my-app v2")
    assert len(claims.gpus) == 1
