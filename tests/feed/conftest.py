"""Feed fixtures: a local t-of-n committee that threshold-signs notices, notice builders, and a real broker
(mosquitto when installed, else the embedded amqtt broker) on a free port."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass, replace

import pytest

from derot.constants import DST_CERT, Platform, TcbStatus
from derot.crypto import threshold as th
from derot.crypto.bls import G2
from derot.crypto.hazmat.poly import Polynomial
from derot.devnet.broker import BrokerProcess, find_mosquitto
from derot.certs.notices import EpochInfo, Notice, PlatformStatus, RevocationSet, SignedNotice

CHAIN_ID = 31337
REGISTRY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
FMSPC = bytes.fromhex("00906ed50000")


@dataclass
class Committee:
    """A 2-of-3 sharing of a signing secret, like an epoch's ``sig`` key."""

    threshold: int
    polynomial: Polynomial

    @property
    def group_key_sig(self) -> G2:
        return G2.generator() * self.polynomial(0)

    def share_keys(self) -> dict[int, G2]:
        return {i: G2.generator() * self.polynomial(i) for i in (1, 2, 3)}

    def sign(self, notice: Notice, signers=(1, 3)) -> SignedNotice:
        """Partials from ``signers`` combined the way a publishing node does it."""
        partials = {i: notice.sign(self.polynomial(i)) for i in signers}
        combined = th.combine_verified(partials, self.threshold, self.group_key_sig, self.share_keys(), notice.digest,
                                       DST_CERT)
        return SignedNotice(notice, combined.signature)


@pytest.fixture(scope="session")
def committee() -> Committee:
    return Committee(2, Polynomial.random(1))


def revocations(block: int = 100, *, fmspcs=(), epoch: int = 1, **overrides) -> Notice:
    content = RevocationSet(
        fmspcs=tuple(sorted(fmspcs)),
        platforms=(PlatformStatus(int(Platform.TDX), True, int(TcbStatus.UP_TO_DATE)),
                   PlatformStatus(int(Platform.SEV_SNP), True, int(TcbStatus.UP_TO_DATE))),
    )
    fields = dict(chain_id=CHAIN_ID, registry=REGISTRY, block_number=block, block_hash=block.to_bytes(32, "big"),
                  block_timestamp=1_790_000_000 + 12 * block, epoch=epoch, content=content)
    fields.update(overrides)
    return Notice(**fields)


def epochs(block: int = 100, *, epoch: int = 1, group_key_sig: G2 | None = None, **overrides) -> Notice:
    key = group_key_sig or G2.generator() * 7
    members = tuple("0x" + f"{i:040x}" for i in (0xA1, 0xB2, 0xC3))
    content = EpochInfo(2, members, key, key * 5, bytes(range(32)), block - 3)
    notice = revocations(block, epoch=epoch)
    return replace(notice, content=content, **overrides)


@pytest.fixture
def broker(tmp_path):
    """A real MQTT broker for one test: mosquitto if installed (CI installs it), else the embedded one."""
    if find_mosquitto() and not os.environ.get("DEROT_TEST_EMBEDDED_BROKER"):
        process = BrokerProcess.mosquitto(tmp_path / "mosquitto")
    else:
        process = BrokerProcess.embedded(tmp_path / "broker.log")
    with process.start():
        yield process


def run_watch_process(args: list[str]) -> tuple[subprocess.Popen, queue.Queue]:
    """``derot app watch`` as its own process; its stdout lines arrive on the returned queue."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "derot.cli.watch_cmd", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return process, lines


def wait_for_line(lines: queue.Queue, predicate, timeout: float = 15.0) -> dict:
    """The first JSON line matching ``predicate`` (earlier lines are skipped)."""
    while True:
        line = lines.get(timeout=timeout)
        assert line is not None, "the watch process ended early"
        event = json.loads(line)
        if predicate(event):
            return event
