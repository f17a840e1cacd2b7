"""TEE devices (derot.app.tee) against recorded byte layouts and real evidence.

The kernel side is played by fakes that follow the kernel ABIs, never by our own code:
- configfs-tsm: a report instance directory in tmp_path. ``outblob``/``auxblob`` are FIFOs served by a
  thread that, like ``drivers/virt/coco/tsm.c``, reads the ``inblob`` the device wrote, bumps
  ``generation`` once per write, and returns the recorded blob.
- /dev/sev-guest: an ``ioctl`` stand-in that decodes ``struct snp_guest_request_ioctl`` from raw bytes,
  reads the request from process memory at ``req_data`` and writes a recorded MSG_REPORT_RSP at
  ``resp_data`` (layouts from include/uapi/linux/sev-guest.h, constants written out here).
Evidence is then checked with the verifier's own parsers and verify_evidence.
"""

from __future__ import annotations

import base64
import ctypes
import datetime
import errno
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from derot.app.tee import (
    ConcurrentReport,
    DevnetDevice,
    FirmwareError,
    InvalidReportData,
    MalformedResponse,
    ProviderMismatch,
    ReportDataMismatch,
    RequestGate,
    ShortRead,
    SnpConfigfsDevice,
    SnpDevice,
    TdxConfigfsDevice,
    TeeConfigError,
    TeeDevice,
    TeeIOError,
    TeePermissionDenied,
    TeeUnavailable,
    detect_device,
)
from derot.attest import sev_snp
from derot.attest.devnet import DevnetRoots, DevnetTee
from derot.attest.errors import RootNotTrusted
from derot.attest.intel_quote import parse_quote
from derot.attest.trust import TrustConfig
from derot.attest.verify import verify_evidence
from derot.constants import Platform, TcbStatus

from .tee_kernel import cert_table

# _IOWR('S', nr, struct snp_guest_request_ioctl /* 32 bytes */) = 3<<30 | 32<<16 | 0x53<<8 | nr
SNP_GET_REPORT = 0xC0205300
SNP_GET_EXT_REPORT = 0xC0205302
# GHCB certificate-table GUIDs, RFC 4122 byte order (uuid_parse), written out byte for byte.
VCEK_GUID_BYTES = bytes.fromhex("63da758de6644564adc5f4b93be8accd")
VLEK_GUID_BYTES = bytes.fromhex("a8074bc2a25a483eaae639c045a0b8a1")
ASK_GUID_BYTES = bytes.fromhex("4ab7b379bbac4fe4a02f05aef327c782")
# Offsets from the specs: TDX v4 quote report_data = header 48 + TD report 520; SNP report 0x50.
TDX_V4_REPORT_DATA = slice(568, 632)
SNP_REPORT_DATA = slice(0x50, 0x90)


def _ts(iso: str) -> int:
    return int(datetime.datetime.fromisoformat(iso).replace(tzinfo=datetime.timezone.utc).timestamp())


@pytest.fixture(autouse=True)
def fresh_snp_gate(monkeypatch):
    """Each test gets its own unspaced SEV-SNP gate (the process-wide one spaces requests 2 s apart and
    remembers a disabled channel)."""
    monkeypatch.setattr("derot.app.tee.gate._snp_gate", RequestGate(0.0))


@pytest.fixture(scope="module")
def roots_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("devnet-roots")
    DevnetRoots.generate(path)
    return path


@pytest.fixture(scope="module")
def roots(roots_dir) -> DevnetRoots:
    return DevnetRoots.load(roots_dir)


@pytest.fixture(scope="module")
def production() -> TrustConfig:
    return TrustConfig.production_defaults(pccs_url=None)


@pytest.fixture(scope="module")
def tdx_quote(vectors_dir) -> bytes:
    return (vectors_dir / "phala_dcap_qvl" / "tdx_quote").read_bytes()


@pytest.fixture(scope="module")
def snp_report(vectors_dir) -> bytes:
    return (vectors_dir / "google_go_sev_guest" / "attestation.bin").read_bytes()


