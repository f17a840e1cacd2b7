"""SEV-SNP reports and derived keys through the ``/dev/sev-guest`` ioctls (Linux
``include/uapi/linux/sev-guest.h``, ``drivers/virt/coco/sev-guest``).

``SNP_GET_REPORT`` / ``SNP_GET_DERIVED_KEY`` / ``SNP_GET_EXT_REPORT`` = ``_IOWR('S', 0 / 1 / 2,
struct snp_guest_request_ioctl)``::

    snp_guest_request_ioctl  msg_version u8 | pad 7 | req_data u64 | resp_data u64
                             | fw_error u32 | vmm_error u32                      (32 bytes)
    snp_report_req           user_data[64] | vmpl u32 | rsvd[28]                 (96 bytes)
    snp_ext_report_req       snp_report_req | certs_address u64 | certs_len u32  (112 bytes)
    snp_report_resp          data[4000] = MSG_REPORT_RSP: status u32 | report_size u32
                             | reserved[24] | report (1184 bytes)
    snp_derived_key_req      root_key_select u32 | rsvd u32 | guest_field_select u64
                             | vmpl u32 | guest_svn u32 | tcb_version u64          (32 bytes)
    snp_derived_key_resp     data[64] = MSG_KEY_RSP: status u32 | reserved[28] | key[32]

``req_data``/``resp_data``/``certs_address`` are addresses in this process, so the structures are
ctypes objects. The kernel accepts at most 16 KiB (``SEV_FW_BLOB_MAX_SIZE``) of certificates; when
the host has more it fails with EIO and ``vmm_error`` = 1 (INVALID_LEN).

Driver behaviour this module relies on:
- ``fw_error``/``vmm_error`` mean something only when the ioctl fails with EIO (older kernels copied
  back garbage otherwise); ``fw_error`` = ``0xff``/``0xffffffff`` means the firmware was never called.
- After any failed request except INVALID_LEN the driver wipes its VMPCK, and every later request
  fails with ENOTTY before any code is copied back: attestation is gone until the guest reboots.
- A report's VMPL must be at least the guest's own (the VMPCK's); the default here is the guest's
  own, read from configfs-tsm ``privlevel_floor`` or the driver's ``vmpck_id`` parameter.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import struct

from derot.attest.evidence import Evidence
from derot.constants import Platform

from derot.app.tee.device import ConfiguredFile, check_report_data
from derot.app.tee.errors import (
    FirmwareError,
    MalformedResponse,
    ShortRead,
    TeeError,
    TeeIOError,
    TeePermissionDenied,
    TeeUnavailable,
)
from derot.app.tee.gate import REBOOT_HINT, RequestGate, TeeStatus, snp_gate
from derot.app.tee.snp import snp_evidence

log = logging.getLogger("derot.app.tee")

DEFAULT_DEVICE = "/dev/sev-guest"
#: the driver's VMPCK in use (its module parameter; -1 until probed on newer kernels)
VMPCK_PARAM = "/sys/module/sev_guest/parameters/vmpck_id"
MSG_VERSION = 1
CERTS_MAX = 0x4000
RESPONSE_SIZE = 4000
RESPONSE_HEADER = 0x20
NO_FW_CALL = (0xFF, 0xFFFFFFFF)
VMM_INVALID_LEN, VMM_BUSY = 1, 2
VMM_ERRORS = {VMM_INVALID_LEN: "INVALID_LEN: certificate buffer too small", VMM_BUSY: "BUSY: host throttled the request",
              0xFFFFFFFF: "generic hypervisor error"}
#: SEV firmware status codes (include/uapi/linux/psp-sev.h) a guest request can return.
FW_ERRORS = {0x04: "INVALID_LEN", 0x07: "POLICY_FAILURE", 0x09: "INVALID_ADDRESS", 0x10: "INVALID_GUEST",
             0x11: "INVALID_COMMAND", 0x15: "UNSUPPORTED", 0x16: "INVALID_PARAM", 0x17: "RESOURCE_LIMIT",
             0x27: "INVALID_KEY"}
#: MSG_KEY_REQ GUEST_FIELD_SELECT bits (SEV-SNP firmware ABI): what the derived key is bound to
FIELD_POLICY, FIELD_IMAGE_ID, FIELD_FAMILY_ID, FIELD_MEASUREMENT, FIELD_GUEST_SVN, FIELD_TCB = (1 << i for i in range(6))


class _ReportReq(ctypes.Structure):
    _fields_ = [("user_data", ctypes.c_uint8 * 64), ("vmpl", ctypes.c_uint32), ("rsvd", ctypes.c_uint8 * 28)]


class _ExtReportReq(ctypes.Structure):
    _fields_ = [("data", _ReportReq), ("certs_address", ctypes.c_uint64), ("certs_len", ctypes.c_uint32)]


class _ReportResp(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint8 * RESPONSE_SIZE)]


class _KeyReq(ctypes.Structure):
    _fields_ = [("root_key_select", ctypes.c_uint32), ("rsvd", ctypes.c_uint32),
                ("guest_field_select", ctypes.c_uint64), ("vmpl", ctypes.c_uint32), ("guest_svn", ctypes.c_uint32),
                ("tcb_version", ctypes.c_uint64)]


class _KeyResp(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint8 * 64)]


class _GuestRequest(ctypes.Structure):
    _fields_ = [("msg_version", ctypes.c_uint8), ("req_data", ctypes.c_uint64), ("resp_data", ctypes.c_uint64),
                ("fw_error", ctypes.c_uint32), ("vmm_error", ctypes.c_uint32)]


assert tuple(map(ctypes.sizeof, (_ReportReq, _ExtReportReq, _KeyReq, _GuestRequest))) == (96, 112, 32, 32)


def _iowr(kind: str, nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (ord(kind) << 8) | nr


SNP_GET_REPORT = _iowr("S", 0x0, ctypes.sizeof(_GuestRequest))
SNP_GET_DERIVED_KEY = _iowr("S", 0x1, ctypes.sizeof(_GuestRequest))
SNP_GET_EXT_REPORT = _iowr("S", 0x2, ctypes.sizeof(_GuestRequest))


def guest_vmpl(configfs_root: str | None = None, vmpck_param: str = VMPCK_PARAM, *, fs=None) -> int:
    """This guest's VMPL: configfs-tsm's ``privlevel_floor``, else the driver's ``vmpck_id``, else 0.
    ``fs`` is :class:`~derot.app.tee.configfs.ConfigfsTsm`'s file-system seam (tests play the kernel)."""
    if configfs_root is not None and (fs is not None or os.path.isdir(configfs_root)):
        from derot.app.tee.configfs import SNP_PROVIDER, ConfigfsTsm

        try:
            floor = ConfigfsTsm(configfs_root, SNP_PROVIDER, fs=fs).read_privlevel_floor()
        except TeeError as exc:
            log.debug("no privlevel_floor from %s: %s", configfs_root, exc)
        else:
            if floor is not None:
                return floor
    try:
        with open(vmpck_param, "rb") as f:
            text = f.read(16).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    if text in ("0", "1", "2", "3"):
        return int(text)
    log.info("this guest's VMPL is unknown (no privlevel_floor, %s = %r): assuming VMPL 0; set privlevel "
             "if the guest runs under an SVSM or a paravisor", vmpck_param, text)
    return 0


