"""derot's SDK for TEE apps and relying parties.

    from derot.app import DerotClient
    client = DerotClient()                    # settings from arguments or $DEROT_*: derot.app.settings
    key = client.get_key()                    # verified against the committee's group key
    cert = client.get_certificate(key)

    from derot.app import verify_certificate  # a relying party: one call against the chain
    verify_certificate(cert.encoded, cert.signature_eip2537, rpc_url=RPC, registry=REGISTRY).ok

Also: :class:`AsyncDerotClient` (asyncio), :func:`tdx_measurement` / :func:`snp_measurement` (the digest
an app owner allows), and the building blocks :class:`App`, :class:`TrustAnchor`,
:class:`RootOfTrustClient`. Names are imported on first use, so ``import derot.app`` stays light and
never loads node server code.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DerotClient": "derot.app.api",
    "AsyncDerotClient": "derot.app.api",
    "verify_certificate": "derot.app.relying",
    "CertificateCheck": "derot.app.relying",
    "tdx_measurement": "derot.app.measure",
    "snp_measurement": "derot.app.measure",
    "measurement_digest": "derot.attest.claims",
    "Settings": "derot.app.settings",
    "SettingsError": "derot.app.settings",
    "App": "derot.app.sdk",
    "AppError": "derot.app.sdk",
    "TrustAnchor": "derot.app.sdk",
    "DerivedKey": "derot.app.sdk",
    "IssuedCertificate": "derot.app.sdk",
    "RootOfTrustClient": "derot.app.client",
    "RequestFailed": "derot.app.client",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'derot.app' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