@pytest.fixture(scope="module")
def vcek(vectors_dir) -> bytes:
    return (vectors_dir / "google_go_sev_guest" / "vcek_milan.der").read_bytes()


# --------------------------------------------------------------------------- fake configfs-tsm


class FakeReportInstance:
    """``<root>/<name>/`` shaped like a configfs-tsm report instance, answering one request."""

    def __init__(self, root: Path, provider: str, outblob: bytes, *, auxblob: bytes | None = None,
                 generation: int = 7, extra_writes: int = 0, drop_writes: bool = False, privlevel: bool = False):
        self.dir = root / "shared"
        self.dir.mkdir(parents=True)
        (self.dir / "provider").write_text(provider + "\n")
        (self.dir / "generation").write_text(f"{generation}\n")
        (self.dir / "inblob").write_bytes(b"")
        if privlevel:
            (self.dir / "privlevel").write_bytes(b"")
        os.mkfifo(self.dir / "outblob")
        if auxblob is not None:
            os.mkfifo(self.dir / "auxblob")
        self.generation, self.extra_writes, self.drop_writes = generation, extra_writes, drop_writes
        self.blobs = [("outblob", outblob)] + ([("auxblob", auxblob)] if auxblob is not None else [])
        self.inblob_seen: bytes | None = None
        self.privlevel_seen: bytes | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        for index, (name, blob) in enumerate(self.blobs):
            fd = self._open_writer(self.dir / name)
            if fd is None:
                return
            if index == 0:  # the device has closed inblob (and privlevel): the kernel applied them
                self.inblob_seen = (self.dir / "inblob").read_bytes()
                writes = 1
                if (self.dir / "privlevel").exists():
                    self.privlevel_seen = (self.dir / "privlevel").read_bytes()
                    writes += bool(self.privlevel_seen)
                bump = 0 if self.drop_writes else writes + self.extra_writes
                (self.dir / "generation").write_text(f"{self.generation + bump}\n")
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]
            os.close(fd)

    @staticmethod
    def _open_writer(path: Path, timeout: float = 10.0) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:  # ENXIO: no reader yet
                if exc.errno != errno.ENXIO:
                    raise
                time.sleep(0.002)
        return None

    def join(self) -> None:
        self._thread.join(timeout=10)


# --------------------------------------------------------------------------- TDX via configfs-tsm


def test_tdx_configfs_round_trips_the_exact_quote(tmp_path, tdx_quote, production, vectors_dir):
    rd = tdx_quote[TDX_V4_REPORT_DATA]
    assert rd.hex().startswith("9a9d48e7f6799642d3d1b34e1e5e1742")  # tests/vectors/EXPECTED.md
    fake = FakeReportInstance(tmp_path, "tdx_guest", tdx_quote)
    device = TdxConfigfsDevice(tmp_path, entry="shared")
    assert isinstance(device, TeeDevice)
    ev = device.evidence(rd)
    fake.join()
    assert ev.platform == Platform.TDX and ev.quote == tdx_quote and ev.collateral == b""
    assert fake.inblob_seen == rd
    assert parse_quote(ev.quote).body.report_data == rd
    assert (fake.dir / "generation").read_text() == "8\n"
    # The bytes are the real quote: it verifies with its recorded collateral inside the window.
    bundle = (vectors_dir / "phala_dcap_qvl" / "tdx_quote_collateral.json").read_bytes()
    claims = verify_evidence(replace(ev, collateral=bundle), production, at=_ts("2025-07-01T00:00:00"))
    assert claims.report_data == rd and claims.tcb_status == TcbStatus.UP_TO_DATE


def test_tdx_configfs_devnet_quote_with_fresh_bundle_verifies(tmp_path, roots):
    tee = DevnetTee(roots, Platform.TDX, {"MRTD": b"\x11" * 48})
    rd = os.urandom(64)
    bundle = tmp_path / "collateral.json"
    bundle.write_text(tee.collateral.json_text)
    FakeReportInstance(tmp_path / "tsm", "tdx_guest", tee.tdx_quote(rd))
    ev = TdxConfigfsDevice(tmp_path / "tsm", entry="shared", collateral_path=bundle).evidence(rd)
    assert ev.collateral == bundle.read_bytes()
    claims = verify_evidence(ev, TrustConfig.devnet(roots))
    assert claims.report_data == rd and claims.measurements["MRTD"] == b"\x11" * 48


