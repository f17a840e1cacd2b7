"""k-of-m RPC endpoints behind one JSON-RPC provider: an answer counts only when ``quorum`` endpoints agree.

Every read the follower and the finality guard make is pinned to a block number or hash, so honest
endpoints give identical answers; an endpoint that has not reached the block yet answers null or an
error and simply does not vote. Rules (:meth:`QuorumProvider.make_request`):

- ``eth_blockNumber``: the ``quorum``-th highest answer, so at least ``quorum`` endpoints have that block
  (a frozen or lagging endpoint cannot hold the head back, a racing one cannot push it forward).
- block tags (``latest``, ``safe``, ``finalized``) in reads are resolved the same way to a number first.
  ``eth_getBlockByNumber`` of ``safe``/``finalized`` answered by every endpoint with the same verified block
  is that block (a vote on it by number would ask the same question again).
- every other read: the answers are grouped by a fingerprint of what they commit to (for blocks: the hash,
  after recomputing it from the header fields; for logs and receipts: their consensus fields; else the
  whole result). Exactly one group of at least ``quorum`` wins. Two successful answers that disagree
  with no single winner raise :class:`ChainUnverified` (reason ``chain_unverified``); too few answers
  return an endpoint's error or null (the block is not there yet) or raise :class:`ChainUnavailable`.
- transaction plumbing (nonce, gas price, receipts of own transactions, sending) is not a trust decision
  and goes to the endpoints in order; a raw transaction is sent to all of them.

Reads may go out as JSON-RPC batches (:meth:`QuorumProvider.make_batch`, at most ``BATCH_MAX`` calls per
HTTP request; :meth:`QuorumProvider.head_batch` adds the head to pinned reads): every call of a batch is voted
on exactly as if it had been sent alone, and a batch answer that is not one reply per call is that
endpoint's failure.

Every answer is untrusted: the body is size-capped (``max_reply_bytes``; an answer over it is dropped unread
and, when too few endpoints are left, :class:`AnswerTooLarge` tells the caller to ask for less) and
depth-checked before JSON parsing.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import certifi
import urllib3

from derot.chain.client import ChainClient
from derot.chain.headers import HeaderInvalid, verified_header
from derot.chain.registry import ChainReadError
from derot.errors import DerotError
from derot.untrusted import UntrustedInputError, json_loads

log = logging.getLogger("derot.chain.quorum")

MAX_REPLY_BYTES = 64 << 20
BATCH_MAX = 50  # calls per JSON-RPC batch (public providers cap batches at 50-1000)
TAGS = ("latest", "safe", "finalized", "pending", "earliest")
#: Methods whose answers legitimately differ between honest endpoints, or that send transactions.
PASS_THROUGH = frozenset({
    "eth_estimateGas", "eth_gasPrice", "eth_maxPriorityFeePerGas", "eth_feeHistory", "eth_blobBaseFee",
    "eth_getTransactionCount", "eth_getTransactionReceipt", "eth_getTransactionByHash", "eth_accounts",
    "eth_syncing", "web3_clientVersion", "net_version",
})
#: Read methods whose last parameter is a block (number, tag or EIP-1898 object).
_BLOCK_PARAM_LAST = frozenset({"eth_call", "eth_getCode", "eth_getBalance", "eth_getStorageAt", "eth_getProof"})
_LOG_FIELDS = ("address", "topics", "data", "blockNumber", "blockHash", "transactionHash", "logIndex",
               "transactionIndex")


class ChainUnverified(ChainReadError):
    """RPC endpoints disagree about the chain (or one answered a header that does not verify)."""

    reason = "chain_unverified"


class ChainUnavailable(ChainReadError):
    """Fewer than ``quorum`` endpoints answered."""

    reason = "chain_unavailable"


class ReplyTooLarge(UntrustedInputError):
    """One endpoint's answer is over MAX_REPLY_BYTES (it is dropped unread)."""


class AnswerTooLarge(ChainUnavailable):
    """Too few endpoints answered because answers were over MAX_REPLY_BYTES: ask for less (e.g. a shorter
    eth_getLogs range)."""

    reason = "rpc_answer_oversize"


def _norm_hex(value):
    return value.lower() if isinstance(value, str) else value


def _log_print(entry) -> tuple:
    if not isinstance(entry, dict):
        return ("?", json.dumps(entry, sort_keys=True))
    return tuple(
        tuple(_norm_hex(t) for t in entry.get(f) or ()) if f == "topics" else _norm_hex(entry.get(f))
        for f in _LOG_FIELDS
    )


