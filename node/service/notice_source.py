"""Feed notices built from the registry: what a publisher proposes, and what a contributing member checks a
proposed notice against before it adds its partial signature.

A contributing member signs only a notice byte-identical to the one it builds itself: from its own confirmed
state when it sits at the notice's block, otherwise by reading the registry pinned to the notice's block
hash, after checking with its own RPC that the block is canonical and confirmed. It never signs a state more
than ``LIMITS.max_notice_lag`` blocks older (or ``LIMITS.max_notice_lead`` newer) than its view.
"""

from __future__ import annotations

import asyncio

from derot.certs.notices import EpochInfo, Notice, NoticeDecodeError, NoticeKind, RevocationSet
from derot.chain.follower import transient_errors
from derot.chain.registry import Registry
from derot.chain.state import RegistryState
from derot.chain.types import RevocationKind
from derot.limits import LIMITS
from derot.net import status
from derot.net.status import Refusal

#: refusal reasons of SignNotice
NOTICE_MISMATCH = status.NOTICE_MISMATCH
NOT_CONFIRMED = status.NOT_CONFIRMED


def revocations_of(state) -> RevocationSet:
    """The revocation set of a ``derot.chain.state.RegistryState``."""
    snap = state.snapshot
    return RevocationSet.of(
        fmspcs=snap.revoked_fmspcs, chip_ids=snap.revoked_chip_ids, gpu_fwids=snap.revoked_gpu_fwids,
        measurements=snap.revoked_measurements, cert_serials=state.revoked_serials,
        evidence_hashes=state.revoked_evidence_hashes, platforms=snap.platforms, ppids=snap.revoked_ppids,
        pck_certs=snap.revoked_pck_certs, gpu_devices=snap.revoked_gpu_devices,
    )


def epoch_info_of(record) -> EpochInfo:
    """The feed's view of an activated ``derot.chain.types.EpochRecord``."""
    return EpochInfo(record.threshold, record.members, record.group_key_sig, record.group_key_kd, record.transcript_hash,
                     record.activated_block)


def notice_from_state(state, kind: NoticeKind) -> Notice | None:
    """The notice of ``kind`` for a registry state; None while no epoch is active (nobody could sign)."""
    committee = state.committee
    if committee is None or committee.group_key_sig is None:
        return None
    content = revocations_of(state) if kind is NoticeKind.REVOCATIONS else epoch_info_of(committee)
    snap = state.snapshot
    return Notice(snap.chain_id, snap.registry, snap.block_number, snap.block_hash, snap.block_timestamp,
                  committee.id, content)


def read_notice_at(registry, chain_id: int, kind: NoticeKind, number: int, block_hash: bytes,
                   timestamp: int) -> Notice | None:
    """The notice of ``kind`` read with view calls pinned to ``block_hash`` (blocking; a ``Registry``)."""
    at = block_hash
    epoch_id = registry.current_epoch(at)
    if not epoch_id:
        return None
    if kind is NoticeKind.REVOCATIONS:
        revoked = {k: registry.revocations(k, at) for k in RevocationKind if k is not RevocationKind.NONE}
        content = RevocationSet.of(
            fmspcs=revoked[RevocationKind.FMSPC], chip_ids=revoked[RevocationKind.CHIP_ID],
            gpu_fwids=revoked[RevocationKind.GPU_FWID], measurements=revoked[RevocationKind.MEASUREMENT],
            cert_serials=revoked[RevocationKind.CERT_SERIAL], evidence_hashes=revoked[RevocationKind.EVIDENCE_HASH],
            platforms=registry.platform_rules(at),
        )
    else:
        content = epoch_info_of(registry.epoch(epoch_id, at))
    return Notice(chain_id, registry.address, number, bytes(block_hash), timestamp, epoch_id, content)

class NoticeSource:
    """Rebuilds a proposed notice from this node's own view of the chain (Peer ``SignNotice``)."""

    def __init__(self, registry: Registry, w3, *, chain_id: int, start_block: int, confirmations: int):
        self.registry, self.w3 = registry, w3
        self.chain_id, self.start_block, self.confirmations = chain_id, start_block, confirmations

    async def check_proposed(self, data: bytes, state: RegistryState, epoch: int) -> Notice:
        """The decoded notice if it is exactly the one this node builds at its block; a Refusal otherwise."""
        try:
            notice = Notice.decode(data)
        except NoticeDecodeError as exc:
            raise Refusal(status.MALFORMED_REQUEST, f"notice: {exc}", metadata={"field": "notice"}) from None
        if notice.chain_id != self.chain_id or notice.registry != self.registry.address:
            raise Refusal(NOTICE_MISMATCH, f"the notice names chain {notice.chain_id} / {notice.registry}, this "
                                           f"node serves {self.chain_id} / {self.registry.address}")
        if notice.epoch != epoch:
            raise Refusal(status.WRONG_EPOCH, f"the notice names epoch {notice.epoch}, this node serves {epoch}")
        confirmed = state.block_number
        if not confirmed - LIMITS.max_notice_lag <= notice.block_number <= confirmed + LIMITS.max_notice_lead:
            raise Refusal(NOTICE_MISMATCH, f"block {notice.block_number} is too far from this node's confirmed "
                                           f"block {confirmed}")
        if notice.block_number < self.start_block:
            raise Refusal(NOTICE_MISMATCH, f"block {notice.block_number} precedes the registry's deployment")
        if notice.block_number == confirmed:
            if notice.block_hash != state.block_hash:
                raise Refusal(NOTICE_MISMATCH, f"block {confirmed} has hash {state.block_hash.hex()} in this "
                                               f"node's view, not {notice.block_hash.hex()}")
            expected = notice_from_state(state, notice.kind)
        else:
            expected = await asyncio.to_thread(self._read_confirmed, notice)
        if expected != notice:
            differing = ["content"] if expected is None else [
                name for name in ("block_timestamp", "epoch", "content")
                if getattr(expected, name) != getattr(notice, name)
            ]
            raise Refusal(NOTICE_MISMATCH, f"the notice differs from this node's view at block "
                                           f"{notice.block_number}: " + ", ".join(differing))
        return notice

    def _read_confirmed(self, notice: Notice) -> Notice | None:
        """The notice this node builds at ``notice``'s block, after checking that block with its own RPC
        (blocking: runs in a worker thread)."""
        try:
            head = self.w3.eth.block_number
            if notice.block_number > head - self.confirmations:
                raise Refusal(NOT_CONFIRMED, f"block {notice.block_number} is not confirmed yet (head {head})")
            block = self.w3.eth.get_block(notice.block_number)
            if bytes(block["hash"]) != notice.block_hash or int(block["timestamp"]) != notice.block_timestamp:
                raise Refusal(NOTICE_MISMATCH, f"block {notice.block_number} of this node's chain has another "
                                               "hash or timestamp (another fork?)")
            return read_notice_at(self.registry, self.chain_id, notice.kind, notice.block_number,
                                  notice.block_hash, notice.block_timestamp)
        except transient_errors() as exc:
            raise Refusal(status.UNAVAILABLE, f"this node cannot read block {notice.block_number}: {exc}") from None