def test_tdx_bundle_left_out_when_stale_or_for_another_fmspc(tmp_path, roots, tdx_quote, vectors_dir, caplog):
    stale = vectors_dir / "phala_dcap_qvl" / "tdx_quote_collateral.json"  # valid until 2025-07-19
    FakeReportInstance(tmp_path / "a", "tdx_guest", tdx_quote)
    device = TdxConfigfsDevice(tmp_path / "a", entry="shared", collateral_path=stale)
    ev = device.evidence(tdx_quote[TDX_V4_REPORT_DATA])
    assert ev.collateral == b"" and "stale" in caplog.text

    other = tmp_path / "other.json"
    other.write_text(roots.tdx_collateral(bytes.fromhex("00c06f0a0000")).json_text)
    tee = DevnetTee(roots, Platform.TDX)
    FakeReportInstance(tmp_path / "b", "tdx_guest", tee.tdx_quote(bytes(64)))
    ev = TdxConfigfsDevice(tmp_path / "b", entry="shared", collateral_path=other).evidence(bytes(64))
    assert ev.collateral == b"" and "00c06f0a0000" in caplog.text


def test_broken_collateral_bundle_is_a_config_error(tmp_path, tdx_quote):
    bundle = tmp_path / "collateral.json"
    bundle.write_text("{not json")
    FakeReportInstance(tmp_path / "tsm", "tdx_guest", tdx_quote)
    device = TdxConfigfsDevice(tmp_path / "tsm", entry="shared", collateral_path=bundle)
    with pytest.raises(TeeConfigError, match="collateral bundle"):
        device.evidence(tdx_quote[TDX_V4_REPORT_DATA])


def test_private_instance_is_created_and_removed(tmp_path):
    # A plain directory is not configfs: the new instance has no provider attribute.
    with pytest.raises(TeeUnavailable, match="no provider attribute"):
        TdxConfigfsDevice(tmp_path).evidence(bytes(64))
    assert list(tmp_path.iterdir()) == []


def test_wrong_provider_is_refused_before_writing(tmp_path, snp_report):
    fake = FakeReportInstance(tmp_path, "sev_guest", snp_report)
    with pytest.raises(ProviderMismatch, match="'sev_guest', expected 'tdx_guest'"):
        TdxConfigfsDevice(tmp_path, entry="shared").evidence(bytes(64))
    assert (fake.dir / "inblob").read_bytes() == b""


def test_generation_moved_by_another_writer(tmp_path, tdx_quote):
    FakeReportInstance(tmp_path, "tdx_guest", tdx_quote, extra_writes=1)
    with pytest.raises(ConcurrentReport, match="7 -> 9"):
        TdxConfigfsDevice(tmp_path, entry="shared").evidence(tdx_quote[TDX_V4_REPORT_DATA])


def test_generation_not_advanced_means_the_write_was_dropped(tmp_path, tdx_quote):
    FakeReportInstance(tmp_path, "tdx_guest", tdx_quote, drop_writes=True)
    with pytest.raises(TeeIOError, match="did not accept"):
        TdxConfigfsDevice(tmp_path, entry="shared").evidence(tdx_quote[TDX_V4_REPORT_DATA])


def test_quote_for_other_report_data(tmp_path, tdx_quote):
    FakeReportInstance(tmp_path, "tdx_guest", tdx_quote)
    with pytest.raises(ReportDataMismatch):
        TdxConfigfsDevice(tmp_path, entry="shared").evidence(bytes(64))


@pytest.mark.parametrize("cut,offset", [(40, 40), (600, 600), (3000, 632)])
def test_truncated_quote(tmp_path, tdx_quote, cut, offset):
    FakeReportInstance(tmp_path, "tdx_guest", tdx_quote[:cut])
    with pytest.raises(ShortRead) as info:
        TdxConfigfsDevice(tmp_path, entry="shared").evidence(tdx_quote[TDX_V4_REPORT_DATA])
    assert info.value.offset == offset


