"""The interface every TEE device implements, and what the devices share: the report_data check and
configured files."""

from __future__ import annotations

import os
import threading
from typing import Protocol, runtime_checkable

from derot.attest.evidence import Evidence
from derot.constants import Platform

from derot.app.tee.errors import TeeConfigError
from derot.errors import DerotError

REPORT_DATA_SIZE = 64


class InvalidReportData(DerotError, ValueError):
    """``report_data`` is not 64 bytes (a caller bug, not a TEE failure)."""

    reason = "invalid_report_data"


@runtime_checkable
class TeeDevice(Protocol):
    """Produces evidence of the TEE it runs in. ``evidence(rd)`` returns evidence whose report binds
    exactly ``rd`` (64 bytes) and is safe to call from several threads at once."""

    platform: Platform

    def evidence(self, report_data: bytes) -> Evidence: ...


class ConfiguredFile:
    """A file named in a device's configuration (a VEK, a collateral bundle), re-read whenever its
    size or mtime changes so an operator can refresh it without restarting the app."""

    def __init__(self, path: str | os.PathLike, what: str):
        self.path = os.fspath(path)
        self.what = what
        self._stamp: tuple[int, int] | None = None
        self._data = b""
        self._lock = threading.Lock()

    def read(self) -> bytes:
        """The file's bytes; :class:`TeeConfigError` if it is missing, unreadable or empty."""
        try:
            st = os.stat(self.path)
            with self._lock:
                if self._stamp != (st.st_mtime_ns, st.st_size):
                    with open(self.path, "rb") as f:
                        self._data = f.read()
                    self._stamp = (st.st_mtime_ns, st.st_size)
                data = self._data
        except OSError as exc:
            raise TeeConfigError(f"{self.what} {self.path}: {exc.strerror or exc}") from None
        if not data:
            raise TeeConfigError(f"{self.what} {self.path} is empty")
        return data


def check_report_data(report_data: bytes) -> bytes:
    """``report_data`` as ``bytes``; raises :class:`InvalidReportData` unless it is 64 bytes."""
    if not isinstance(report_data, (bytes, bytearray, memoryview)):
        raise InvalidReportData(f"report_data must be bytes, not {type(report_data).__name__}")
    data = bytes(report_data)
    if len(data) != REPORT_DATA_SIZE:
        raise InvalidReportData(f"report_data must be {REPORT_DATA_SIZE} bytes, got {len(data)}")
    return data
