"""TPM 2.0 commands an Azure CVM guest needs, written directly against the kernel's resource manager
(``/dev/tpmrm0``): NV_ReadPublic, NV_Read, NV_DefineSpace, NV_Write, ReadPublic, PCR_Read and Quote.

Commands and responses are the TPM 2.0 Library Part 3 wire format (big-endian): ``u16 tag, u32 size,
u32 code`` then handles, an authorization area (one empty password session, ``TPM_RS_PW``) and parameters.
Every response is parsed with bounds; a non-zero response code raises :class:`TpmError` carrying it.
The transport is anything with ``transact(command) -> response``; :class:`DeviceTransport` is the real one.
"""

from __future__ import annotations

import os
import struct
import threading
from typing import Protocol

from derot.app.tee.errors import MalformedResponse, TeeError, TeeIOError, TeePermissionDenied, TeeUnavailable
from derot.attest import tpm

ST_NO_SESSIONS, ST_SESSIONS = 0x8001, 0x8002
CC_NV_DEFINE_SPACE, CC_NV_WRITE, CC_NV_READ, CC_NV_READ_PUBLIC = 0x12A, 0x137, 0x14E, 0x169
CC_QUOTE, CC_READ_PUBLIC, CC_PCR_READ = 0x158, 0x173, 0x17E
RH_OWNER, RS_PW = 0x40000001, 0x40000009
RC_HANDLE_MASK, RC_HANDLE = 0x0BF, 0x08B  # TPM_RC_HANDLE (format-one, any handle/parameter number)
MAX_RESPONSE = 8192
NV_CHUNK = 1024
NV_OWNERWRITE, NV_OWNERREAD = 1 << 1, 1 << 17
PW_SESSION = struct.pack(">IHBH", RS_PW, 0, 0, 0)  # handle, empty nonce, attributes 0, empty hmac


class TpmError(TeeError):
    """The TPM answered with a non-zero response code."""

    def __init__(self, command: str, rc: int):
        super().__init__(f"TPM2_{command} failed with response code 0x{rc:03x}")
        self.rc = rc

    @property
    def bad_handle(self) -> bool:
        return self.rc & 0x80 != 0 and self.rc & RC_HANDLE_MASK == RC_HANDLE


class Transport(Protocol):
    def transact(self, command: bytes) -> bytes: ...


class DeviceTransport:
    """One command at a time on ``/dev/tpmrm0`` (the kernel resource manager flushes transient objects)."""

    def __init__(self, path: str = "/dev/tpmrm0"):
        self.path = path
        self._lock = threading.Lock()

    def transact(self, command: bytes) -> bytes:
        with self._lock:
            try:
                fd = os.open(self.path, os.O_RDWR)
            except FileNotFoundError:
                raise TeeUnavailable(f"{self.path} not found (no TPM resource manager)") from None
            except PermissionError:
                raise TeePermissionDenied(f"{self.path}: permission denied (join the 'tss' group)") from None
            try:
                os.write(fd, command)
                return os.read(fd, MAX_RESPONSE)
            except OSError as exc:
                raise TeeIOError(f"{self.path}: {exc.strerror or exc}", exc.errno) from None
            finally:
                os.close(fd)


def _tpm2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _command(code: int, handles: tuple[int, ...], params: bytes, *, auth: bool) -> bytes:
    body = b"".join(struct.pack(">I", h) for h in handles)
    if auth:
        body += struct.pack(">I", len(PW_SESSION)) + PW_SESSION
    body += params
    return struct.pack(">HII", ST_SESSIONS if auth else ST_NO_SESSIONS, 10 + len(body), code) + body


class _Resp:
    """Bounds-checked big-endian reader over a response's parameter area."""

    def __init__(self, data: bytes, what: str):
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise MalformedResponse(f"TPM2_{self.what}: truncated response", self.pos)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def tpm2b(self) -> bytes:
        return self.take(self.u16())