def test_sgx_quote_in_outblob_is_malformed(tmp_path, vectors_dir):
    sgx = (vectors_dir / "phala_dcap_qvl" / "sgx_quote").read_bytes()
    FakeReportInstance(tmp_path, "tdx_guest", sgx)
    with pytest.raises(MalformedResponse):
        TdxConfigfsDevice(tmp_path, entry="shared").evidence(bytes(64))


def test_missing_configfs_root(tmp_path):
    with pytest.raises(TeeUnavailable, match=str(tmp_path / "none")):
        TdxConfigfsDevice(tmp_path / "none").evidence(bytes(64))


# --------------------------------------------------------------------------- SEV-SNP via configfs-tsm


def test_snp_configfs_report_and_vcek_from_auxblob(tmp_path, snp_report, vcek, production, vectors_dir):
    rd = snp_report[SNP_REPORT_DATA]
    assert rd.hex().startswith("010203040500000000000000")  # tests/vectors/EXPECTED.md
    pem = (vectors_dir / "google_go_sev_guest" / "ask_ark_milan.pem").read_text()
    ask_der = base64.b64decode("".join(pem.split("-----")[2].split()))
    fake = FakeReportInstance(tmp_path, "sev_guest", snp_report,
                              auxblob=cert_table((ASK_GUID_BYTES, ask_der), (VCEK_GUID_BYTES, vcek)))
    ev = SnpConfigfsDevice(tmp_path, entry="shared").evidence(rd)
    fake.join()
    assert ev.platform == Platform.SEV_SNP and ev.quote == snp_report and ev.vek == vcek and ev.ask == b""
    assert fake.inblob_seen == rd
    assert sev_snp.parse_report(ev.quote).report_data == rd
    claims = verify_evidence(ev, production, at=_ts("2024-01-01T00:00:00"))
    assert claims.report_data == rd and claims.hardware_ids.chip_id == snp_report[0x1A0:0x1E0]


def test_snp_configfs_privlevel(tmp_path, snp_report, vcek):
    table = cert_table((VCEK_GUID_BYTES, vcek))
    fake = FakeReportInstance(tmp_path / "a", "sev_guest", snp_report, auxblob=table, privlevel=True)
    ev = SnpConfigfsDevice(tmp_path / "a", entry="shared", privlevel=0).evidence(snp_report[SNP_REPORT_DATA])
    assert ev.quote == snp_report and fake.privlevel_seen == b"0\n"
    assert (fake.dir / "generation").read_text() == "9\n"  # privlevel + inblob
    # The recorded report is for VMPL 0, so a VMPL 1 request must not accept it.
    FakeReportInstance(tmp_path / "b", "sev_guest", snp_report, auxblob=table, privlevel=True)
    with pytest.raises(ReportDataMismatch, match="VMPL 0"):
        SnpConfigfsDevice(tmp_path / "b", entry="shared", privlevel=1).evidence(snp_report[SNP_REPORT_DATA])


def test_snp_without_any_vek_names_the_kds_url(tmp_path, snp_report):
    FakeReportInstance(tmp_path, "sev_guest", snp_report, auxblob=b"")
    with pytest.raises(TeeConfigError) as info:
        SnpConfigfsDevice(tmp_path, entry="shared").evidence(snp_report[SNP_REPORT_DATA])
    # go-sev-guest's test of this report: KDS URL .../vcek/v1/Milan/<chip_id>?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68
    chip_id = snp_report[0x1A0:0x1E0].hex()
    assert "https://kdsintf.amd.com/vcek/v1/" in str(info.value)
    assert f"/{chip_id}?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68" in str(info.value)


