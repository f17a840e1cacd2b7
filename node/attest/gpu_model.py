"""Which NVIDIA GPU model a verified GPU report comes from, and what a certificate says about a GPU TEE's GPUs.

The model is read only from verified bytes: the chip name in the attestation certificate's subject (the chain
was checked to the pinned NVIDIA root) and the board ``project`` in the report's opaque data (covered by the
SPDM signature). A chip and board pair derot has no real evidence for is *unrecognised*: it yields no
:class:`~derot.constants.GpuModel` bit, and a certificate marks it with :data:`GPU_MODEL_UNRECOGNISED`, so a
relying party that allows only some models never accepts a GPU nobody identified.

Known pairs (each backed by a real report in shared/vectors/nvidia_nvtrust):

- ``GH100`` on board ``G520`` (HGX H100 SXM5, the 8-GPU PPCIE set) and ``1010`` (H100 PCIe): H100.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from derot.attest.claims import Claims
from derot.constants import GPU_MODEL_UNRECOGNISED, GpuModel

#: (chip, board project) → model; extend only with real evidence.
KNOWN_BOARDS: Mapping[tuple[str, str], GpuModel] = {
    ("GH100", "G520"): GpuModel.H100,
    ("GH100", "1010"): GpuModel.H100,
}
_CHIP = re.compile(r"(?<![A-Z0-9])(G[A-Z]\d{2}[0-9X])(?![A-Z0-9])")


def chip_of(device_subject: str) -> str | None:
    """The chip name (``GH100``, ``GB20X``…) in an attestation certificate's subject, if it names one."""
    found = _CHIP.search(device_subject)
    return found.group(1) if found else None


def identify(device_subject: str, opaque: Mapping[str, bytes]) -> tuple[str | None, GpuModel | None]:
    """``(chip, model)`` of a verified report: its leaf certificate subject and its named opaque fields."""
    chip = chip_of(device_subject)
    project = opaque.get("project", b"").split(b"\0", 1)[0].decode("ascii", "replace")
    return chip, KNOWN_BOARDS.get((chip, project)) if chip else None


def model_bits(gpu: Claims) -> int:
    """The GpuModel bit of one GPU's claims, or :data:`GPU_MODEL_UNRECOGNISED`."""
    name = gpu.tee_attributes.get("gpu_model")
    return int(GpuModel[name]) if name in GpuModel.__members__ else GPU_MODEL_UNRECOGNISED


def certificate_gpus(claims: Claims) -> tuple[int, int]:
    """``(gpuCount, gpuModels)`` of a certificate issued on ``claims``: the number of paired GPUs and the OR of
    their model bits (both 0 for CPU-only evidence)."""
    models = 0
    for gpu in claims.gpus:
        models |= model_bits(gpu)
    return len(claims.gpus), models
