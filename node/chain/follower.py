"""Follow DerotRegistry at ``head − confirmations``: consistent state, every event once, reorgs handled.

Each :meth:`Follower.poll` advances from the last processed block (the *cursor*) towards
``head − confirmations`` by at most ``max_range`` blocks and returns an :class:`Update` holding

- ``state``: the :class:`~derot.chain.state.RegistryState` at the new cursor, read with view calls pinned to
  the cursor's block hash (EIP-1898 ``requireCanonical``), so it is internally consistent;
- ``events``: the registry's events in the new blocks, in chain order. The first update (and one after a gap
  wider than ``reorg_window``) jumps to ``head − confirmations`` with no events: history is not replayed;
- ``reorg``: set when blocks the follower had already processed were replaced. Their events are void;
  the state is re-read in full at the new cursor and the events of the new canonical blocks follow.

Reorg detection: the follower remembers the hash of every processed block within ``reorg_window`` of the
head. Before advancing it checks that the cursor's hash is still canonical; if not, it walks back to the
newest remembered block that still is (the fork point) and resumes from there. The headers of a new range
must chain (parentHash) from the cursor, and the logs must come from those exact blocks; otherwise the poll
is abandoned and retried, so a reorg racing a poll cannot mix two forks.

Cost: a first read is a few JSON-RPC batches of paged views (:mod:`derot.chain.bulk`), bounded in size.
After it, a poll that finds no new block is one request (the head and the cursor's header in one voted
batch); an empty new block adds one more (its ``eth_getLogs`` and its header in one batch), whatever the
registry's size; plus one ``eth_getBlockReceipts`` per block whose bloom may
hold the registry, plus one batch re-reading only the apps, nodes and epochs the events name. A log
range is halved until its answer holds at most ``max_logs`` logs and fits the reply limit.

Failure model: any RPC failure (connection refused, timeout, HTTP error, a pinned block that vanished)
raises out of :meth:`poll` *before* the cursor moves, so nothing is lost; :meth:`run` and :meth:`updates`
retry with exponential backoff and resume from the cursor. Any other error in a poll (a bug in handling an
answer) is logged with its traceback and retried the same way: the follower never ends, so a lasting fault
shows as a stale view, never as a node that silently stopped following.

Usage in the node process (asyncio)::

    follower = Follower.connect(rpc_url, deployment.registry, start_block=deployment.deploy_block)
    async for update in follower.updates():      # each blocking poll runs in a worker thread
        policy.use(update.state.snapshot)
        for event in update.events: ...

Threads are fine too: :meth:`run` is a blocking generator with the same backoff.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from eth_utils import to_checksum_address

from derot.chain.abi import AbiDecodeError
from derot.chain.bulk import ReadLimits
from derot.chain.client import ChainClient, log_filter, logs_of, result_of
from derot.chain.headers import bloom_may_contain
from derot.chain.quorum import BATCH_MAX, AnswerTooLarge, QuorumProvider
from derot.chain.receipts import ReceiptsInvalid, verified_receipts
from derot.chain.registry import ChainReadError, Registry
from derot.chain.state import RegistryState, apply_changes, read_state
from derot.chain.types import NodeStatus, RevocationKind
from derot.errors import DerotError

log = logging.getLogger("derot.chain.follower")

#: Errors that mean "the RPC node is down, slow or changed under us": retry later from the same cursor.
#: (requests' errors are OSErrors; with web3's ``Web3`` as the client, see :func:`transient_errors`.)
TRANSIENT_ERRORS = (OSError, ChainReadError, TimeoutError)


def transient_errors() -> tuple[type[BaseException], ...]:
    """TRANSIENT_ERRORS, and web3's own errors once web3 is imported (a caller passed web3's ``Web3``; a node
    process never imports web3, see derot.chain.client)."""
    web3_errors = sys.modules.get("web3.exceptions")
    return TRANSIENT_ERRORS if web3_errors is None else (*TRANSIENT_ERRORS, web3_errors.Web3Exception)


class ReorgRace(DerotError, RuntimeError):
    """The chain changed while a poll was reading it; the poll is retried."""

    reason = "reorg_race"


def check_logs_against_blooms(w3, address: str, logs, headers: dict[int, tuple[bytes, int, bytes, bytes]]) -> None:
    """Raise :class:`LogsIncomplete` unless ``logs`` (eth_getLogs of ``address`` over the blocks of ``headers``)
    are exactly the registry's logs of those blocks. A block whose (re-hashed) header's bloom cannot hold
    ``address`` must have no log; for every other block the receipts are fetched, checked against the
    header's receiptsRoot, and their registry logs must equal the returned ones. So an RPC can neither hide
    nor invent a log, even in a block that has other registry logs. The cost is one receipts call per block
    whose bloom may hold the registry: proportional to the registry's activity, not to the chain's."""
    addr = bytes.fromhex(address[2:])
    returned: dict[int, list] = {}
    for entry in logs:
        number = entry["blockNumber"]
        if number not in headers:
            raise LogsIncomplete(f"eth_getLogs answered a log of block {number}, outside the range asked")
        returned.setdefault(number, []).append(entry)
    for number, (block_hash, _time, bloom, receipts_root) in sorted(headers.items()):
        got = [(tuple(bytes(t) for t in e["topics"]), bytes(e["data"]))
               for e in sorted(returned.get(number, ()), key=lambda e: e["logIndex"])]
        if not bloom_may_contain(bloom, addr):
            if got:
                raise LogsIncomplete(f"a log of block {number} is not in the block's logs bloom")
            continue
        reply = w3.provider.make_request("eth_getBlockReceipts", ["0x" + block_hash.hex()])
        result = reply.get("result") if isinstance(reply, dict) else None
        if not isinstance(result, list):
            raise LogsIncomplete(f"block {number}'s bloom may hold registry logs and its receipts are unavailable")
        try:
            receipts = verified_receipts(result, receipts_root)
        except ReceiptsInvalid as exc:
            raise LogsIncomplete(f"block {number}: {exc}") from None
        expected = [
            (tuple(_hex_bytes(t) for t in e["topics"]), _hex_bytes(e["data"]))
            for r in sorted(receipts, key=lambda r: int(r["transactionIndex"], 16))
            for e in r.get("logs") or []
            if str(e.get("address", "")).lower() == address.lower()
        ]
        if got != expected:
            raise LogsIncomplete(f"eth_getLogs answered {len(got)} registry logs for block {number}; its receipts "
                                 f"hold {len(expected)}")


def _hex_bytes(value) -> bytes:
    return bytes.fromhex(value[2:]) if isinstance(value, str) else bytes(value)


def _block_calls(numbers: list[int]) -> list[tuple[str, list]]:
    """eth_getBlockByNumber calls (headers only, no transactions) for ``numbers``, in order."""
    return [("eth_getBlockByNumber", [hex(n), False]) for n in numbers]


def _parsed_blocks(numbers: list[int], replies: list) -> list[dict]:
    """Headers (hash, parentHash, timestamp, logsBloom, receiptsRoot as bytes/int) from voted
    eth_getBlockByNumber ``replies`` for ``numbers``; a missing or malformed one raises ChainReadError."""
    out = []
    for number, reply in zip(numbers, replies):
        block = reply.get("result") if isinstance(reply, dict) else None
        if not isinstance(block, dict):
            raise ChainReadError(f"block {number} is not available")
        try:
            out.append({"hash": _hex_bytes(block["hash"]), "parentHash": _hex_bytes(block["parentHash"]),
                        "timestamp": int(block["timestamp"], 16), "logsBloom": _hex_bytes(block["logsBloom"]),
                        "receiptsRoot": _hex_bytes(block["receiptsRoot"])})
        except (KeyError, TypeError, ValueError) as exc:
            raise ChainReadError(f"block {number}: malformed header ({exc})") from None
    return out


def _hash_in(reply, number: int) -> bytes | None:
    """The hash in a voted eth_getBlockByNumber ``reply`` for block ``number``; None if there is no such block."""
    if not isinstance(reply, dict) or "error" in reply:
        raise ChainReadError(f"block {number} could not be read: {reply}")
    if reply.get("result") is None:
        return None
    try:
        return _hex_bytes(reply["result"]["hash"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ChainReadError(f"block {number}: malformed header ({exc})") from None


class LogsIncomplete(ChainReadError):
    """eth_getLogs answered logs inconsistent with the blocks' blooms or receipts; the poll is retried."""

    reason = "chain_unverified"