def test_snp_vek_file_der_pem_and_wrong_chip(tmp_path, snp_report, vcek, vectors_dir):
    pem = tmp_path / "vcek.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(vcek).decode() + "-----END CERTIFICATE-----\n")
    for index, path in enumerate((vectors_dir / "google_go_sev_guest" / "vcek_milan.der", pem)):
        FakeReportInstance(tmp_path / f"tsm{index}", "sev_guest", snp_report, auxblob=b"")
        ev = SnpConfigfsDevice(tmp_path / f"tsm{index}", entry="shared", vek_path=path).evidence(
            snp_report[SNP_REPORT_DATA])
        assert ev.vek == vcek
    other_chip = vectors_dir / "virtee_sev" / "vcek_milan.der"
    FakeReportInstance(tmp_path / "other", "sev_guest", snp_report, auxblob=b"")
    with pytest.raises(TeeConfigError, match="does not match"):
        SnpConfigfsDevice(tmp_path / "other", entry="shared", vek_path=other_chip).evidence(snp_report[SNP_REPORT_DATA])
    FakeReportInstance(tmp_path / "gone", "sev_guest", snp_report, auxblob=b"")
    with pytest.raises(TeeConfigError, match="nowhere"):
        SnpConfigfsDevice(tmp_path / "gone", entry="shared", vek_path=tmp_path / "nowhere").evidence(
            snp_report[SNP_REPORT_DATA])


def test_snp_picks_the_key_the_report_names(tmp_path, roots):
    tee = DevnetTee(roots, Platform.SEV_SNP, vlek=True)
    rd = os.urandom(64)
    report = tee.snp_report(rd)
    FakeReportInstance(tmp_path / "a", "sev_guest", report, auxblob=cert_table((VLEK_GUID_BYTES, tee.vek_der)))
    ev = SnpConfigfsDevice(tmp_path / "a", entry="shared").evidence(rd)
    assert ev.vek == tee.vek_der
    assert verify_evidence(ev, TrustConfig.devnet(roots)).report_data == rd
    # The same certificate filed under the VCEK GUID is not what signed a VLEK report.
    FakeReportInstance(tmp_path / "b", "sev_guest", report, auxblob=cert_table((VCEK_GUID_BYTES, tee.vek_der)))
    with pytest.raises(TeeConfigError, match="VLEK"):
        SnpConfigfsDevice(tmp_path / "b", entry="shared").evidence(rd)


@pytest.mark.parametrize("table,match", [
    (lambda v: cert_table((VCEK_GUID_BYTES, v))[:-100], "covers bytes"),
    (lambda v: VCEK_GUID_BYTES + struct.pack("<II", 24, 10) + v[:10], "no terminating"),
    (lambda v: VCEK_GUID_BYTES + struct.pack("<II", 0, 24) + bytes(24), "overlaps"),
])
def test_malformed_certificate_table_falls_back_to_vek_path(tmp_path, snp_report, vcek, vectors_dir, table, match,
                                                           caplog):
    """A broken host table is named, never fatal: the configured VEK file still serves (issue 18 #2)."""
    FakeReportInstance(tmp_path / "a", "sev_guest", snp_report, auxblob=table(vcek))
    with pytest.raises(TeeConfigError, match=match):
        SnpConfigfsDevice(tmp_path / "a", entry="shared").evidence(snp_report[SNP_REPORT_DATA])
    FakeReportInstance(tmp_path / "b", "sev_guest", snp_report, auxblob=table(vcek))
    vek = vectors_dir / "google_go_sev_guest" / "vcek_milan.der"
    ev = SnpConfigfsDevice(tmp_path / "b", entry="shared", vek_path=vek).evidence(snp_report[SNP_REPORT_DATA])
    assert ev.vek == vcek and match in caplog.text


def test_duplicate_guid_is_named_but_the_signing_entry_wins(tmp_path, snp_report, vcek, vectors_dir, caplog):
    junk = (vectors_dir / "virtee_sev" / "vcek_milan.der").read_bytes()  # another chip's VCEK, listed first
    FakeReportInstance(tmp_path, "sev_guest", snp_report,
                       auxblob=cert_table((VCEK_GUID_BYTES, junk), (VCEK_GUID_BYTES, vcek)))
    ev = SnpConfigfsDevice(tmp_path, entry="shared").evidence(snp_report[SNP_REPORT_DATA])
    assert ev.vek == vcek and "appears twice" in caplog.text


