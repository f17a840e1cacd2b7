"""Pick the hardware TEE interface of the machine this process runs in.

Order: configfs-tsm (its ``provider`` says TDX or SEV-SNP), then an Azure CVM's vTPM (``/dev/tpmrm0`` with
the paravisor's HCL report in NV index 0x01400001), then ``/dev/sev-guest``. When configfs-tsm is there but
this user may not create report instances (it is root-only), a ``/dev/sev-guest`` the user can open (e.g.
through a group) is used instead. Nothing falls back to a devnet device here: only the caller
(``derot app --devnet``) decides that.
"""

from __future__ import annotations

import logging
import os

from derot.constants import Platform, spelled

from derot.app.tee.configfs import (
    DEFAULT_ROOT,
    SNP_PROVIDER,
    TDX_PROVIDER,
    ConfigfsTsm,
    SnpConfigfsDevice,
    TdxConfigfsDevice,
)
from derot.app.tee.device import TeeDevice
from derot.app.tee.errors import PlatformMismatch, TeePermissionDenied, TeeUnavailable
from derot.app.tee.sev_guest import DEFAULT_DEVICE, SnpDevice

log = logging.getLogger("derot.app.tee")

TDX_GUEST_DEVICE = "/dev/tdx_guest"


def detect_device(*, configfs_root: str | os.PathLike = DEFAULT_ROOT, sev_guest: str | os.PathLike = DEFAULT_DEVICE,
                  vek_path: str | os.PathLike | None = None, collateral_path: str | os.PathLike | None = None,
                  privlevel: int | None = None, expect: Platform | None = None,
                  tpm_device: str | os.PathLike = "/dev/tpmrm0") -> TeeDevice:
    """The TEE device for this machine; :class:`TeeUnavailable` naming every path looked at if none.

    ``vek_path`` and ``privlevel`` (the report's VMPL; None: the guest's own) apply to SEV-SNP,
    ``collateral_path`` to TDX. ``expect`` (the platform the configuration names) raises
    :class:`PlatformMismatch` if this machine is another TEE."""
    device = _detect(os.fspath(configfs_root), os.fspath(sev_guest), vek_path, collateral_path, privlevel,
                     os.fspath(tpm_device))
    if expect is not None and device.platform != Platform(expect):
        raise PlatformMismatch(f"this machine is a {spelled(Platform, device.platform)} guest "
                               f"({type(device).__name__}), but the configuration names {spelled(Platform, expect)}")
    return device


def _detect(configfs_root: str, sev_guest: str, vek_path, collateral_path, privlevel, tpm_device: str) -> TeeDevice:
    reasons = []
    if os.path.isdir(configfs_root):
        try:
            provider = ConfigfsTsm(configfs_root).read_provider()
        except TeeUnavailable as exc:
            reasons.append(str(exc))
        except TeePermissionDenied as exc:
            if os.path.exists(sev_guest) and os.access(sev_guest, os.R_OK | os.W_OK):
                log.info("%s; using %s, which this user may open", exc, sev_guest)
                return SnpDevice(sev_guest, vek_path=vek_path, vmpl=privlevel)
            raise TeePermissionDenied(f"{exc}; and {sev_guest} is not usable by this user either (grant read-write "
                                      "access to it, e.g. through a group, or run as root)") from None
        else:
            if provider == TDX_PROVIDER:
                return TdxConfigfsDevice(configfs_root, collateral_path=collateral_path)
            if provider == SNP_PROVIDER:
                return SnpConfigfsDevice(configfs_root, vek_path=vek_path, privlevel=privlevel)
            reasons.append(f"{configfs_root}: provider {provider!r} is not supported "
                           f"({TDX_PROVIDER!r} or {SNP_PROVIDER!r})")
    else:
        reasons.append(f"{configfs_root} not found (configfs-tsm: TDX or SEV-SNP guest on Linux >= 6.7)")
        if os.path.exists(TDX_GUEST_DEVICE):
            reasons.append(f"{TDX_GUEST_DEVICE} exists: this is a TDX guest; mount configfs at /sys/kernel/config")
    if os.path.exists(tpm_device):
        device = _azure(tpm_device, vek_path, reasons)
        if device is not None:
            return device
    if os.path.exists(sev_guest):
        root = configfs_root if os.path.isdir(configfs_root) else None
        return SnpDevice(sev_guest, vek_path=vek_path, vmpl=privlevel, configfs_root=root)
    reasons.append(f"{sev_guest} not found (SEV-SNP guest driver)")
    raise TeeUnavailable("no TEE attestation interface: " + "; ".join(reasons)
                         + ". On a laptop, use a devnet device instead.")


def _azure(path: str, vek_path, reasons: list[str]):
    """An Azure vTPM device if ``path`` is a TPM holding an HCL report, else None (the reason recorded)."""
    from derot.app.tee.azure_vm import AzureVtpmDevice
    from derot.app.tee.errors import TeeError, TeePermissionDenied
    from derot.app.tee.vtpm import DeviceTransport
    from derot.attest.errors import EvidenceParseError

    device = AzureVtpmDevice(DeviceTransport(path), vek_path=vek_path)
    try:
        device.platform  # reads and parses the HCL report
    except TeePermissionDenied:
        raise
    except (TeeError, EvidenceParseError) as exc:
        reasons.append(f"{path}: not an Azure CVM vTPM ({exc})")
        return None
    return device