def fingerprint(method: str, result) -> str:
    """What an answer commits to; equal fingerprints mean agreeing answers. Raises HeaderInvalid for a
    block whose header does not hash to its claimed hash."""
    if method in ("eth_getBlockByNumber", "eth_getBlockByHash"):
        return "block:" + verified_header(result).hash.hex()
    if method == "eth_getLogs" and isinstance(result, list):
        return "logs:" + repr(sorted(_log_print(e) for e in result))
    if method == "eth_getBlockReceipts" and isinstance(result, list):
        rows = []
        for r in result:
            if not isinstance(r, dict):
                rows.append(("?",))
                continue
            rows.append((_norm_hex(r.get("transactionHash")), _norm_hex(r.get("status")),
                         tuple(_log_print(e) for e in r.get("logs") or ())))
        return "receipts:" + repr(rows)
    if isinstance(result, str):
        return "v:" + result.lower()
    return "v:" + json.dumps(result, sort_keys=True)


class RpcTransportError(DerotError, OSError):
    """An RPC endpoint could not be reached, or answered with an HTTP error status (one endpoint's failure)."""

    reason = "rpc_transport"


_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def _pool_for(url: str, timeout: float) -> tuple[urllib3.PoolManager, str | None, str | None]:
    """A connection pool for ``url``, its proxy and its CA bundle, the environment read once, here: the proxy
    for ``url`` (HTTP(S)_PROXY, honouring NO_PROXY) and REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (else certifi's
    bundle, as requests uses). urllib3 directly, without requests' per-call preparation (which also re-read and
    decoded all of ``os.environ`` per call): 0.35 ms of CPU per call instead of 0.9 ms, on a node that polls
    every half second. ``.netrc`` credentials are not read (put an RPC key in the URL)."""
    scheme = urllib.parse.urlsplit(url).scheme
    proxies = urllib.request.getproxies_environment()
    if proxies and urllib.request.proxy_bypass_environment(urllib.parse.urlsplit(url).netloc, proxies):
        proxies = {}
    proxy = proxies.get(scheme) or proxies.get("all")
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
    options = dict(retries=False, timeout=urllib3.Timeout(connect=timeout, read=timeout), maxsize=10,
                   ca_certs=bundle, cert_reqs="CERT_REQUIRED")
    pool = urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
    return pool, proxy, bundle


