"""How DerotRegistry stores the per-app TEE waivers, the per-app GPU policy and governance's SEV-SNP policy.

The bit assignments below are part of the registry's ABI (``setAppTeeExceptions``, ``setSnpPolicy``,
``setSnpMinTcb``); never renumber. The registry refuses (``BadPolicy``) any bit not listed here, so a
reserved TD attribute check, say, can never be waived.

- ``teeExceptions`` (uint32): bit → waiver name of :mod:`derot.attest.policy_tee`;
- ``gpuModels`` (uint8): :class:`derot.constants.GpuModel` bits, 0 = any model;
- ``snpGuestPolicyMask/Value`` (uint64): raw SEV-SNP GUEST_POLICY bit positions (``sev_snp.POLICY_BITS``);
  the policy requires ``policy & mask == value``;
- ``snpMinTcb[product]`` (uint64): a TCB_VERSION in the product's own layout, 0 = no minimum.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from derot.attest.sev_snp import POLICY_BITS, PRODUCTS, TcbVersion
from derot.constants import GpuModel
from derot.errors import DerotError

#: waiver name → bit of ``teeExceptions``
TEE_EXCEPTION_BITS: Mapping[str, int] = {
    "sept_ve": 0, "td_migratable": 1, "td_profiling": 2, "service_td": 3, "seam_attributes": 4, "vmpl": 5,
    "gpu_rim": 6,
    **{f"snp_policy:{name}": 8 + i for i, name in enumerate(
        ("smt", "migrate_ma", "debug", "single_socket", "cxl_allow", "mem_aes_256_xts", "rapl_dis",
         "ciphertext_hiding", "page_swap_disable"))},
}
TEE_EXCEPTIONS_MASK = sum(1 << b for b in TEE_EXCEPTION_BITS.values())  # == the registry's TEE_EXCEPTIONS
#: guest policy bits governance may require (== the registry's SNP_POLICY_BITS)
SNP_POLICY_MASK = sum(1 << b for b in POLICY_BITS.values())
GPU_MODELS_MASK = sum(int(m) for m in GpuModel)
#: product → index of ``snpMinTcb``
SNP_PRODUCT_INDEX: Mapping[str, int] = {name: i for i, name in enumerate(PRODUCTS)}
SNP_DEFAULT_GUEST_POLICY = {"migrate_ma": False}


class PolicyEncodingError(DerotError, ValueError):
    """A name or value the registry cannot store (it would revert ``BadPolicy``)."""

    reason = "bad_policy"


def encode_exceptions(names: Iterable[str]) -> int:
    mask = 0
    for name in names:
        if name not in TEE_EXCEPTION_BITS:
            raise PolicyEncodingError(f"unknown TEE waiver {name!r}; known: {', '.join(TEE_EXCEPTION_BITS)}")
        mask |= 1 << TEE_EXCEPTION_BITS[name]
    return mask


def decode_exceptions(mask: int) -> frozenset[str]:
    """The waiver names of ``mask`` (bits the registry would never store are ignored)."""
    return frozenset(name for name, bit in TEE_EXCEPTION_BITS.items() if mask >> bit & 1)


def encode_gpu_models(names: Iterable[str]) -> int:
    mask = 0
    for name in names:
        try:
            mask |= GpuModel[name.upper()]
        except KeyError:
            raise PolicyEncodingError(f"unknown GPU model {name!r}; known: {', '.join(m.name for m in GpuModel)}") from None
    return int(mask)


def encode_guest_policy(required: Mapping[str, bool]) -> tuple[int, int]:
    """(mask, value) for ``setSnpPolicy`` from {bit name: required value}."""
    mask = value = 0
    for name, want in required.items():
        if name not in POLICY_BITS:
            raise PolicyEncodingError(f"unknown SEV-SNP guest policy bit {name!r}; known: {', '.join(POLICY_BITS)}")
        mask |= 1 << POLICY_BITS[name]
        value |= int(bool(want)) << POLICY_BITS[name]
    return mask, value


def decode_guest_policy(mask: int, value: int) -> dict[str, bool]:
    return {name: bool(value >> bit & 1) for name, bit in POLICY_BITS.items() if mask >> bit & 1}


def encode_min_tcb(product: str, components: Mapping[str, int]) -> tuple[int, int]:
    """(product index, TCB_VERSION u64) for ``setSnpMinTcb``. Turin needs ``fmc``; the others must not have it.
    A missing component counts as 0 (no minimum for it)."""
    if product not in SNP_PRODUCT_INDEX:
        raise PolicyEncodingError(f"unknown SEV-SNP product {product!r}; known: {', '.join(PRODUCTS)}")
    turin = product == "Turin"
    known = {"bootloader", "tee", "snp", "microcode"} | ({"fmc"} if turin else set())
    unknown = set(components) - known
    if unknown:
        raise PolicyEncodingError(f"unknown TCB components for {product}: {sorted(unknown)}")
    for name, svn in components.items():
        if not 0 <= svn <= 255:
            raise PolicyEncodingError(f"TCB component {name} must be 0..255, got {svn}")
    tcb = TcbVersion(**{n: components.get(n, 0) for n in ("bootloader", "tee", "snp", "microcode")},
                     fmc=components.get("fmc", 0) if turin else None)
    return SNP_PRODUCT_INDEX[product], tcb.to_u64()


def decode_min_tcb(values: Iterable[int]) -> dict[str, dict[str, int]]:
    """``snpMinTcb()`` → {product: {component: minimum}} for the products that have one."""
    out: dict[str, dict[str, int]] = {}
    for product, raw in zip(PRODUCTS, values):
        if raw:
            tcb = TcbVersion.from_u64(int(raw), turin=product == "Turin")
            out[product] = {n: v for n, v in vars(tcb).items() if v is not None}
    return out
