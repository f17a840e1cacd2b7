"""Typed wrapper for ``DerotRegistry``, over web3's ``Web3`` or derot's own :class:`~derot.chain.client.ChainClient`.

Reads accept ``block`` (a number, a block hash as bytes/hex, or ``"latest"``): reading several values at
one block *hash* gives a consistent view even while the chain reorganises. Writes take the signing
``account`` (an eth_account ``LocalAccount``) and return the receipt; a revert raises
:class:`derot.chain.tx.TransactionFailed` naming the contract error.

Who calls what:
- node operators: :meth:`register_node`, :meth:`update_node`, :meth:`report_epoch`;
- app owners: :meth:`register_app` and the ``set_app_*`` / :meth:`raise_key_version` methods;
- governance and the council: :meth:`apply` with a typed action from :mod:`derot.chain.governance`
  (through the Governor for the owner, directly for the council or during deployment bootstrap);
- relying parties: :meth:`verify_certificate`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable

from eth_utils import to_checksum_address
from hexbytes import HexBytes

from derot.attest.snapshot import AppRecord, PlatformRule
from derot.certs.reasons import Reason
from derot.chain import tee_policy
from derot.chain.abi import AbiDecodeError, Call, ContractAbi
from derot.chain.artifacts import load_artifact
from derot.chain.exclusions import EpochExclusion, reason_of
from derot.chain.tx import send
from derot.chain.types import EpochPhase, EpochRecord, NodeRecord, NodeStatus, RevocationKind
from derot.constants import Platform, TcbStatus
from derot.crypto.bls import G1, G2
from derot.errors import DerotError

log = logging.getLogger("derot.chain.registry")

PAGE = 100  # items per paged view call
APP_PAGE = 16  # apps per page: 16 × MAX_APP_MEASUREMENTS (64) pairs stays far below any eth_call gas cap
#: the gas limit under every reportEpoch: members report at about the same time, so a report's estimate is
#: often made before another member's report lands, against a state where it does not activate the epoch;
#: mined after it, it is the t-th agreeing report and activates (KeyStore deployment, epoch storage), which
#: the estimate did not cover. An activating DKG report used 258,493 gas on anvil (a non-activating one ~70,000);
#: the floor leaves about twice that, and unused gas is not charged (tests/chain/test_epochs.py, the racing test).
REPORT_GAS_FLOOR = 500_000


class ChainReadError(DerotError, RuntimeError):
    """A view call failed: the block is unknown or no longer canonical, or the node answered an error."""

    reason = "chain_read_failed"


def block_param(block):
    """JSON-RPC block parameter: a hash (bytes or 0x-hex) becomes EIP-1898 ``{"blockHash", "requireCanonical"}``
    so the read fails instead of silently using another fork; ints become hex quantities."""
    if isinstance(block, (bytes, bytearray, HexBytes)) and len(block) == 32:
        return {"blockHash": "0x" + bytes(block).hex(), "requireCanonical": True}
    if isinstance(block, str) and block.startswith("0x") and len(block) == 66:
        return {"blockHash": block, "requireCanonical": True}
    if isinstance(block, int):
        return hex(block)
    return block


def _platform(value: int):
    try:
        return Platform(value)
    except ValueError:
        return int(value)


def _tcb(value: int):
    try:
        return TcbStatus(value)
    except ValueError:
        return int(value)


@functools.cache
def registry_abi() -> ContractAbi:
    """The DerotRegistry ABI (one parsed copy per process)."""
    return ContractAbi(load_artifact("DerotRegistry")["abi"])


class Registry:
    """A deployed DerotRegistry. ``w3`` is web3's ``Web3`` or a ChainClient: every read and write goes through
    ``w3.provider.make_request`` and the ``w3.eth`` subset ChainClient has. ``functions.name(*args)`` builds
    a :class:`~derot.chain.abi.Call`; :attr:`contract` (web3's contract object) needs a ``Web3``."""

    def __init__(self, w3, address: str) -> None:
        self.w3 = w3
        self.address = to_checksum_address(address)
        self.abi = registry_abi()
        self.functions = self.abi.functions

    @functools.cached_property
    def contract(self):
        """web3's contract object (CLI and tests: estimate_gas, events); only with web3's ``Web3``."""
        return self.w3.eth.contract(address=self.address, abi=load_artifact("DerotRegistry")["abi"])

    def _call(self, fn: Call, block="latest"):
        """eth_call of a view function at ``block`` (number, hash or tag), decoded with the ABI."""
        reply = self.w3.provider.make_request("eth_call", [{"to": self.address, "data": fn.data_hex},
                                                           block_param(block)])
        return self._decode(fn, block, reply)

    def _send(self, account, fn: Call, **kwargs):
        """Sign and send ``fn`` from ``account``; returns the receipt (see derot.chain.tx.send)."""
        return send(self.w3, account, {"to": self.address, "data": fn.data_hex}, what=fn.name, **kwargs)

    def _call_many(self, fns, block="latest", *, errors: bool = False) -> list:
        """:meth:`_call` of every bound view in ``fns`` at ``block``, as JSON-RPC batches when the provider
        can (:meth:`derot.chain.quorum.QuorumProvider.make_batch`: each answer still voted on by the quorum),
        else one by one. ``errors``: a call the node answers with an error gives its ChainReadError in the
        list instead of raising."""
        fns = list(fns)
        calls = [("eth_call", [{"to": self.address, "data": fn.data_hex}, block_param(block)]) for fn in fns]
        batch = getattr(self.w3.provider, "make_batch", None)
        replies = batch(calls) if batch else [self.w3.provider.make_request(m, p) for m, p in calls]
        out = []
        for fn, reply in zip(fns, replies):
            try:
                out.append(self._decode(fn, block, reply))
            except ChainReadError as exc:
                if not errors:
                    raise
                out.append(exc)
        return out

    def _decode(self, fn: Call, block, reply):
        if "error" in reply:
            raise ChainReadError(f"{fn.name} at {block!r}: {reply['error'].get('message', reply['error'])}")
        result = reply.get("result")
        if not isinstance(result, str):
            raise ChainReadError(f"{fn.name} at {block!r}: no result")
        try:
            return self.abi.decode_output(fn, bytes.fromhex(result.removeprefix("0x")))
        except Exception as exc:  # noqa: BLE001 - any undecodable answer is a failed read, never a crash
            raise ChainReadError(f"{fn.name} at {block!r}: undecodable answer ({type(exc).__name__})") from None

    # ---------------------------------------------------------------------------------------------
    # reads: governance

    def owner(self, block="latest") -> str:
        return to_checksum_address(self._call(self.functions.owner(), block))

    def security_council(self, block="latest") -> str | None:
        council = self._call(self.functions.securityCouncil(), block)
        return None if int(council, 16) == 0 else to_checksum_address(council)

    # reads: nodes ---------------------------------------------------------------------------------
    def node(self, operator: str, block="latest") -> NodeRecord:
        raw = self._call(self.functions.getNode(to_checksum_address(operator)), block)
        return _node_record(to_checksum_address(operator), raw)

    def nodes(self, block="latest") -> dict[str, NodeRecord]:
        count = self._call(self.functions.nodeCount(), block)
        out: dict[str, NodeRecord] = {}
        for start in range(0, count, PAGE):
            ops, recs = self._call(self.functions.nodes(start, PAGE), block)
            out.update((to_checksum_address(op), _node_record(to_checksum_address(op), rec)) for op, rec in zip(ops, recs))
        return out

    # reads: epochs --------------------------------------------------------------------------------
    def current_epoch(self, block="latest") -> int:
        return self._call(self.functions.currentEpoch(), block)

    def pending_epoch(self, block="latest") -> int:
        return self._call(self.functions.pendingEpoch(), block)

    def epoch_count(self, block="latest") -> int:
        return self._call(self.functions.epochCount(), block)

    def epoch(self, epoch_id: int, block="latest") -> EpochRecord:
        v = self._call(self.functions.getEpoch(epoch_id), block)
        keys = self._call(self.functions.epochKeys(epoch_id), block) if int(v[6], 16) != 0 else None
        return self.epoch_record(epoch_id, v, keys)

    @staticmethod
    def epoch_record(epoch_id: int, v, keys) -> EpochRecord:
        """An EpochRecord from a ``getEpoch`` answer and, if it has a key store, its ``epochKeys`` answer."""
        (_id, phase, threshold, previous, started, activated, store, transcript, members) = v
        group_key_sig = group_key_kd = None
        has_keys = int(store, 16) != 0
        if has_keys:
            raw_sig, raw_kd = keys
            group_key_sig, group_key_kd = G2.from_eip2537(raw_sig), G2.from_eip2537(raw_kd)
        return EpochRecord(
            id=epoch_id,
            phase=EpochPhase(phase),
            threshold=threshold,
            previous=previous,
            started_block=started,
            activated_block=activated,
            key_store=to_checksum_address(store) if has_keys else None,
            transcript_hash=bytes(transcript),
            members=tuple(to_checksum_address(m) for m in members),
            group_key_sig=group_key_sig,
            group_key_kd=group_key_kd,
        )

    def epochs(self, block="latest") -> dict[int, EpochRecord]:
        count = self.epoch_count(block)
        return {i: self.epoch(i, block) for i in range(1, count + 1)}

    def report_of(self, epoch_id: int, member: str, block="latest") -> bytes:
        return bytes(self._call(self.functions.reportOf(epoch_id, to_checksum_address(member)), block))

    def report_count(self, epoch_id: int, report_hash: bytes, block="latest") -> int:
        return self._call(self.functions.reportCount(epoch_id, report_hash), block)

    def epoch_exclusions(self, epoch: EpochRecord, to_block="latest") -> list[EpochExclusion]:
        """Every member's reported exclusions for ``epoch`` (``EpochExclusions`` logs from its start block),
        in chain order; a member that reported twice appears twice."""
        topics = ["0x" + self.abi.event_topic("EpochExclusions").hex(), "0x" + epoch.id.to_bytes(32, "big").hex()]
        logs = self.w3.eth.get_logs({"address": self.address, "fromBlock": epoch.started_block,
                                     "toBlock": to_block, "topics": topics})
        out = []
        for entry in sorted(logs, key=lambda e: (e["blockNumber"], e["logIndex"])):
            try:
                decoded = self.abi.decode_log([bytes(t) for t in entry["topics"]], bytes(entry["data"]))
            except AbiDecodeError as exc:
                raise ChainReadError(f"EpochExclusions of epoch {epoch.id}: {exc}") from None
            if decoded is None or decoded.name != "EpochExclusions" or decoded.args["epoch"] != epoch.id:
                raise ChainReadError(f"eth_getLogs answered a log that is not EpochExclusions({epoch.id})")
            args = decoded.args
            excluded = {int(i): reason_of(r) for i, r in zip(args["excluded"], args["reasons"])}
            out.append(EpochExclusion(epoch=epoch.id, reporter=args["member"], block_number=entry["blockNumber"],
                                      excluded=excluded))
        return out

    # reads: apps ----------------------------------------------------------------------------------
    def app(self, app_id: bytes, block="latest") -> AppRecord | None:
        """The app, or None if ``app_id`` is not registered."""
        return _app_record(self._call(self.functions.getApp(app_id), block))

    def apps(self, block="latest") -> dict[bytes, AppRecord]:
        return self.apps_report(block)[0]

    def apps_report(self, block="latest") -> tuple[dict[bytes, AppRecord], frozenset[bytes]]:
        """Every app, page by page, and the ids of apps that could not be read. A page the node refuses
        (e.g. over its eth_call gas cap) is read app by app; an app that still fails is skipped and
        reported, never a reason to stop. RPC failures and disagreements still raise."""
        count = self._call(self.functions.appCount(), block)
        out: dict[bytes, AppRecord] = {}
        skipped: set[bytes] = set()
        for start in range(0, count, APP_PAGE):
            try:
                page = [_app_record(raw) for raw in self._call(self.functions.apps(start, APP_PAGE), block)]
            except ChainReadError as exc:
                if exc.reason in ("chain_unverified", "chain_unavailable"):
                    raise
                page, unreadable = self.app_page_by_ids(start, block)
                skipped |= unreadable
            out.update((record.app_id, record) for record in page if record is not None)
        return out, frozenset(skipped)

    def app_page_by_ids(self, start: int, block) -> tuple[list[AppRecord], set[bytes]]:
        """The apps of page ``start`` read one by one (when the page view itself fails), and the ids of the
        apps that cannot be read even alone (they are skipped, never guessed)."""
        page: list[AppRecord] = []
        skipped: set[bytes] = set()
        for app_id in self._call(self.functions.appIds(start, APP_PAGE), block):
            record = self.app_or_skip(bytes(app_id), block)
            if record is None:
                skipped.add(bytes(app_id))
            else:
                page.append(record)
        return page, skipped

    def app_or_skip(self, app_id: bytes, block="latest") -> AppRecord | None:
        """The app, or None (logged) if the node answers an error for it; RPC failures still raise."""
        try:
            return self.app(app_id, block)
        except ChainReadError as exc:
            if exc.reason in ("chain_unverified", "chain_unavailable"):
                raise
            log.warning("app unreadable, skipped", extra={"app_id": app_id.hex(), "error": str(exc)})
            return None

    def app_id_of(self, owner: str, salt: bytes) -> bytes:
        return bytes(self._call(self.functions.appIdOf(to_checksum_address(owner), salt)))

    def is_app_allowed(self, app_id: bytes, platform: int, measurement: bytes, block="latest") -> bool:
        """The registry's own answer (consults the app's delegate contract if it has one)."""
        return self._call(self.functions.isAppAllowed(app_id, int(platform), measurement), block)

    # reads: platforms, revocations, node measurements ---------------------------------------------
    def platform_rules(self, block="latest") -> dict:
        ids, rules = self._call(self.functions.platformRules(), block)
        return {_platform(p): PlatformRule(enabled=r[0], tcb_floor=_tcb(r[1])) for p, r in zip(ids, rules)}

    def revocations(self, kind: RevocationKind, block="latest") -> frozenset[bytes]:
        count = self._call(self.functions.revocationCount(int(kind)), block)
        out: set[bytes] = set()
        for start in range(0, count, PAGE):
            out.update(bytes(x) for x in self._call(self.functions.revocationsPage(int(kind), start, PAGE), block))
        return frozenset(out)

    def snp_policy(self, block="latest") -> dict:
        """Governance's SEV-SNP policy as ``GovernanceSnapshot`` fields: snp_max_vmpl, snp_guest_policy, snp_min_tcb."""
        max_vmpl, mask, value, min_tcb = self._call(self.functions.snpPolicy(), block)
        return {"snp_max_vmpl": max_vmpl, "snp_guest_policy": tee_policy.decode_guest_policy(mask, value),
                "snp_min_tcb": tee_policy.decode_min_tcb(min_tcb)}

    def is_revoked(self, kind: RevocationKind, ident: bytes, block="latest") -> bool:
        return self._call(self.functions.isRevoked(int(kind), ident), block)

    def node_measurements(self, block="latest") -> frozenset[tuple]:
        count = self._call(self.functions.nodeMeasurementCount(), block)
        out: set[tuple] = set()
        for start in range(0, count, PAGE):
            platforms, digests = self._call(self.functions.nodeMeasurementsPage(start, PAGE), block)
            out.update((_platform(p), bytes(d)) for p, d in zip(platforms, digests))
        return frozenset(out)

    # reads: certificates --------------------------------------------------------------------------
    def verify_certificate(self, cert: bytes, sig: bytes | G1, *, at: int | None = None, block="latest") -> Reason:
        """On-chain verification (eth_call). ``sig`` is a G1 point or its 128-byte EIP-2537 form;
        ``at`` evaluates the validity window at that Unix time instead of the block's timestamp."""
        sig_bytes = sig.to_eip2537() if isinstance(sig, G1) else bytes(sig)
        if at is None:
            _ok, reason = self._call(self.functions.verifyCertificate(cert, sig_bytes), block)
        else:
            reason = self._call(self.functions.verifyCertificateAt(cert, sig_bytes, at), block)
        return Reason(reason)

    def hash_to_g1(self, digest: bytes) -> bytes:
        """The contract's RFC 9380 hash of a 32-byte digest with DST_CERT (EIP-2537 form)."""
        return bytes(self._call(self.functions.hashToG1(digest)))

    # ---------------------------------------------------------------------------------------------
    # writes: node operators

    def register_node(
        self,
        account,
        *,
        identity_key: bytes,
        x25519_key: bytes,
        endpoint: str,
        tls_key_hash: bytes,
        evidence_hash: bytes = bytes(32),
    ):
        fn = self.functions.registerNode(identity_key, x25519_key, endpoint, tls_key_hash, evidence_hash)
        return self._send(account, fn)

    def update_node(self, account, *, endpoint: str, tls_key_hash: bytes, evidence_hash: bytes = bytes(32)):
        return self._send(account, self.functions.updateNode(endpoint, tls_key_hash, evidence_hash))

    def report_epoch(self, account, epoch_id: int, group_key_sig: G2, group_key_kd: G2, transcript_hash: bytes,
                     exclusions: tuple[list[int], list[int]] = ([], [])):
        """A committee member reports its DKG/reshare outcome (keys are sent in EIP-2537 form) and, as its own
        view, the members its run excluded with their reason codes (``derot.chain.exclusions.encode``)."""
        indices, reasons = exclusions
        fn = self.functions.reportEpoch(epoch_id, group_key_sig.to_eip2537(), group_key_kd.to_eip2537(),
                                                 transcript_hash, list(indices), list(reasons))
        return self._send(account, fn, min_gas=REPORT_GAS_FLOOR)

    # writes: app owners ---------------------------------------------------------------------------
    def register_app(self, account, salt: bytes) -> bytes:
        """Registers an app owned by ``account``; returns its appId (keccak256(owner, salt))."""
        self._send(account, self.functions.registerApp(salt))
        return self.app_id_of(account.address, salt)

    def set_app_measurement(self, account, app_id: bytes, platform: int, measurement: bytes, allowed: bool = True):
        fn = self.functions.setAppMeasurement(app_id, int(platform), measurement, allowed)
        return self._send(account, fn)

    def raise_key_version(self, account, app_id: bytes, key_version: int):
        return self._send(account, self.functions.raiseKeyVersion(app_id, key_version))

    def set_app_allow_debug(self, account, app_id: bytes, allow: bool):
        return self._send(account, self.functions.setAppAllowDebug(app_id, allow))

    def set_app_tee_exceptions(self, account, app_id: bytes, waivers):
        """Waives the named TEE checks (``derot.chain.tee_policy.TEE_EXCEPTION_BITS``) for the app; replaces the set."""
        fn = self.functions.setAppTeeExceptions(app_id, tee_policy.encode_exceptions(waivers))
        return self._send(account, fn)

    def set_app_gpu_policy(self, account, app_id: bytes, models, required: bool):
        """The GPU models (``GpuModel`` names) the app accepts (empty: any) and whether it needs a GPU."""
        fn = self.functions.setAppGpuPolicy(app_id, tee_policy.encode_gpu_models(models), bool(required))
        return self._send(account, fn)

    def set_app_delegate(self, account, app_id: bytes, delegate: str | None):
        target = to_checksum_address(delegate) if delegate else "0x" + "00" * 20
        return self._send(account, self.functions.setAppDelegate(app_id, target))

    def transfer_app_ownership(self, account, app_id: bytes, new_owner: str | None):
        """Step one: names the next owner (None cancels); they take over with :meth:`accept_app_ownership`."""
        target = to_checksum_address(new_owner) if new_owner else "0x" + "00" * 20
        return self._send(account, self.functions.transferAppOwnership(app_id, target))

    def accept_app_ownership(self, account, app_id: bytes):
        return self._send(account, self.functions.acceptAppOwnership(app_id))

    def pending_app_owner(self, app_id: bytes, block="latest") -> str | None:
        pending = self._call(self.functions.pendingAppOwner(app_id), block)
        return None if int(pending, 16) == 0 else to_checksum_address(pending)

    def expire_epoch(self, account):
        """Anyone: abort the pending epoch once its timeout has passed."""
        return self._send(account, self.functions.expireEpoch())

    def epoch_timeout(self, block="latest") -> int:
        return self._call(self.functions.epochTimeout(), block)

    # writes: owner / council actions --------------------------------------------------------------
    def apply(self, account, actions: Iterable):
        """Send governance actions directly from ``account`` (the owner during bootstrap, or the council
        for actions whose ``council_allowed`` is true). Returns the last receipt."""
        receipt = None
        for action in actions:
            target, data = action.encode(self)
            receipt = send(self.w3, account, {"to": target, "data": data}, what=action.summary())
        return receipt


def _node_record(operator: str, raw) -> NodeRecord:
    status, identity, x25519, tls_hash, evidence, endpoint = raw
    return NodeRecord(
        operator=operator,
        status=NodeStatus(status),
        identity_key=bytes(identity),
        x25519_key=bytes(x25519),
        endpoint=endpoint,
        tls_key_hash=bytes(tls_hash),
        evidence_hash=bytes(evidence),
    )


def _app_record(raw) -> AppRecord | None:
    (app_id, owner, key_version, frozen, allow_debug, tee_exceptions, gpu_models, gpu_required, delegate,
     platforms, measurements) = raw
    if int(owner, 16) == 0:
        return None
    return AppRecord(
        tee_exceptions=tee_policy.decode_exceptions(tee_exceptions),
        gpu_models=gpu_models,
        gpu_required=gpu_required,
        app_id=bytes(app_id),
        owner=to_checksum_address(owner),
        key_version=key_version,
        frozen=frozen,
        allow_debug=allow_debug,
        measurements=frozenset((_platform(p), bytes(m)) for p, m in zip(platforms, measurements)),
        delegate=None if int(delegate, 16) == 0 else to_checksum_address(delegate),
    )


class DelegateOracleAt:
    """``derot.attest.snapshot.DelegateOracle`` for one block: asks an app's delegate contract
    (``isAppAllowed``) with an eth_call pinned to ``block_hash``. A delegate that reverts, or is not a
    contract, answers "not allowed", exactly as ``DerotRegistry.isAppAllowed`` does."""

    _ABI = [
        {
            "type": "function",
            "name": "isAppAllowed",
            "stateMutability": "view",
            "inputs": [
                {"name": "appId", "type": "bytes32"},
                {"name": "platform", "type": "uint8"},
                {"name": "measurement", "type": "bytes32"},
            ],
            "outputs": [{"name": "allowed", "type": "bool"}],
        }
    ]

    def __init__(self, w3, block_hash: bytes) -> None:
        self.w3 = w3
        self.block_hash = bytes(block_hash)

    def is_app_allowed(self, app: AppRecord, platform, measurement: bytes) -> bool:
        if app.delegate is None:
            return (platform, bytes(measurement)) in app.measurements
        call = _delegate_abi().call("isAppAllowed", app.app_id, int(platform), bytes(measurement))
        reply = self.w3.provider.make_request("eth_call", [{"to": to_checksum_address(app.delegate),
                                                            "data": call.data_hex}, block_param(self.block_hash)])
        if "error" in reply:
            if reply["error"].get("code") == 3 or "revert" in str(reply["error"].get("message", "")).lower():
                return False
            raise ChainReadError(f"isAppAllowed at {self.block_hash.hex()}: {reply['error']}")
        raw = bytes.fromhex(reply["result"].removeprefix("0x"))
        if len(raw) != 32:
            return False
        return int.from_bytes(raw, "big") == 1


@functools.cache
def _delegate_abi() -> ContractAbi:
    return ContractAbi(DelegateOracleAt._ABI)
