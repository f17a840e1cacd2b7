"""TEE devices for the app SDK: each produces :class:`derot.attest.evidence.Evidence` for a 64-byte
report_data through the :class:`TeeDevice` interface.

- :class:`DevnetDevice`: a devnet TDX/SNP TEE (optionally with GPUs) signed under devnet roots, for a laptop.
- :class:`TdxConfigfsDevice`: a TDX guest's quotes through configfs-tsm (``tdx_guest``).
- :class:`SnpConfigfsDevice`: an SEV-SNP guest's reports through configfs-tsm (``sev_guest``).
- :class:`SnpDevice`: an SEV-SNP guest's reports through the ``/dev/sev-guest`` ioctls.
- :class:`AzureVtpmDevice`: an Azure confidential VM (SEV-SNP or TDX behind the paravisor) through its vTPM.
- :func:`detect_device`: the hardware interface present, or :class:`TeeUnavailable`.
- :func:`device_status`: a device's :class:`TeeStatus` (health/metrics: is attestation still possible).

Every failure is a :class:`TeeError` subclass (see :mod:`derot.app.tee.errors`). Only ``derot.attest``,
``derot.constants``, the standard library and ``cryptography`` are imported: no node server code.
"""

from derot.app.tee.azure_vm import AzureVtpmDevice
from derot.app.tee.configfs import SnpConfigfsDevice, TdxConfigfsDevice
from derot.app.tee.detect import detect_device
from derot.app.tee.devnet import DevnetDevice
from derot.app.tee.device import InvalidReportData, TeeDevice
from derot.app.tee.errors import (
    AttestationDisabled,
    ConcurrentReport,
    FirmwareError,
    MalformedResponse,
    PlatformMismatch,
    ProviderMismatch,
    ReportDataMismatch,
    ShortRead,
    TeeConfigError,
    TeeError,
    TeeIOError,
    TeePermissionDenied,
    TeeUnavailable,
)
from derot.app.tee.gate import RequestGate, TeeStatus, device_status
from derot.app.tee.sev_guest import SnpDevice

__all__ = [
    "TeeDevice", "DevnetDevice", "AzureVtpmDevice", "TdxConfigfsDevice", "SnpConfigfsDevice", "SnpDevice", "detect_device",
    "InvalidReportData", "TeeError", "TeeUnavailable", "TeePermissionDenied", "ProviderMismatch",
    "ConcurrentReport", "TeeIOError", "FirmwareError", "MalformedResponse", "ShortRead", "ReportDataMismatch",
    "TeeConfigError", "AttestationDisabled", "PlatformMismatch", "RequestGate", "TeeStatus", "device_status",
]
