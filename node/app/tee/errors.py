"""Exceptions raised while obtaining evidence from a TEE. One class per failure class; all are
:class:`TeeError` (a :class:`derot.errors.DerotError` with a stable ``reason``), and every message
names the device path or field that was wrong."""

from __future__ import annotations

from derot.errors import DerotError


class TeeError(DerotError):
    """Base class: evidence could not be obtained from this TEE device.

    ``reason`` defaults to ``tee_<classname>`` (what ``derot app`` has always printed)."""

    reason = "tee_teeerror"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "reason" not in cls.__dict__:
            cls.reason = "tee_" + cls.__name__.lower()


class TeeUnavailable(TeeError):
    """The attestation interface is not there (no device node, no configfs-tsm directory, no provider)."""


class AttestationDisabled(TeeUnavailable):
    """The guest's attestation channel is gone until the guest reboots.

    The sev-guest driver wipes its VMPCK (the key it talks to the AMD secure processor with) after
    any failed request except a too-small certificate buffer, so that an AES-GCM IV is never reused;
    every later request fails with ENOTTY before the firmware is asked."""

    reason = "tee_attestation_disabled"


class TeePermissionDenied(TeeError):
    """The interface exists but this process may not use it (usually: not root / missing group)."""


class ProviderMismatch(TeeError):
    """configfs-tsm answers for another TEE than this device expects (e.g. ``sev_guest`` for TDX)."""


class ConcurrentReport(TeeError):
    """A configfs-tsm report instance was changed by another writer while we used it (``generation``)."""


class TeeIOError(TeeError):
    """The kernel refused a read, write or ioctl for a reason other than the ones above (``errno`` kept)."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno


class FirmwareError(TeeError):
    """The AMD secure processor or the hypervisor reported an error.

    ``fw_error`` is the SEV firmware status (``include/uapi/linux/psp-sev.h``; for a failed
    MSG_REPORT_RSP, its ``status``), ``vmm_error`` the GHCB hypervisor error (``sev-guest.h``).
    ``disabled`` is True when the driver has wiped its VMPCK after this failure.
    """

    def __init__(self, message: str, *, fw_error: int = 0, vmm_error: int = 0, disabled: bool = False):
        super().__init__(message)
        self.fw_error = fw_error
        self.vmm_error = vmm_error
        self.disabled = disabled


class MalformedResponse(TeeError):
    """The bytes the TEE returned are not the expected structure; ``offset`` is the bad byte offset."""

    def __init__(self, message: str, offset: int = 0):
        super().__init__(f"{message} (at byte offset {offset})")
        self.offset = offset


class ShortRead(MalformedResponse):
    """The TEE returned fewer bytes than the structure needs."""


class ReportDataMismatch(TeeError):
    """The report binds other report_data (or VMPL) than requested: it answers someone else's request."""


class TeeConfigError(TeeError):
    """A configured file (``vek_path``, ``collateral_path``) or option (``privlevel``) is unusable, or no
    VEK is available."""


class PlatformMismatch(TeeConfigError):
    """The TEE this machine has is not the platform the configuration names (e.g. SEV-SNP for ``tdx``)."""
