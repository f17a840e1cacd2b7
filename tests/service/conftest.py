"""Service test fixtures. An in-process committee: a real registry state with ``n`` members, their real epoch
keys (a random degree ``t-1`` sharing per secret), and a peer network that routes a gateway's Peer calls to
per-member answer functions in this process (so gateway code runs unchanged, without sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from derot.attest.snapshot import GovernanceSnapshot
from derot.chain.state import RegistryState
from derot.chain.types import EpochPhase, EpochRecord, NodeRecord, NodeStatus
from derot.crypto.bls import G2
from derot.crypto.dkg import KeyShares, PublicKeys
from derot.crypto.hazmat.poly import Polynomial
from derot.net import status
from derot.net.status import Refusal
from derot.service.epoch import EpochKeys

CHAIN_ID = 31337
REGISTRY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
EPOCH = 1


def operator(index: int) -> str:
    return "0x" + f"{0xA0 + index:040x}"


@dataclass
class Committee:
    n: int
    threshold: int
    sig: Polynomial
    kd: Polynomial

    @classmethod
    def random(cls, n: int = 5, threshold: int = 3) -> Committee:
        return cls(n, threshold, Polynomial.random(threshold - 1), Polynomial.random(threshold - 1))

    def public(self, poly: Polynomial) -> PublicKeys:
        g = G2.generator()
        return PublicKeys(g * poly(0), {i: g * poly(i) for i in range(1, self.n + 1)})

    def keys(self, index: int) -> EpochKeys:
        return EpochKeys(
            epoch=EPOCH, threshold=self.threshold, index=index,
            members={i: bytes([i]) * 32 for i in range(1, self.n + 1)},
            sig=self.public(self.sig), kd=self.public(self.kd),
            shares=KeyShares(self.sig(index), self.kd(index)), transcript_hash=b"\x07" * 32,
        )

    def state(self, block: int = 100, **snapshot) -> RegistryState:
        nodes = {
            operator(i): NodeRecord(operator(i), NodeStatus.APPROVED, bytes([i]) * 32, bytes([i + 100]) * 32,
                                    f"public=127.0.0.1:{7000 + i};peer=127.0.0.1:{8000 + i}", bytes([i]) * 32,
                                    bytes([i + 50]) * 32)
            for i in range(1, self.n + 1)
        }
        epoch = EpochRecord(EPOCH, EpochPhase.ACTIVE, self.threshold, 0, block - 10, block - 5, None, b"\x07" * 32,
                            tuple(nodes), self.public(self.sig).group_key, self.public(self.kd).group_key)
        snap = GovernanceSnapshot(CHAIN_ID, REGISTRY, block, block.to_bytes(32, "big"), 1_790_000_000 + 12 * block,
                                  **snapshot)
        return RegistryState(snap, nodes, {EPOCH: epoch}, current_epoch=EPOCH)


Answer = Callable[[str, object], Awaitable[object]]


class LocalPeering:
    """Stands in for :class:`derot.service.peering.Peering` on the gateway's side: ``call`` runs the member's
    answer function (``answers[index](method, message)``) in this loop; a member without one is unreachable."""

    def __init__(self, answers: dict[int, Answer]):
        self.answers = answers
        self.calls: list[tuple[int, str]] = []

    async def call(self, info, method: str, message):
        self.calls.append((info.index, method))
        answer = self.answers.get(info.index)
        if answer is None:
            raise Refusal(status.UNAVAILABLE, f"peer {info.index}: connection refused")
        await asyncio.sleep(0)
        return await answer(method, message)


@pytest.fixture
def committee() -> Committee:
    """A fresh random 3-of-5 committee."""
    return Committee.random(5, 3)


@pytest.fixture
def local_peering():
    """The :class:`LocalPeering` class (build one per gateway under test)."""
    return LocalPeering