class LogsOversize(ChainReadError):
    """One block holds more registry logs than ``max_logs`` (or than the RPC reply limit); the poll is retried."""

    reason = "logs_oversize"


@dataclass(frozen=True)
class RegistryEvent:
    name: str
    args: dict
    block_number: int
    block_hash: bytes
    tx_hash: bytes
    log_index: int


@dataclass(frozen=True)
class Reorg:
    """Blocks ``(fork_block, old_cursor]`` were replaced; ``fork_block`` is the newest block kept."""

    fork_block: int
    old_cursor: int

    @property
    def depth(self) -> int:
        return self.old_cursor - self.fork_block


@dataclass(frozen=True)
class Update:
    state: RegistryState
    events: tuple[RegistryEvent, ...]
    reorg: Reorg | None = None


def changes_named(events) -> dict:
    """What ``events`` say changed, as :func:`~derot.chain.state.apply_changes` keywords. Every registry event
    maps without error, whatever it names (a test walks the ABI): an event re-reads an epoch only when it names
    one, a node only when it names an operator, an app only when it names an app id. A ``NodeStatusChanged``
    carries the whole change (a status change writes nothing else), so it goes to ``node_statuses`` in chain
    order, applied without a re-read; one with a status this code does not know re-reads the node instead."""
    nodes, epochs, apps, revocations, node_statuses = set(), set(), set(), [], []
    platforms = node_measurements = governance = snp = False
    for e in events:
        a = e.args
        if e.name == "NodeStatusChanged" and a.get("status") in NodeStatus._value2member_map_:
            node_statuses.append((to_checksum_address(a["operator"]), NodeStatus(a["status"])))
        elif "operator" in a:
            nodes.add(to_checksum_address(a["operator"]))
        if "epoch" in a:  # EpochStarted, …Reported, …Activated…; not EpochTimeoutSet, which names none
            epochs.add(a["epoch"])
        if "appId" in a:
            apps.add(bytes(a["appId"]))
        if e.name in ("Revoked", "Unrevoked"):
            revocations.append((RevocationKind(a["kind"]), bytes(a["id"]), e.name == "Revoked"))
        platforms |= e.name == "PlatformRuleSet"
        node_measurements |= e.name == "NodeMeasurementSet"
        governance |= e.name in ("SecurityCouncilChanged", "OwnershipTransferred")
        snp |= e.name in ("SnpPolicySet", "SnpMinTcbSet")
    return dict(nodes=nodes, node_statuses=node_statuses, epochs=epochs, apps=apps, revocations=revocations,
                platforms=platforms, node_measurements=node_measurements, governance=governance, snp=snp)