class Endpoint:
    """One JSON-RPC endpoint over HTTP(S) with a bounded, depth-checked reply."""

    def __init__(self, url: str, timeout: float, max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        self.url = url
        self.timeout = timeout
        self.max_reply_bytes = max_reply_bytes
        self.pool, self.proxy, self.ca_bundle = _pool_for(url, timeout)
        self._id = 0
        self.posts = 0  # HTTP requests sent (a batch is one)
        self.calls = 0  # JSON-RPC calls sent (each item of a batch counts)

    def _post(self, body, what: str) -> bytes:
        """The raw answer to one POST, at most ``max_reply_bytes``; raises RpcTransportError (transport, HTTP
        status) or ReplyTooLarge."""
        try:
            response = self.pool.request("POST", self.url, body=json.dumps(body).encode(), headers=_HEADERS,
                                         preload_content=False, redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            raise RpcTransportError(f"{self.url}: {exc}") from None
        try:
            if not 200 <= response.status < 300:
                raise RpcTransportError(f"{self.url}: HTTP {response.status} {response.reason or ''}".rstrip())
            raw = response.read(self.max_reply_bytes + 1, decode_content=True)
        except urllib3.exceptions.HTTPError as exc:
            response.close()
            raise RpcTransportError(f"{self.url}: {exc}") from None
        except BaseException:
            response.close()
            raise
        if len(raw) > self.max_reply_bytes:
            response.close()  # the rest is never read: the connection cannot be reused
            raise ReplyTooLarge(f"{self.url}: {what} reply over {self.max_reply_bytes} bytes")
        response.release_conn()
        return raw

    def call(self, method: str, params) -> dict:
        """The JSON-RPC reply object (with ``result`` or ``error``); raises OSError (RpcTransportError) or
        UntrustedInputError on transport failure or a malformed reply."""
        self._id += 1
        self.posts += 1
        self.calls += 1
        body = {"jsonrpc": "2.0", "id": self._id, "method": method, "params": list(params or ())}
        raw = self._post(body, method)
        reply = json_loads(raw, what=f"{method} reply", max_bytes=self.max_reply_bytes)
        if not isinstance(reply, dict) or ("result" not in reply and "error" not in reply):
            raise UntrustedInputError(f"{self.url}: {method} reply is not a JSON-RPC response")
        return reply

    def call_batch(self, calls: Sequence[tuple[str, list]]) -> list[dict]:
        """One HTTP request carrying ``calls`` (a JSON-RPC batch); the replies in the order of ``calls``.
        Raises like :meth:`call`, and UntrustedInputError when the answer is not one reply per call."""
        first = self._id + 1
        body = [{"jsonrpc": "2.0", "id": first + i, "method": m, "params": list(p or ())}
                for i, (m, p) in enumerate(calls)]
        self._id += len(calls)
        self.posts += 1
        self.calls += len(calls)
        raw = self._post(body, "batch")
        replies = json_loads(raw, what="batch reply", max_bytes=self.max_reply_bytes)
        if not isinstance(replies, list) or len(replies) != len(calls):
            raise UntrustedInputError(f"{self.url}: a batch of {len(calls)} calls answered "
                                      f"{len(replies) if isinstance(replies, list) else 'no list'}")
        by_id = {r.get("id"): r for r in replies if isinstance(r, dict) and ("result" in r or "error" in r)}
        if sorted(k for k in by_id if isinstance(k, int)) != list(range(first, first + len(calls))):
            raise UntrustedInputError(f"{self.url}: batch replies do not match the calls one to one")
        return [by_id[first + i] for i in range(len(calls))]


class QuorumProvider:
    """A JSON-RPC provider over ``urls`` that needs ``quorum`` agreeing endpoints per read (see module doc)."""

    def __init__(self, urls: str | Sequence[str], quorum: int = 1, *, timeout: float = 5.0,
                 max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        urls = list(dict.fromkeys([urls] if isinstance(urls, str) else urls))
        if not urls or not 1 <= quorum <= len(urls):
            raise ValueError(f"need 1 <= quorum <= number of distinct RPC URLs, got {quorum} of {len(urls)}")
        self.endpoints = [Endpoint(u, timeout, max_reply_bytes) for u in urls]
        self.quorum = quorum
        self._pool = ThreadPoolExecutor(max_workers=len(urls), thread_name_prefix="rpc") if len(urls) > 1 else None
        self.disagreements = 0  # answers outvoted or refused as unverified (for status and metrics)

    def __repr__(self) -> str:
        return f"QuorumProvider({self.quorum} of {len(self.endpoints)})"

    def is_connected(self, show_traceback: bool = False) -> bool:
        try:
            self.make_request("eth_chainId", [])
            return True
        except Exception:
            if show_traceback:
                raise
            return False

    # ---------------------------------------------------------------------------------------------
    def _ask_all(self, method: str, params) -> list[tuple[Endpoint, dict | Exception]]:
        def ask(endpoint: Endpoint):
            try:
                return endpoint, endpoint.call(method, params)
            except (OSError, UntrustedInputError) as exc:
                return endpoint, exc

        if self._pool is None:
            return [ask(self.endpoints[0])]
        return list(self._pool.map(ask, self.endpoints))

    def make_request(self, method, params) -> dict:
        params = list(params or ())
        if method in PASS_THROUGH or method.startswith(("anvil_", "evm_", "hardhat_")):
            return self._first(method, params)
        if method == "eth_sendRawTransaction":
            return self._first(method, params, every=True)
        if method == "eth_blockNumber":
            return {"jsonrpc": "2.0", "id": 0, "result": hex(self._head())}
        if method == "eth_getBlockByNumber" and params[:1] in (["safe"], ["finalized"]) and params[1:2] != [True]:
            number, unanimous = self._tag_read(params[0])
            if unanimous is not None:
                return unanimous
            params[0] = hex(number)
        params = self._resolve_tags(method, params)
        return self._agreed(method, params)

    def _first(self, method: str, params, *, every: bool = False) -> dict:
        """The first endpoint's reply that is not a transport failure (``every``: send to all)."""
        errors = []
        answers = self._ask_all(method, params) if every else None
        for i, endpoint in enumerate(self.endpoints):
            reply = answers[i][1] if answers else self._try(endpoint, method, params)
            if isinstance(reply, Exception):
                errors.append(f"{endpoint.url}: {reply}")
                continue
            if every and "error" in reply and i + 1 < len(self.endpoints):
                errors.append(f"{endpoint.url}: {reply['error']}")
                continue
            return reply
        raise ChainUnavailable(f"{method}: no endpoint answered ({'; '.join(errors)})")

    @staticmethod
    def _try(endpoint: Endpoint, method: str, params):
        try:
            return endpoint.call(method, params)
        except (OSError, UntrustedInputError) as exc:
            return exc

    def _head(self) -> int:
        return self._head_of(self._ask_all("eth_blockNumber", []))

    def _head_of(self, answers) -> int:
        """The ``quorum``-th highest of the eth_blockNumber (endpoint, reply or exception) ``answers``."""
        heads, failures = [], []
        for endpoint, reply in answers:
            try:
                if isinstance(reply, Exception):
                    raise reply
                heads.append(int(reply["result"], 16))
            except Exception as exc:  # noqa: BLE001 - any malformed or failed answer is a non-vote
                failures.append(f"{endpoint.url}: {type(exc).__name__}: {exc}")
        if len(heads) < self.quorum:
            raise ChainUnavailable(f"eth_blockNumber: {len(heads)} of {len(self.endpoints)} endpoints answered, "
                                   f"need {self.quorum} ({'; '.join(failures)})")
        return sorted(heads, reverse=True)[self.quorum - 1]

    def _tag_number(self, tag: str) -> int:
        """A block tag resolved to the highest number that ``quorum`` endpoints have reached."""
        return self._tag_read(tag)[0]

    def _tag_read(self, tag: str) -> tuple[int, dict | None]:
        """:meth:`_tag_number`, and the tag's block reply when every endpoint answered the same verified block
        (then asking for that number again would only repeat the vote just taken)."""
        if tag == "latest":
            return self._head(), None
        if tag == "earliest":
            return 0, None
        numbers, hashes, agreed = [], set(), None
        for _endpoint, reply in self._ask_all("eth_getBlockByNumber", [tag, False]):
            if isinstance(reply, dict) and isinstance(reply.get("result"), dict):
                try:
                    header = verified_header(reply["result"])
                except HeaderInvalid:
                    self.disagreements += 1
                    continue
                numbers.append(header.number)
                hashes.add(header.hash)
                agreed = agreed or reply
        if len(numbers) < self.quorum:
            raise ChainUnavailable(f"block tag {tag!r}: {len(numbers)} endpoints answered, need {self.quorum}")
        unanimous = len(numbers) == len(self.endpoints) and len(hashes) == 1
        return sorted(numbers, reverse=True)[self.quorum - 1], agreed if unanimous else None

    def _resolve(self, value):
        if isinstance(value, str) and value in TAGS:
            return hex(self._tag_number("latest" if value == "pending" else value))
        return value

    def _resolve_tags(self, method: str, params: list) -> list:
        if method == "eth_getBlockByNumber" and params:
            params[0] = self._resolve(params[0])
        elif method in _BLOCK_PARAM_LAST and params:
            params[-1] = self._resolve(params[-1])
        elif method == "eth_getLogs" and params and isinstance(params[0], dict):
            params[0] = {k: self._resolve(v) if k in ("fromBlock", "toBlock") else v for k, v in params[0].items()}
        return params

    def make_batch(self, calls: Sequence[tuple[str, list]]) -> list[dict]:
        """Replies to read ``calls`` (method, params), each voted on exactly like :meth:`make_request`, sent
        as JSON-RPC batches of at most ``BATCH_MAX`` calls (one HTTP request per endpoint and batch)."""
        calls = [(m, self._resolve_tags(m, list(p or ()))) for m, p in calls]
        _only_reads(calls)
        out: list[dict] = []
        for start in range(0, len(calls), BATCH_MAX):
            chunk = calls[start:start + BATCH_MAX]
            answers = self._ask_all_batch(chunk)
            for i, (method, _params) in enumerate(chunk):
                out.append(self._vote(method, [(e, r if isinstance(r, Exception) else r[i]) for e, r in answers]))
        return out

    def head_batch(self, calls: Sequence[tuple[str, list]]) -> tuple[int, list[dict]]:
        """The chain head, voted exactly as ``eth_blockNumber`` is, and the replies to read ``calls`` pinned
        to block numbers or hashes (no tags: resolving one would cost a round trip), each voted on as in
        :meth:`make_batch`; all in one HTTP request per endpoint. A failed batch is that endpoint's non-vote
        on the head and on every call."""
        calls = [(m, list(p or ())) for m, p in calls]
        _only_reads(calls)
        if any(_block_params(m, p) & set(TAGS) for m, p in calls):
            raise ValueError("head_batch takes reads pinned to a block number or hash")
        if len(calls) >= BATCH_MAX:
            raise ValueError(f"head_batch takes at most {BATCH_MAX - 1} calls")
        answers = self._ask_all_batch([("eth_blockNumber", []), *calls])

        def column(i: int):
            return [(e, r if isinstance(r, Exception) else r[i]) for e, r in answers]

        return self._head_of(column(0)), [self._vote(m, column(i + 1)) for i, (m, _p) in enumerate(calls)]

    def _ask_all_batch(self, calls) -> list[tuple[Endpoint, list[dict] | Exception]]:
        def ask(endpoint: Endpoint):
            try:
                return endpoint, endpoint.call_batch(calls)
            except (OSError, UntrustedInputError) as exc:
                return endpoint, exc

        if self._pool is None:
            return [ask(self.endpoints[0])]
        return list(self._pool.map(ask, self.endpoints))

    def _agreed(self, method: str, params) -> dict:
        return self._vote(method, self._ask_all(method, params))

    def _vote(self, method: str, answers) -> dict:
        """The reply ``quorum`` endpoints agree on, from (endpoint, reply or exception) pairs (module doc)."""
        groups: dict[str, list[dict]] = {}
        missing: list[dict] = []  # error or null replies: this endpoint does not vote
        failures: list[str] = []
        for endpoint, reply in answers:
            if isinstance(reply, Exception):
                failures.append(f"{endpoint.url}: {type(reply).__name__}: {reply}")
                continue
            if "error" in reply or reply.get("result") is None:
                missing.append(reply)
                continue
            try:
                key = fingerprint(method, reply["result"])
            except HeaderInvalid as exc:
                key = f"invalid:{endpoint.url}"
                log.warning("RPC endpoint answered an invalid header", extra={"endpoint": endpoint.url,
                                                                               "error": str(exc)})
            groups.setdefault(key, []).append(reply)
        winners = [g for k, g in groups.items() if len(g) >= self.quorum and not k.startswith("invalid:")]
        if len(groups) > 1:
            self.disagreements += 1
            log.warning("RPC endpoints disagree", extra={"method": method, "answers": len(groups)})
        if len(winners) == 1:
            return winners[0][0]
        answered = sum(len(g) for g in groups.values())
        if winners or (len(groups) > 1 and answered >= self.quorum):
            raise ChainUnverified(f"{method}: RPC endpoints disagree ({len(groups)} different answers, "
                                  f"need {self.quorum} agreeing)")
        if groups and all(k.startswith("invalid:") for k in groups):
            raise ChainUnverified(f"{method}: the only answer has a header that does not verify")
        if missing:
            return missing[0]
        if any(isinstance(r, ReplyTooLarge) for _e, r in answers):
            raise AnswerTooLarge(f"{method}: answers too large ({'; '.join(failures)})")
        raise ChainUnavailable(f"{method}: {answered} of {len(self.endpoints)} endpoints answered, need "
                               f"{self.quorum} ({'; '.join(failures)})")


def _block_params(method: str, params: list) -> set:
    """The string block parameters of a read (numbers, hashes or tags)."""
    if method == "eth_getBlockByNumber" and params:
        values = [params[0]]
    elif method in _BLOCK_PARAM_LAST and params:
        values = [params[-1]]
    elif method == "eth_getLogs" and params and isinstance(params[0], dict):
        values = [params[0].get("fromBlock"), params[0].get("toBlock")]
    else:
        values = []
    return {v for v in values if isinstance(v, str)}


def _only_reads(calls) -> None:
    if any(m in PASS_THROUGH or m in ("eth_sendRawTransaction", "eth_blockNumber") for m, _ in calls):
        raise ValueError("a batch is for pinned reads only")


def connect(urls: str | Sequence[str], quorum: int = 1, *, timeout: float = 5.0) -> ChainClient:
    """A chain client whose every read needs ``quorum`` of ``urls`` to agree."""
    return ChainClient(QuorumProvider(urls, quorum, timeout=timeout))
