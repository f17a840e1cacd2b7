"""An epoch's key material as one node holds it, and its stored form.

:class:`EpochKeys` is what the node serves with: its index, its two secret shares, the group keys and
every member's public share keys. It is built from a :class:`~derot.crypto.dkg.DkgResult` when a DKG or
reshare finishes, stored (public part in clear, shares sealed), and reloaded after a restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from derot.crypto.bls import G2, scalar_from_bytes, scalar_to_bytes
from derot.crypto.dkg import DkgResult, KeyShares, PublicKeys


@dataclass(frozen=True)
class EpochPublic:
    """The public keys of an epoch: what anyone may know."""

    epoch: int
    threshold: int
    sig: PublicKeys
    kd: PublicKeys


@dataclass(frozen=True, repr=False)
class EpochKeys:
    """Invariant: ``sig.share_keys[index] == shares.sig·G2`` and likewise for ``kd`` (checked on load)."""

    epoch: int
    threshold: int
    index: int
    members: Mapping[int, bytes]  # index -> Ed25519 identity key
    sig: PublicKeys
    kd: PublicKeys
    shares: KeyShares
    transcript_hash: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", MappingProxyType(dict(self.members)))

    @classmethod
    def from_result(cls, result: DkgResult) -> EpochKeys:
        if result.shares is None or result.index is None:
            raise ValueError("this node holds no shares in the new epoch")
        return cls(
            epoch=result.epoch,
            threshold=result.threshold,
            index=result.index,
            members={m.index: m.signing_key for m in result.committee.members},
            sig=result.sig,
            kd=result.kd,
            shares=result.shares,
            transcript_hash=result.transcript_hash,
        )

    # storage ------------------------------------------------------------------------------------
    def public_record(self) -> dict:
        return {
            "epoch": self.epoch,
            "threshold": self.threshold,
            "index": self.index,
            "members": {str(i): k.hex() for i, k in self.members.items()},
            "sig": _keys_record(self.sig),
            "kd": _keys_record(self.kd),
            "transcript_hash": self.transcript_hash.hex(),
        }

    def secret_record(self) -> bytes:
        return scalar_to_bytes(self.shares.sig) + scalar_to_bytes(self.shares.kd)

    @classmethod
    def load(cls, public: dict, secret: bytes) -> EpochKeys:
        shares = KeyShares(scalar_from_bytes(secret[:32]), scalar_from_bytes(secret[32:64]))
        keys = cls(
            epoch=int(public["epoch"]),
            threshold=int(public["threshold"]),
            index=int(public["index"]),
            members={int(i): bytes.fromhex(k) for i, k in public["members"].items()},
            sig=_keys_from(public["sig"]),
            kd=_keys_from(public["kd"]),
            shares=shares,
            transcript_hash=bytes.fromhex(public["transcript_hash"]),
        )
        g = G2.generator()
        if keys.sig.share_keys[keys.index] != g * shares.sig or keys.kd.share_keys[keys.index] != g * shares.kd:
            raise ValueError(f"stored shares of epoch {keys.epoch} do not match their public share keys")
        return keys

    @staticmethod
    def load_public(public: dict) -> EpochPublic:
        """Only the public part of a stored epoch (also available once its shares are erased)."""
        return EpochPublic(int(public["epoch"]), int(public["threshold"]), _keys_from(public["sig"]),
                           _keys_from(public["kd"]))

    def __repr__(self) -> str:
        return f"EpochKeys(epoch={self.epoch}, index={self.index}, t={self.threshold}, n={len(self.members)})"


def _keys_record(keys: PublicKeys) -> dict:
    return {
        "group_key": keys.group_key.to_bytes().hex(),
        "share_keys": {str(i): k.to_bytes().hex() for i, k in keys.share_keys.items()},
    }


def _keys_from(record: dict) -> PublicKeys:
    return PublicKeys(
        G2.from_bytes(bytes.fromhex(record["group_key"])),
        {int(i): G2.from_bytes(bytes.fromhex(k)) for i, k in record["share_keys"].items()},
    )