class Tpm:
    """The TPM commands, over a transport."""

    def __init__(self, transport: Transport):
        self.transport = transport

    def _call(self, name: str, code: int, handles: tuple[int, ...], params: bytes, *, auth: bool,
              out_handles: int = 0) -> _Resp:
        raw = self.transport.transact(_command(code, handles, params, auth=auth))
        if len(raw) < 10:
            raise MalformedResponse(f"TPM2_{name}: response of {len(raw)} bytes", 0)
        tag, size, rc = struct.unpack(">HII", raw[:10])
        if size != len(raw):
            raise MalformedResponse(f"TPM2_{name}: response size {size} but {len(raw)} bytes read", 2)
        if rc:
            raise TpmError(name, rc)
        body = raw[10 + 4 * out_handles:]
        if tag == ST_SESSIONS:  # parameterSize, parameters, then the session area (ignored)
            if len(body) < 4:
                raise MalformedResponse(f"TPM2_{name}: missing parameterSize", 10)
            n = int.from_bytes(body[:4], "big")
            if n > len(body) - 4:
                raise MalformedResponse(f"TPM2_{name}: parameterSize {n} exceeds the response", 14)
            body = body[4:4 + n]
        return _Resp(body, name)

    def nv_size(self, index: int) -> int:
        r = self._call("NV_ReadPublic", CC_NV_READ_PUBLIC, (index,), b"", auth=False)
        pub = _Resp(r.tpm2b(), "NV_ReadPublic")
        pub.u32(), pub.u16(), pub.u32()  # nvIndex, nameAlg, attributes
        pub.tpm2b()  # authPolicy
        return pub.u16()

    def nv_read(self, index: int) -> bytes:
        size, out = self.nv_size(index), b""
        while len(out) < size:
            n = min(NV_CHUNK, size - len(out))
            r = self._call("NV_Read", CC_NV_READ, (RH_OWNER, index), struct.pack(">HH", n, len(out)), auth=True)
            chunk = r.tpm2b()
            if len(chunk) != n:
                raise MalformedResponse(f"TPM2_NV_Read: {len(chunk)} bytes, asked for {n}", 0)
            out += chunk
        return out

    def nv_write(self, index: int, data: bytes) -> None:
        """Write ``data`` at offset 0, defining an owner-authorized index of its size if there is none."""
        try:
            self.nv_size(index)
        except TpmError as exc:
            if not exc.bad_handle:
                raise
            public = struct.pack(">IHI", index, tpm.ALG_SHA256, NV_OWNERWRITE | NV_OWNERREAD) + _tpm2b(b"") \
                + struct.pack(">H", len(data))
            self._call("NV_DefineSpace", CC_NV_DEFINE_SPACE, (RH_OWNER,), _tpm2b(b"") + _tpm2b(public), auth=True)
        self._call("NV_Write", CC_NV_WRITE, (RH_OWNER, index), _tpm2b(data) + struct.pack(">H", 0), auth=True)

    def read_public(self, handle: int) -> tpm.TpmPublic:
        r = self._call("ReadPublic", CC_READ_PUBLIC, (handle,), b"", auth=False)
        return tpm.parse_public(r.tpm2b())

    def pcr_read_sha256(self) -> list[bytes]:
        """All 24 SHA-256 PCRs (a TPM returns at most 8 per call, so ask for the rest until done)."""
        values: dict[int, bytes] = {}
        for _ in range(tpm.NUM_PCRS):
            missing = [i for i in range(tpm.NUM_PCRS) if i not in values]
            if not missing:
                break
            r = self._call("PCR_Read", CC_PCR_READ, (), _selection(missing), auth=False)
            r.u32()  # pcrUpdateCounter
            got = _parse_selection(r)
            count = r.u32()
            if count != len(got) or not got:
                raise MalformedResponse("TPM2_PCR_Read: digest count does not match the selection", r.pos)
            for i in got:
                value = r.tpm2b()
                if len(value) != 32 or i not in missing:
                    raise MalformedResponse("TPM2_PCR_Read: unexpected PCR value", r.pos)
                values[i] = value
        return [values[i] for i in range(tpm.NUM_PCRS)]

    def quote(self, ak_handle: int, nonce: bytes) -> tuple[bytes, tpm.TpmSignature]:
        """TPM2_Quote of SHA-256 PCRs 0..23 with ``nonce`` as qualifying data: (TPMS_ATTEST, signature)."""
        params = _tpm2b(nonce) + struct.pack(">H", tpm.ALG_NULL) + _selection(list(range(tpm.NUM_PCRS)))
        r = self._call("Quote", CC_QUOTE, (ak_handle,), params, auth=True)
        attest = r.tpm2b()
        rest = r.data[r.pos:]
        return attest, tpm.parse_signature(rest)


def _selection(pcrs: list[int]) -> bytes:
    bits = bytearray(3)
    for i in pcrs:
        bits[i // 8] |= 1 << (i % 8)
    return struct.pack(">IHB", 1, tpm.ALG_SHA256, 3) + bytes(bits)


def _parse_selection(r: _Resp) -> list[int]:
    count = r.u32()
    if count > 1:
        raise MalformedResponse("TPM2_PCR_Read: more than one bank returned", r.pos)
    if count == 0:
        return []
    if r.u16() != tpm.ALG_SHA256:
        raise MalformedResponse("TPM2_PCR_Read: not the SHA-256 bank", r.pos)
    bits = r.take(r.take(1)[0])
    return [8 * i + b for i, byte in enumerate(bits) for b in range(8) if byte >> b & 1]