class SnpDevice:
    """An SEV-SNP guest's ``/dev/sev-guest``.

    ``extended`` (default: when no ``vek_path`` is given) asks with ``SNP_GET_EXT_REPORT`` for the
    host's certificate table, which normally carries the VCEK/VLEK. ``vek_path`` names a VEK file
    (DER or PEM) used when the host supplies none or too much; see :mod:`derot.app.tee.snp`. ``vmpl``
    is the privilege level the report is for; None (the default) means the guest's own
    (:func:`guest_vmpl` over ``configfs_root``/``vmpck_param``). Requests go through ``gate``
    (default: the process's :func:`~derot.app.tee.gate.snp_gate`, spaced 2 s apart). ``ioctl``
    defaults to :func:`fcntl.ioctl` (tests play the driver through it).
    """

    platform = Platform.SEV_SNP

    def __init__(self, device: str | os.PathLike = DEFAULT_DEVICE, *, vek_path: str | os.PathLike | None = None,
                 vmpl: int | None = None, extended: bool | None = None, ioctl=fcntl.ioctl,
                 gate: RequestGate | None = None, configfs_root: str | os.PathLike | None = None,
                 vmpck_param: str | os.PathLike = VMPCK_PARAM):
        if vmpl is not None and not 0 <= vmpl <= 3:
            raise ValueError(f"vmpl must be 0..3, got {vmpl}")
        self.device = os.fspath(device)
        self._vmpl = vmpl
        self._vmpl_sources = (None if configfs_root is None else os.fspath(configfs_root), os.fspath(vmpck_param))
        self.extended = vek_path is None if extended is None else extended
        self._vek = ConfiguredFile(vek_path, "VEK file") if vek_path is not None else None
        self._ioctl = ioctl
        self._gate = gate or snp_gate()

    @property
    def vmpl(self) -> int:
        """The VMPL reports are requested for (resolved once, on first use)."""
        if self._vmpl is None:
            self._vmpl = guest_vmpl(*self._vmpl_sources)
        return self._vmpl

    def status(self) -> TeeStatus:
        return self._gate.status()

    def evidence(self, report_data: bytes) -> Evidence:
        rd = check_report_data(report_data)
        vmpl = self.vmpl
        request = _ReportReq.from_buffer_copy(rd + struct.pack("<I", vmpl) + bytes(28))
        if self.extended:
            report, certs = self._ext_report(request)
        else:
            report, certs = self._report(request), b""
        return snp_evidence(report, rd, vmpl, certs, self._vek, f"{self.device} report",
                            f"{self.device} certificate table")

    def derived_key(self, *, fields: int = FIELD_MEASUREMENT | FIELD_POLICY, vmpl: int | None = None,
                    guest_svn: int = 0, tcb_version: int = 0) -> bytes:
        """32 bytes the AMD secure processor derives from this chip's VCEK root and the launch fields
        ``fields`` selects (``FIELD_*``): the same guest image on the same chip gets the same key,
        nothing else does. ``vmpl`` (default: the guest's own) is mixed in. Never log the result."""
        level = self.vmpl if vmpl is None else vmpl
        if not 0 <= level <= 3 or fields >> 6:
            raise ValueError("vmpl must be 0..3 and fields a combination of FIELD_* bits")
        request = _KeyReq(root_key_select=0, guest_field_select=fields, vmpl=level, guest_svn=guest_svn,
                          tcb_version=tcb_version)
        response = _KeyResp()
        try:
            self._call(SNP_GET_DERIVED_KEY, "SNP_GET_DERIVED_KEY", request, response)
            data = bytes(response.data)
        finally:
            ctypes.memset(ctypes.addressof(response), 0, ctypes.sizeof(response))
        status = struct.unpack_from("<I", data, 0)[0]
        if status != 0:
            raise FirmwareError(f"{self.device} SNP_GET_DERIVED_KEY: MSG_KEY_RSP status {status:#x} "
                                f"({FW_ERRORS.get(status, 'unknown code')})", fw_error=status)
        return data[32:64]

    def _report(self, request: ctypes.Structure) -> bytes:
        response = _ReportResp()
        self._call(SNP_GET_REPORT, "SNP_GET_REPORT", request, response)
        return _report_from_response(bytes(response.data), f"{self.device} SNP_GET_REPORT")

    def _ext_report(self, request: _ReportReq) -> tuple[bytes, bytes]:
        certs = ctypes.create_string_buffer(CERTS_MAX)
        ext = _ExtReportReq(data=request, certs_address=ctypes.addressof(certs), certs_len=CERTS_MAX)
        response = _ReportResp()
        try:
            self._call(SNP_GET_EXT_REPORT, "SNP_GET_EXT_REPORT", ext, response)
        except FirmwareError as exc:
            if exc.vmm_error != VMM_INVALID_LEN:
                raise
            if self._vek is not None:
                log.warning("%s: the host's certificates need %d bytes, more than the %d the kernel accepts: "
                            "asking for the report alone and using vek_path %s", self.device, ext.certs_len,
                            CERTS_MAX, self._vek.path)
                return self._report(request), b""
            raise FirmwareError(f"{self.device} SNP_GET_EXT_REPORT: the host's certificates need {ext.certs_len} "
                                f"bytes, more than the {CERTS_MAX} the kernel accepts; configure vek_path",
                                fw_error=exc.fw_error, vmm_error=exc.vmm_error) from None
        return _report_from_response(bytes(response.data), f"{self.device} SNP_GET_EXT_REPORT"), certs.raw

    def _call(self, code: int, name: str, request: ctypes.Structure, response: ctypes.Structure) -> None:
        """One guest request through the gate; driver failures become :class:`TeeError`."""
        guest = _GuestRequest(msg_version=MSG_VERSION, req_data=ctypes.addressof(request),
                              resp_data=ctypes.addressof(response))

        def issue() -> None:
            fd = self._open()
            try:
                self._ioctl(fd, code, guest, True)
            except OSError as exc:
                raise self._failure(name, exc, guest) from None
            finally:
                os.close(fd)

        self._gate.call(issue)

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

    def _failure(self, name: str, exc: OSError, guest: _GuestRequest) -> TeeError:
        where = f"{self.device} {name}"
        if exc.errno == errno.ENOTTY:
            return self._gate.disable(f"{where}: the sev-guest driver has disabled its VMPCK after an earlier "
                                      "failed request (ENOTTY)")
        if exc.errno == errno.ETIMEDOUT:
            return self._gate.disable(f"{where}: the host kept the request BUSY until the sev-guest driver gave up "
                                      "(ETIMEDOUT) and disabled its VMPCK")
        if isinstance(exc, PermissionError):
            return TeePermissionDenied(f"{where}: {exc.strerror}")
        fw, vmm = guest.fw_error, guest.vmm_error
        no_codes = (fw in NO_FW_CALL and vmm in (0, 0xFFFFFFFF)) or (fw == 0 and vmm == 0)
        if exc.errno != errno.EIO or no_codes:
            return TeeIOError(f"{where} failed before reaching the firmware: {exc.strerror} (errno {exc.errno})",
                              exc.errno)
        if fw not in NO_FW_CALL and fw != 0:
            what = f"SEV firmware error {fw:#x} ({FW_ERRORS.get(fw, 'unknown code')})"
        else:
            what = f"hypervisor error {vmm:#x} ({VMM_ERRORS.get(vmm, 'unknown code')})"
        if vmm == VMM_INVALID_LEN:
            return FirmwareError(f"{where}: {what}", fw_error=fw, vmm_error=vmm)
        self._gate.disable(f"{where} failed with {what}, and the sev-guest driver disabled its VMPCK")
        return FirmwareError(f"{where}: {what}; the sev-guest driver disables its VMPCK after a failed request: "
                             f"{REBOOT_HINT}", fw_error=fw, vmm_error=vmm, disabled=True)


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
