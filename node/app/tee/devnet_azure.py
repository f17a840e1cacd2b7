"""A devnet Azure CVM device: :class:`derot.attest.devnet_azure.DevnetAzureVm` behind the TeeDevice interface,
optionally with devnet GPUs (an Azure GPU CVM). Evidence is real-format and verified by the same code."""

from __future__ import annotations

import os
from dataclasses import replace

from derot.app.tee.device import check_report_data
from derot.attest.evidence import Evidence
from derot.constants import Platform


class DevnetAzureDevice:
    """A devnet ``AZURE_SNP`` / ``AZURE_TDX`` guest running ``image`` (measured into its vTPM PCRs)."""

    def __init__(self, roots, platform: Platform, image: str, *, chip_id: bytes | None = None,
                 fmspc: bytes | None = None, gpus: int = 0):
        from derot.attest.devnet import DevnetGpu, DevnetRoots
        from derot.attest.devnet_azure import DevnetAzureVm, image_registers

        if not isinstance(roots, DevnetRoots):
            roots = DevnetRoots.load(os.fspath(roots))
        self.platform = Platform(platform)
        if self.platform not in (Platform.AZURE_SNP, Platform.AZURE_TDX):
            raise ValueError(f"a devnet Azure device is AZURE_SNP or AZURE_TDX, not {self.platform.name}")
        if gpus < 0:
            raise ValueError("gpus must be >= 0")
        options = {"chip_id": chip_id} if self.platform == Platform.AZURE_SNP else (
            {"fmspc": bytes(fmspc)} if fmspc is not None else {})
        hw, pcrs = image_registers(self.platform, image)
        self._vm = DevnetAzureVm(roots, self.platform, hw, pcrs, **options)
        self._gpus = tuple(DevnetGpu(roots) for _ in range(gpus))

    def evidence(self, report_data: bytes) -> Evidence:
        rd = check_report_data(report_data)
        evidence = self._vm.evidence(rd)
        if self._gpus:
            evidence = replace(evidence, gpus=tuple(gpu.evidence_for(rd) for gpu in self._gpus))
        return evidence
