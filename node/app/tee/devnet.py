"""A devnet TEE for a laptop: real-format TDX quotes or SEV-SNP reports signed under devnet roots.

Construction issues the machine's certificate once (a PCK chain for TDX, a VCEK or VLEK for SNP,
one attestation certificate per GPU); each :meth:`DevnetDevice.evidence` call then only signs
(tens of microseconds for TDX, a few hundred for SNP). The evidence passes the production verifier
under ``TrustConfig.devnet(roots)`` and is refused by a production trust configuration.
"""

from __future__ import annotations

import os
from dataclasses import replace

from derot.attest.evidence import Evidence
from derot.constants import Platform

from derot.app.tee.device import check_report_data
from derot.app.tee.gate import TeeStatus


class DevnetDevice:
    """A devnet TDX TD or SNP guest, optionally with ``gpus`` devnet GPUs attached (a GPU TEE).

    ``roots`` is a devnet roots directory (``DevnetRoots.load``) or a loaded ``DevnetRoots``.
    ``measurements`` are the identity registers (``MRTD``/``RTMR0..3``/``MRCONFIGID``… for TDX,
    ``MEASUREMENT``/``HOST_DATA`` for SNP); missing ones are zero. ``fmspc`` (TDX) and ``chip_id``
    (SNP, 64 bytes) pick the hardware identity governance can revoke; ``vlek`` signs SNP reports
    with a VLEK instead of a VCEK. ``gpu_firmware`` is the FWID (firmware build) of its GPUs (default: the one
    devnet firmware every devnet GPU runs) and ``gpu_project`` their board (default: an HGX H100 board).
    """

    def __init__(
        self,
        roots,
        platform: Platform,
        measurements: dict[str, bytes] | None = None,
        *,
        fmspc: bytes | None = None,
        chip_id: bytes | None = None,
        debug: bool = False,
        vlek: bool = False,
        gpus: int = 0,
        gpu_firmware: bytes | None = None,
        gpu_project: str = "G520",
    ):
        from derot.attest.devnet import DevnetGpu, DevnetRoots, DevnetTee

        if not isinstance(roots, DevnetRoots):
            roots = DevnetRoots.load(os.fspath(roots))
        self.platform = Platform(platform)
        options: dict = {"debug": debug}
        if self.platform == Platform.TDX:
            if fmspc is not None:
                options["fmspc"] = bytes(fmspc)
        elif self.platform == Platform.SEV_SNP:
            options.update(chip_id=chip_id, vlek=vlek)
        else:
            raise ValueError(f"a devnet device is a TDX or SEV-SNP TEE, not {self.platform.name}")
        if gpus < 0:
            raise ValueError("gpus must be >= 0")
        self._tee = DevnetTee(roots, self.platform, measurements, **options)
        self._gpus = tuple(DevnetGpu(roots, fwid=gpu_firmware, project=gpu_project) for _ in range(gpus))

    @property
    def gpus(self) -> tuple:
        """The attached devnet GPUs (:class:`derot.attest.devnet.DevnetGpu`: ``fwid``, ``measurement_digest``)."""
        return self._gpus

    def evidence(self, report_data: bytes) -> Evidence:
        rd = check_report_data(report_data)
        evidence = self._tee.quote(rd)
        if self._gpus:
            evidence = replace(evidence, gpus=tuple(gpu.evidence_for(rd) for gpu in self._gpus))
        return evidence

    def status(self) -> TeeStatus:
        """A devnet TEE signs locally: always available."""
        return TeeStatus("ok")
