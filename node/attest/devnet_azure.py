"""Devnet Azure CVM evidence: a devnet SNP report or TD quote wrapped by an HCL report, plus a vTPM quote.

:class:`DevnetAzureVm` plays Azure's paravisor and vTPM in real formats (derot.attest.azure's layout): its
runtime data JSON holds a fresh RSA-2048 attestation key, the hardware report binds SHA-256 of that JSON,
and :meth:`evidence` signs a TPMS_ATTEST quote (all 24 SHA-256 PCRs, extraData = report_data) with the AK.
The same verifier code checks it, under devnet roots.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from derot.attest import tpm
from derot.attest.azure import HCL_MAGIC, HW_REPORT_OFFSET, IGVM_OFFSET, REPORT_TYPE, VAR_DATA_OFFSET
from derot.attest.devnet import DevnetRoots, DevnetTee
from derot.constants import Platform

HCL_REPORT_SIZE = 2600


def _b64url(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def quote_attest(nonce: bytes, pcrs: list[bytes], *, signer: bytes = b"", clock: int = 1) -> bytes:
    """A TPMS_ATTEST (TPM_ST_ATTEST_QUOTE) over SHA-256 PCRs 0..23 with ``nonce`` as extraData."""
    return b"".join([
        struct.pack(">IH", tpm.TPM_GENERATED_VALUE, tpm.TPM_ST_ATTEST_QUOTE),
        struct.pack(">H", len(signer)) + signer,
        struct.pack(">H", len(nonce)) + nonce,
        struct.pack(">QIIB", clock, 1, 0, 1),
        struct.pack(">Q", 0x2020031200120003),
        struct.pack(">IHB", 1, tpm.ALG_SHA256, 3) + b"\xff\xff\xff",
        struct.pack(">H", 32) + tpm.pcr_digest(pcrs),
    ])


class DevnetAzureVm:
    """A devnet Azure CVM (``AZURE_SNP`` or ``AZURE_TDX``) with fixed hardware registers and PCRs."""

    def __init__(self, roots: DevnetRoots, platform: Platform, measurements: dict[str, bytes] | None = None,
                 pcrs: dict[int, bytes] | None = None, **tee_options):
        self.platform = Platform(platform)
        hw = Platform.SEV_SNP if self.platform == Platform.AZURE_SNP else Platform.TDX
        self.tee = DevnetTee(roots, hw, measurements, **tee_options)
        self.ak = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.pcrs = [bytes(32)] * tpm.NUM_PCRS
        for i, value in (pcrs or {}).items():
            self.pcrs[i] = value
        self._clock = 0

    def runtime_data(self, user_data: bytes = bytes(64)) -> bytes:
        pub = self.ak.public_key().public_numbers()
        doc = {
            "keys": [{"kid": "HCLAkPub", "key_ops": ["sign"], "kty": "RSA", "e": _b64url(pub.e), "n": _b64url(pub.n)}],
            "vm-configuration": {"console-enabled": False, "secure-boot": True, "tpm-enabled": True,
                                 "vmUniqueId": "DEVNET"},
            "user-data": user_data.hex().upper(),
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    def hcl_report(self, runtime: bytes) -> tuple[bytes, bytes]:
        """(HCL report, hardware evidence): SNP report inside the HCL; TDX: the TD quote beside it."""
        bound = hashlib.sha256(runtime).digest() + bytes(32)
        out = bytearray(HCL_REPORT_SIZE)
        out[0:20] = HCL_MAGIC + struct.pack("<IIII", 2, HCL_REPORT_SIZE, 2, 0)
        if self.platform == Platform.AZURE_SNP:
            hw = self.tee.snp_report(bound)
            out[HW_REPORT_OFFSET:HW_REPORT_OFFSET + len(hw)] = hw
        else:
            hw = self.tee.tdx_quote(bound)
            out[HW_REPORT_OFFSET + 128:HW_REPORT_OFFSET + 192] = bound  # TDREPORT report_data
        struct.pack_into("<IIIII", out, IGVM_OFFSET, len(runtime) + VAR_DATA_OFFSET - IGVM_OFFSET, 1,
                         REPORT_TYPE[self.platform], 1, len(runtime))
        out[VAR_DATA_OFFSET:VAR_DATA_OFFSET + len(runtime)] = runtime
        return bytes(out), hw

    def evidence(self, report_data: bytes, *, user_data_bound: bool = True):
        """Evidence binding ``report_data`` in the TPM quote (and in the HCL user-data if ``user_data_bound``)."""
        from derot.attest.evidence import Evidence

        runtime = self.runtime_data(report_data if user_data_bound else bytes(64))
        hcl, hw = self.hcl_report(runtime)
        self._clock += 1
        attest = quote_attest(report_data, self.pcrs, clock=self._clock)
        sig = self.ak.sign(attest, padding.PKCS1v15(), hashes.SHA256())
        snp = self.platform == Platform.AZURE_SNP
        return Evidence(
            platform=self.platform, quote=hcl, vek=self.tee.vek_der if snp else b"",
            collateral=b"" if snp else self.tee.collateral.json_text.encode(),
            tpm_quote=attest, tpm_signature=sig, tpm_pcrs=tuple(self.pcrs),
            td_quote=b"" if snp else hw, hcl_user_data_bound=user_data_bound,
        )


def image_registers(platform: Platform, image: str) -> tuple[dict[str, bytes], dict[int, bytes]]:
    """(hardware registers, PCRs) a devnet Azure VM running ``image`` reports: the paravisor is one fixed
    devnet build (MEASUREMENT or MRTD), the image is measured into PCR4 (boot manager) and PCR9 (kernel)."""
    paravisor = hashlib.sha384(b"derot devnet paravisor").digest()
    hw = {"MEASUREMENT": paravisor} if Platform(platform) == Platform.AZURE_SNP else {"MRTD": paravisor}
    image_digest = hashlib.sha256(b"derot devnet image\x00" + image.encode()).digest()
    return hw, {4: image_digest, 9: hashlib.sha256(b"kernel\x00" + image_digest).digest()}


def measurement_digest_for(platform: Platform, image: str) -> bytes:
    """The measurement digest devnet Azure evidence for ``image`` carries (what an owner allows)."""
    from derot.attest.claims import measurement_digest
    from derot.attest.devnet import REGISTER_SIZES

    hw, pcrs = image_registers(platform, image)
    hw_platform = Platform.SEV_SNP if Platform(platform) == Platform.AZURE_SNP else Platform.TDX
    registers = {name: hw.get(name, bytes(size)) for name, size in REGISTER_SIZES[hw_platform].items()}
    registers.update({f"PCR{i:02d}": pcrs.get(i, bytes(32)) for i in range(tpm.NUM_PCRS)})
    return measurement_digest(Platform(platform), registers)
