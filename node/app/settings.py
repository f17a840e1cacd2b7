"""Where the one-call SDK finds its network and its TEE: arguments first, then the environment.

| setting | argument | environment |
|---|---|---|
| Ethereum RPC the app trusts | ``rpc_url`` | ``DEROT_RPC`` |
| DerotRegistry address | ``registry`` | ``DEROT_REGISTRY`` |
| the app's id (hex as the CLI prints it) | ``app_id`` | ``DEROT_APP_ID`` |
| gateways (default: the committee registered on-chain) | ``endpoints`` | ``DEROT_NODES`` (comma-separated) |
| a local devnet's directory (its chain, registry, nodes, roots) | ``devnet`` | ``DEROT_DEVNET`` |
| TEE: ``auto`` (this machine's TDX / SEV-SNP) or ``devnet`` | ``tee`` | ``DEROT_TEE`` |
| devnet TEE roots (default: DEVNET/roots) | ``devnet_roots`` | ``DEROT_DEVNET_ROOTS`` |
| devnet TEE platform: ``tdx`` or ``sev-snp`` | ``devnet_platform`` | ``DEROT_DEVNET_PLATFORM`` |
| devnet image whose measurement the TEE reports | ``devnet_image`` | ``DEROT_DEVNET_IMAGE`` |
| SEV-SNP: a VCEK/VLEK file for hosts that supply none | ``vek_path`` | ``DEROT_TEE_VEK_PATH`` |
| TDX: an offline collateral bundle to attach | ``collateral_path`` | ``DEROT_TEE_COLLATERAL_PATH`` |
| SEV-SNP: the VMPL reports are for (default: the guest's own) | ``privlevel`` | ``DEROT_TEE_PRIVLEVEL`` |

``tee`` defaults to ``devnet`` when devnet roots are known (``devnet``/``devnet_roots``), else ``auto``:
a hardware TEE is never silently replaced by a devnet one. The last three are the hardware device
options of docs/tee-guests.md, with the same variables as ``derot app --tee auto``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from derot.errors import DerotError

PLATFORM_NAMES = {"tdx": "TDX", "sev-snp": "SEV_SNP", "snp": "SEV_SNP"}


class SettingsError(DerotError):
    """A setting is missing or malformed; the message names it and where it can be given."""

    reason = "invalid_settings"


@dataclass(frozen=True)
class Settings:
    """Resolved SDK settings (see the module docstring)."""

    rpc_url: str
    registry: str
    app_id: str
    endpoints: tuple[str, ...]
    tee: str
    devnet_roots: Path | None
    devnet_platform: str
    devnet_image: str
    vek_path: Path | None = None
    collateral_path: Path | None = None
    privlevel: int | None = None

    @classmethod
    def resolve(cls, environ: Mapping[str, str] = os.environ, **given) -> Settings:
        """Arguments (``None`` = not given) over environment variables over a devnet directory."""
        def pick(name: str, env: str) -> str:
            value = given.get(name)
            return str(value) if value not in (None, "") else environ.get(env, "")

        devnet = pick("devnet", "DEROT_DEVNET")
        state, deployment = _devnet_files(Path(devnet)) if devnet else ({}, {})
        endpoints = given.get("endpoints")
        if endpoints is None:
            endpoints = [e.strip() for e in environ.get("DEROT_NODES", "").split(",") if e.strip()]
            if not endpoints and state:
                endpoints = [f"127.0.0.1:{n['public_port']}" for n in state.get("nodes", [])]
        roots = pick("devnet_roots", "DEROT_DEVNET_ROOTS") or (str(Path(devnet) / "roots") if devnet else "")
        tee = (pick("tee", "DEROT_TEE") or ("devnet" if roots else "auto")).lower()
        if tee not in ("auto", "devnet"):
            raise SettingsError(f"tee must be 'auto' or 'devnet', got {tee!r} (argument tee or $DEROT_TEE)")
        platform = (pick("devnet_platform", "DEROT_DEVNET_PLATFORM") or "tdx").lower()
        if platform not in PLATFORM_NAMES:
            raise SettingsError(f"devnet platform must be 'tdx' or 'sev-snp', got {platform!r}")
        privlevel = pick("privlevel", "DEROT_TEE_PRIVLEVEL").strip()
        if privlevel and privlevel not in ("0", "1", "2", "3"):
            raise SettingsError(f"privlevel must be 0..3, got {privlevel!r} "
                                "(argument privlevel or $DEROT_TEE_PRIVLEVEL)")
        vek_path = pick("vek_path", "DEROT_TEE_VEK_PATH")
        collateral_path = pick("collateral_path", "DEROT_TEE_COLLATERAL_PATH")
        return cls(
            rpc_url=pick("rpc_url", "DEROT_RPC") or state.get("rpc_url", ""),
            registry=pick("registry", "DEROT_REGISTRY") or deployment.get("registry") or state.get("registry", ""),
            app_id=pick("app_id", "DEROT_APP_ID"),
            endpoints=tuple(endpoints),
            tee=tee,
            devnet_roots=Path(roots) if roots else None,
            devnet_platform=platform,
            devnet_image=pick("devnet_image", "DEROT_DEVNET_IMAGE"),
            vek_path=Path(vek_path) if vek_path else None,
            collateral_path=Path(collateral_path) if collateral_path else None,
            privlevel=int(privlevel) if privlevel else None,
        )

    def require_chain(self) -> None:
        """Raise :class:`SettingsError` unless both the RPC and the registry are known."""
        if not self.rpc_url:
            raise SettingsError("no Ethereum RPC: pass rpc_url=... or set $DEROT_RPC (or $DEROT_DEVNET)")
        if not self.registry:
            raise SettingsError("no registry: pass registry=... or set $DEROT_REGISTRY (or $DEROT_DEVNET)")

    def device(self):
        """The TEE device these settings select (:mod:`derot.app.tee`)."""
        if self.tee == "auto":
            from derot.app.tee import detect_device

            return detect_device(vek_path=self.vek_path, collateral_path=self.collateral_path,
                                 privlevel=self.privlevel)
        if self.devnet_roots is None:
            raise SettingsError("a devnet TEE needs its roots: devnet_roots=... or $DEROT_DEVNET_ROOTS "
                                "(or devnet=DIR / $DEROT_DEVNET)")
        if not self.devnet_image:
            raise SettingsError("a devnet TEE needs the image it runs: devnet_image=... or $DEROT_DEVNET_IMAGE")
        if not (self.devnet_roots / "devnet.json").is_file():
            raise SettingsError(f"{self.devnet_roots} holds no devnet roots (devnet.json missing)")
        from derot.app.tee.devnet import DevnetDevice
        from derot.attest.devnet import image_registers
        from derot.constants import Platform

        platform = Platform[PLATFORM_NAMES[self.devnet_platform]]
        return DevnetDevice(self.devnet_roots, platform, image_registers(platform, self.devnet_image))


def _devnet_files(directory: Path) -> tuple[dict, dict]:
    out = []
    for name in ("devnet.json", "deployment.json"):
        try:
            out.append(json.loads((directory / name).read_text()))
        except FileNotFoundError:
            raise SettingsError(f"no {name} in {directory} (is the devnet up? derot devnet up)") from None
        except (OSError, ValueError) as exc:
            raise SettingsError(f"{directory / name}: {exc}") from None
    return out[0], out[1]
