"""The node's own TEE, for its health and metrics: can it still attest?

A node with a hardware TEE (``[attest].node_tee = "tdx"`` or ``"snp"``) keeps one device for its
lifetime. :meth:`TeeWatch.check` detects it once with the operator's options (refusing another platform
than configured), then asks it for evidence ONCE, so that a VMPCK the sev-guest driver wiped before this
process started (a failed request in an earlier run, or in another process on the guest) is seen at
start. After that it only reads the device's status, which every later request in this process updates
through the device's gate (:mod:`derot.app.tee.gate`): no periodic firmware requests, since on older
kernels any failed request costs the VMPCK.

:meth:`TeeWatch.publish` puts the answer into the metric ``derot_tee_attestation_available`` and the gRPC
health service ``derot.v1.Tee``, and logs a newly unavailable TEE once, by name.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

log = logging.getLogger("derot.service.tee")

HEALTH_SERVICE = "derot.v1.Tee"


class TeeWatch:
    """Detects the node's device with ``options`` (:meth:`derot.service.config.AttestSection.device_options`)
    on first use; ``detect`` defaults to :func:`derot.app.tee.detect_device`."""

    def __init__(self, options: dict, detect: Callable | None = None):
        self._options = dict(options)
        self._detect = detect
        self.device = None
        self._probed = False
        self._said = ""

    def check(self) -> tuple[bool, str]:
        """``(available, detail)``; blocking (run it in a worker thread). Not available: the device cannot be
        detected or is another platform than configured, or its channel is disabled until the guest reboots."""
        from derot.app.tee.errors import AttestationDisabled, TeeError
        from derot.app.tee.gate import REBOOT_HINT, device_status

        try:
            if self.device is None:
                detect = self._detect
                if detect is None:
                    from derot.app.tee import detect_device as detect
                self.device = detect(**self._options)
            if not self._probed:
                self._probed = True
                if device_status(self.device).state == "unknown":
                    try:
                        self.device.evidence(os.urandom(64))
                    except TeeError as exc:  # the device's status records what matters
                        log.info("TEE probe at start failed", extra={"detail": exc.diagnostics()})
            status = device_status(self.device)
        except TeeError as exc:
            return False, exc.diagnostics()
        if not status.available:
            return False, f"{AttestationDisabled.reason}: {REBOOT_HINT}: {status.detail}"
        return True, status.detail

    async def publish(self, gauge, health=None) -> bool:
        """One check, into ``gauge`` (1/0) and ``health`` (:class:`derot.net.servicers.Health`); returns
        whether the TEE is available."""
        available, detail = await asyncio.to_thread(self.check)
        gauge.set(int(available))
        if health is not None:
            await health.set_service(HEALTH_SERVICE, available)
        if not available and detail != self._said:
            log.error("TEE attestation unavailable", extra={"detail": detail})
        self._said = "" if available else detail
        return available