def test_truncated_snp_outblob(tmp_path, snp_report):
    FakeReportInstance(tmp_path, "sev_guest", snp_report[:1000], auxblob=b"")
    with pytest.raises(ShortRead) as info:
        SnpConfigfsDevice(tmp_path, entry="shared").evidence(snp_report[SNP_REPORT_DATA])
    assert info.value.offset == 1000


# --------------------------------------------------------------------------- SEV-SNP via /dev/sev-guest


class FakeSevGuest:
    """Plays the sev-guest driver: decodes the ioctl argument from raw bytes, reads the request at
    ``req_data`` and writes ``response`` (a MSG_REPORT_RSP) at ``resp_data``, or fails like the driver."""

    def __init__(self, response: bytes = b"", *, certs: bytes = b"", fw_error: int = 0, vmm_error: int = 0,
                 errno_: int = errno.EIO, certs_needed: int | None = None):
        self.response, self.certs = response, certs
        self.fw_error, self.vmm_error, self.errno, self.certs_needed = fw_error, vmm_error, errno_, certs_needed
        self.calls: list[dict] = []

    def __call__(self, fd, code, arg, mutate=False):
        assert mutate is True and isinstance(fd, int)
        raw = memoryview(arg).cast("B")
        assert len(raw) == 32
        msg_version, req_data, resp_data = struct.unpack_from("<B7xQQ", raw, 0)
        call = {"code": code, "msg_version": msg_version}
        request = ctypes.string_at(req_data, 112 if code == SNP_GET_EXT_REPORT else 96)
        call["user_data"], call["vmpl"] = request[:64], struct.unpack_from("<I", request, 64)[0]
        call["rsvd"] = request[68:96]
        if code == SNP_GET_EXT_REPORT:
            certs_address, certs_len = struct.unpack_from("<QI", request, 96)
            call["certs_len"] = certs_len
            if self.certs_needed is not None:
                ctypes.memmove(req_data + 104, struct.pack("<I", self.certs_needed), 4)
            elif self.certs:
                ctypes.memmove(certs_address, self.certs, len(self.certs))
        self.calls.append(call)
        if self.fw_error or self.vmm_error:
            struct.pack_into("<II", raw, 24, self.fw_error, self.vmm_error)
            raise OSError(self.errno, os.strerror(self.errno))
        ctypes.memmove(resp_data, self.response.ljust(4000, b"\0"), 4000)
        return 0


def msg_report_rsp(report: bytes, *, status: int = 0, size: int | None = None) -> bytes:
    """SEV-SNP firmware ABI MSG_REPORT_RSP: status u32 | report_size u32 | reserved[24] | report."""
    return struct.pack("<II", status, len(report) if size is None else size) + bytes(24) + report


@pytest.fixture
def device_node(tmp_path) -> Path:
    path = tmp_path / "sev-guest"
    path.write_bytes(b"")
    return path


def test_sev_guest_get_report(device_node, snp_report, vcek, vectors_dir, production):
    rd = snp_report[SNP_REPORT_DATA]
    fake = FakeSevGuest(msg_report_rsp(snp_report))
    device = SnpDevice(device_node, vek_path=vectors_dir / "google_go_sev_guest" / "vcek_milan.der", ioctl=fake)
    assert isinstance(device, TeeDevice)
    ev = device.evidence(rd)
    assert fake.calls == [{"code": SNP_GET_REPORT, "msg_version": 1, "user_data": rd, "vmpl": 0, "rsvd": bytes(28)}]
    assert ev.quote == snp_report and ev.vek == vcek
    assert sev_snp.parse_report(ev.quote).report_data == rd
    assert verify_evidence(ev, production, at=_ts("2024-01-01T00:00:00")).report_data == rd


def test_sev_guest_ext_report_takes_the_host_vcek(device_node, snp_report, vcek):
    fake = FakeSevGuest(msg_report_rsp(snp_report), certs=cert_table((VCEK_GUID_BYTES, vcek)))
    ev = SnpDevice(device_node, ioctl=fake).evidence(snp_report[SNP_REPORT_DATA])
    assert fake.calls[0]["code"] == SNP_GET_EXT_REPORT and fake.calls[0]["certs_len"] == 0x4000
    assert ev.quote == snp_report and ev.vek == vcek


