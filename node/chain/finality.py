"""Finality before anything irreversible: may this node erase its key shares for epochs before E?

:class:`EraseGuard.may_erase` answers with an :class:`EraseVerdict`. It allows erasure only when all hold:

1. a finalized block F exists: the chain's ``finalized`` tag (:attr:`FinalityMode.TAG`), or
   ``head − depth`` on chains without finality such as anvil (:attr:`FinalityMode.DEPTH`);
2. at F (every read pinned to F's hash), epoch E is ACTIVE or RETIRED and was activated at or before F;
3. the node's own result for E (transcript hash and both group keys) equals the activated one; a node
   with no result for E may erase only if it is not a member of E (it was left out, not left behind);
4. the activation is proven by its ``EpochActivated`` log: F's ancestor block ``activatedBlock`` has a
   header that hashes correctly, whose logs bloom holds the registry and the event, and whose logs
   carry E's activation with the same transcript hash;
5. at F, at least :func:`erase_quorum` (``t + f``) members reported exactly the activated result. Only
   members that hold a share report (``derot.service.orchestrator``), so up to f byzantine reporters
   still leave t honest holders of E's shares once the older ones are gone; activation itself needs
   only t reports, since serving is reversible and erasure is not.

Anything else (an RPC error, disagreeing endpoints, a view the node cannot reproduce) refuses, and the
caller asks again later. Every read goes through the chain client the guard is given; give it a k-of-m
:class:`~derot.chain.quorum.QuorumProvider` so one lying endpoint cannot forge F or the epoch.
"""

from __future__ import annotations

import enum
import logging
import threading
from dataclasses import dataclass
from typing import Protocol

from eth_utils import keccak

from derot.chain.headers import Header, HeaderInvalid, bloom_may_contain, verified_header
from derot.chain.registry import ChainReadError, Registry
from derot.chain.types import EpochPhase, EpochRecord
from derot.crypto.bls import G2

log = logging.getLogger("derot.chain.finality")

EPOCH_ACTIVATED = keccak(text="EpochActivated(uint64,address,bytes32)")


