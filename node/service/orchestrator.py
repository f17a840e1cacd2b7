"""Epoch orchestration: activating epochs the registry activates, and running this node's part of every
DKG/reshare the registry starts.

Each pending epoch this node takes part in has one :class:`EpochRun` whose :class:`EpochState` moves forward
only: ``PREPARING`` (start time and previous keys gathered) → ``RUNNING`` (a
:class:`~derot.service.dkg_runner.DkgRunner` exchanges messages; the members' evidence is checked during the
announce phase) → ``FINISHED`` (result stored and reported, waiting for the registry) or ``FAILED``. A run exists
from the first update that sees the epoch pending, so a later update never starts a second one. A failed
attempt is retried under a new session id (``DkgConfig.attempt``) at :func:`~derot.service.dkg_runner.attempt_start`
while the epoch is still pending; each attempt resumes from its sealed snapshot after a restart, so this node
never announces or deals twice (docs/dkg.md).

DKG messages that arrive before the runner exists, or that name another attempt's session (``wrong_session``:
maybe the next attempt's), are buffered and replayed when the next runner starts: only for the pending epoch,
at most ``LIMITS.dkg_backlog_per_sender`` messages per sender and ``LIMITS.dkg_backlog_bytes`` per epoch (senders
are members, so the buffer is bounded). Peers' digest sync (:meth:`EpochOrchestrator.sync_dkg`) is answered
from the current runner, bounded in digests asked and in messages and bytes answered.

Activation is two steps: the node serves an activated epoch from the confirmed view at once (reversible),
but erases older shares, and the DKG run keys with them, only through
:class:`~derot.chain.finality.ShareRetirement`, i.e. once the activation is final and matches this node's own
transcript (issue 17).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import os
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from derot import _proto
from derot.chain import exclusions
from derot.chain.finality import OwnResult, ShareRetirement
from derot.chain.registry import Registry
from derot.chain.state import RegistryState
from derot.chain.types import EpochPhase, EpochRecord
from derot.crypto.bls import G2, PointDecodeError
from derot.crypto.dkg import (
    Committee,
    DkgConfig,
    DkgFailed,
    DkgMessageRejected,
    DkgSession,
    Identity,
    Member,
    PreviousEpoch,
    PublicKeys,
    RejectReason,
)
from derot.crypto.dkg.messages import Digest, MessageKind
from derot.limits import LIMITS
from derot.net import status
from derot.net.peers import PeerInfo
from derot.net.status import Refusal
from derot.service import faults
from derot.service.dkg_runner import MAX_SYNC_MESSAGES, DkgRunner, attempt_start, open_session
from derot.service.epoch import EpochKeys
from derot.service.member_evidence import MemberEvidence
from derot.service.membership import MembershipRefused
from derot.service.metrics import Metrics
from derot.service.peering import Peering, peer_info
from derot.service.storage import NodeStore
from derot.service.tasks import TaskSet
from derot.service.view import NodeView

log = logging.getLogger("derot.node")

#: digests one DKG sync request may carry (2 per kind and member bounds what a run can hold)
MAX_SYNC_DIGESTS = 4096
#: peers asked in one gossip pull (the runner pulls while a phase is incomplete; docs/dkg.md)
GOSSIP_FANOUT = 2


class EpochState(enum.Enum):
    PREPARING = "preparing"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


#: the only allowed moves of an EpochRun
_NEXT = {
    EpochState.PREPARING: {EpochState.RUNNING, EpochState.FAILED},
    EpochState.RUNNING: {EpochState.FINISHED, EpochState.FAILED},
    EpochState.FINISHED: set(),
    EpochState.FAILED: set(),
}


@dataclass
class DkgBacklog:
    """Messages that arrived before the session started, in arrival order, bounded per sender and in bytes."""

    messages: list[bytes] = field(default_factory=list)
    per_sender: Counter = field(default_factory=Counter)
    size: int = 0

    def add(self, sender: str, data: bytes) -> None:
        if self.per_sender[sender] >= LIMITS.dkg_backlog_per_sender:
            raise Refusal(status.OVERLOADED, f"{LIMITS.dkg_backlog_per_sender} DKG messages from {sender} are already "
                                             "waiting for this node's session to start")
        if self.size + len(data) > LIMITS.dkg_backlog_bytes:
            raise Refusal(status.OVERLOADED, "the DKG backlog of this epoch is full")
        self.per_sender[sender] += 1
        self.size += len(data)
        self.messages.append(bytes(data))

    def drain(self) -> list[bytes]:
        out, self.messages, self.per_sender, self.size = self.messages, [], Counter(), 0
        return out


@dataclass
class EpochRun:
    """This node's part in one DKG/reshare. ``runner`` is the current attempt's; ``status`` says why an earlier
    attempt failed; ``keys`` is set once FINISHED if this node holds shares."""

    epoch: int
    state: EpochState = EpochState.PREPARING
    attempt: int = 0
    status: str = ""
    runner: DkgRunner | None = None
    keys: EpochKeys | None = None
    backlog: DkgBacklog = field(default_factory=DkgBacklog)

    def advance(self, to: EpochState) -> None:
        if to not in _NEXT[self.state]:
            raise RuntimeError(f"epoch {self.epoch}: no move from {self.state.value} to {to.value}")
        self.state = to


class EpochOrchestrator:
    def __init__(self, *, view: NodeView, store: NodeStore, peering: Peering, evidence: MemberEvidence,
                 registry: Registry, w3, account, network: bytes, identity: Identity, metrics: Metrics,
                 phase_timeout: float, faults_active: frozenset[str], tasks: TaskSet,
                 retirement: ShareRetirement):
        self.view, self.store, self.peering, self.evidence = view, store, peering, evidence
        self.registry, self.w3, self.account, self.network = registry, w3, account, network
        self.identity, self.metrics, self.phase_timeout = identity, metrics, phase_timeout
        self.faults, self.tasks = faults_active, tasks
        self.retirement = retirement
        self._retiring = False  # a finality check runs in a worker thread
        self._runs: dict[int, EpochRun] = {}
        self._early: tuple[int, DkgBacklog] | None = None  # the pending epoch's messages before its run exists
        self._logged_pending = self._logged_inactive = 0  # epochs already logged, so once per epoch, not per update
        self._pb = _proto.load("node_pb2")

    @property
    def operator(self) -> str:
        return self.account.address

    def run_of(self, epoch: int) -> EpochRun | None:
        return self._runs.get(epoch)

    def load_active(self) -> None:
        """After a restart: serve the active epoch held in the store."""
        record = self.store.active_epoch()
        if record is not None and record.shares is not None:
            self.view.keys = EpochKeys.load(record.public, record.shares)
            self.metrics.epoch.set(self.view.keys.epoch)
            log.info("loaded epoch keys", extra={"epoch": self.view.keys.epoch, "index": self.view.keys.index})

    def on_state(self, state: RegistryState) -> None:
        """A new confirmed registry state: activate its epoch, start a run for its pending epoch."""
        current = state.committee
        keys = self.view.keys
        if current is not None and (keys is None or keys.epoch != current.id):
            self._activate(current)
        if self.retirement.pending is not None and not self._retiring:
            self._retiring = True
            self.tasks.spawn(self._retire(), name="retire-shares")
        pending = state.pending
        if pending is None or pending.phase not in (EpochPhase.DKG, EpochPhase.RESHARE):
            return
        involved = self._involved(state, pending)
        if pending.id != self._logged_pending:
            self._logged_pending = pending.id
            log.info("epoch pending", extra={"epoch": pending.id, "phase": pending.phase.name.lower(),
                                             "block": state.block_number, "involved": involved,
                                             "index": pending.index_of(self.operator)})
        if involved and pending.id not in self._runs and self.store.epoch(pending.id) is None:
            self._start(state, pending)

    def receive_dkg(self, epoch: int, data: bytes, sender: str) -> None:
        """A DKG message from member ``sender``: to the running session, or buffered until the session starts
        (only for the pending epoch)."""
        self._count("received", "push", [data])
        run = self._runs.get(epoch)
        if run is None or run.runner is None:
            state = self.view.state
            pending = state.pending if state is not None else None
            if pending is None or pending.id != epoch:
                raise Refusal(status.WRONG_EPOCH, f"no DKG is pending for epoch {epoch}")
            if run is None:
                if self._early is None or self._early[0] != epoch:
                    self._early = (epoch, DkgBacklog())
                backlog = self._early[1]
            else:
                backlog = run.backlog
            backlog.add(sender.lower(), data)
            return
        try:
            run.runner.receive(data)
        except DkgMessageRejected as exc:
            if exc.reason is not RejectReason.WRONG_SESSION:
                raise Refusal(f"dkg_{exc.reason.value}", exc.detail) from None
            run.backlog.add(sender.lower(), data)  # maybe the next attempt's: kept for its runner

    def sync_dkg(self, epoch: int, held) -> list[bytes]:
        """The messages of ``epoch``'s current attempt this node holds and a peer (holding ``held``, protobuf
        ``DkgSyncDigest``s) lacks; bounded by :data:`MAX_SYNC_DIGESTS` asked and ``DkgRunner.serve_sync``."""
        run = self._runs.get(epoch)
        if run is None or run.runner is None:
            return []
        if len(held) > MAX_SYNC_DIGESTS:
            raise Refusal(status.REQUEST_TOO_LARGE, f"{len(held)} digests, at most {MAX_SYNC_DIGESTS}")
        kinds = MessageKind._value2member_map_  # a dict lookup: MessageKind(value) costs an Enum call per digest
        digests = [Digest(kinds[d.kind], d.sender, bytes(d.body_hash)) for d in held if d.kind in kinds]
        answer = run.runner.serve_sync(digests)
        self._count("sent", "sync", answer)
        return answer

    def _count(self, direction: str, via: str, messages: list[bytes]) -> None:
        if messages and self.metrics is not None:
            self.metrics.dkg_messages.labels(direction, via).inc(len(messages))
            self.metrics.dkg_bytes.labels(direction, via).inc(sum(len(m) for m in messages))

    # ---------------------------------------------------------------------------------------------

    def _involved(self, state: RegistryState, epoch: EpochRecord) -> bool:
        me = self.operator
        if epoch.index_of(me):
            return True
        previous = state.epochs.get(epoch.previous) if epoch.phase == EpochPhase.RESHARE else None
        return previous is not None and bool(previous.index_of(me))

    def _activate(self, epoch: EpochRecord) -> None:
        run = self._runs.get(epoch.id)
        record = self.store.epoch(epoch.id)
        if record is not None and record.shares is not None:
            keys = EpochKeys.load(record.public, record.shares)
            if keys.sig.group_key != epoch.group_key_sig or keys.kd.group_key != epoch.group_key_kd:
                log.error("registry activated keys this node does not hold", extra={"epoch": epoch.id})
                return
            self.store.activate_epoch(epoch.id, erase_older=False)  # older shares go once the activation is final
            self.view.keys = keys
            self.retirement.want(epoch.id, OwnResult(keys.transcript_hash, keys.sig.group_key, keys.kd.group_key))
            log.info("epoch active; older shares kept until final", extra={"epoch": epoch.id, "index": keys.index})
        else:
            self.view.keys = None
            self.retirement.want(epoch.id, None)
            if self._logged_inactive != epoch.id:
                self._logged_inactive = epoch.id
                log.info("epoch active without this node", extra={
                    "epoch": epoch.id, "was_pending": run is not None and run.state is EpochState.FINISHED})
        self.metrics.epoch.set(self.view.keys.epoch if self.view.keys else 0)

    async def _retire(self) -> None:
        """One finality check (blocking RPC reads, off the event loop); erases older shares if allowed."""
        try:
            await asyncio.to_thread(self.retirement.attempt)
        except Exception:  # never let a failed check stop the node; the next update asks again
            log.exception("share retirement check failed")
        finally:
            self._retiring = False

    def _start(self, state: RegistryState, epoch: EpochRecord) -> None:
        run = EpochRun(epoch.id)
        if self._early is not None and self._early[0] == epoch.id:
            run.backlog, self._early = self._early[1], None
        self._runs[epoch.id] = run
        self.tasks.spawn(self._run(run, state, epoch), name=f"dkg-{epoch.id}")

    async def _run(self, run: EpochRun, state: RegistryState, epoch: EpochRecord) -> None:
        try:
            result = await self._run_with_retries(run, state, epoch)
            if result is None:
                return
        except (MembershipRefused, Refusal) as exc:
            run.advance(EpochState.FAILED)
            self.metrics.dkg_runs.labels("refused").inc()
            log.error("not taking part in the dkg", extra={"epoch": epoch.id, "reason": exc.reason,
                                                           "detail": exc.detail})
            return
        except Exception:
            run.advance(EpochState.FAILED)
            self.metrics.dkg_runs.labels("error").inc()
            log.exception("dkg crashed", extra={"epoch": epoch.id})
            return
        self.metrics.dkg_runs.labels("ok").inc()
        run.keys = EpochKeys.from_result(result) if result.shares is not None else None
        if run.keys is not None:
            self.store.save_epoch(epoch.id, run.keys.public_record(), run.keys.secret_record())
        run.advance(EpochState.FINISHED)
        self._activate_if_current(epoch.id)
        if epoch.index_of(self.operator) and run.keys is not None:
            # a fresh DKG's dealers are its recipients, so the members this node refused to deal to share
            # the dealers' indices; in a reshare they do not (dealers are the previous epoch's members)
            refused = run.runner.session.refused if run.runner is not None and epoch.previous == 0 else None
            await self._report(epoch.id, result, exclusions.encode(result.excluded, refused))
        elif epoch.index_of(self.operator):  # only holders vouch: ACTIVE then means t members hold their shares
            log.warning("not reporting the epoch: this member holds no share of the result",
                        extra={"epoch": epoch.id})

    def _activate_if_current(self, epoch_id: int) -> None:
        """A run that finishes after the registry already activated its epoch (t other members reported first)
        activates now, not at the next chain update, which may be long in coming on a quiet chain."""
        state = self.view.state
        current = state.committee if state is not None else None
        keys = self.view.keys
        if current is not None and current.id == epoch_id and (keys is None or keys.epoch != epoch_id):
            self._activate(current)

    async def _run_with_retries(self, run: EpochRun, state: RegistryState, epoch: EpochRecord):
        """Attempts until one finishes; None (run FAILED) once the registry no longer has the epoch pending."""
        started_at = await self._block_time(epoch.started_block)
        while True:
            begin = attempt_start(started_at, self.phase_timeout, run.attempt)
            if begin > time.time():
                await asyncio.sleep(begin - time.time())
            if run.attempt and not self._still_pending(epoch.id):
                run.advance(EpochState.FAILED)
                log.error("dkg given up: the epoch is no longer pending", extra={"epoch": epoch.id,
                                                                                  "status": run.status})
                return None
            try:
                return await self._run_attempt(run, state, epoch, started_at)
            except DkgFailed as exc:
                self.metrics.dkg_runs.labels("failed").inc()
                log.error("dkg failed",  # retried under a new session id
                          extra={"epoch": epoch.id, "attempt": run.attempt, "retrying": True,
                                 "reason": exc.reason.value, "detail": exc.detail})
                run.status = f"attempt {run.attempt} failed: {exc.reason.value}: {exc.detail}"
                run.attempt += 1

    def _still_pending(self, epoch_id: int) -> bool:
        state = self.view.state
        return state is not None and state.pending is not None and state.pending.id == epoch_id

    async def _run_attempt(self, run: EpochRun, state: RegistryState, epoch: EpochRecord, started_at: float):
        """One attempt of the run: resumed from its sealed snapshot after a restart, never dealt twice."""
        config, old_shares = await self._dkg_config(state, epoch)
        config = dataclasses.replace(config, attempt=run.attempt)
        session_class = faults.CheatingDealer if "dkg_cheat" in self.faults else DkgSession
        session, resumed = open_session(
            config, self.identity, old_shares, checks_pending=True, session_class=session_class,
            load=lambda: self.store.dkg_state(epoch.id, config.session_id))
        epochs = [epoch] + ([state.epochs[epoch.previous]] if config.is_reshare else [])
        broadcast, relay, pull, gossip = self._broadcaster(state, epochs)
        run.runner = DkgRunner(
            session,
            phase_timeout=self.phase_timeout,
            started_at=attempt_start(started_at, self.phase_timeout, run.attempt),
            broadcast=broadcast,
            relay=relay,
            pull=pull,
            gossip=gossip,
            member_checks=lambda decide_by: self.evidence.check_members(state, epoch, decide_by),
            persist=lambda blob: self._persist(epoch.id, session, blob),
            on_phase=lambda phase, seconds: self.metrics.dkg_phase.labels(phase).observe(seconds),
            resumed=resumed,
        )
        if run.state is EpochState.PREPARING:
            run.advance(EpochState.RUNNING)
        return await run.runner.run(run.backlog.drain())

    def _persist(self, epoch_id: int, session: DkgSession, blob: bytes) -> None:
        """Seal the session's snapshot into the store (before anything it produced is sent)."""
        self.store.put_dkg_state(epoch_id, session.config.session_id, blob)
        if "dkg_crash_after_deal" in self.faults and session.has_dealt:
            marker = Path(self.store.path).parent / faults.CRASH_MARKER
            if not marker.exists():
                marker.touch()
                log.error("fault dkg_crash_after_deal: exiting after persisting the deal, before sending it")
                os._exit(70)

    def _broadcaster(self, state: RegistryState, epochs: list[EpochRecord]):
        """``(broadcast, relay, pull, gossip)`` for a runner: send own messages, forward a peer's signed bytes,
        and pull what peers hold beyond given digests, to and from every other participant of ``epochs``
        (gossip: from :data:`GOSSIP_FANOUT` of them, chosen at random each time)."""
        targets: dict[str, PeerInfo] = {}
        for epoch in epochs:
            for info in peer_info(state, epoch).values():
                if info.operator.lower() != self.operator.lower():
                    targets[info.operator.lower()] = info
        epoch_id = epochs[0].id

        async def send(info: PeerInfo, data: bytes) -> None:
            if await self.peering.submit_dkg(info, epoch_id, data, self.phase_timeout):
                self._count("sent", "push", [data])

        def relay(data: bytes) -> None:
            for info in targets.values():
                self.tasks.spawn(send(info, data), name=f"dkg-{epoch_id}-send-{info.index}")

        def broadcast(messages) -> None:
            for message in messages:
                relay(message.encode())

        async def pull(digests, peers=None) -> list[bytes]:
            got = await self.peering.pull_dkg(peers or list(targets.values()), epoch_id, digests, MAX_SYNC_MESSAGES)
            self._count("received", "sync", got)
            return got

        async def gossip(digests) -> list[bytes]:
            peers = list(targets.values())
            return await pull(digests, random.sample(peers, min(GOSSIP_FANOUT, len(peers)))) if peers else []

        return broadcast, relay, pull, gossip

    async def _report(self, epoch_id: int, result, excluded: tuple[list[int], list[int]] = ([], [])) -> None:
        delay = 1.0
        for _attempt in range(LIMITS.epoch_report_attempts):
            try:
                await asyncio.to_thread(
                    self.registry.report_epoch, self.account, epoch_id, result.sig.group_key, result.kd.group_key,
                    result.transcript_hash, excluded,
                )
                log.info("reported epoch result", extra={"epoch": epoch_id, "transcript": result.transcript_hash})
                return
            except Exception as exc:  # RPC down or a revert; retried, then logged
                if await self._already_active(epoch_id, result):
                    log.info("epoch already active with this node's keys; its late report is not needed",
                             extra={"epoch": epoch_id})
                    return
                log.warning("epoch report failed", extra={"epoch": epoch_id, "error": str(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, LIMITS.epoch_report_max_delay)

    async def _already_active(self, epoch_id: int, result) -> bool:
        """Whether the registry activated ``epoch_id`` with the keys this node computed (a report that
        lands after activation reverts: that is agreement, not a failure)."""
        try:
            record = await asyncio.to_thread(self.registry.epoch, epoch_id)
        except Exception:
            return False
        return (record.phase == EpochPhase.ACTIVE and record.group_key_sig == result.sig.group_key
                and record.group_key_kd == result.kd.group_key)

    async def _block_time(self, number: int) -> float:
        """When the run began, on this node's clock: the starting block's timestamp, corrected by how far the
        chain's clock is from ours now (a devnet's clock runs ahead after timelock warps; a real chain's
        lags by up to a block), so every member gets the same deadlines whenever it starts its session."""
        try:
            started, latest = await asyncio.to_thread(
                lambda: (self.w3.eth.get_block(number)["timestamp"], self.w3.eth.get_block("latest")["timestamp"])
            )
        except Exception:  # the RPC is down: fall back to our own clock
            return time.time()
        now = time.time()
        skew = latest - now
        return min(started - skew, now) if skew > 0 else min(started, now)

    # ---------------------------------------------------------------------------------------------
    # the session's configuration

    @staticmethod
    def _committee(state: RegistryState, epoch: EpochRecord) -> Committee:
        members = []
        for index, operator in enumerate(epoch.members, start=1):
            node = state.nodes.get(operator)
            if node is None:
                raise ValueError(f"epoch {epoch.id} member {operator} is not registered")
            members.append(Member(index, node.identity_key, node.x25519_key))
        return Committee(tuple(members), epoch.threshold)

    async def _dkg_config(self, state: RegistryState, epoch: EpochRecord):
        committee = self._committee(state, epoch)
        if epoch.phase != EpochPhase.RESHARE:
            return DkgConfig(self.network, epoch.id, committee), None
        previous_record = state.epochs[epoch.previous]
        previous = await self._previous_keys(state, previous_record)
        old_shares = None
        if previous_record.index_of(self.operator):
            record = self.store.epoch(previous_record.id)
            if record is None or record.shares is None:
                raise Refusal(status.NO_ACTIVE_EPOCH, f"this node holds no shares of epoch {previous_record.id}")
            old_shares = EpochKeys.load(record.public, record.shares).shares
        return DkgConfig(self.network, epoch.id, committee, previous), old_shares

    async def _previous_keys(self, state: RegistryState, previous: EpochRecord) -> PreviousEpoch:
        """The old committee's public keys: from this node's store if it was a member; otherwise from the old
        members, accepted when ``t_old`` of them give identical keys that match the group keys on-chain."""
        committee = self._committee(state, previous)
        record = self.store.epoch(previous.id)
        if record is not None:
            held = EpochKeys.load_public(record.public)
            return PreviousEpoch(committee, held.sig, held.kd)
        request = self._pb.GetEpochKeysRequest(epoch=previous.id)

        async def ask(info: PeerInfo):
            try:
                return await self.peering.call(info, "GetEpochKeys", request)
            except Refusal:
                return None

        # old members may still be activating the previous epoch (it became ACTIVE moments ago): ask again,
        # for up to one phase, before refusing to take part
        deadline, delay = time.monotonic() + self.phase_timeout, 0.5
        while True:
            replies = await asyncio.gather(*(ask(info) for info in peer_info(state, previous).values()))
            keys = _agreed_previous_keys(replies, previous)
            if keys is not None:
                return PreviousEpoch(committee, *keys)
            if time.monotonic() + delay > deadline:
                raise Refusal(status.NO_ACTIVE_EPOCH, f"fewer than {previous.threshold} old members agree on the "
                                                      f"keys of epoch {previous.id}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def _agreed_previous_keys(replies, previous: EpochRecord) -> tuple[PublicKeys, PublicKeys] | None:
    """``(sig, kd)`` public keys that ``t_old`` identical ``GetEpochKeys`` answers give and that match the
    previous epoch's group keys on-chain; None if no such set of answers."""
    votes: dict[bytes, list] = defaultdict(list)
    for reply in replies:
        if reply is not None and reply.epoch == previous.id:
            votes[reply.SerializeToString(deterministic=True)].append(reply)
    for same in votes.values():
        if len(same) < previous.threshold:
            continue
        reply = same[0]
        try:
            sig = PublicKeys(G2.from_bytes(reply.group_key_sig),
                             {k.index: G2.from_bytes(k.sig) for k in reply.share_keys})
            kd_keys = PublicKeys(G2.from_bytes(reply.group_key_kd),
                                 {k.index: G2.from_bytes(k.kd) for k in reply.share_keys})
        except PointDecodeError:
            continue
        if sig.group_key == previous.group_key_sig and kd_keys.group_key == previous.group_key_kd:
            return sig, kd_keys
    return None
