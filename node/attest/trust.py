"""Which roots a verifier trusts, and where Intel collateral comes from: :class:`TrustConfig`.

- ``TrustConfig.production(...)`` pins the vendor roots shipped in ``node/attest/roots`` (the Intel SGX
  Root CA is also pinned by its SHA-256 below) and fetches Intel collateral from a configurable
  PCCS/PCS URL through an on-disk cache. It can never contain a devnet root: construction refuses any
  root whose subject carries the devnet marker.
- ``TrustConfig.devnet(roots)`` trusts a devnet's own roots (label ``"devnet"``), optionally alongside
  the production ones (``include_production=True``: real TEEs joining a devnet). Claims say which
  root verified them (``Claims.root``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType

from cryptography import x509

from derot.attest.collateral import CollateralStore
from derot.attest.intel import DEVNET_MARKER, IntelVerifier
from derot.attest.nvidia_gpu import NvidiaRoots
from derot.attest.nvidia_rim import RimVerifier
from derot.attest.sev_snp import AmdRoots

INTEL_ROOT_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
DEFAULT_PCCS_URL = "https://api.trustedservices.intel.com"


def _root_file(name: str) -> bytes:
    return resources.files("derot.attest").joinpath("roots", name).read_bytes()


def production_intel_root() -> bytes:
    der = _root_file("intel_sgx_root_ca.der")
    if hashlib.sha256(der).hexdigest() != INTEL_ROOT_SHA256:
        raise RuntimeError("node/attest/roots/intel_sgx_root_ca.der does not match the pinned Intel root hash")
    return der


def production_amd_roots() -> AmdRoots:
    files = {}
    for product in ("Milan", "Genoa", "Turin"):
        p = product.lower()
        files[product] = (
            _root_file(f"amd_{p}_ark.pem"), _root_file(f"amd_{p}_ask.pem"), _root_file(f"amd_{p}_asvk.pem"),
        )
    return AmdRoots.from_pem_files(files, "production")


def production_nvidia_roots() -> NvidiaRoots:
    return NvidiaRoots.from_pem(_root_file("nvidia_device_identity_ca.pem"), "production")


def production_rim_verifier(*, bundle_dir=None, service_url: str | None = None, cache_dir=None) -> RimVerifier:
    """NVIDIA's RIM root ("NVIDIA CoRIM signing Root CA") pinned, RIMs from a bundle and/or a service."""
    from derot.attest.nvidia_rim import RimStore

    roots = x509.load_pem_x509_certificates(_root_file("nvidia_rim_root.pem"))
    return RimVerifier(roots, RimStore(bundle_dir=bundle_dir, service_url=service_url, cache_dir=cache_dir))


def _is_devnet_name(name: x509.Name) -> bool:
    return DEVNET_MARKER in name.rfc4514_string().lower()


@dataclass(frozen=True)
class TrustConfig:
    """Trusted roots per vendor plus the collateral source. ``production`` forbids devnet roots."""

    production: bool
    intel_roots: Mapping[str, bytes]  # label -> root CA DER
    amd: AmdRoots | None
    nvidia: NvidiaRoots | None
    collateral: CollateralStore
    intel: IntelVerifier = field(init=False, repr=False, compare=False)
    #: NVIDIA golden measurements (driver and VBIOS RIMs); ``None``: not compared
    rims: "RimVerifier | None" = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "intel_roots", MappingProxyType(dict(self.intel_roots)))
        if self.production:
            names = [x509.load_der_x509_certificate(der).subject for der in self.intel_roots.values()]
            if self.amd is not None:
                for s in self.amd.sets:
                    names += [c.subject for c in (s.ark, s.ask, s.asvk) if c is not None]
            if self.nvidia is not None:
                names += [c.subject for c in self.nvidia.roots]
            if any(_is_devnet_name(n) for n in names) or "devnet" in self.intel_roots:
                raise ValueError("a production TrustConfig cannot trust devnet roots")
        object.__setattr__(self, "intel", IntelVerifier(self.intel_roots, self.collateral))

    @classmethod
    def production_defaults(
        cls,
        *,
        pccs_url: str | None = DEFAULT_PCCS_URL,
        cache_dir: str | os.PathLike | None = None,
        timeout: float = 10.0,
    ) -> "TrustConfig":
        """Pinned vendor roots; Intel collateral from ``pccs_url`` cached in ``cache_dir``."""
        return cls(
            production=True,
            intel_roots={"production": production_intel_root()},
            amd=production_amd_roots(),
            nvidia=production_nvidia_roots(),
            collateral=CollateralStore(pccs_url, cache_dir, timeout=timeout),
        )

    @classmethod
    def devnet(cls, roots, *, include_production: bool = False, pccs_url: str | None = None,
               cache_dir: str | os.PathLike | None = None) -> "TrustConfig":
        """Trust a :class:`derot.attest.devnet.DevnetRoots` (and, optionally, the production roots)."""
        intel = {"devnet": roots.intel_root_der}
        amd = roots.amd_roots()
        nvidia = roots.nvidia_roots()
        if include_production:
            intel["production"] = production_intel_root()
            amd = amd + production_amd_roots()
            nvidia = nvidia + production_nvidia_roots()
        return cls(production=False, intel_roots=intel, amd=amd, nvidia=nvidia,
                   collateral=CollateralStore(pccs_url, cache_dir))