@pytest.mark.parametrize("fw,vmm,match", [
    (0x16, 0, "firmware error 0x16 \\(INVALID_PARAM\\)"),
    (0, 2, "hypervisor error 0x2 \\(BUSY"),
    (0, 0xFFFFFFFF, "hypervisor error 0xffffffff"),
])
def test_sev_guest_firmware_errors(device_node, vcek, vectors_dir, fw, vmm, match):
    fake = FakeSevGuest(fw_error=fw, vmm_error=vmm)
    device = SnpDevice(device_node, vek_path=vectors_dir / "google_go_sev_guest" / "vcek_milan.der", ioctl=fake)
    with pytest.raises(FirmwareError, match=match) as info:
        device.evidence(bytes(64))
    assert (info.value.fw_error, info.value.vmm_error) == (fw, vmm)


def test_sev_guest_error_before_the_firmware(device_node):
    fake = FakeSevGuest(fw_error=0xFFFFFFFF, vmm_error=0xFFFFFFFF, errno_=errno.EINVAL)
    with pytest.raises(TeeIOError, match="before reaching the firmware") as info:
        SnpDevice(device_node, extended=True, ioctl=fake).evidence(bytes(64))
    assert info.value.errno == errno.EINVAL


def test_sev_guest_report_status_and_certificate_room(device_node, snp_report):
    with pytest.raises(FirmwareError, match="status 0x27 \\(INVALID_KEY\\)") as info:
        SnpDevice(device_node, ioctl=FakeSevGuest(msg_report_rsp(snp_report, status=0x27))).evidence(bytes(64))
    assert info.value.fw_error == 0x27
    fake = FakeSevGuest(vmm_error=1, certs_needed=0x5000)
    with pytest.raises(FirmwareError, match="20480 bytes"):
        SnpDevice(device_node, ioctl=fake).evidence(bytes(64))


@pytest.mark.parametrize("size,error,offset", [
    (1000, ShortRead, 1000),  # report_size says fewer bytes than a report
    (4000, MalformedResponse, 4),  # report_size runs past the 4000-byte snp_report_resp
    (0, ShortRead, 4),
])
def test_sev_guest_truncated_response(device_node, snp_report, vcek, size, error, offset):
    fake = FakeSevGuest(msg_report_rsp(snp_report[:size], size=size), certs=cert_table((VCEK_GUID_BYTES, vcek)))
    with pytest.raises(error) as info:
        SnpDevice(device_node, ioctl=fake).evidence(snp_report[SNP_REPORT_DATA])
    assert type(info.value) is error and info.value.offset == offset


def test_sev_guest_missing_device(tmp_path):
    with pytest.raises(TeeUnavailable, match="sev-guest.* does not exist"):
        SnpDevice(tmp_path / "sev-guest", ioctl=FakeSevGuest()).evidence(bytes(64))


def _as_unprivileged(fn) -> tuple[str, str]:
    """Run ``fn`` as an unprivileged user (a forked child that drops to nobody when we are root);
    returns (exception class name, message)."""
    if os.geteuid() != 0:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            return type(exc).__name__, str(exc)
        return "", ""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        outcome = ("", "")
        try:
            os.setgid(65534)
            os.setuid(65534)
            fn()
        except BaseException as exc:  # noqa: BLE001
            outcome = (type(exc).__name__, str(exc))
        os.write(write_end, "\n".join(outcome).encode())
        os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 4096):
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    name, _, message = data.decode().partition("\n")
    return name, message


