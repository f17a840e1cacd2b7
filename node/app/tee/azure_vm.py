"""The TEE device of an Azure confidential VM (SEV-SNP or TDX behind the paravisor), through its vTPM.

``evidence(report_data)``:

1. writes ``report_data`` to the HCL user-data NV index 0x01400002, so the paravisor's next report carries it;
2. reads the HCL report from NV index 0x01400001 (its type says SNP or TDX) and checks the user-data;
3. quotes SHA-256 PCRs 0..23 with the attestation key 0x81000003 and ``report_data`` as qualifying data,
   reading the PCRs until they hash to the quote's pcrDigest (a PCR may change between the two);
4. SNP: adds the VCEK (a configured file, or Azure IMDS ``/metadata/THIM/amd/certification``);
   TDX: exchanges the HCL's TDREPORT for a TD quote at IMDS ``/acc/tdquote``.

The result is ``AZURE_SNP`` / ``AZURE_TDX`` evidence for :mod:`derot.attest.azure`.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import urllib.request

from derot.app.tee.device import ConfiguredFile, check_report_data
from derot.app.tee.errors import MalformedResponse, ReportDataMismatch, TeeConfigError, TeeIOError
from derot.app.tee.vtpm import DeviceTransport, Tpm, Transport
from derot.attest import azure, tpm
from derot.attest.evidence import Evidence
from derot.constants import Platform

HCL_REPORT_INDEX = 0x01400001
HCL_USER_DATA_INDEX = 0x01400002
AK_HANDLE = 0x81000003
IMDS = "http://169.254.169.254"
IMDS_VCEK = IMDS + "/metadata/THIM/amd/certification"
IMDS_TD_QUOTE = IMDS + "/acc/tdquote"
MAX_IMDS_RESPONSE = 64 * 1024
QUOTE_ATTEMPTS = 3


def _imds(url: str, body: bytes | None = None, timeout: float = 10.0) -> dict:
    request = urllib.request.Request(url, data=body, headers={"Metadata": "true", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (fixed link-local URL)
            raw = response.read(MAX_IMDS_RESPONSE + 1)
    except OSError as exc:
        raise TeeIOError(f"Azure IMDS {url}: {exc}") from None
    if len(raw) > MAX_IMDS_RESPONSE:
        raise MalformedResponse(f"Azure IMDS {url}: response over {MAX_IMDS_RESPONSE} bytes", 0)
    from derot import untrusted

    try:
        doc = untrusted.json_loads(raw, what="Azure IMDS response", max_depth=4)
    except ValueError as exc:
        raise MalformedResponse(f"Azure IMDS {url}: {exc}", 0) from None
    if not isinstance(doc, dict):
        raise MalformedResponse(f"Azure IMDS {url}: not a JSON object", 0)
    return doc


class AzureVtpmDevice:
    """An Azure CVM's vTPM. ``platform`` is read from the HCL report on first use."""

    def __init__(self, transport: Transport | None = None, *, vek_path: str | os.PathLike | None = None,
                 imds=_imds):
        self.tpm = Tpm(transport or DeviceTransport())
        self._vek = ConfiguredFile(vek_path, "VCEK file") if vek_path else None
        self._imds = imds
        self._lock = threading.Lock()
        self._platform: Platform | None = None

    @property
    def platform(self) -> Platform:
        if self._platform is None:
            self._platform = self._kind(azure.parse_hcl_report(self.tpm.nv_read(HCL_REPORT_INDEX)))
        return self._platform

    @staticmethod
    def _kind(hcl: azure.HclReport) -> Platform:
        return Platform.AZURE_SNP if hcl.report_type == azure.REPORT_TYPE[Platform.AZURE_SNP] else Platform.AZURE_TDX

    def evidence(self, report_data: bytes) -> Evidence:
        rd = check_report_data(report_data)
        with self._lock:  # the user-data index and the HCL report are one shared slot
            self.tpm.nv_write(HCL_USER_DATA_INDEX, rd)
            hcl_raw = self.tpm.nv_read(HCL_REPORT_INDEX)
        hcl = azure.parse_hcl_report(hcl_raw)
        platform = self._platform = self._kind(hcl)
        bound = _user_data(hcl)[:64] == rd
        attest, signature, pcrs = self.quote(rd)
        if platform == Platform.AZURE_SNP:
            return Evidence(platform, quote=hcl_raw, vek=self._vcek(), tpm_quote=attest, tpm_signature=signature,
                            tpm_pcrs=tuple(pcrs), hcl_user_data_bound=bound)
        td_report = hcl.hardware_report
        doc = self._imds(IMDS_TD_QUOTE, json.dumps(
            {"report": base64.urlsafe_b64encode(td_report).rstrip(b"=").decode()}).encode())
        try:
            text = doc["quote"]
            td_quote = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (KeyError, TypeError, ValueError):
            raise MalformedResponse("Azure IMDS td quote: no base64url 'quote'", 0) from None
        return Evidence(platform, quote=hcl_raw, td_quote=td_quote, tpm_quote=attest, tpm_signature=signature,
                        tpm_pcrs=tuple(pcrs), hcl_user_data_bound=bound)

    def quote(self, nonce: bytes) -> tuple[bytes, bytes, list[bytes]]:
        """(TPMS_ATTEST, RSA signature, PCRs 0..23) with ``nonce`` as qualifying data, PCRs consistent."""
        for _ in range(QUOTE_ATTEMPTS):
            attest, sig = self.tpm.quote(AK_HANDLE, nonce)
            parsed = tpm.parse_quote_attest(attest)
            if parsed.extra_data != nonce:
                raise ReportDataMismatch("the vTPM quote does not carry the requested nonce")
            if sig.sig_alg != tpm.ALG_RSASSA or sig.hash_alg != tpm.ALG_SHA256:
                raise MalformedResponse("the vTPM quote is not RSASSA/SHA-256 signed", 0)
            pcrs = self.tpm.pcr_read_sha256()
            if tpm.pcr_digest(pcrs) == parsed.pcr_digest:
                return attest, sig.signature, pcrs
        raise TeeIOError("the PCRs kept changing while quoting; try again")

    def _vcek(self) -> bytes:
        if self._vek is not None:
            return self._vek.read()
        doc = self._imds(IMDS_VCEK)
        pem = doc.get("vcekCert")
        if not isinstance(pem, str) or "BEGIN CERTIFICATE" not in pem:
            raise TeeConfigError("Azure IMDS returned no VCEK; pass vek_path")
        return pem.encode()


def _user_data(hcl: azure.HclReport) -> bytes:
    from derot import untrusted

    try:
        doc = untrusted.json_loads(hcl.runtime_data, what="HCL runtime data", max_depth=8)
        return bytes.fromhex(doc.get("user-data", "")) if isinstance(doc, dict) else b""
    except (ValueError, TypeError, AttributeError):
        return b""