class Follower:
    """Follows one registry. Not thread-safe: drive it from one thread (or one asyncio task)."""

    def __init__(
        self,
        w3,
        registry: str,
        *,
        start_block: int,
        confirmations: int = 2,
        max_range: int = 2_000,
        reorg_window: int = 128,
        poll_interval: float = 1.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        max_logs: int = 10_000,
        limits: ReadLimits = ReadLimits(),
    ) -> None:
        if confirmations < 0 or reorg_window <= confirmations:
            raise ValueError("need confirmations >= 0 and reorg_window > confirmations")
        self.w3 = w3
        self.registry = Registry(w3, registry)
        self.start_block = max(0, start_block)
        self.confirmations = confirmations
        self.max_range = max_range
        self.reorg_window = reorg_window
        self.poll_interval = poll_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_logs = max_logs
        self.limits = limits
        self.state: RegistryState | None = None
        self.cursor: int = self.start_block - 1  # last processed block
        self._hashes: dict[int, bytes] = {}  # processed block number → hash (within the window)
        self._unreported_reorg: Reorg | None = None
        self.behind = False  # the last poll stopped short of head − confirmations (max_range)
        self.head: int | None = None  # the chain head seen by the last poll (for lag metrics)
        self.failures = 0  # consecutive failed polls (for status and metrics)
        self.last_error: str | None = None
        self.last_reason: str | None = None  # the failed poll's DerotError reason, e.g. chain_unverified

    @classmethod
    def connect(cls, rpc_url, registry: str, *, quorum: int = 1, timeout: float = 5.0, **kwargs) -> Follower:
        """A follower over one RPC URL or a list of them, of which ``quorum`` must agree on every read
        (:class:`~derot.chain.quorum.QuorumProvider`; requests time out after ``timeout`` seconds). It
        retries whole polls with its own backoff."""
        urls = [rpc_url] if isinstance(rpc_url, str) else list(rpc_url)
        return cls(ChainClient(QuorumProvider(urls, quorum, timeout=timeout)), registry, **kwargs)

    # ---------------------------------------------------------------------------------------------
    def poll(self) -> Update | None:
        """One step. Returns None when there is nothing new; raises a TRANSIENT_ERRORS member or ReorgRace
        (cursor unchanged) when the RPC fails or the chain moves under the read."""
        head, cursor_hash = self._head_and_cursor_hash()
        self.head = head
        target = head - self.confirmations
        reorg = self._check_reorg(cursor_hash) or self._unreported_reorg
        if reorg is None and (target <= self.cursor or target < self.start_block):
            self.behind = False
            return None
        if target < self.start_block:
            # rewound below the deployment block: nothing to read until the chain grows again
            self.state, self._unreported_reorg = None, reorg
            return None
        first = self.cursor + 1
        last = max(self.cursor, min(target, self.cursor + self.max_range))
        # Incremental updates trust the logs, so every block of the range is fetched and its logs are
        # checked against its bloom. A first read, a reorg or a gap wider than the window re-reads in full.
        # A first read and a gap wider than the window jump straight to the target with no events: the
        # state needs no history, and a cold sync costs the same however old the registry is.
        jump = self.state is None or first < head - self.reorg_window
        full = jump or reorg is not None
        raw: list = []
        blocks = None
        if jump:
            last = target
        elif last >= first:
            both = None if full else self._logs_and_blocks(first, last)
            if both is None:
                raw, last = self._fetch_logs(first, last)
            else:
                raw, blocks = both
        headers = self._headers(first, last, head, every=not full, blocks=blocks)
        end_hash, end_time, _bloom, _root = headers[last]
        events = self._logs(raw, first, last, headers, verify=not full)
        called = full or bool(events) or bool(self.state.unreadable_apps)  # the new state is read by calls
        if full:
            state = read_state(self.registry, end_hash, last, end_time, self.limits)
        else:
            state = self._incremental(events, end_hash, last, end_time)
        if called and self._canonical_hash(last) != end_hash:
            # A step without calls is all in the header chain and blooms checked above, bound to end_hash;
            # whether that block stays canonical is the next poll's reorg check, as for any step.
            raise ReorgRace(f"block {last} changed while reading it")
        # commit: nothing above may have changed the follower
        for number, (block_hash, *_rest) in headers.items():
            if number >= head - self.reorg_window:
                self._hashes[number] = block_hash
        for number in [n for n in self._hashes if n < head - self.reorg_window]:
            del self._hashes[number]
        self.cursor = last
        self.state = state
        self.behind = last < target
        self._unreported_reorg = None
        return Update(state=state, events=tuple(events), reorg=reorg)

    # ---------------------------------------------------------------------------------------------
    @property
    def _reorg_check_due(self) -> bool:
        """A state was read and the cursor's hash is remembered (so it can be compared)."""
        return self.state is not None and self.cursor in self._hashes

    def _head_and_cursor_hash(self) -> tuple[int, bytes | None]:
        """The chain head and, when a reorg check is due (:meth:`_check_reorg`), the canonical hash at the
        cursor; in one round trip when the provider can (:meth:`~derot.chain.quorum.QuorumProvider.head_batch`,
        each answer voted on as if asked alone). Most polls find no new block: this is their whole cost."""
        if not self._reorg_check_due:
            return self.w3.eth.block_number, None
        batch = getattr(self.w3.provider, "head_batch", None)
        if batch is None:
            return self.w3.eth.block_number, self._canonical_hash(self.cursor)
        head, (reply,) = batch([("eth_getBlockByNumber", [hex(self.cursor), False])])
        return head, _hash_in(reply, self.cursor)

    def _canonical_hash(self, number: int) -> bytes | None:
        """Hash of canonical block ``number``, or None if the chain is shorter now. Asked as a one-call batch when
        the provider can (voted on and re-hashed like every header; web3's ``get_block`` formatting of the whole
        block cost about as much again, twice a second)."""
        batch = getattr(self.w3.provider, "make_batch", None)
        if batch is None:
            try:
                return bytes(self.w3.eth.get_block(number)["hash"])
            except Exception as exc:
                if type(exc).__name__ == "BlockNotFound":  # ChainClient's and web3's share the name
                    return None
                raise
        return _hash_in(batch([("eth_getBlockByNumber", [hex(number), False])])[0], number)

    def _check_reorg(self, cursor_hash: bytes | None) -> Reorg | None:
        """If the cursor's block is no longer canonical (its hash now is ``cursor_hash``), rewind to the fork
        point and return the Reorg."""
        if not self._reorg_check_due or cursor_hash == self._hashes[self.cursor]:
            return None
        old = self.cursor
        fork = None
        for number in sorted(self._hashes, reverse=True):
            if number < old and self._canonical_hash(number) == self._hashes[number]:
                fork = number
                break
        if fork is None:  # deeper than the window: start over
            fork = self.start_block - 1
        log.warning("chain reorganised: blocks %d..%d replaced", fork + 1, old)
        for number in [n for n in self._hashes if n > fork]:
            del self._hashes[number]
        self.cursor = fork
        return Reorg(fork_block=fork, old_cursor=old)

    def _headers(self, first: int, last: int, head: int, *, every: bool,
                 blocks: dict[int, dict] | None = None) -> dict[int, tuple[bytes, int, bytes, bytes]]:
        """(hash, timestamp, logs bloom, receipts root) of block ``last`` and of every block of [first, last] (``every``) or of
        those within the reorg window, checking that consecutive ones chain by parentHash, starting from the
        remembered cursor hash. ``blocks``: those headers by number, already read (:meth:`_logs_and_blocks`)."""
        low = first if every else max(first, head - self.reorg_window)
        numbers = sorted({*range(low, last + 1), last})
        out: dict[int, tuple[bytes, int, bytes, bytes]] = {}
        if blocks is None:
            blocks = dict(zip(numbers, self._blocks(numbers)))
        for number in numbers:
            block = blocks[number]
            parent = bytes(block["parentHash"])
            expected = out[number - 1][0] if number - 1 in out else self._hashes.get(number - 1)
            if number >= first and expected is not None and parent != expected:
                raise ReorgRace(f"block {number} does not extend the block {number - 1} seen before")
            out[number] = (bytes(block["hash"]), int(block["timestamp"]), bytes(block["logsBloom"]),
                           bytes(block["receiptsRoot"]))
        return out

    def _blocks(self, numbers: list[int]) -> list[dict]:
        """Headers (hash, parentHash, timestamp, logsBloom, receiptsRoot as bytes/int) of ``numbers``, in JSON-RPC
        batches when the provider can (each header still voted on and re-hashed by the quorum provider)."""
        batch = getattr(self.w3.provider, "make_batch", None)
        if batch is None:
            return [self.w3.eth.get_block(n) for n in numbers]
        return _parsed_blocks(numbers, batch(_block_calls(numbers)))

    def _logs_and_blocks(self, first: int, last: int) -> tuple[list, dict[int, dict]] | None:
        """The registry's logs of [first, last] and those blocks' headers in one batch (a new block's whole
        read), each voted on as if asked alone. None when the provider cannot batch, the range is over one
        batch, or the logs are too many or too large for one answer: then :meth:`_fetch_logs` halves the
        range as before."""
        batch = getattr(self.w3.provider, "make_batch", None)
        numbers = list(range(first, last + 1))
        if batch is None or len(numbers) >= BATCH_MAX:
            return None
        logs_call = ("eth_getLogs", [log_filter({"address": self.registry.address, "fromBlock": first,
                                                   "toBlock": last})])
        try:
            replies = batch([logs_call, *_block_calls(numbers)])
        except AnswerTooLarge:
            return None
        raw = logs_of(result_of("eth_getLogs", replies[0]))
        if len(raw) > self.max_logs:
            return None
        return raw, dict(zip(numbers, _parsed_blocks(numbers, replies[1:])))

    def _fetch_logs(self, first: int, last: int) -> tuple[list, int]:
        """The registry's logs of [first, last'] and last': the range is halved until the answer holds at most
        ``max_logs`` logs and fits the RPC reply limit, so a registry flooded with events is read in
        bounded steps instead of stalling the follower. One block over the bounds raises LogsOversize."""
        while True:
            try:
                raw = self.w3.eth.get_logs({"address": self.registry.address, "fromBlock": first, "toBlock": last})
            except AnswerTooLarge:
                if last == first:
                    raise LogsOversize(f"the registry logs of block {first} are over the RPC reply limit") from None
                last = first + (last - first) // 2
                continue
            if len(raw) <= self.max_logs:
                return list(raw), last
            if last == first:
                raise LogsOversize(f"block {first} holds {len(raw)} registry logs; max_logs is {self.max_logs}")
            last = first + (last - first) // 2

    def _logs(self, raw: list, first: int, last: int, headers, *, verify: bool) -> list[RegistryEvent]:
        for entry in raw:
            number = entry["blockNumber"]
            if number in headers and bytes(entry["blockHash"]) != headers[number][0]:
                raise ReorgRace(f"log of block {number} comes from another fork")
            if entry.get("removed"):
                raise ReorgRace(f"log of block {number} was removed")
            if to_checksum_address(entry["address"]) != self.registry.address:
                raise LogsIncomplete(f"eth_getLogs answered a log of another contract in block {number}")
        if verify:
            check_logs_against_blooms(self.w3, self.registry.address, raw, {n: h for n, h in headers.items()
                                                                              if first <= n <= last})
        events = []
        for entry in sorted(raw, key=lambda e: (e["blockNumber"], e["logIndex"])):
            number = entry["blockNumber"]
            try:
                decoded = self.registry.abi.decode_log([bytes(t) for t in entry["topics"]], bytes(entry["data"]))
            except AbiDecodeError as exc:  # a registry topic with another shape: only a lying RPC answers that
                raise LogsIncomplete(f"block {number}: {exc}") from None
            if decoded is None:
                continue
            events.append(
                RegistryEvent(
                    name=decoded.name,
                    args=decoded.args,
                    block_number=number,
                    block_hash=bytes(entry["blockHash"]),
                    tx_hash=bytes(entry["transactionHash"]),
                    log_index=entry["logIndex"],
                )
            )
        return events

    def _incremental(self, events, block_hash: bytes, number: int, timestamp: int) -> RegistryState:
        if not events and not self.state.unreadable_apps:
            return self.state.with_block(number, block_hash, timestamp)
        return apply_changes(self.registry, self.state, block_hash, number, timestamp, **changes_named(events))

    # ---------------------------------------------------------------------------------------------
    def _failed(self, exc: Exception) -> float:
        """Count a failed poll and return the back-off. An error that is not an RPC failure or a ReorgRace is
        an error in handling the answer (a bug): it is logged with its traceback and retried the same way,
        because the cursor did not move, so the follower never stops and a lasting bug shows as a stale view
        (``chain_stale``) instead of a silently frozen one."""
        unexpected = not isinstance(exc, (*transient_errors(), ReorgRace))
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.last_reason = exc.reason if isinstance(exc, DerotError) else ("follower_error" if unexpected else None)
        delay = min(self.backoff_max, self.backoff_initial * 2 ** (self.failures - 1))
        if unexpected:
            log.error("chain follower: unexpected %s; retrying in %.1fs", self.last_error, delay, exc_info=exc)
        else:
            log.warning("chain follower: %s; retrying in %.1fs", self.last_error, delay)
        return delay

    def _succeeded(self) -> None:
        if self.failures:
            log.info("chain follower: RPC back after %d failed polls", self.failures)
        self.failures = 0
        self.last_error = None
        self.last_reason = None

    @staticmethod
    def _pause(seconds: float, stop) -> None:
        if stop is None:
            time.sleep(seconds)
        else:
            stop.wait(seconds)

    def run(self, *, stop=None) -> Iterator[Update]:
        """Blocking generator of updates; retries with backoff on RPC failures. ``stop`` is an optional
        ``threading.Event``."""
        while stop is None or not stop.is_set():
            try:
                update = self.poll()
            except Exception as exc:  # RPC failures, and a bug handling one range: retried from the cursor
                self._pause(self._failed(exc), stop)
                continue
            self._succeeded()
            if update is not None:
                yield update
                if self.behind:
                    continue  # catching up: no pause
            self._pause(self.poll_interval, stop)

    async def updates(self) -> AsyncIterator[Update]:
        """Async generator of updates: each poll runs in a worker thread (the RPC client is blocking)."""
        while True:
            try:
                update = await asyncio.to_thread(self.poll)
            except Exception as exc:  # RPC failures, and a bug handling one range: retried from the cursor
                await asyncio.sleep(self._failed(exc))
                continue
            self._succeeded()
            if update is not None:
                yield update
                if self.behind:
                    continue  # catching up: no pause
            await asyncio.sleep(self.poll_interval)