def test_permission_denied():
    base = Path(tempfile.mkdtemp())
    try:
        base.chmod(0o755)
        node = base / "sev-guest"
        node.write_bytes(b"")
        node.chmod(0o600)
        (base / "tsm").mkdir()
        (base / "tsm").chmod(0o755)
        name, message = _as_unprivileged(lambda: SnpDevice(node, ioctl=FakeSevGuest()).evidence(bytes(64)))
        assert name == TeePermissionDenied.__name__ and str(node) in message
        name, message = _as_unprivileged(lambda: TdxConfigfsDevice(base / "tsm").evidence(bytes(64)))
        assert name == TeePermissionDenied.__name__ and str(base / "tsm") in message
    finally:
        for p in sorted(base.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        base.rmdir()


# --------------------------------------------------------------------------- detection


def test_detect_finds_nothing_and_says_where_it_looked(tmp_path):
    with pytest.raises(TeeUnavailable) as info:
        detect_device(configfs_root=tmp_path / "tsm", sev_guest=tmp_path / "sev-guest")
    assert str(tmp_path / "tsm") in str(info.value) and str(tmp_path / "sev-guest") in str(info.value)


def test_detect_sev_guest(tmp_path, device_node):
    device = detect_device(configfs_root=tmp_path / "tsm", sev_guest=device_node, vek_path=tmp_path / "vcek.der")
    assert isinstance(device, SnpDevice) and device.device == str(device_node) and not device.extended


def test_detect_configfs_without_provider_falls_through(tmp_path, device_node):
    tsm = tmp_path / "tsm"
    tsm.mkdir()
    assert isinstance(detect_device(configfs_root=tsm, sev_guest=device_node), SnpDevice)
    with pytest.raises(TeeUnavailable, match="no provider attribute"):
        detect_device(configfs_root=tsm, sev_guest=tmp_path / "none")
    assert list(tsm.iterdir()) == []


# --------------------------------------------------------------------------- devnet


@pytest.mark.parametrize("platform,registers", [
    (Platform.TDX, {"MRTD": b"\x01" * 48, "RTMR3": b"\x03" * 48}),
    (Platform.SEV_SNP, {"MEASUREMENT": b"\x05" * 48, "HOST_DATA": b"\x06" * 32}),
])
def test_devnet_device_verifies_under_devnet_roots(roots, production, platform, registers):
    device = DevnetDevice(roots, platform, registers)
    assert isinstance(device, TeeDevice) and device.platform == platform
    rd = os.urandom(64)
    ev = device.evidence(rd)
    claims = verify_evidence(ev, TrustConfig.devnet(roots))
    assert claims.platform == platform and claims.report_data == rd and claims.root == "devnet"
    for name, value in registers.items():
        assert claims.measurements[name] == value
    with pytest.raises(RootNotTrusted):
        verify_evidence(ev, production)


def test_devnet_device_from_directory_with_identity_and_gpu(roots_dir, roots):
    fmspc = bytes.fromhex("00c06f0a0000")
    tdx = DevnetDevice(roots_dir, Platform.TDX, fmspc=fmspc, gpus=1)
    rd = os.urandom(64)
    claims = verify_evidence(tdx.evidence(rd), TrustConfig.devnet(roots))
    assert claims.hardware_ids.fmspc == fmspc and claims.report_data == rd and len(claims.gpus) == 1
    chip = bytes([9]) * 64
    snp = DevnetDevice(roots, Platform.SEV_SNP, chip_id=chip, debug=True)
    claims = verify_evidence(snp.evidence(rd), TrustConfig.devnet(roots))
    assert claims.hardware_ids.chip_id == chip and claims.debug


def test_report_data_must_be_64_bytes(roots, device_node):
    for device in (DevnetDevice(roots, Platform.TDX), SnpDevice(device_node, ioctl=FakeSevGuest())):
        with pytest.raises(InvalidReportData, match="64 bytes, got 63"):
            device.evidence(bytes(63))
    with pytest.raises(ValueError, match="NVIDIA_GPU"):
        DevnetDevice(roots, Platform.NVIDIA_GPU)


def test_sdk_devices_import_no_node_server_code():
    """The app SDK must not pull in derot.net / derot.service / derot.chain (docs/design.md §2)."""
    code = ("import sys, derot.app.tee, derot.app.tee.devnet, derot.attest.devnet, derot.attest.verify; "
            "print(sorted(m for m in sys.modules if m.startswith(('derot.net', 'derot.service', 'derot.chain'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
