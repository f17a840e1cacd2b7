"""TDX and SEV-SNP evidence through Linux configfs-tsm (``Documentation/ABI/testing/configfs-tsm``,
``drivers/virt/coco/tsm.c``; Linux >= 6.7).

A request creates a report instance ``<root>/<name>/`` (``mkdir``), checks its ``provider``
(``tdx_guest`` or ``sev_guest``), reads ``generation``, writes ``privlevel`` (SNP, optional) and the
64-byte ``inblob``, reads ``outblob`` (the TDX quote / SNP report) and ``auxblob`` (SNP: the host's
certificate table), reads ``generation`` again and removes the instance (``rmdir``).

The kernel bumps ``generation`` by exactly one per accepted attribute write, and applies a binary
attribute write (``inblob``) only when the file is closed, so a write it refused leaves no error at
``close()``. The device therefore requires ``generation`` to have advanced by exactly the number of
its own writes: less means a write was dropped, more means another writer changed the instance
(possible when ``entry`` names a shared, pre-existing instance). It also checks that the returned
report binds the requested report_data, parsing it with the verifier's own parser.
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
    TeeIOError,
    TeePermissionDenied,
    TeeUnavailable,
)
from derot.app.tee.snp import snp_evidence

log = logging.getLogger("derot.app.tee")

DEFAULT_ROOT = "/sys/kernel/config/tsm/report"
TDX_PROVIDER = "tdx_guest"
SNP_PROVIDER = "sev_guest"
READ_LIMIT = 1 << 20  # the kernel caps blobs at 32 KiB (TSM_OUTBLOB_MAX)


def _os_error(exc: OSError, what: str) -> Exception:
    if isinstance(exc, PermissionError):
        return TeePermissionDenied(f"{what}: permission denied (configfs-tsm needs root)")
    return TeeIOError(f"{what}: {exc.strerror or exc} (errno {exc.errno})", exc.errno)


class ConfigfsTsm:
    """The configfs-tsm report interface at ``root`` for one ``provider``.

    With ``entry=None`` every request uses its own new instance (no other writer can interfere);
    with ``entry`` set, requests share that existing instance, one at a time in this process.
    """

    def __init__(self, root: str | os.PathLike, provider: str = "", entry: str | None = None, hint: str = ""):
        self.root = os.fspath(root)
        self.provider = provider
        self.entry = entry
        self.hint = hint
        self._lock = threading.Lock()

    def request(self, inblob: bytes, *, privlevel: int | None = None, aux: bool = False) -> tuple[bytes, bytes]:
        """``(outblob, auxblob)`` for ``inblob``; ``auxblob`` is read only when ``aux`` (b"" if absent)."""
        if self.entry is not None:
            with self._lock:
                return self._request(os.path.join(self.root, self.entry), inblob, privlevel, aux, created=False)
        with self._new_instance() as path:
            return self._request(path, inblob, privlevel, aux, created=True)

    def read_provider(self) -> str:
        """The provider name a new report instance shows (what TEE this guest is)."""
        with self._new_instance() as path:
            return self._provider(path, created=True)

    @contextlib.contextmanager
    def _new_instance(self):
        path = os.path.join(self.root, f"derot-{os.getpid()}-{secrets.token_hex(6)}")
        try:
            os.mkdir(path)
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
                os.rmdir(path)
            except OSError as exc:
                log.warning("could not remove configfs-tsm report instance %s: %s", path, exc.strerror or exc)

    def _provider(self, path: str, created: bool) -> str:
        try:
            return self._read(os.path.join(path, "provider"), 256).decode("ascii", "replace").strip()
        except TeeUnavailable:
            what = "a new report instance" if created else f"report instance {path}"
            raise TeeUnavailable(f"{self.root} is not a configfs-tsm report directory: {what} has no "
                                 "provider attribute") from None

    def _request(self, path: str, inblob: bytes, privlevel: int | None, aux: bool, created: bool):
        provider = self._provider(path, created)
        if provider != self.provider:
            raise ProviderMismatch(f"{path}/provider is {provider!r}, expected {self.provider!r}")
        before = self._generation(path)
        writes = 0
        if privlevel is not None:
            self._write(os.path.join(path, "privlevel"), f"{privlevel}\n".encode())
            writes += 1
        self._write(os.path.join(path, "inblob"), inblob)
        writes += 1
        outblob = self._read(os.path.join(path, "outblob"), READ_LIMIT)
        auxblob = b""
        if aux and os.path.exists(os.path.join(path, "auxblob")):
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
        return outblob, auxblob

    def _generation(self, path: str) -> int:
        text = self._read(os.path.join(path, "generation"), 64).decode("ascii", "replace").strip()
        if not text.isdigit():
            raise MalformedResponse(f"{path}/generation is {text!r}, not a number", 0)
        return int(text)

    def _read(self, path: str, limit: int) -> bytes:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise TeeUnavailable(f"{path} does not exist") from None
        except OSError as exc:
            raise _os_error(exc, f"opening {path}") from None
        chunks, size = [], 0
        try:
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise MalformedResponse(f"{path} is longer than {limit} bytes", limit)
        except OSError as exc:
            hint = f"; {self.hint}" if self.hint and path.endswith("outblob") else ""
            raise TeeIOError(f"reading {path}: {exc.strerror or exc} (errno {exc.errno}){hint}", exc.errno) from None
        finally:
            os.close(fd)
        return b"".join(chunks)

    def _write(self, path: str, data: bytes) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise TeeUnavailable(f"{path} does not exist (the {self.provider} provider lacks this attribute)") from None
        except OSError as exc:
            raise _os_error(exc, f"opening {path}") from None
        try:
            written = os.write(fd, data)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise _os_error(exc, f"writing {path}") from None
        try:
            os.close(fd)  # configfs applies a binary attribute write here
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
                 collateral_path: str | os.PathLike | None = None):
        self._tsm = ConfigfsTsm(root, TDX_PROVIDER, entry,
                                hint="TDX quotes need the host's quote generation service (QGS)")
        self._bundle = ConfiguredFile(collateral_path, "collateral bundle") if collateral_path is not None else None
        self._parsed: tuple[bytes, object] | None = None

    def evidence(self, report_data: bytes) -> Evidence:
        rd = check_report_data(report_data)
        quote, _ = self._tsm.request(rd)
        _check_tdx_quote(quote, rd, f"{self._tsm.root} outblob")
        return Evidence(platform=Platform.TDX, quote=quote, collateral=self._collateral_for(quote))

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
    :mod:`derot.app.tee.snp`). ``privlevel`` (0..3), when given, is written as the report's VMPL.
    """

    platform = Platform.SEV_SNP

    def __init__(self, root: str | os.PathLike = DEFAULT_ROOT, *, entry: str | None = None,
                 vek_path: str | os.PathLike | None = None, privlevel: int | None = None):
        if privlevel is not None and not 0 <= privlevel <= 3:
            raise ValueError(f"privlevel must be 0..3, got {privlevel}")
        self._tsm = ConfigfsTsm(root, SNP_PROVIDER, entry)
        self._vek = ConfiguredFile(vek_path, "VEK file") if vek_path is not None else None
        self.privlevel = privlevel

    def evidence(self, report_data: bytes) -> Evidence:
        rd = check_report_data(report_data)
        report, certs = self._tsm.request(rd, privlevel=self.privlevel, aux=True)
        root = self._tsm.root
        return snp_evidence(report, rd, self.privlevel, certs, self._vek, f"{root} outblob", f"{root} auxblob")
