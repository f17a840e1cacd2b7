"""The one-call SDK: ``DerotClient().get_key()`` in a TEE app, modeled on dstack's ``DstackClient``.

    from derot.app import DerotClient
    client = DerotClient()                  # settings from arguments or $DEROT_* (derot.app.settings)
    key = client.get_key()                  # the app's keys, verified against the group key
    cert = client.get_certificate(key)      # a certificate for key's secp256k1 public key

On the first call the client detects the TEE (or builds the devnet one the settings name), reads the
group keys from the registry, and finds the committee's endpoints there (their TLS keys pinned), unless
endpoints are given. Keys and certificates use the app's current keyVersion unless one is given.
:class:`AsyncDerotClient` offers the same calls as coroutines.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections.abc import Mapping, Sequence

from derot.app.client import RootOfTrustClient
from derot.app.sdk import App, DerivedKey, IssuedCertificate, TrustAnchor, parse_app_id
from derot.app.settings import Settings, SettingsError
from derot.constants import KeyType

KEY_TYPES = {"secp256k1": KeyType.SECP256K1, "ed25519": KeyType.ED25519, "x25519": KeyType.X25519,
             "p256": KeyType.P256}


class DerotClient:
    """A TEE app's client of the derot committee (blocking; thread-safe).

    Every argument is optional; see :mod:`derot.app.settings` for the environment variables that
    supply what is not given. ``device`` overrides TEE detection with any :class:`derot.app.tee.TeeDevice`.
    ``timeout`` bounds one attempt on one gateway; ``hedge_after`` is how long a gateway may stay silent
    before another is tried beside it. Nothing touches the network or the TEE until the first call."""

    def __init__(self, app_id: bytes | str | None = None, *, rpc_url: str | None = None,
                 registry: str | None = None, endpoints: Sequence[str] | None = None, device=None,
                 tee: str | None = None, devnet: str | os.PathLike | None = None,
                 devnet_roots: str | os.PathLike | None = None, devnet_platform: str | None = None,
                 devnet_image: str | None = None, vek_path: str | os.PathLike | None = None,
                 collateral_path: str | os.PathLike | None = None, privlevel: int | None = None, timeout: float = 15.0, hedge_after: float = 2.0,
                 environ: Mapping[str, str] = os.environ):
        self.settings = Settings.resolve(
            environ, app_id=app_id.hex() if isinstance(app_id, (bytes, bytearray)) else app_id, rpc_url=rpc_url,
            registry=registry, endpoints=list(endpoints) if endpoints is not None else None, tee=tee,
            devnet=os.fspath(devnet) if devnet is not None else None,
            devnet_roots=os.fspath(devnet_roots) if devnet_roots is not None else None,
            devnet_platform=devnet_platform, devnet_image=devnet_image,
            vek_path=os.fspath(vek_path) if vek_path is not None else None,
            collateral_path=os.fspath(collateral_path) if collateral_path is not None else None,
            privlevel=privlevel)
        if not self.settings.app_id:
            raise SettingsError("no app id: pass app_id=... or set $DEROT_APP_ID (the hex `derot app register` prints)")
        try:
            self.app_id = parse_app_id(self.settings.app_id)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        self.settings.require_chain()
        self._device = device
        self._timeout = timeout
        self._hedge_after = hedge_after
        self._app: App | None = None
        self._lock = threading.Lock()

    def _session(self) -> App:
        with self._lock:
            if self._app is None:
                from derot.app.discovery import discover

                device = self._device if self._device is not None else self.settings.device()
                anchor = TrustAnchor.from_chain(self.settings.rpc_url, self.settings.registry)
                committee = discover(self.settings.rpc_url, self.settings.registry)
                # a given list is an order of preference; discovered gateways are shuffled, so that apps
                # spread over the committee (a client stays on the gateway that answers: derot.app.client)
                endpoints = list(self.settings.endpoints) or random.sample(committee.endpoints,
                                                                           len(committee.endpoints))
                if not endpoints:
                    raise SettingsError("no node endpoints: the registry has no active committee; "
                                        "pass endpoints=... or set $DEROT_NODES")
                pins = {e: committee.tls_key_hashes[e] for e in endpoints if e in committee.tls_key_hashes}
                client = RootOfTrustClient(endpoints, tls_key_hashes=pins, timeout=self._timeout,
                                           hedge_after=self._hedge_after)
                self._app = App(client, device, anchor, self.app_id)
            return self._app

    @property
    def device(self):
        """The TEE device in use (detected on first use)."""
        return self._session().device

    @property
    def anchor(self) -> TrustAnchor:
        """The registry and group keys answers are verified against."""
        return self._session().anchor

    def get_key(self, path: str | bytes = "", *, key_version: int | None = None) -> DerivedKey:
        """The app's keys for derivation context ``path`` (default empty), under ``key_version``
        (default: the app's current one). Same app, same path, same version: the same keys on any
        TEE the app is allowed on."""
        context = path.encode() if isinstance(path, str) else bytes(path)
        return self._session().get_key(key_version=key_version, context=context)

    def get_certificate(self, key: DerivedKey | None = None, *, key_type: str = "secp256k1",
                        subject_key: bytes | None = None, key_version: int | None = None,
                        lifetime: int = 0) -> IssuedCertificate:
        """A certificate for the public key of type ``key_type`` of ``key`` (default: derived now with the
        empty path), or for ``subject_key`` when given. ``lifetime`` 0 is the nodes' default (24 h)."""
        if key_type not in KEY_TYPES:
            raise SettingsError(f"key_type must be one of {', '.join(KEY_TYPES)}, got {key_type!r}")
        kind = KEY_TYPES[key_type]
        if subject_key is None:
            if key is None:
                key = self.get_key(key_version=key_version)
            subject_key, key_version = key.keys.public_key(kind), key.key_version
        return self._session().get_certificate(subject_key, kind, key_version=key_version, lifetime=lifetime)

    def close(self) -> None:
        """Close the gateways' channels (a later call reconnects)."""
        with self._lock:
            if self._app is not None:
                self._app.client.close()

    def __enter__(self) -> DerotClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncDerotClient:
    """:class:`DerotClient` for asyncio: the same arguments and calls, as coroutines.

    Each call runs the blocking client in a worker thread (``asyncio.to_thread``), so the event loop is
    never blocked by TEE quoting, the chain reads or the gateways; calls may run concurrently."""

    def __init__(self, app_id: bytes | str | None = None, **settings):
        self._client = DerotClient(app_id, **settings)

    @property
    def app_id(self) -> bytes:
        """The app's 32-byte id."""
        return self._client.app_id

    async def get_key(self, path: str | bytes = "", *, key_version: int | None = None) -> DerivedKey:
        """See :meth:`DerotClient.get_key`."""
        return await asyncio.to_thread(self._client.get_key, path, key_version=key_version)

    async def get_certificate(self, key: DerivedKey | None = None, **options) -> IssuedCertificate:
        """See :meth:`DerotClient.get_certificate`."""
        return await asyncio.to_thread(self._client.get_certificate, key, **options)

    async def close(self) -> None:
        """Close the gateways' channels."""
        await asyncio.to_thread(self._client.close)

    async def __aenter__(self) -> AsyncDerotClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


__all__ = ["DerotClient", "AsyncDerotClient", "KEY_TYPES"]
