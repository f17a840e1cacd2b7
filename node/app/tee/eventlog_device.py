"""TDX event logs for the SDK: attach the CCEL log (and the app's RTMR3 events) to a TDX device's evidence,
and extend app events into RTMR3.

- :class:`WithEventLog` wraps any TDX :class:`TeeDevice`; its evidence carries the firmware's CCEL log
  (``/sys/firmware/acpi/tables/data/CCEL``, trimmed at its padding so it fits the 1 MiB envelope) followed by
  the records of the runtime log file the launcher keeps. Verifiers replay it (``derot.attest.eventlog``).
- :func:`extend_app_event` is what a launcher runs once per identity fact (``app.compose``, ``app.image``…)
  or instance fact (``instance.*``): it extends the event's SHA-384 digest into RTMR3 (Linux's
  ``/sys/class/misc/tdx_guest/measurements/rtmr3:sha384``) and appends the record to the runtime log.
"""

from __future__ import annotations

import os
from dataclasses import replace

from derot.app.tee.device import TeeDevice
from derot.app.tee.errors import TeeConfigError, TeeIOError
from derot.attest import eventlog
from derot.attest.errors import EvidenceParseError
from derot.attest.evidence import Evidence
from derot.constants import Platform

CCEL_PATH = "/sys/firmware/acpi/tables/data/CCEL"
RTMR3_PATH = "/sys/class/misc/tdx_guest/measurements/rtmr3:sha384"
MAX_RUNTIME_LOG = 1 << 20


def _read(path: str, what: str, limit: int) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise TeeConfigError(f"{what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise TeeConfigError(f"{what} {path} exceeds {limit} bytes")
    return data


class WithEventLog:
    """A TDX device whose evidence also carries the event log (CCEL + the runtime log's app events)."""

    def __init__(self, device: TeeDevice, *, ccel_path: str = CCEL_PATH, runtime_log: str | None = None):
        if device.platform != Platform.TDX:
            raise ValueError(f"event logs are replayed against TDX evidence, not {device.platform.name}")
        self.device, self.platform = device, Platform.TDX
        self.ccel_path, self.runtime_log = ccel_path, runtime_log

    def event_log(self) -> bytes:
        raw = _read(self.ccel_path, "CCEL event log", eventlog.MAX_LOG_SIZE)
        try:
            log = raw[:eventlog.parse_event_log(raw).size]
        except EvidenceParseError as exc:
            raise TeeConfigError(f"CCEL event log {self.ccel_path}: {exc}") from None
        if self.runtime_log and os.path.exists(self.runtime_log):
            log += _read(self.runtime_log, "runtime event log", MAX_RUNTIME_LOG)
        return log

    def evidence(self, report_data: bytes) -> Evidence:
        log = self.event_log()  # read first: an event extended after the quote would not replay
        evidence = self.device.evidence(report_data)
        return replace(evidence, event_log=log)


def extend_app_event(name: str, payload: bytes, *, runtime_log: str, rtmr3_path: str = RTMR3_PATH) -> bytes:
    """Extend a derot app event into RTMR3 and append its record to ``runtime_log``; returns the digest.

    The log is appended only after the extend succeeded, so the log never claims an unmeasured event."""
    data, digest = eventlog.app_event(name, payload)
    try:
        with open(rtmr3_path, "wb") as f:
            f.write(digest)
    except OSError as exc:
        raise TeeIOError(f"extending RTMR3 through {rtmr3_path}: {exc.strerror or exc}", exc.errno) from None
    with open(runtime_log, "ab") as f:
        f.write(eventlog.event_record(4, eventlog.EV_EVENT_TAG, data, digest))
    return digest