def erase_quorum(threshold: int, members: int) -> int:
    """Agreeing reports needed before older shares may go: ``t + f`` with ``f = (n − 1) // 3`` byzantine
    members tolerated, at most ``n``. Waiting longer only delays forward secrecy; erasing early can lose the key."""
    return min(members, threshold + (members - 1) // 3)


def report_hash(epoch: EpochRecord) -> bytes:
    """The registry's hash of a report of ``epoch``'s activated result (``DerotRegistry.reportEpoch``)."""
    return keccak(epoch.group_key_sig.to_eip2537() + epoch.group_key_kd.to_eip2537() + epoch.transcript_hash)


class FinalityMode(enum.Enum):
    TAG = "tag"  # the chain's `finalized` block tag (Ethereum PoS and most L2s)
    DEPTH = "depth"  # head − depth blocks (chains without finality, e.g. anvil)


@dataclass(frozen=True)
class FinalityRule:
    mode: FinalityMode = FinalityMode.TAG
    depth: int = 64

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError("finality depth must be at least 1")


@dataclass(frozen=True)
class OwnResult:
    """What this node itself computed for an epoch."""

    transcript_hash: bytes
    group_key_sig: G2
    group_key_kd: G2


@dataclass(frozen=True)
class EraseVerdict:
    allowed: bool
    reason: str  # "final" when allowed; else a stable code: not_final, no_finality, transcript_mismatch, ...
    detail: str
    finalized_block: int | None = None


class EraseGuard:
    """Answers "may I erase shares older than epoch E?" for one operator (see the module docstring)."""

    def __init__(self, registry: Registry, rule: FinalityRule, operator: str, *, deploy_block: int = 0) -> None:
        self.registry = registry
        self.w3 = registry.w3
        self.rule = rule
        self.operator = operator
        self.deploy_block = deploy_block  # the registry has no state before it: nothing there can be final

    def finalized(self) -> Header | None:
        """The finalized block's verified header, or None if the chain has none yet."""
        if self.rule.mode is FinalityMode.TAG:
            block = self.w3.provider.make_request("eth_getBlockByNumber", ["finalized", False])
        else:
            number = self.w3.eth.block_number - self.rule.depth
            if number < 0:
                return None
            block = self.w3.provider.make_request("eth_getBlockByNumber", [hex(number), False])
        result = block.get("result") if isinstance(block, dict) else None
        return None if result is None else verified_header(result)

    def may_erase(self, epoch_id: int, own: OwnResult | None) -> EraseVerdict:
        try:
            return self._decide(epoch_id, own)
        except (ChainReadError, HeaderInvalid) as exc:
            return EraseVerdict(False, exc.reason, f"{type(exc).__name__}: {exc}")
        except (OSError, ValueError) as exc:  # transport failures and malformed answers
            return EraseVerdict(False, "chain_unavailable", f"{type(exc).__name__}: {exc}")

    def _decide(self, epoch_id: int, own: OwnResult | None) -> EraseVerdict:
        final = self.finalized()
        if final is None:
            return EraseVerdict(False, "no_finality", f"no {self.rule.mode.value} finalized block yet")
        if final.number < self.deploy_block:  # a young chain: reading the registry there would only fail
            return EraseVerdict(False, "not_final", f"finalized block {final.number} predates the registry "
                                f"(deployed in block {self.deploy_block})", final.number)
        at = final.hash
        epoch = self.registry.epoch(epoch_id, at)
        if epoch.phase not in (EpochPhase.ACTIVE, EpochPhase.RETIRED) or not 0 < epoch.activated_block <= final.number:
            return EraseVerdict(False, "not_final", f"epoch {epoch_id} is {epoch.phase.name} at finalized block "
                                f"{final.number}", final.number)
        if own is not None:
            if (own.transcript_hash, own.group_key_sig, own.group_key_kd) != (epoch.transcript_hash, epoch.group_key_sig, epoch.group_key_kd):
                return EraseVerdict(False, "transcript_mismatch", f"epoch {epoch_id} activated a transcript or "
                                    "keys this node did not compute", final.number)
        elif epoch.index_of(self.operator):
            return EraseVerdict(False, "no_own_transcript", f"this node is a member of epoch {epoch_id} but "
                                "holds no result for it", final.number)
        proof = self._activation_proven(epoch_id, epoch.activated_block, epoch.transcript_hash)
        if proof is not None:
            return EraseVerdict(False, "activation_unproven", proof, final.number)
        needed = erase_quorum(epoch.threshold, len(epoch.members))
        agreeing = self.registry.report_count(epoch_id, report_hash(epoch), at)
        if agreeing < needed:
            return EraseVerdict(False, "too_few_holders", f"{agreeing} members of epoch {epoch_id} reported its "
                                f"result, erasure needs {needed} (t + f)", final.number)
        return EraseVerdict(True, "final", f"epoch {epoch_id} final at block {final.number}", final.number)

    def _activation_proven(self, epoch_id: int, number: int, transcript: bytes) -> str | None:
        """None if block ``number`` carries E's EpochActivated log with ``transcript``; else why not."""
        reply = self.w3.provider.make_request("eth_getBlockByNumber", [hex(number), False])
        if not isinstance(reply, dict) or not isinstance(reply.get("result"), dict):
            return f"activation block {number} is unavailable"
        header = verified_header(reply["result"])
        address = bytes.fromhex(self.registry.address[2:])
        if not (bloom_may_contain(header.logs_bloom, address) and bloom_may_contain(header.logs_bloom, EPOCH_ACTIVATED)):
            return f"block {number}'s logs bloom holds no EpochActivated of the registry"
        topic = "0x" + epoch_id.to_bytes(32, "big").hex()
        logs = self.w3.eth.get_logs({"blockHash": "0x" + header.hash.hex(), "address": self.registry.address,
                                     "topics": ["0x" + EPOCH_ACTIVATED.hex(), topic]})
        for entry in logs:
            data = bytes(entry["data"])
            if bytes(entry["blockHash"]) == header.hash and len(data) == 64 and data[32:] == transcript:
                return None
        return f"block {number} has no EpochActivated({epoch_id}) log with the activated transcript"


class ShareStore(Protocol):
    """The two one-way operations of a node's key store (``derot.service.storage.NodeStore``)."""

    def activate_epoch(self, epoch: int) -> None: ...

    def erase_shares_before(self, epoch: int) -> None: ...


class ShareRetirement:
    """The one place a node erases key shares, and only after :class:`EraseGuard` allows it.

    The node calls :meth:`want` when its confirmed view shows epoch E active (the newest call wins) and
    :meth:`attempt` (blocking: run it in a worker thread) on every update until it returns an allowed
    verdict. With its own result for E it then makes E the stored active epoch (``activate_epoch``, which
    erases older shares); without one it erases the shares of every epoch before E.
    """

    def __init__(self, guard: EraseGuard, store: ShareStore) -> None:
        self.guard = guard
        self.store = store
        self._lock = threading.Lock()
        self._wanted: tuple[int, OwnResult | None] | None = None
        self._done: tuple[int, OwnResult | None] | None = None
        self.last_verdict: EraseVerdict | None = None

    @property
    def pending(self) -> int | None:
        """The epoch whose older shares wait for finality, if any."""
        wanted = self._wanted
        return None if wanted is None else wanted[0]

    def want(self, epoch_id: int, own: OwnResult | None) -> None:
        with self._lock:
            if self._done != (epoch_id, own):
                self._wanted = (epoch_id, own)

    def attempt(self) -> EraseVerdict | None:
        """Ask the guard about the wanted epoch; erase if allowed. None when nothing is wanted."""
        wanted = self._wanted
        if wanted is None:
            return None
        epoch_id, own = wanted
        verdict = self.guard.may_erase(epoch_id, own)
        self.last_verdict = verdict
        if not verdict.allowed:
            log.info("share erasure deferred", extra={"epoch": epoch_id, "reason": verdict.reason,
                                                      "detail": verdict.detail})
            return verdict
        with self._lock:
            if own is not None:
                self.store.activate_epoch(epoch_id)
            else:
                self.store.erase_shares_before(epoch_id)
            if self._wanted == wanted:
                self._wanted = None
            self._done = wanted
        log.info("older key shares erased", extra={"epoch": epoch_id, "finalized_block": verdict.finalized_block})
        return verdict
