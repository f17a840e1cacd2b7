"""SEV-SNP reports through the ``/dev/sev-guest`` ioctls (Linux ``include/uapi/linux/sev-guest.h``).

``SNP_GET_REPORT`` / ``SNP_GET_EXT_REPORT`` = ``_IOWR('S', 0 / 2, struct snp_guest_request_ioctl)``::

    snp_guest_request_ioctl  msg_version u8 | pad 7 | req_data u64 | resp_data u64
                             | fw_error u32 | vmm_error u32                      (32 bytes)
    snp_report_req           user_data[64] | vmpl u32 | rsvd[28]                 (96 bytes)
    snp_ext_report_req       snp_report_req | certs_address u64 | certs_len u32  (112 bytes)
    snp_report_resp          data[4000] = MSG_REPORT_RSP: status u32 | report_size u32
                             | reserved[24] | report (1184 bytes)

``req_data``/``resp_data``/``certs_address`` are addresses in this process, so the structures are
ctypes objects. The kernel accepts at most 16 KiB (``SEV_FW_BLOB_MAX_SIZE``, page-aligned) of
certificates; when the host has more it sets ``vmm_error`` = 1 (INVALID_LEN). ``fw_error`` =
``0xffffffff`` (``0xff`` on older kernels) means the firmware was never called.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct

from derot.attest.evidence import Evidence
from derot.constants import Platform

from derot.app.tee.device import ConfiguredFile, check_report_data
from derot.app.tee.errors import (
    FirmwareError,
    MalformedResponse,
    ShortRead,
    TeeIOError,
    TeePermissionDenied,
    TeeUnavailable,
)
from derot.app.tee.snp import snp_evidence

DEFAULT_DEVICE = "/dev/sev-guest"
MSG_VERSION = 1
CERTS_MAX = 0x4000
RESPONSE_SIZE = 4000
RESPONSE_HEADER = 0x20
NO_FW_CALL = (0xFF, 0xFFFFFFFF)
VMM_ERRORS = {1: "INVALID_LEN: certificate buffer too small", 2: "BUSY: host throttled the request",
              0xFFFFFFFF: "generic hypervisor error"}
#: SEV firmware status codes (include/uapi/linux/psp-sev.h) a guest request can return.
FW_ERRORS = {0x04: "INVALID_LEN", 0x07: "POLICY_FAILURE", 0x09: "INVALID_ADDRESS", 0x10: "INVALID_GUEST",
             0x11: "INVALID_COMMAND", 0x15: "UNSUPPORTED", 0x16: "INVALID_PARAM", 0x17: "RESOURCE_LIMIT",
             0x27: "INVALID_KEY"}


class _ReportReq(ctypes.Structure):
    _fields_ = [("user_data", ctypes.c_uint8 * 64), ("vmpl", ctypes.c_uint32), ("rsvd", ctypes.c_uint8 * 28)]


class _ExtReportReq(ctypes.Structure):
    _fields_ = [("data", _ReportReq), ("certs_address", ctypes.c_uint64), ("certs_len", ctypes.c_uint32)]


class _ReportResp(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint8 * RESPONSE_SIZE)]


class _GuestRequest(ctypes.Structure):
    _fields_ = [("msg_version", ctypes.c_uint8), ("req_data", ctypes.c_uint64), ("resp_data", ctypes.c_uint64),
                ("fw_error", ctypes.c_uint32), ("vmm_error", ctypes.c_uint32)]


assert (ctypes.sizeof(_ReportReq), ctypes.sizeof(_ExtReportReq), ctypes.sizeof(_GuestRequest)) == (96, 112, 32)


def _iowr(kind: str, nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (ord(kind) << 8) | nr


SNP_GET_REPORT = _iowr("S", 0x0, ctypes.sizeof(_GuestRequest))
SNP_GET_EXT_REPORT = _iowr("S", 0x2, ctypes.sizeof(_GuestRequest))


class SnpDevice:
    """An SEV-SNP guest's ``/dev/sev-guest``.

    ``extended`` (default: when no ``vek_path`` is given) asks with ``SNP_GET_EXT_REPORT`` for the
    host's certificate table, which normally carries the VCEK/VLEK. ``vek_path`` names a VEK file
    (DER or PEM) used when the host supplies none; see :mod:`derot.app.tee.snp`. ``vmpl`` is the
    privilege level the report is requested for. ``ioctl`` defaults to :func:`fcntl.ioctl`
    (tests pass recorded responses through it).
    """

    platform = Platform.SEV_SNP

    def __init__(self, device: str | os.PathLike = DEFAULT_DEVICE, *, vek_path: str | os.PathLike | None = None,
                 vmpl: int = 0, extended: bool | None = None, ioctl=fcntl.ioctl):
        if not 0 <= vmpl <= 3:
            raise ValueError(f"vmpl must be 0..3, got {vmpl}")
        self.device = os.fspath(device)
        self.vmpl = vmpl
        self.extended = vek_path is None if extended is None else extended
        self._vek = ConfiguredFile(vek_path, "VEK file") if vek_path is not None else None
        self._ioctl = ioctl

    def evidence(self, report_data: bytes) -> Evidence:
        rd = check_report_data(report_data)
        request = _ReportReq.from_buffer_copy(rd + struct.pack("<I", self.vmpl) + bytes(28))
        fd = self._open()
        try:
            if self.extended:
                report, certs = self._ext_report(fd, request)
            else:
                report, certs = self._report(fd, request, SNP_GET_REPORT, "SNP_GET_REPORT"), b""
        finally:
            os.close(fd)
        return snp_evidence(report, rd, self.vmpl, certs, self._vek, f"{self.device} report",
                            f"{self.device} certificate table")

    def _open(self) -> int:
        try:
            return os.open(self.device, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise TeeUnavailable(f"{self.device} does not exist: this is not an SEV-SNP guest, "
                                 "or the sev-guest driver is not loaded") from None
        except PermissionError:
            raise TeePermissionDenied(f"{self.device}: permission denied (needs read-write access; run as root "
                                      "or grant the app's user access to the device)") from None
        except OSError as exc:
            raise TeeIOError(f"{self.device}: cannot open: {exc.strerror}", exc.errno) from None

    def _report(self, fd: int, request: ctypes.Structure, code: int, name: str) -> bytes:
        response = _ReportResp()
        guest = _GuestRequest(msg_version=MSG_VERSION, req_data=ctypes.addressof(request),
                              resp_data=ctypes.addressof(response))
        try:
            self._ioctl(fd, code, guest, True)
        except OSError as exc:
            raise self._failure(name, exc, guest) from None
        return _report_from_response(bytes(response.data), f"{self.device} {name}")

    def _ext_report(self, fd: int, request: _ReportReq) -> tuple[bytes, bytes]:
        certs = ctypes.create_string_buffer(CERTS_MAX)
        ext = _ExtReportReq(data=request, certs_address=ctypes.addressof(certs), certs_len=CERTS_MAX)
        try:
            report = self._report(fd, ext, SNP_GET_EXT_REPORT, "SNP_GET_EXT_REPORT")
        except FirmwareError as exc:
            if exc.vmm_error == 1:
                raise FirmwareError(f"{self.device} SNP_GET_EXT_REPORT: the host's certificates need {ext.certs_len} "
                                    f"bytes, more than the {CERTS_MAX} the kernel accepts; configure vek_path "
                                    "and extended=False", fw_error=exc.fw_error, vmm_error=exc.vmm_error) from None
            raise
        return report, certs.raw

    def _failure(self, name: str, exc: OSError, guest: _GuestRequest) -> Exception:
        fw, vmm = guest.fw_error, guest.vmm_error
        where = f"{self.device} {name}"
        if fw not in NO_FW_CALL and fw != 0:
            return FirmwareError(f"{where}: SEV firmware error {fw:#x} ({FW_ERRORS.get(fw, 'unknown code')})",
                                 fw_error=fw, vmm_error=vmm)
        if fw not in NO_FW_CALL and vmm != 0:
            return FirmwareError(f"{where}: hypervisor error {vmm:#x} ({VMM_ERRORS.get(vmm, 'unknown code')})",
                                 fw_error=fw, vmm_error=vmm)
        if isinstance(exc, PermissionError):
            return TeePermissionDenied(f"{where}: {exc.strerror}")
        return TeeIOError(f"{where} failed before reaching the firmware: {exc.strerror} (errno {exc.errno})", exc.errno)


def _report_from_response(data: bytes, what: str) -> bytes:
    """The report inside a MSG_REPORT_RSP (SEV-SNP firmware ABI, ``MSG_REPORT_RSP``)."""
    status, size = struct.unpack_from("<II", data, 0)
    if status != 0:
        raise FirmwareError(f"{what}: MSG_REPORT_RSP status {status:#x} ({FW_ERRORS.get(status, 'unknown code')})",
                            fw_error=status)
    if RESPONSE_HEADER + size > len(data):
        raise MalformedResponse(f"{what}: report_size {size} exceeds the {len(data) - RESPONSE_HEADER} bytes "
                                "after the MSG_REPORT_RSP header", 4)
    if size == 0:
        raise ShortRead(f"{what}: MSG_REPORT_RSP carries no report (report_size 0)", 4)
    return data[RESPONSE_HEADER : RESPONSE_HEADER + size]
