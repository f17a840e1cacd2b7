"""App owners' on-chain actions: register an app, allow its measurements, rotate its key version.

Registration is permissionless: ``appId = keccak256(owner, salt)``. Only the owner may change the app.
"""

from __future__ import annotations

from dataclasses import dataclass

from derot.constants import Platform


@dataclass(frozen=True)
class AppOwner:
    """``account`` is an eth_account LocalAccount holding gas; ``registry`` a ``derot.chain.registry.Registry``."""

    registry: object
    account: object

    @classmethod
    def connect(cls, rpc_url: str, registry: str, account) -> AppOwner:
        """An owner acting through ``rpc_url`` on the registry at ``registry``."""
        from web3 import Web3

        from derot.chain.registry import Registry

        return cls(Registry(Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 15})), registry), account)

    def register(self, salt: bytes) -> bytes:
        """Register a new app; returns its appId."""
        if len(salt) != 32:
            raise ValueError("salt must be 32 bytes")
        return self.registry.register_app(self.account, salt)

    def allow(self, app_id: bytes, platform: Platform, measurement: bytes, allowed: bool = True) -> None:
        """Allow (or stop allowing) a measurement digest on a platform."""
        self.registry.set_app_measurement(self.account, app_id, int(platform), measurement, allowed)

    def rotate(self, app_id: bytes, key_version: int) -> None:
        """Raise the app's keyVersion: keys of older versions are no longer derived."""
        self.registry.raise_key_version(self.account, app_id, key_version)

    def key_version(self, app_id: bytes) -> int:
        """The app's current keyVersion on-chain; :class:`LookupError` if it is not registered."""
        record = self.registry.app(app_id)
        if record is None:
            raise LookupError(f"app {app_id.hex()} is not registered")
        return record.key_version
