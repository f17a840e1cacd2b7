"""The DKG / reshare state machine: messages in, messages out, phases ended by completeness or deadline.

Protocol (joint-Feldman, drand/kyber shape; docs/dkg.md, docs/design.md §3):

- **Announce.** Every recipient draws a fresh encryption key ``E_j = e_j·G1`` for this run and broadcasts
  it, signed by its Ed25519 identity key. Long-term identity keys never decrypt shares.
- **Deal.** Once it holds every recipient's key (or at the deadline), every dealer draws, per secret
  (sig, kd), a polynomial of degree t-1 (in a reshare with ``g(0)`` = its old share), and broadcasts the
  commitments, a deal key ``D_i`` with a proof of knowledge, and one box per recipient sealed to that
  recipient's signed epoch key (an empty box for a recipient whose key it does not hold). It then
  erases its polynomials and ``d_i``: the signed bundle is all it ever needs again.
- **Response.** Once it holds every dealer's bundle (or at the deadline), every recipient checks its
  shares and broadcasts one response: the bundles it holds (so peers fetch what they lack) and, for
  each bundle whose box holds no valid share, a self-verifying complaint (:mod:`.proofs`). A missing
  bundle is fetched, never complained about; no share is ever revealed.
- **Finish** (:mod:`.outcome`): a pure function of the held messages, the same at every member that holds
  the same messages.

Phases change only through :meth:`DkgSession._set_phase`, checked against :data:`TRANSITIONS`.

Delivery model (the transport's contract): the transport relays every message a session accepts for
the first time and syncs digests (:meth:`inventory`, :meth:`wanted`, :meth:`message`,
:meth:`fetch_hints`), so a message one honest member holds reaches every honest member before the
phase ends. Messages of every kind are accepted in every phase (evidence counts whenever it arrives);
a message that arrives after the finish changes :attr:`result` (members that converge on the same
messages converge on the same transcript; the registry anchors the one that counts). At most two
distinct bodies per (kind, sender) are kept: the second proves equivocation, a third is refused.

Messages a session outputs have already been applied to its own state; delivering them back to it
is refused as a duplicate. :meth:`DkgSession.receive` never changes state when it raises. A transport
that persists :meth:`snapshot` before sending what a call returned never deals twice after a restart.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from py_arkworks_bls12381 import G2Point

from derot.crypto.bls import G1, G2, R, PointDecodeError, random_scalar
from derot.crypto.dkg import outcome, proofs
from derot.crypto.dkg.outcome import HeldDeal
from derot.crypto.dkg.config import SECRETS, DkgConfig, DkgConfigError, Identity, KeyShares
from derot.crypto.dkg.errors import DkgFailed, DkgMessageRejected, PhaseTransitionError, RejectReason
from derot.crypto.dkg.messages import (
    EMPTY_BOX,
    SCALAR_SIZE,
    VERSION,
    AnnounceBody,
    Complaint,
    DealBody,
    Digest,
    Message,
    MessageKind,
    ResponseBody,
    ShareBox,
    share_aad,
    signed_payload,
    verify_signature,
)
from derot.crypto.dkg.result import DkgResult
from derot.crypto.hazmat import batch
from derot.crypto.hazmat.poly import Polynomial

#: At most this many distinct bodies per (kind, sender): the second proves equivocation.
MAX_BODIES = 2
SNAPSHOT_VERSION = 1


class Phase(str, Enum):
    ANNOUNCE = "announce"
    DEAL = "deal"
    RESPONSE = "response"
    FINISHED = "finished"


#: The one legal order (drand's isValidStateChange): every phase change is checked against it.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.ANNOUNCE: frozenset({Phase.DEAL}),
    Phase.DEAL: frozenset({Phase.RESPONSE}),
    Phase.RESPONSE: frozenset({Phase.FINISHED}),
    Phase.FINISHED: frozenset(),
}


@dataclass(frozen=True)
class Progress:
    """Counts for progress displays and metrics."""

    phase: Phase
    announces: int
    deals: int
    dealers: int
    responses: int
    recipients: int


class DkgSession:
    """One member's run of a DKG (``config.previous is None``) or a reshare.

    ``identity`` holds this node's identity keys; its seats are found by its public keys: it deals if
    it is in ``config.dealers`` and receives if it is in ``config.recipients`` (both in a fresh DKG).
    A reshare dealer must pass its ``old_shares``. ``refused`` names recipients this member will not seal
    shares to (e.g. their TEE evidence failed or never arrived), with the reason: their boxes stay empty.
    With ``checks_pending``, the member deals only after :meth:`set_refused` (the membership checks run
    during the announce phase); if they are still pending at the announce deadline it deals to nobody.
    """

    def __init__(self, config: DkgConfig, identity: Identity, old_shares: KeyShares | None = None, *,
                 refused: Mapping[int, str] | None = None, checks_pending: bool = False):
        self.config = config
        self._identity = identity
        self._session_id = config.session_id
        signing_public = identity.signing_public
        self.dealer_index = config.dealers.index_of(signing_public)
        self.recipient_index = config.recipients.index_of(signing_public)
        if self.dealer_index is None and self.recipient_index is None:
            raise DkgConfigError("this identity is not a member of the dealing or the receiving committee")
        if config.previous is not None and self.dealer_index is not None:
            if old_shares is None:
                raise DkgConfigError("a reshare dealer needs its old key shares")
            for s, name in enumerate(SECRETS):
                expected = config.previous.keys(s).share_keys[self.dealer_index]
                if G2.generator() * old_shares[s] != expected:
                    raise DkgConfigError(f"old {name} share does not match its public share key")
        elif old_shares is not None:
            raise DkgConfigError("old shares are only used by a reshare dealer")
        self._old_shares = old_shares
        self.refused: Mapping[int, str] = MappingProxyType(dict(refused or {}))
        self._checks_pending = checks_pending
        self.withheld_deal: str | None = None

        self._dealer_keys = {m.index: m.signing_key for m in config.dealers.members}
        self._recipient_keys = {m.index: m.signing_key for m in config.recipients.members}
        self._dealer_set = frozenset(self._dealer_keys)
        self._recipient_set = frozenset(self._recipient_keys)
        self._positions = {j: k for k, j in enumerate(config.recipients.indices)}
        self._t = config.committee.threshold

        self.phase = Phase.ANNOUNCE
        self._started = False
        self._epoch_secret: int | None = None
        self._epoch_key: G1 | None = None
        if self.recipient_index is not None:
            self._set_epoch_secret(random_scalar())
        self._messages: dict[Digest, Message] = {}
        self._inventory: tuple[Digest, ...] | None = None  # sorted self._messages; None after a change
        self._announces: dict[int, dict[bytes, G1]] = {}
        self._deals: dict[int, dict[bytes, HeldDeal]] = {}
        self._responses: dict[int, dict[bytes, ResponseBody]] = {}
        self._signed_keys: dict[tuple[int, bytes, bytes], bool] = {}  # cache of pure signature checks
        self._old_share_keys: dict[tuple[int, int], G2Point] = {}     # cache of public data
        self._outcome: DkgResult | DkgFailed | None = None
        self._verdicts: dict = {}  # complaint verdicts: pure, kept across recomputations

    # ---------------------------------------------------------------------------------------------
    # public interface

    @property
    def done(self) -> bool:
        return self.phase is Phase.FINISHED

    @property
    def result(self) -> DkgResult:
        """The result over the messages held now; raises :class:`DkgFailed` if they give no usable
        result, ``RuntimeError`` before the finish."""
        value = self._current_outcome()
        if isinstance(value, DkgFailed):
            raise value
        return value

    @property
    def failure(self) -> DkgFailed | None:
        if not self.done:
            return None
        value = self._current_outcome()
        return value if isinstance(value, DkgFailed) else None

    def own_messages(self) -> list[Message]:
        """The messages this member signed in this run (to send again after a restart: idempotent)."""
        mine = {MessageKind.DEAL: self.dealer_index}
        mine[MessageKind.ANNOUNCE] = mine[MessageKind.RESPONSE] = self.recipient_index
        return [m for d, m in sorted(self._messages.items()) if mine[d.kind] == d.sender]

    @property
    def has_dealt(self) -> bool:
        """This member holds a deal bundle it signed (it never deals again in this session)."""
        return self.dealer_index is not None and self._holds(MessageKind.DEAL, self.dealer_index)

    @property
    def progress(self) -> Progress:
        return Progress(self.phase, len(self._announces), len(self._deals), len(self._dealer_set),
                        len(self._responses), len(self._recipient_set))

    def start(self) -> list[Message]:
        """Begin the run; a recipient returns its key announcement (to broadcast)."""
        if self._started:
            raise RuntimeError("start() was already called")
        self._started = True
        out: list[Message] = []
        if self.recipient_index is not None and not self._holds(MessageKind.ANNOUNCE, self.recipient_index):
            body = AnnounceBody(self._epoch_key.to_bytes()).encode()
            out.append(self._emit(MessageKind.ANNOUNCE, self.recipient_index, body))
        return out + self._advance()

    def receive(self, data: bytes) -> list[Message]:
        """Apply one message from the wire; returns the messages to broadcast in consequence.

        Raises :class:`DkgMessageRejected` (state unchanged) if the message is refused.
        """
        self._ingest(Message.decode(data))
        return self._advance()

    def on_deadline(self) -> list[Message]:
        """The current phase's deadline passed: end it with what is held, move on."""
        if self.phase is Phase.ANNOUNCE:
            out = self._end_announce()
        elif self.phase is Phase.DEAL:
            out = self._end_deal()
        elif self.phase is Phase.RESPONSE:
            self._set_phase(Phase.FINISHED)
            out = []
        else:
            return []
        return out + self._advance()

    def set_refused(self, refused: Mapping[int, str]) -> list[Message]:
        """The membership checks are done: never seal shares to ``refused``. Returns what to broadcast."""
        self.refused = MappingProxyType(dict(refused))
        self._checks_pending = False
        return self._advance() if self._started else []

    def _set_epoch_secret(self, secret: int | None) -> None:
        self._epoch_secret = secret
        self._epoch_key = None if secret is None else G1.generator() * secret

    def erase(self) -> None:
        """Forget this run's decryption key (call once the epoch is final). Later bundles stay unopened."""
        self._set_epoch_secret(None)
        self._deals = {i: {h: _forget_secret(d) for h, d in held.items()} for i, held in self._deals.items()}

    # ---------------------------------------------------------------------------------------------
    # dissemination: what the transport syncs

    def inventory(self) -> tuple[Digest, ...]:
        """Digests of every message held (including this member's own), sorted. Kept until the next message
        is stored: a member serves this to every peer's sync, so sorting it each time costs O(n² log n)."""
        if self._inventory is None:
            self._inventory = tuple(sorted(self._messages))
        return self._inventory

    @property
    def message_count(self) -> int:
        """How many messages are held (including this member's own): ``len(self.inventory())``, without
        building it."""
        return len(self._messages)

    def wanted(self, digests) -> list[Digest]:
        """Of a peer's digests, those this session would accept: not held, from a seated sender, and
        under the per-sender bound. Fetch these and :meth:`receive` them."""
        out = []
        for d in digests:
            senders = self._recipient_set if d.kind in (MessageKind.ANNOUNCE, MessageKind.RESPONSE) else self._dealer_set
            if d in self._messages or d.sender not in senders:
                continue
            if len(self._bodies(d.kind, d.sender)) >= MAX_BODIES:
                continue
            out.append(d)
        return out

    def message(self, digest: Digest) -> bytes | None:
        """The wire bytes of a held message, for a peer that asked for it."""
        held = self._messages.get(digest)
        return None if held is None else held.encode()

    def held_bodies(self, kind: MessageKind, sender: int) -> list[bytes]:
        """Wire bytes of every message of ``kind`` held from ``sender`` (two prove equivocation)."""
        return [self._messages[Digest(kind, sender, h)].encode() for h in sorted(self._bodies(kind, sender))]

    def fetch_hints(self) -> list[Digest]:
        """Bundles that some response says its author holds and this member does not: fetch them."""
        listed = {d for responses in self._responses.values() for r in responses.values() for d in r.held}
        return self.wanted(sorted(listed))

    # ---------------------------------------------------------------------------------------------
    # restart safety

    def snapshot(self) -> bytes:
        """Everything needed to resume: phase, the epoch decryption key, every held message. SECRET:
        the caller seals it (it holds ``e_j``; deal secrets are never kept past dealing)."""
        out = struct.pack(">BB", SNAPSHOT_VERSION, list(Phase).index(self.phase))
        secret = self._epoch_secret
        out += b"\x00" * SCALAR_SIZE if secret is None else secret.to_bytes(SCALAR_SIZE, "big")
        for message in (self._messages[d] for d in self.inventory()):
            data = message.encode()
            out += struct.pack(">I", len(data)) + data
        return out

    @classmethod
    def restore(cls, config: DkgConfig, identity: Identity, old_shares: KeyShares | None,
                data: bytes, *, refused: Mapping[int, str] | None = None,
                checks_pending: bool = False) -> DkgSession:
        """A session resumed from :meth:`snapshot` (started; it does not announce or deal again)."""
        session = cls(config, identity, old_shares, refused=refused, checks_pending=checks_pending)
        version, phase_number = struct.unpack_from(">BB", data)
        if version != SNAPSHOT_VERSION or phase_number >= len(Phase):
            raise DkgConfigError(f"unknown DKG snapshot (version {version}, phase {phase_number})")
        secret = int.from_bytes(data[2:2 + SCALAR_SIZE], "big")
        session._set_epoch_secret(secret if secret and session.recipient_index is not None else None)
        offset = 2 + SCALAR_SIZE
        while offset < len(data):
            (size,) = struct.unpack_from(">I", data, offset)
            session._ingest(Message.decode(data[offset + 4:offset + 4 + size]))
            offset += 4 + size
        for phase in list(Phase)[1:phase_number + 1]:
            session._set_phase(phase)
        session._started = True
        return session

    # ---------------------------------------------------------------------------------------------
    # phases

    def _set_phase(self, new: Phase) -> None:
        if new not in TRANSITIONS[self.phase]:
            raise PhaseTransitionError(f"illegal DKG phase change {self.phase.value} -> {new.value}")
        self.phase = new
        self._outcome = None

    def _advance(self) -> list[Message]:
        out: list[Message] = []
        while True:
            if self.phase is Phase.ANNOUNCE and self._recipient_set <= self._announces.keys() \
                    and not self._checks_pending:
                out += self._end_announce()
            elif self.phase is Phase.DEAL and self._dealer_set <= self._deals.keys():
                out += self._end_deal()
            elif self.phase is Phase.RESPONSE and self._recipient_set <= self._responses.keys() \
                    and not self.fetch_hints():
                self._set_phase(Phase.FINISHED)
            else:
                return out

    def _end_announce(self) -> list[Message]:
        self._set_phase(Phase.DEAL)
        me = self.dealer_index
        if self._checks_pending:  # never deal to members whose checks did not finish: stay a silent dealer
            self._checks_pending = False
            self.withheld_deal = "the membership checks did not finish by the announce deadline"
            return []
        if me is None or self._holds(MessageKind.DEAL, me):
            return []
        return [self._emit(MessageKind.DEAL, me, self._make_deal())]

    def _end_deal(self) -> list[Message]:
        self._set_phase(Phase.RESPONSE)
        me = self.recipient_index
        if me is None or self._holds(MessageKind.RESPONSE, me):
            return []
        held = tuple(sorted(d for d in self._messages if d.kind is MessageKind.DEAL))
        body = ResponseBody(held, tuple(self._complaints()))
        return [self._emit(MessageKind.RESPONSE, me, body.encode())]

    # ---------------------------------------------------------------------------------------------
    # dealing (the hooks are overridden by tests to build misbehaving dealers)

    def _commitments(self, polynomial: Polynomial) -> list[bytes]:
        """The commitment encodings this dealer publishes for one of its polynomials."""
        return batch.commitments(polynomial.coefficients)

    def _deal_share(self, recipient: int, polynomials: tuple[Polynomial, Polynomial]) -> tuple[int, int]:
        """The shares this dealer puts in ``recipient``'s box."""
        return (polynomials[0](recipient), polynomials[1](recipient))

    def _recipient_announcement(self, recipient: int) -> tuple[G1, bytes] | None:
        """The key and signature of the recipient's announcement this dealer seals to, if it holds one."""
        if recipient in self.refused:
            return None
        for key_hash, key in sorted(self._announces.get(recipient, {}).items()):
            return key, self._messages[Digest(MessageKind.ANNOUNCE, recipient, key_hash)].signature
        return None

    def _make_deal(self) -> bytes:
        degree = self._t - 1
        if self._old_shares is None:
            polynomials = (Polynomial.random(degree), Polynomial.random(degree))
        else:
            polynomials = tuple(Polynomial.random(degree, self._old_shares[s]) for s in range(2))
        commitments = tuple(tuple(self._commitments(p)) for p in polynomials)
        d = random_scalar()
        deal_key = G1.generator() * d
        proof = proofs.prove_knowledge(d, deal_key, self._session_id, self.dealer_index)
        boxes = []
        for j in self.config.recipients.indices:
            announced = self._recipient_announcement(j)
            if announced is None:
                boxes.append(EMPTY_BOX)
                continue
            epoch_key, signature = announced
            shares = self._deal_share(j, polynomials)
            plaintext = b"".join(s.to_bytes(SCALAR_SIZE, "big") for s in shares)
            sealed = proofs.seal_share(epoch_key * d, plaintext, self._aad(self.dealer_index, j),
                                       **self._box_context(self.dealer_index, j, deal_key, epoch_key))
            boxes.append(ShareBox(epoch_key.to_bytes(), signature, sealed))
        # polynomials and d go out of scope here: nothing is revealed later, so nothing is kept
        return DealBody(commitments, deal_key.to_bytes(), proof, tuple(boxes)).encode()

    def _complaints(self) -> list[Complaint]:
        """A proof for every single-bundle dealer whose box for this member holds no valid share."""
        candidates = {i: next(iter(d.values())) for i, d in sorted(self._deals.items()) if len(d) == 1}
        checkable = {i: d for i, d in candidates.items() if d.my_shares is not None}
        evaluations = [e for d in checkable.values() for e in d.my_evaluations]
        shares = [s for d in checkable.values() for s in d.my_shares]
        batch_ok = batch.shares_match(evaluations, shares)
        out = []
        for i, deal in candidates.items():
            if deal.my_secret is None:
                continue  # empty box or no key: nothing to prove (see outcome: missing boxes)
            if deal.my_shares is not None and (batch_ok or deal.share_valid()):
                continue
            out.append(self._complaint(i, deal))
        return out

    def _complaint(self, dealer: int, deal: HeldDeal) -> Complaint:
        j = self.recipient_index
        proof = proofs.prove_dleq(self._epoch_secret, self._epoch_key, deal.deal_key, deal.my_secret,
                                  self._session_id, dealer, j)
        return Complaint(dealer, deal.message.body_hash, deal.my_secret.to_bytes(), proof)

    def _emit(self, kind: MessageKind, sender: int, body: bytes) -> Message:
        message = Message.sign(self._identity.signing_key, network=self.config.network, epoch=self.config.epoch,
                               session_id=self._session_id, kind=kind, sender=sender, body=body)
        self._ingest(message)
        return message

    def _aad(self, dealer: int, recipient: int) -> bytes:
        return share_aad(self.config.network, self.config.epoch, self._session_id, dealer, recipient)

    def _box_context(self, dealer: int, recipient: int, deal_key: G1, epoch_key: G1) -> dict:
        return {"session_id": self._session_id, "dealer": dealer, "recipient": recipient,
                "deal_key": deal_key, "epoch_key": epoch_key}

    # ---------------------------------------------------------------------------------------------
    # receiving: validate completely, then store

    def _holds(self, kind: MessageKind, sender: int) -> bool:
        return bool(self._bodies(kind, sender))

    def _bodies(self, kind: MessageKind, sender: int) -> dict:
        table = {MessageKind.ANNOUNCE: self._announces, MessageKind.DEAL: self._deals,
                 MessageKind.RESPONSE: self._responses}[kind]
        return table.get(sender, {})

    def _ingest(self, message: Message) -> None:
        item = self._validate(message)
        self._messages[message.digest] = message
        self._inventory = None
        table = {MessageKind.ANNOUNCE: self._announces, MessageKind.DEAL: self._deals,
                 MessageKind.RESPONSE: self._responses}[message.kind]
        table.setdefault(message.sender, {})[message.body_hash] = item
        self._outcome = None

    def _validate(self, message: Message):
        """Every check, no mutation. Returns what :meth:`_ingest` stores."""
        cfg = self.config
        if message.network != cfg.network:
            raise DkgMessageRejected(RejectReason.WRONG_NETWORK, f"network {message.network.hex()}")
        if message.epoch != cfg.epoch:
            raise DkgMessageRejected(RejectReason.WRONG_EPOCH, f"epoch {message.epoch}, this run is {cfg.epoch}")
        if message.session_id != self._session_id:
            raise DkgMessageRejected(
                RejectReason.WRONG_SESSION, "session id differs (other committee, keys or thresholds)"
            )
        dealt = message.kind is MessageKind.DEAL
        role = "dealer" if dealt else "recipient"
        what = f"{message.kind.name.lower()} from {role} {message.sender}"
        key = (self._dealer_keys if dealt else self._recipient_keys).get(message.sender)
        if key is None:
            raise DkgMessageRejected(RejectReason.UNKNOWN_SENDER, f"{what}: not a {role} of this run")
        if message.digest in self._messages:
            raise DkgMessageRejected(RejectReason.DUPLICATE, f"{what} already held")
        if len(self._bodies(message.kind, message.sender)) >= MAX_BODIES:
            raise DkgMessageRejected(RejectReason.OVER_BOUND, f"{what}: {MAX_BODIES} different bodies already held")
        if not message.verify(key):
            raise DkgMessageRejected(RejectReason.BAD_SIGNATURE, what)
        if message.kind is MessageKind.ANNOUNCE:
            body = AnnounceBody.decode(message.body)
            try:
                return proofs.decode_point(body.encryption_key)
            except PointDecodeError as exc:
                raise DkgMessageRejected(RejectReason.BAD_POINT, f"{what}: encryption key: {exc}") from None
        if message.kind is MessageKind.RESPONSE:
            return ResponseBody.decode(message.body, dealers=self._dealer_set)
        return self._validate_deal(message, what)

    def _validate_deal(self, message: Message, what: str) -> HeldDeal:
        body = DealBody.decode(message.body, threshold=self._t, recipients=self.config.recipients.n)
        points = []
        for s, name in enumerate(("sig_commitments", "kd_commitments")):
            decoded = []
            for k, raw in enumerate(body.commitments[s]):
                try:
                    decoded.append(batch.decode_point(raw))
                except batch.CommitmentDecodeError as exc:
                    raise DkgMessageRejected(RejectReason.BAD_POINT, f"{what}: {name}[{k}]: {exc}") from None
            points.append(tuple(decoded))
        if self.config.previous is not None:
            for s, name in enumerate(SECRETS):
                if not batch.equal_modulo_torsion(points[s][0], self._old_share_key(s, message.sender)):
                    raise DkgMessageRejected(
                        RejectReason.WRONG_SHARE_KEY, f"{what}: {name} commitment to g(0) is not its old share key"
                    )
        try:
            deal_key = proofs.decode_point(body.deal_key)
        except PointDecodeError as exc:
            raise DkgMessageRejected(RejectReason.BAD_POINT, f"{what}: deal key: {exc}") from None
        if not proofs.verify_knowledge(body.deal_key_proof, deal_key, self._session_id, message.sender):
            raise DkgMessageRejected(RejectReason.BAD_PROOF, f"{what}: no proof of knowledge of its deal key")
        for j, box in zip(self.config.recipients.indices, body.boxes):
            if not box.empty and not self._signed_key(j, box):
                raise DkgMessageRejected(RejectReason.BAD_BOX, f"{what}: box {j} is not sealed to a key {j} signed")
        shares, evaluations, secret = self._open_my_box(message.sender, body, deal_key, points)
        return HeldDeal(message, body, (points[0], points[1]), deal_key, shares, evaluations, secret)

    def _signed_key(self, recipient: int, box: ShareBox) -> bool:
        cache_key = (recipient, box.recipient_key, box.recipient_signature)
        if cache_key not in self._signed_keys:
            body_hash = _sha256(AnnounceBody(box.recipient_key).encode())
            payload = signed_payload(VERSION, self.config.network, self.config.epoch, self._session_id,
                                     MessageKind.ANNOUNCE, recipient, body_hash)
            ok = verify_signature(self._recipient_keys[recipient], box.recipient_signature, payload)
            if ok and body_hash not in self._announces.get(recipient, {}):  # a held key was checked already
                try:
                    proofs.decode_point(box.recipient_key)
                except PointDecodeError:
                    ok = False
            self._signed_keys[cache_key] = ok
        return self._signed_keys[cache_key]

    def _open_my_box(self, dealer: int, body: DealBody, deal_key: G1, points):
        """(shares, evaluations, S) for this member's box; shares None if it does not open."""
        j = self.recipient_index
        if j is None or self._epoch_secret is None:
            return None, None, None
        box = body.boxes[self._positions[j]]
        epoch_key = self._epoch_key
        if box.empty or box.recipient_key != epoch_key.to_bytes():
            return None, None, None
        secret = deal_key * self._epoch_secret
        evaluations = (batch.evaluate(points[0], j), batch.evaluate(points[1], j))
        try:
            plaintext = proofs.open_share(secret, box.ciphertext, self._aad(dealer, j),
                                          **self._box_context(dealer, j, deal_key, epoch_key))
        except proofs.ShareBoxError:
            return None, evaluations, secret
        shares = (int.from_bytes(plaintext[:SCALAR_SIZE], "big"), int.from_bytes(plaintext[SCALAR_SIZE:], "big"))
        return (shares if max(shares) < R else None), evaluations, secret

    def _old_share_key(self, secret: int, dealer: int) -> G2Point:
        key = (secret, dealer)
        if key not in self._old_share_keys:
            self._old_share_keys[key] = batch.from_g2(self.config.previous.keys(secret).share_keys[dealer])
        return self._old_share_keys[key]

    # ---------------------------------------------------------------------------------------------
    # outcome

    def _current_outcome(self) -> DkgResult | DkgFailed:
        if not self.done:
            raise RuntimeError(f"the run is not finished (phase {self.phase.value})")
        if self._outcome is None:
            self._outcome = outcome.compute(outcome.Evidence(
                config=self.config,
                recipient_index=self.recipient_index,
                deals=self._deals,
                responses=self._responses,
                aad=self._aad,
                verdicts=self._verdicts,
            ))
        return self._outcome


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _forget_secret(deal: HeldDeal) -> HeldDeal:
    return HeldDeal(deal.message, deal.body, deal.commitments, deal.deal_key, deal.my_shares,
                    deal.my_evaluations, None)
