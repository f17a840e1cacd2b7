"""Models of the Linux guest attestation ABI for the device tests: what the kernel, the AMD secure
processor and the host do, written from the kernel sources (read, not copied):

- configfs-tsm core (``drivers/virt/coco/guest/report.c``): report instances made by mkdir and
  removed by rmdir; ``generation`` bumped by every accepted attribute write (``inblob`` at close);
  ``privlevel`` below ``privlevel_floor`` or above 3 refused with EINVAL at write; ``outblob`` read
  with no inblob written is EINVAL; a report is made once per generation and cached.
- sev-guest (``drivers/virt/coco/sev-guest/sev-guest.c``): ``privlevel_floor`` is the guest's VMPL;
  a report needs a 64-byte inblob (EINVAL); firmware INVALID_PARAM for a VMPL below the guest's; the
  certificate table handed to configfs is cut at 16 KiB (``SEV_FW_BLOB_MAX_SIZE``); after any failed
  request except INVALID_LEN the VMPCK is wiped and every later request is ENOTTY with the exit codes
  left at the 0xff the driver starts from; a host throttles requests closer than ``host_interval``
  (GHCB BUSY), which an older kernel turns into EIO + a wiped VMPCK.
- tdx-guest: a 64-byte inblob (EINVAL); EBUSY while an earlier GetQuote is still in flight.

Reports are real-format devnet reports (``DevnetTee``), re-signed for the VMPL asked, so the device
code parses and checks them with the verifier's own parser.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from derot.attest import sev_snp

SNP_GET_REPORT, SNP_GET_DERIVED_KEY, SNP_GET_EXT_REPORT = 0xC0205300, 0xC0205301, 0xC0205302
SEV_FW_BLOB_MAX = 0x4000
FW_INVALID_PARAM = 0x16
VMM_INVALID_LEN, VMM_BUSY = 1, 2
VCEK_GUID = bytes.fromhex("63da758de6644564adc5f4b93be8accd")
CRL_GUID = bytes.fromhex("92f81bc358114d3d97ffd19f88dc67ea")


def cert_table(*entries: tuple[bytes, bytes]) -> bytes:
    """A GHCB certificate table: (guid 16 | offset u32 | length u32)*, all-zero entry, then the data."""
    offset = 24 * (len(entries) + 1)
    head, body = b"", b""
    for guid, data in entries:
        head += guid + struct.pack("<II", offset + len(body), len(data))
        body += data
    return head + bytes(24) + body


class FakeClock:
    """A clock whose ``sleep`` only advances it (and records the sleeps)."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class SnpGuest:
    """The sev-guest driver, the AMD secure processor and the host of one SEV-SNP guest at ``vmpl``."""

    def __init__(self, tee, *, vmpl: int = 0, certs: bytes = b"", clock: FakeClock | None = None,
                 host_interval: float = 0.0, old_kernel: bool = True, honest_certs_length: bool = False):
        self.tee, self.vmpl, self.certs = tee, vmpl, certs
        self.clock = clock or FakeClock()
        self.host_interval, self.old_kernel, self.honest_certs_length = host_interval, old_kernel, honest_certs_length
        self.vmpck_alive = True
        self.requests = 0  # requests that reached the host
        self.busy_answers = 0
        self._last: float | None = None
        self._chip_secret = os.urandom(32)
        self.fail_next: tuple[int, int, int] | None = None  # (errno, fw_error, vmm_error) copied back as is

    # the guest-request path shared by the ioctls and configfs (snp_send_guest_request)
    def _send(self) -> tuple[int, int, int]:
        """(errno, fw_error, vmm_error) of one guest request; errno 0 = the exchange worked."""
        if not self.vmpck_alive:
            return errno.ENOTTY, 0xFF, 0
        self.requests += 1
        now = self.clock.monotonic()
        busy = self._last is not None and now - self._last < self.host_interval
        self._last = now
        if busy:
            self.busy_answers += 1
            self.vmpck_alive = False  # old kernels: EIO + wipe; new ones: retry 60 s, ETIMEDOUT + wipe
            return (errno.EIO, 0, VMM_BUSY) if self.old_kernel else (errno.ETIMEDOUT, 0, VMM_BUSY)
        return 0, 0, 0

    def report(self, user_data: bytes, vmpl: int) -> tuple[int, bytes]:
        """(MSG_REPORT_RSP status, report) as the firmware answers."""
        if vmpl < self.vmpl or vmpl > 3:
            return FW_INVALID_PARAM, b""
        return 0, resign_vmpl(self.tee, self.tee.snp_report(user_data), vmpl)

    def derived_key(self, root_key_select: int, fields: int, vmpl: int, guest_svn: int, tcb: int) -> tuple[int, bytes]:
        if vmpl < self.vmpl or vmpl > 3 or root_key_select not in (0, 1):
            return FW_INVALID_PARAM, b""
        mixed = struct.pack("<IQIIQ", root_key_select, fields, vmpl, guest_svn, tcb)
        if fields & 8:
            mixed += self.tee.measurements.get("MEASUREMENT", bytes(48))
        return 0, hmac.new(self._chip_secret, mixed, hashlib.sha256).digest()

    def host_certs(self, room: int) -> tuple[bytes, bool]:
        """(what the host writes into a buffer of ``room`` bytes, whether it said INVALID_LEN)."""
        if self.honest_certs_length and len(self.certs) > room:
            return b"", True
        return self.certs[:room], False

    # /dev/sev-guest ioctl (snp_guest_ioctl)
    def ioctl(self, fd, code, arg, mutate=False):
        assert mutate is True and isinstance(fd, int)
        raw = memoryview(arg).cast("B")
        msg_version, req_data, resp_data = struct.unpack_from("<B7xQQ", raw, 0)
        struct.pack_into("<II", raw, 24, 0xFF, 0)  # exitinfo2 = 0xff
        if not msg_version:
            raise _oserror(errno.EINVAL)
        if self.fail_next is not None:
            code_, fw, vmm = self.fail_next
            self.fail_next = None
            struct.pack_into("<II", raw, 24, fw, vmm)
            raise _oserror(code_)
        if code == SNP_GET_DERIVED_KEY:
            return self._ioctl_key(raw, req_data, resp_data)
        if code not in (SNP_GET_REPORT, SNP_GET_EXT_REPORT):
            raise _oserror(errno.ENOTTY)
        request = ctypes.string_at(req_data, 112 if code == SNP_GET_EXT_REPORT else 96)
        user_data, vmpl = request[:64], struct.unpack_from("<I", request, 64)[0]
        certs = b""
        if code == SNP_GET_EXT_REPORT:
            certs_address, certs_len = struct.unpack_from("<QI", request, 96)
            if certs_len > SEV_FW_BLOB_MAX or certs_len % 4096:
                raise _oserror(errno.EINVAL)
            certs, invalid_len = self.host_certs(certs_len)
            if invalid_len:  # the driver re-sends as a plain request (the key survives), then EIO
                err, fw, vmm = self._send()
                if not err:
                    ctypes.memmove(req_data + 104, struct.pack("<I", -(-len(self.certs) // 4096) * 4096), 4)
                    struct.pack_into("<II", raw, 24, 0, VMM_INVALID_LEN)
                    raise _oserror(errno.EIO)
                return self._fail(raw, err, fw, vmm)
        err, fw, vmm = self._send()
        if err:
            return self._fail(raw, err, fw, vmm)
        status, report = self.report(user_data, vmpl)
        response = struct.pack("<II", status, len(report)) + bytes(24) + report
        ctypes.memmove(resp_data, response.ljust(4000, b"\0"), 4000)
        if certs:
            ctypes.memmove(certs_address, certs.ljust(certs_len, b"\0"), certs_len)
        struct.pack_into("<II", raw, 24, 0, 0)
        return 0

    def _ioctl_key(self, raw, req_data: int, resp_data: int):
        root, _, fields, vmpl, svn, tcb = struct.unpack("<IIQIIQ", ctypes.string_at(req_data, 32))
        err, fw, vmm = self._send()
        if err:
            return self._fail(raw, err, fw, vmm)
        status, key = self.derived_key(root, fields, vmpl, svn, tcb)
        ctypes.memmove(resp_data, (struct.pack("<I", status) + bytes(28) + key).ljust(64, b"\0"), 64)
        struct.pack_into("<II", raw, 24, 0, 0)
        return 0

    @staticmethod
    def _fail(raw, err: int, fw: int, vmm: int):
        if err != errno.ENOTTY:
            struct.pack_into("<II", raw, 24, fw, vmm)
        raise _oserror(err)

    # configfs-tsm provider (sev_report_new)
    def report_new(self, inblob: bytes, privlevel: int) -> tuple[bytes, bytes]:
        if len(inblob) != 64:
            raise _oserror(errno.EINVAL)
        certs, invalid_len = self.host_certs(SEV_FW_BLOB_MAX)
        err, _, _ = self._send()
        if err:
            raise _oserror(err)
        if invalid_len:
            raise _oserror(errno.EIO)
        status, report = self.report(inblob, privlevel)
        if status == FW_INVALID_PARAM:
            raise _oserror(errno.EINVAL)
        size = 0
        for i in range(min(len(certs), SEV_FW_BLOB_MAX) // 24):
            guid, off, length = struct.unpack_from("<16sII", certs, i * 24)
            if guid == bytes(16) and not off and not length:
                break
            size = max(size, off + length)
        return report, certs[: min(size, SEV_FW_BLOB_MAX)]


def resign_vmpl(tee, report: bytes, vmpl: int) -> bytes:
    """``report`` with its VMPL field (0x30) set and re-signed with the devnet VEK (what the firmware does)."""
    body = bytearray(report)
    struct.pack_into("<I", body, 0x30, vmpl)
    r, s = decode_dss_signature(tee._vek_key.sign(bytes(body[: sev_snp.SIGNED_SIZE]), ec.ECDSA(hashes.SHA384())))
    body[0x2A0:0x2E8] = r.to_bytes(72, "little")
    body[0x2E8:0x330] = s.to_bytes(72, "little")
    return bytes(body)


class TdxGuest:
    """The tdx-guest provider: quotes from a devnet TD; ``busy_reads`` reads fail EBUSY first."""

    def __init__(self, tee, busy_reads: int = 0):
        self.tee, self.busy_reads = tee, busy_reads

    def report_new(self, inblob: bytes, privlevel: int) -> tuple[bytes, bytes]:
        if self.busy_reads:
            self.busy_reads -= 1
            raise _oserror(errno.EBUSY)
        if len(inblob) != 64:
            raise _oserror(errno.EINVAL)
        return self.tee.tdx_quote(inblob), b""


@dataclass
class _Instance:
    write_generation: int = 0
    read_generation: int = 0
    inblob: bytes = b""
    privlevel: int = 0
    blobs: tuple[bytes, bytes] | None = None
    pending: dict = field(default_factory=dict)


class FakeTsm:
    """configfs-tsm's report directory at ``root`` with one provider (the ``fs`` seam of ConfigfsTsm)."""

    def __init__(self, root: str, provider: str, backend, *, privlevel_floor: int | None = 0,
                 permission_denied: bool = False):
        self.root, self.provider, self.backend = root, provider, backend
        self.floor = privlevel_floor
        self.permission_denied = permission_denied
        self.instances: dict[str, _Instance] = {}
        self.created: list[str] = []
        self.removed: list[str] = []
        self.reads: list[str] = []

    def _split(self, path: str) -> tuple[_Instance, str]:
        rel = os.path.relpath(path, self.root)
        name, _, attr = rel.partition("/")
        if name not in self.instances:
            raise _oserror(errno.ENOENT)
        return self.instances[name], attr

    def _attrs(self) -> set[str]:
        names = {"provider", "generation", "inblob", "outblob"}
        if self.provider == "sev_guest":
            names |= {"privlevel", "privlevel_floor", "auxblob"}
        return names

    def mkdir(self, path: str) -> None:
        if os.path.dirname(path) != self.root:
            raise _oserror(errno.ENOENT)
        if self.permission_denied:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        name = os.path.basename(path)
        if name in self.instances:
            raise _oserror(errno.EEXIST)
        self.instances[name] = _Instance()
        self.created.append(name)

    def rmdir(self, path: str) -> None:
        rel = os.path.relpath(path, self.root)
        if rel not in self.instances:
            raise _oserror(errno.ENOENT)
        del self.instances[rel]
        self.removed.append(rel)

    def exists(self, path: str) -> bool:
        try:
            _, attr = self._split(path)
        except OSError:
            return False
        return attr == "" or attr in self._attrs()

    def write(self, path: str, data: bytes) -> int:
        inst, attr = self._split(path)
        if attr not in self._attrs() or attr in ("provider", "generation", "outblob", "auxblob", "privlevel_floor"):
            raise _oserror(errno.ENOENT if attr not in self._attrs() else errno.EACCES)
        if attr == "privlevel":
            text = data.decode("ascii", "replace").strip()
            if not text.isdigit():
                raise _oserror(errno.EINVAL)
            value = int(text)
            if (self.floor or 0) > value or value > 3:
                raise _oserror(errno.EINVAL)
            inst.write_generation += 1
            inst.privlevel = value
            return len(data)
        if len(data) > 64:  # TSM_REPORT_INBLOB_MAX
            raise _oserror(errno.EFBIG)
        inst.inblob = bytes(data)  # applied at close, which write() includes
        inst.write_generation += 1
        return len(data)

    def read(self, path: str, limit: int) -> bytes:
        inst, attr = self._split(path)
        self.reads.append(attr)
        if attr == "provider":
            return f"{self.provider}\n".encode()
        if attr == "generation":
            return f"{inst.write_generation}\n".encode()
        if attr == "privlevel_floor" and self.provider == "sev_guest":
            return f"{self.floor}\n".encode()
        if attr in ("outblob", "auxblob") and attr in self._attrs():
            if not inst.inblob:
                raise _oserror(errno.EINVAL)
            if inst.blobs is None or inst.read_generation != inst.write_generation:
                inst.blobs = None
                inst.blobs = self.backend.report_new(inst.inblob, inst.privlevel)
                inst.read_generation = inst.write_generation
            return inst.blobs[0 if attr == "outblob" else 1]
        raise _oserror(errno.ENOENT if attr not in self._attrs() else errno.EACCES)
