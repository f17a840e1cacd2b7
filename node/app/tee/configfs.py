"""TDX and SEV-SNP evidence through Linux configfs-tsm (``Documentation/ABI/testing/configfs-tsm-report``,
``drivers/virt/coco/guest/report.c``, formerly ``tsm.c``; Linux >= 6.7).

A request creates a report instance ``<root>/<name>/`` (``mkdir``), checks its ``provider``
(``tdx_guest`` or ``sev_guest``), reads ``generation``, writes ``privlevel`` (SNP) and the 64-byte
``inblob``, reads ``outblob`` (the TDX quote / SNP report) and ``auxblob`` (SNP: the host's
certificate table), reads ``generation`` again and removes the instance (``rmdir``).

The kernel bumps ``generation`` by exactly one per accepted attribute write, and applies a binary
attribute write (``inblob``) only when the file is closed, so a write it refused leaves no error at
``close()``. The device therefore requires ``generation`` to have advanced by exactly the number of
its own writes: less means a write was dropped, more means another writer changed the instance
(possible when ``entry`` names a shared, pre-existing instance). It also checks that the returned
report binds the requested report_data, parsing it with the verifier's own parser.

SEV-SNP privilege level: the kernel refuses a ``privlevel`` below ``privlevel_floor`` (the VMPL of
the key the driver talks to the firmware with, i.e. the guest's own VMPL), and an unset ``privlevel``
means 0, which fails on a guest under an SVSM or a paravisor (VMPL >= 1). So unless configured, the
device writes ``privlevel_floor``. Errors the kernel gives on ``outblob``: ENOTTY (SNP) = the driver
has disabled its VMPCK (:class:`AttestationDisabled`); EBUSY (TDX) = an earlier quote is still in
flight with the host, retried with back-off; EINVAL = a rule above was broken.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import struct
import threading
import time

from derot.attest.evidence import Evidence
from derot.constants import Platform

from derot.app.tee.device import ConfiguredFile, check_report_data
from derot.app.tee.errors import (
    ConcurrentReport,
    MalformedResponse,
    ProviderMismatch,
    ReportDataMismatch,
    ShortRead,
    TeeConfigError,
    TeeError,
    TeeIOError,
    TeePermissionDenied,
    TeeUnavailable,
)
from derot.app.tee.gate import SYSTEM_CLOCK, Clock, RequestGate, TeeStatus, snp_gate
from derot.app.tee.snp import snp_evidence

log = logging.getLogger("derot.app.tee")

DEFAULT_ROOT = "/sys/kernel/config/tsm/report"
TDX_PROVIDER = "tdx_guest"
SNP_PROVIDER = "sev_guest"
READ_LIMIT = 1 << 20  # the kernel caps blobs at 32 KiB (TSM_OUTBLOB_MAX)
PRIVLEVEL_MAX = 3
#: TDX EBUSY back-off: first delay, cap of one delay, and the total wait before giving up (seconds)
BUSY_FIRST, BUSY_CAP, BUSY_BUDGET = 0.25, 4.0, 60.0


def _os_error(exc: OSError, what: str) -> TeeError:
    if isinstance(exc, PermissionError):
        return TeePermissionDenied(f"{what}: permission denied (configfs-tsm needs root)")
    return TeeIOError(f"{what}: {exc.strerror or exc} (errno {exc.errno})", exc.errno)


class OsConfigfs:
    """configfs through the real file system (the seam a test's kernel model replaces).
    Methods raise :class:`OSError` as the kernel reports it."""

    mkdir = staticmethod(os.mkdir)
    rmdir = staticmethod(os.rmdir)
    exists = staticmethod(os.path.exists)

    @staticmethod
    def read(path: str, limit: int) -> bytes:
        """The attribute's bytes; :class:`MalformedResponse` past ``limit``."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        chunks, size = [], 0
        try:
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise MalformedResponse(f"{path} is longer than {limit} bytes", limit)
        finally:
            os.close(fd)
        return b"".join(chunks)

    @staticmethod
    def write(path: str, data: bytes) -> int:
        """Write ``data`` in one call and close (configfs applies a binary attribute at close)."""
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            written = os.write(fd, data)
        except OSError:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        os.close(fd)
        return written


class ConfigfsTsm:
    """The configfs-tsm report interface at ``root`` for one ``provider``.

    With ``entry=None`` every request uses its own new instance (no other writer can interfere);
    with ``entry`` set, requests share that existing instance, one at a time in this process.
    ``busy_retry`` retries an EBUSY ``outblob`` read with back-off (TDX: a quote still in flight).
    """

    def __init__(self, root: str | os.PathLike, provider: str = "", entry: str | None = None, hint: str = "",
                 *, fs=None, clock: Clock = SYSTEM_CLOCK, busy_retry: bool = False):
        self.root = os.fspath(root)
        self.provider = provider
        self.entry = entry
        self.hint = hint
        self.fs = fs or OsConfigfs()
        self.clock = clock
        self.busy_retry = busy_retry
        self._lock = threading.Lock()

    def request(self, inblob: bytes, *, privlevel: int | None = None, set_privlevel: bool = False,
                aux: bool = False) -> tuple[bytes, bytes, int | None]:
        """``(outblob, auxblob, privlevel written)`` for ``inblob``; ``auxblob`` is read only when ``aux``
        (b"" if absent). With ``set_privlevel``, ``privlevel`` (None: ``privlevel_floor``) is written."""
        if self.entry is not None:
            with self._lock:
                return self._request(os.path.join(self.root, self.entry), inblob, privlevel, set_privlevel, aux,
                                     created=False)
        with self._new_instance() as path:
            return self._request(path, inblob, privlevel, set_privlevel, aux, created=True)

    def read_provider(self) -> str:
        """The provider name a new report instance shows (what TEE this guest is)."""
        with self._new_instance() as path:
            return self._provider(path, created=True)

    def read_privlevel_floor(self) -> int | None:
        """The lowest privlevel this guest may ask for (its VMPL), None if the provider has no floor."""
        with self._new_instance() as path:
            return self._floor(path)

    @contextlib.contextmanager
    def _new_instance(self):
        path = os.path.join(self.root, f"derot-{os.getpid()}-{secrets.token_hex(6)}")
        try:
            self.fs.mkdir(path)
        except FileNotFoundError:
            raise TeeUnavailable(f"{self.root} does not exist: configfs-tsm needs Linux >= 6.7 and configfs "
                                 "mounted at /sys/kernel/config") from None
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise TeeUnavailable(f"{self.root}: no TSM provider is registered (TEE guest driver not "
                                     "loaded?)") from None
            raise _os_error(exc, f"creating a report instance in {self.root}") from None
        try:
            yield path
        finally:
            try:
                self.fs.rmdir(path)
            except OSError as exc:
                log.warning("could not remove configfs-tsm report instance %s: %s", path, exc.strerror or exc)

    def _provider(self, path: str, created: bool) -> str:
        try:
            return self._read(os.path.join(path, "provider"), 256).decode("ascii", "replace").strip()
        except TeeUnavailable:
            what = "a new report instance" if created else f"report instance {path}"
            raise TeeUnavailable(f"{self.root} is not a configfs-tsm report directory: {what} has no "
                                 "provider attribute") from None

    def _floor(self, path: str) -> int | None:
        attr = os.path.join(path, "privlevel_floor")
        if not self.fs.exists(attr):
            return None
        text = self._read(attr, 64).decode("ascii", "replace").strip()
        if not text.isdigit() or int(text) > PRIVLEVEL_MAX:
            raise MalformedResponse(f"{attr} is {text!r}, not a privilege level 0..{PRIVLEVEL_MAX}", 0)
        return int(text)

    def _privlevel(self, path: str, wanted: int | None) -> int | None:
        """The privlevel to write: ``wanted``, or the floor when None; refuses one below the floor."""
        floor = self._floor(path)
        if wanted is None:
            return floor
        if floor is not None and wanted < floor:
            raise TeeConfigError(f"privlevel {wanted} is below {path}/privlevel_floor {floor}: this guest runs "
                                 f"at VMPL {floor} and may only ask for reports at VMPL {floor}..{PRIVLEVEL_MAX} "
                                 "(leave privlevel unset to use the floor)")
        return wanted

    def _request(self, path: str, inblob: bytes, privlevel: int | None, set_privlevel: bool, aux: bool,
                 created: bool):
        provider = self._provider(path, created)
        if provider != self.provider:
            raise ProviderMismatch(f"{path}/provider is {provider!r}, expected {self.provider!r}")
        level = self._privlevel(path, privlevel) if set_privlevel else None
        before = self._generation(path)
        writes = 0
        if level is not None:
            self._write(os.path.join(path, "privlevel"), f"{level}\n".encode())
            writes += 1
        self._write(os.path.join(path, "inblob"), inblob)
        writes += 1
        outblob = self._read_outblob(path)
        auxblob = b""
        if aux and self.fs.exists(os.path.join(path, "auxblob")):
            auxblob = self._read(os.path.join(path, "auxblob"), READ_LIMIT)
        after = self._generation(path)
        if after < before + writes:
            raise TeeIOError(f"{path}: generation went {before} -> {after} after {writes} write(s): the kernel "
                             "did not accept a write")
        if after > before + writes:
            raise ConcurrentReport(f"{path}: generation went {before} -> {after} but this request wrote "
                                   f"{writes} time(s): another writer changed the report instance")
        if not outblob:
            raise ShortRead(f"{path}/outblob is empty", 0)
        return outblob, auxblob, level

    def _read_outblob(self, path: str) -> bytes:
        """``outblob``; with ``busy_retry``, EBUSY is retried with doubling delays for ``BUSY_BUDGET`` s."""
        attr = os.path.join(path, "outblob")
        delay, waited = BUSY_FIRST, 0.0
        while True:
            try:
                return self._read(attr, READ_LIMIT)
            except TeeIOError as exc:
                if not self.busy_retry or exc.errno != errno.EBUSY:
                    raise
                if waited >= BUSY_BUDGET:
                    raise TeeIOError(f"{exc}; still busy after {waited:.1f} s of retries (an earlier quote "
                                     "request is still in flight with the host)", exc.errno) from None
            log.info("configfs-tsm %s busy (an earlier request in flight); retrying in %.2f s", attr, delay)
            self.clock.sleep(delay)
            waited += delay
            delay = min(delay * 2, BUSY_CAP)

    def _generation(self, path: str) -> int:
        text = self._read(os.path.join(path, "generation"), 64).decode("ascii", "replace").strip()
        if not text.isdigit():
            raise MalformedResponse(f"{path}/generation is {text!r}, not a number", 0)
        return int(text)

    def _read(self, path: str, limit: int) -> bytes:
        try:
            return self.fs.read(path, limit)
        except FileNotFoundError:
            raise TeeUnavailable(f"{path} does not exist") from None
        except OSError as exc:
            hint = f"; {self.hint}" if self.hint and path.endswith("outblob") else ""
            if isinstance(exc, PermissionError):
                raise _os_error(exc, f"reading {path}") from None
            raise TeeIOError(f"reading {path}: {exc.strerror or exc} (errno {exc.errno}){hint}", exc.errno) from None

    def _write(self, path: str, data: bytes) -> None:
        try:
            written = self.fs.write(path, data)
        except FileNotFoundError:
            raise TeeUnavailable(f"{path} does not exist (the {self.provider} provider lacks this attribute)") from None
        except OSError as exc:
            raise _os_error(exc, f"writing {path}") from None
        if written != len(data):
            raise TeeIOError(f"writing {path}: wrote {written} of {len(data)} bytes")


# --------------------------------------------------------------------------- TDX


def _check_tdx_quote(raw: bytes, report_data: bytes, what: str) -> None:
    """``raw`` is a complete TDX quote binding ``report_data`` (parsed with the verifier's parser)."""
    from derot.attest.errors import EvidenceParseError
    from derot.attest.intel_quote import parse_quote

    if len(raw) < 56:
        raise ShortRead(f"{what}: {len(raw)} bytes is shorter than a quote header", len(raw))
    version = struct.unpack_from("<H", raw, 0)[0]
    signed = 48 + 6 + struct.unpack_from("<I", raw, 50)[0] if version == 5 else 48 + 584
    if len(raw) < signed + 4:
        raise ShortRead(f"{what}: {len(raw)} bytes ends inside the report body", len(raw))
    sig_len = struct.unpack_from("<I", raw, signed)[0]
    if len(raw) < signed + 4 + sig_len:
        raise ShortRead(f"{what}: the signature data needs {sig_len} bytes, {len(raw) - signed - 4} follow",
                        signed)
    try:
        quote = parse_quote(raw)
    except EvidenceParseError as exc:
        raise MalformedResponse(f"{what}: {str(exc).rsplit(' (at byte offset', 1)[0]}", exc.offset) from None
    if not quote.is_tdx:
        raise MalformedResponse(f"{what}: an SGX quote, not a TDX quote", 4)
    if quote.body.report_data != report_data:
        raise ReportDataMismatch(f"{what} binds report_data {quote.body.report_data.hex()[:16]}…, not the "
                                 f"requested {report_data.hex()[:16]}… (a concurrent request?)")


class TdxConfigfsDevice:
    """A TDX guest's quotes through configfs-tsm (provider ``tdx_guest``).

    Evidence carries no collateral: nodes fetch it from their PCCS. ``collateral_path`` names an
    offline bundle (dcap-qvl JSON) to attach instead; it is attached only while it is for this
    machine's FMSPC and fresh, otherwise left out with a warning so nodes fall back to their own.
    """

    platform = Platform.TDX

    def __init__(self, root: str | os.PathLike = DEFAULT_ROOT, *, entry: str | None = None,
                 collateral_path: str | os.PathLike | None = None, fs=None, clock: Clock = SYSTEM_CLOCK):
        self._tsm = ConfigfsTsm(root, TDX_PROVIDER, entry, fs=fs, clock=clock, busy_retry=True,
                                hint="TDX quotes need the host's quote generation service (QGS)")
        self._gate = RequestGate(0.0, clock)
        self._bundle = ConfiguredFile(collateral_path, "collateral bundle") if collateral_path is not None else None
        self._parsed: tuple[bytes, object] | None = None

    def evidence(self, report_data: bytes) -> Evidence:
        rd = check_report_data(report_data)
        quote, _, _ = self._gate.call(lambda: self._tsm.request(rd))
        _check_tdx_quote(quote, rd, f"{self._tsm.root} outblob")
        return Evidence(platform=Platform.TDX, quote=quote, collateral=self._collateral_for(quote))

    def status(self) -> TeeStatus:
        return self._gate.status()

    def _collateral_for(self, quote: bytes) -> bytes:
        if self._bundle is None:
            return b""
        from derot.attest.collateral import Collateral
        from derot.attest.errors import AttestationError
        from derot.attest.intel import pck_info
        from derot.attest.intel_quote import parse_quote

        data = self._bundle.read()
        if self._parsed is None or self._parsed[0] != data:
            try:
                self._parsed = (data, Collateral.from_json(data))
            except AttestationError as exc:
                raise TeeConfigError(f"collateral bundle {self._bundle.path}: {exc}") from None
        collateral = self._parsed[1]
        try:
            fmspc = pck_info(parse_quote(quote)).fmspc
        except AttestationError as exc:
            raise MalformedResponse(f"{self._tsm.root} outblob: {exc}", 0) from None
        if collateral.tee != "TDX" or collateral.fmspc != fmspc:
            log.warning("collateral bundle %s is for %s FMSPC %s, this TD is TDX FMSPC %s: not attached",
                        self._bundle.path, collateral.tee, collateral.fmspc.hex(), fmspc.hex())
            return b""
        if not collateral.is_fresh(int(time.time())):
            log.warning("collateral bundle %s is stale: not attached; nodes fetch their own", self._bundle.path)
            return b""
        return data


# --------------------------------------------------------------------------- SEV-SNP


class SnpConfigfsDevice:
    """An SEV-SNP guest's reports through configfs-tsm (provider ``sev_guest``).

    ``auxblob`` carries the host's certificate table (VCEK/VLEK); ``vek_path`` is the fallback (see
    :mod:`derot.app.tee.snp`). ``privlevel`` (0..3) is the VMPL the report is for; None (the default)
    means the guest's own, ``privlevel_floor``. Requests go through ``gate`` (default: the process's
    :func:`~derot.app.tee.gate.snp_gate`, spaced 2 s apart).
    """

    platform = Platform.SEV_SNP

    def __init__(self, root: str | os.PathLike = DEFAULT_ROOT, *, entry: str | None = None,
                 vek_path: str | os.PathLike | None = None, privlevel: int | None = None, fs=None,
                 gate: RequestGate | None = None):
        if privlevel is not None and not 0 <= privlevel <= PRIVLEVEL_MAX:
            raise ValueError(f"privlevel must be 0..{PRIVLEVEL_MAX}, got {privlevel}")
        self._gate = gate or snp_gate()
        self._tsm = ConfigfsTsm(root, SNP_PROVIDER, entry, fs=fs, clock=self._gate.clock)
        self._vek = ConfiguredFile(vek_path, "VEK file") if vek_path is not None else None
        self.privlevel = privlevel

    def evidence(self, report_data: bytes) -> Evidence:
        rd = check_report_data(report_data)
        report, certs, level = self._gate.call(lambda: self._request(rd))
        root = self._tsm.root
        return snp_evidence(report, rd, level, certs, self._vek, f"{root} outblob", f"{root} auxblob")

    def status(self) -> TeeStatus:
        return self._gate.status()

    def _request(self, rd: bytes):
        try:
            return self._tsm.request(rd, privlevel=self.privlevel, set_privlevel=True, aux=True)
        except TeeIOError as exc:
            if exc.errno == errno.ENOTTY:
                raise self._gate.disable(f"{self._tsm.root}: the sev-guest driver has disabled its VMPCK after "
                                         "an earlier failed request (ENOTTY)") from None
            if exc.errno == errno.ETIMEDOUT:
                raise self._gate.disable(f"{self._tsm.root}: the host kept the request BUSY until the sev-guest "
                                         "driver gave up (ETIMEDOUT) and disabled its VMPCK") from None
            if exc.errno == errno.EINVAL:
                raise TeeIOError(f"{exc}; the sev-guest driver refused the request: a privlevel below "
                                 "privlevel_floor, or an inblob that is not 64 bytes", exc.errno) from None
            raise
