"""One gate per guest attestation channel: requests go through it one at a time, spaced apart, and it
remembers whether the channel still works.

Why spacing: a hypervisor may throttle guest requests (GHCB ``BUSY``). On older kernels one BUSY made
the sev-guest driver wipe its VMPCK (no attestation until reboot); newer kernels retry inside the
driver for up to 60 s and then wipe it. go-sev-guest spaces requests 2 s apart by default; so does
:data:`SNP_INTERVAL`. Every SEV-SNP device in a process shares :func:`snp_gate` (configfs-tsm and
``/dev/sev-guest`` reach the firmware over the same VMPCK). Only this process is serialized: run one
attesting process per guest, or give each its own spacing budget.

:meth:`RequestGate.status` is the health API for a node or an app: whether attestation works, and if
it is disabled, why (see :class:`TeeStatus`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from derot.app.tee.errors import AttestationDisabled, FirmwareError, TeeIOError, TeePermissionDenied, TeeUnavailable

#: failures of the channel itself (not of what it returned): they make the status "failing"
_CHANNEL_ERRORS = (TeeIOError, FirmwareError, TeePermissionDenied, TeeUnavailable)

#: seconds between the end of one SEV-SNP guest request and the start of the next (go-sev-guest's default)
SNP_INTERVAL = 2.0

REBOOT_HINT = "attestation unavailable until the guest reboots"


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock (``time.monotonic`` / ``time.sleep``)."""

    @staticmethod
    def monotonic() -> float:
        return time.monotonic()

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


@dataclass(frozen=True)
class TeeStatus:
    """What a device's channel looks like now.

    ``state``: ``"ok"`` (the last request succeeded), ``"unknown"`` (nothing asked yet), ``"failing"``
    (the last request failed; the next may work) or ``"disabled"`` (attestation unavailable until the
    guest reboots). ``available`` is False only when disabled. ``detail`` says why, for people."""

    state: str
    detail: str = ""
    requests: int = 0
    failures: int = 0

    @property
    def available(self) -> bool:
        return self.state != "disabled"


class RequestGate:
    """Serializes requests and starts each at least ``interval`` seconds after the previous one ended."""

    def __init__(self, interval: float = 0.0, clock: Clock = SYSTEM_CLOCK):
        if interval < 0:
            raise ValueError("interval must be >= 0")
        self.interval = float(interval)
        self.clock = clock
        self._lock = threading.Lock()
        self._state = threading.Lock()
        self._last_end: float | None = None
        self._disabled = ""
        self._status = TeeStatus("unknown")

    @contextlib.contextmanager
    def slot(self):
        """Hold the channel for one request. Raises :class:`AttestationDisabled` without touching the
        device once the channel is known to be disabled."""
        with self._lock:
            self.check()
            if self._last_end is not None:
                wait = self._last_end + self.interval - self.clock.monotonic()
                if wait > 0:
                    self.clock.sleep(wait)
            try:
                yield
            finally:
                self._last_end = self.clock.monotonic()

    def call(self, request):
        """``request()`` in a slot, its outcome recorded in :meth:`status`."""
        with self.slot():
            try:
                result = request()
            except _CHANNEL_ERRORS as exc:
                self.failed(str(exc))
                raise
            self.succeeded()
            return result

    def check(self) -> None:
        """:class:`AttestationDisabled` if the channel is disabled."""
        if self._disabled:
            raise AttestationDisabled(f"{REBOOT_HINT}: {self._disabled}")

    def succeeded(self) -> None:
        with self._state:
            s = self._status
            self._status = TeeStatus("ok", "", s.requests + 1, s.failures)

    def failed(self, detail: str) -> None:
        with self._state:
            s = self._status
            state = "disabled" if self._disabled else "failing"
            self._status = TeeStatus(state, self._disabled or detail, s.requests + 1, s.failures + 1)

    def disable(self, detail: str) -> AttestationDisabled:
        """Record that the channel is gone (until reboot); returns the error to raise."""
        with self._state:
            self._disabled = detail
            s = self._status
            self._status = TeeStatus("disabled", detail, s.requests, s.failures)
        return AttestationDisabled(f"{REBOOT_HINT}: {detail}")

    def status(self) -> TeeStatus:
        with self._state:
            return self._status


_snp_gate: RequestGate | None = None
_snp_lock = threading.Lock()


def snp_gate() -> RequestGate:
    """The process-wide gate of this guest's SEV-SNP channel (``SNP_INTERVAL`` spacing)."""
    global _snp_gate
    with _snp_lock:
        if _snp_gate is None:
            _snp_gate = RequestGate(SNP_INTERVAL)
        return _snp_gate


def device_status(device) -> TeeStatus:
    """The status of any :class:`~derot.app.tee.device.TeeDevice`: its ``status()`` if it has one,
    else ``unknown``. Health checks and metrics call this (see docs/tee-guests.md)."""
    status = getattr(device, "status", None)
    return status() if callable(status) else TeeStatus("unknown")
