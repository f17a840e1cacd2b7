"""The DKG / reshare state machine: messages in, messages out, phases ended by completeness or deadline.

Protocol (joint-Feldman with complaints, drand/kyber shape; docs/design.md §3):

- **Deal.** Every dealer draws, per secret (sig, kd), a polynomial of degree t-1 (in a reshare: with
  ``g(0)`` = its old share), broadcasts the commitments and one sealed box per recipient, signed.
- **Response.** Every recipient checks its shares against the commitments (one batched check over all
  dealers, then per dealer only if the batch fails) and broadcasts one response: an echo (bundle hash +
  the dealer's signature) of every bundle it holds, and its complaints. No echo of a dealer's bundle
  counts as a complaint about that dealer.
- **Justification.** A dealer with complaints against it reveals those shares in the clear.
- **Finish.** A dealer is excluded if this member holds no bundle from it (silent), if it signed two
  different bundles (held directly, or shown by an echo carrying its signature), if its reshare bundle
  does not commit to its old share key (refused on receipt), or if a complaint against it has no valid
  revealed share. ``QUAL`` is the rest; ``|QUAL| ≥ t`` (``t_old`` in a reshare) or the run fails.

Delivery model (the transport's contract). Every message is a broadcast: the transport sends each
message a session outputs to every member of both committees, and relays messages it has not seen,
so that a message one honest member holds reaches every honest member before the phase deadline
(synchronous broadcast, as drand assumes). Under that model each decision above is a deterministic
function of the same set of messages at every honest member, so honest members agree on QUAL and on
the result; a lying responder cannot frame an honest dealer (echoes need the dealer's signature;
complaints are answered by a justification). Phases end early when every expected message is held.
If the model is broken (e.g. a faulty member sends conflicting responses and members end a phase at
different moments), members can end with different transcript hashes; the registry activates an epoch
only when t members report the same hash, so this costs a re-run, never a wrong key.

Messages a session outputs have already been applied to its own state; delivering them back to it
is refused as a duplicate. :meth:`DkgSession.receive` never changes state when it raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from py_arkworks_bls12381 import G2Point

from derot.crypto import box
from derot.crypto.hazmat import batch
from derot.crypto.bls import G2, R
from derot.crypto.dkg.config import SECRETS, DkgConfig, DkgConfigError, Identity, KeyShares, PublicKeys
from derot.crypto.dkg.errors import DkgFailed, DkgMessageRejected, FailReason, RejectReason
from derot.crypto.dkg.messages import (
    SCALAR_SIZE,
    Complaint,
    ComplaintReason,
    DealBody,
    Echo,
    JustificationBody,
    Message,
    MessageKind,
    ResponseBody,
    Reveal,
    share_aad,
    signed_payload,
    verify_signature,
)
from derot.crypto.dkg.result import DkgResult, transcript_hash
from derot.crypto.hazmat.poly import Polynomial, lagrange_coefficients


class Phase(str, Enum):
    DEAL = "deal"
    RESPONSE = "response"
    JUSTIFICATION = "justification"
    FINISHED = "finished"
    FAILED = "failed"


#: Phases in which a message of each kind is still accepted (earlier-than-expected ones are kept).
_ACCEPTED_IN = {
    MessageKind.DEAL: {Phase.DEAL},
    MessageKind.RESPONSE: {Phase.DEAL, Phase.RESPONSE},
    MessageKind.JUSTIFICATION: {Phase.DEAL, Phase.RESPONSE, Phase.JUSTIFICATION},
}


@dataclass(frozen=True)
class Progress:
    """Counts for progress displays and metrics; ``justifications_expected`` is known from Justification on."""

    phase: Phase
    deals: int
    dealers: int
    responses: int
    recipients: int
    justifications: int
    justifications_expected: int | None


@dataclass(frozen=True)
class _Deal:
    """A held deal bundle: raw commitment points, and this member's decrypted shares and evaluations."""

    message: Message
    commitments: tuple[tuple[G2Point, ...], tuple[G2Point, ...]]
    # None: the box did not open (or this member is not a recipient). Secret: kept out of repr.
    my_shares: tuple[int, int] | None = field(repr=False)
    my_evaluations: tuple[G2Point, G2Point] | None = field(repr=False)  # Σ_k C_k·j^k per secret, raw


class DkgSession:
    """One member's run of a DKG (``config.previous is None``) or a reshare.

    ``identity`` holds this node's private keys; its seats are found by its public keys: it deals if
    it is in ``config.dealers`` and receives if it is in ``config.recipients`` (both in a fresh DKG).
    A reshare dealer must pass its ``old_shares``.
    """

    def __init__(self, config: DkgConfig, identity: Identity, old_shares: KeyShares | None = None):
        self.config = config
        self._identity = identity
        self._session_id = config.session_id
        signing_public = identity.signing_public
        self.dealer_index = config.dealers.index_of(signing_public)
        self.recipient_index = config.recipients.index_of(signing_public)
        if self.dealer_index is None and self.recipient_index is None:
            raise DkgConfigError("this identity is not a member of the dealing or the receiving committee")
        for committee, index in ((config.dealers, self.dealer_index), (config.recipients, self.recipient_index)):
            if index is not None and committee.member(index).box_key != identity.box_public:
                raise DkgConfigError(f"member {index}'s X25519 key in the config is not this identity's")
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

        self._dealer_keys = {m.index: m.signing_key for m in config.dealers.members}
        self._recipient_keys = {m.index: m.signing_key for m in config.recipients.members}
        self._dealer_set = frozenset(self._dealer_keys)
        self._recipient_set = frozenset(self._recipient_keys)
        self._t = config.committee.threshold

        self.phase = Phase.DEAL
        self._started = False
        self._polynomials: tuple[Polynomial, Polynomial] | None = None
        self._seen: set[tuple[MessageKind, int, bytes]] = set()
        self._deals: dict[int, dict[bytes, _Deal]] = {}
        self._responses: dict[int, dict[bytes, ResponseBody]] = {}
        self._justifications: dict[int, dict[bytes, JustificationBody]] = {}
        self._my_complaints: dict[int, ComplaintReason] = {}
        self._excluded: dict[int, str] = {}
        self._complaints: dict[int, tuple[int, ...]] = {}
        self._expected_justifications: frozenset[int] | None = None
        self._old_share_keys: dict[tuple[int, int], G2Point] = {}
        self._result: DkgResult | None = None
        self._failure: DkgFailed | None = None

    # ---------------------------------------------------------------------------------------------
    # public interface

    @property
    def done(self) -> bool:
        return self.phase in (Phase.FINISHED, Phase.FAILED)

    @property
    def result(self) -> DkgResult:
        """The result; raises :class:`DkgFailed` if the run failed, ``RuntimeError`` if it is not over."""
        if self._failure is not None:
            raise self._failure
        if self._result is None:
            raise RuntimeError(f"the run is not finished (phase {self.phase.value})")
        return self._result

    @property
    def failure(self) -> DkgFailed | None:
        return self._failure

    @property
    def progress(self) -> Progress:
        expected = self._expected_justifications
        return Progress(
            phase=self.phase,
            deals=len(self._deals),
            dealers=len(self._dealer_set),
            responses=len(self._responses),
            recipients=len(self._recipient_set),
            justifications=len(self._justifications),
            justifications_expected=None if expected is None else len(expected),
        )

    def start(self) -> list[Message]:
        """Begin the run; a dealer returns its deal bundle (to broadcast)."""
        if self._started:
            raise RuntimeError("start() was already called")
        self._started = True
        out: list[Message] = []
        if self.dealer_index is not None and self.phase is Phase.DEAL:
            deal = self._make_deal()
            self._ingest(deal)
            out.append(deal)
        return out + self._advance()

    def receive(self, data: bytes) -> list[Message]:
        """Apply one message from the wire; returns the messages to broadcast in consequence.

        Raises :class:`DkgMessageRejected` (state unchanged) if the message is refused.
        """
        message = Message.decode(data)
        self._ingest(message)
        return self._advance()

    def on_deadline(self) -> list[Message]:
        """The current phase's deadline passed: end it with what is held, move on."""
        if self.phase is Phase.DEAL:
            out = self._end_deal_phase()
        elif self.phase is Phase.RESPONSE:
            out = self._end_response_phase()
        elif self.phase is Phase.JUSTIFICATION:
            self._finish()
            out = []
        else:
            return []
        return out + self._advance()

    # ---------------------------------------------------------------------------------------------
    # dealing (the three hooks are overridden by tests to build misbehaving dealers)

    def _commitments(self, polynomial: Polynomial) -> list[bytes]:
        """The commitment encodings this dealer publishes for one of its polynomials."""
        return batch.commitments(polynomial.coefficients)

    def _deal_share(self, recipient: int) -> tuple[int, int]:
        """The shares this dealer puts in ``recipient``'s box."""
        return self._share_for(recipient)

    def _reveal_share(self, recipient: int) -> tuple[int, int]:
        """The shares this dealer reveals when ``recipient`` complains."""
        return self._share_for(recipient)

    def _share_for(self, recipient: int) -> tuple[int, int]:
        return (self._polynomials[0](recipient), self._polynomials[1](recipient))

    def _make_deal(self) -> Message:
        degree = self._t - 1
        if self._old_shares is None:
            self._polynomials = (Polynomial.random(degree), Polynomial.random(degree))
        else:
            self._polynomials = tuple(Polynomial.random(degree, self._old_shares[s]) for s in range(2))
        commitments = tuple(tuple(self._commitments(p)) for p in self._polynomials)
        boxes = []
        for member in self.config.recipients.members:
            sig_share, kd_share = self._deal_share(member.index)
            plaintext = sig_share.to_bytes(SCALAR_SIZE, "big") + kd_share.to_bytes(SCALAR_SIZE, "big")
            boxes.append(box.seal(member.box_key, plaintext, self._aad(self.dealer_index, member.index)))
        body = DealBody(commitments, tuple(boxes)).encode()
        return self._sign(MessageKind.DEAL, self.dealer_index, body)

    def _sign(self, kind: MessageKind, sender: int, body: bytes) -> Message:
        return Message.sign(
            self._identity.signing_key,
            network=self.config.network,
            epoch=self.config.epoch,
            session_id=self._session_id,
            kind=kind,
            sender=sender,
            body=body,
        )

    def _aad(self, dealer: int, recipient: int) -> bytes:
        return share_aad(self.config.network, self.config.epoch, self._session_id, dealer, recipient)

    # ---------------------------------------------------------------------------------------------
    # receiving: validate completely, then store

    def _ingest(self, message: Message) -> None:
        item = self._validate(message)
        self._seen.add((message.kind, message.sender, message.body_hash))
        if message.kind is MessageKind.DEAL:
            self._deals.setdefault(message.sender, {})[message.body_hash] = item
        elif message.kind is MessageKind.RESPONSE:
            self._responses.setdefault(message.sender, {})[message.body_hash] = item
        else:
            self._justifications.setdefault(message.sender, {})[message.body_hash] = item

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
        senders = self._recipient_keys if message.kind is MessageKind.RESPONSE else self._dealer_keys
        role = "recipient" if message.kind is MessageKind.RESPONSE else "dealer"
        key = senders.get(message.sender)
        if key is None:
            raise DkgMessageRejected(
                RejectReason.UNKNOWN_SENDER, f"{message.kind.name.lower()} from {message.sender}, not a {role}"
            )
        if not message.verify(key):
            raise DkgMessageRejected(
                RejectReason.BAD_SIGNATURE, f"{message.kind.name.lower()} from {role} {message.sender}"
            )
        if (message.kind, message.sender, message.body_hash) in self._seen:
            raise DkgMessageRejected(
                RejectReason.DUPLICATE, f"{message.kind.name.lower()} from {role} {message.sender} already held"
            )
        if self.phase not in _ACCEPTED_IN[message.kind]:
            raise DkgMessageRejected(
                RejectReason.LATE, f"{message.kind.name.lower()} from {message.sender} in phase {self.phase.value}"
            )
        if message.kind is MessageKind.DEAL:
            return self._validate_deal(message)
        if message.kind is MessageKind.RESPONSE:
            return ResponseBody.decode(message.body, dealers=self._dealer_set)
        return JustificationBody.decode(message.body, recipients=self._recipient_set)

    def _validate_deal(self, message: Message) -> _Deal:
        body = DealBody.decode(message.body, threshold=self._t, recipients=self.config.recipients.n)
        points = []
        for s, name in enumerate(("sig_commitments", "kd_commitments")):
            decoded = []
            for k, raw in enumerate(body.commitments[s]):
                try:
                    decoded.append(batch.decode_point(raw))
                except batch.CommitmentDecodeError as exc:
                    raise DkgMessageRejected(
                        RejectReason.BAD_POINT, f"deal from dealer {message.sender}: {name}[{k}]: {exc}"
                    ) from None
            points.append(tuple(decoded))
        if self.config.previous is not None:
            for s, name in enumerate(SECRETS):
                if not batch.equal_modulo_torsion(points[s][0], self._old_share_key(s, message.sender)):
                    raise DkgMessageRejected(
                        RejectReason.WRONG_SHARE_KEY,
                        f"deal from dealer {message.sender}: {name} commitment to g(0) is not its old share key",
                    )
        my_shares = my_evaluations = None
        j = self.recipient_index
        if j is not None:
            position = self.config.recipients.indices.index(j)
            try:
                plaintext = box.open_box(
                    self._identity.box_key, body.encrypted_shares[position], self._aad(message.sender, j)
                )
                shares = (
                    int.from_bytes(plaintext[:SCALAR_SIZE], "big"),
                    int.from_bytes(plaintext[SCALAR_SIZE:], "big"),
                )
                my_shares = shares if len(plaintext) == 2 * SCALAR_SIZE and max(shares) < R else None
            except box.BoxOpenError:
                my_shares = None
            my_evaluations = (batch.evaluate(points[0], j), batch.evaluate(points[1], j))
        return _Deal(message, (points[0], points[1]), my_shares, my_evaluations)

    def _old_share_key(self, secret: int, dealer: int) -> G2Point:
        key = (secret, dealer)
        if key not in self._old_share_keys:  # a cache of public data, not protocol state
            self._old_share_keys[key] = batch.from_g2(self.config.previous.keys(secret).share_keys[dealer])
        return self._old_share_keys[key]

    # ---------------------------------------------------------------------------------------------
    # phase transitions

    def _advance(self) -> list[Message]:
        out: list[Message] = []
        while True:
            if self.phase is Phase.DEAL and self._dealer_set <= self._deals.keys():
                out += self._end_deal_phase()
            elif self.phase is Phase.RESPONSE and self._recipient_set <= self._responses.keys():
                out += self._end_response_phase()
            elif self.phase is Phase.JUSTIFICATION and self._expected_justifications <= self._justifications.keys():
                self._finish()
            else:
                return out

    def _single_deals(self) -> dict[int, _Deal]:
        """Dealers with exactly one held bundle (two or more is equivocation)."""
        return {i: next(iter(d.values())) for i, d in sorted(self._deals.items()) if len(d) == 1}

    def _end_deal_phase(self) -> list[Message]:
        self.phase = Phase.RESPONSE
        if self.recipient_index is None:
            return []
        complaints = self._check_my_shares()
        self._my_complaints = complaints
        echoes = tuple(
            Echo(i, h, deal.message.signature)
            for i in sorted(self._deals)
            for h, deal in sorted(self._deals[i].items())
        )
        body = ResponseBody(echoes, tuple(Complaint(i, r) for i, r in sorted(complaints.items())))
        response = self._sign(MessageKind.RESPONSE, self.recipient_index, body.encode())
        self._ingest(response)
        return [response]

    def _check_my_shares(self) -> dict[int, ComplaintReason]:
        """One batched check over every single-bundle dealer; per dealer only if the batch fails."""
        complaints: dict[int, ComplaintReason] = {}
        candidates = {}
        for i, deal in self._single_deals().items():
            if deal.my_shares is None:
                complaints[i] = ComplaintReason.DECRYPTION_FAILED
            else:
                candidates[i] = deal
        evaluations = [e for deal in candidates.values() for e in deal.my_evaluations]
        shares = [s for deal in candidates.values() for s in deal.my_shares]
        if not batch.shares_match(evaluations, shares):
            for i, deal in candidates.items():
                if not all(batch.share_matches(e, s) for e, s in zip(deal.my_evaluations, deal.my_shares)):
                    complaints[i] = ComplaintReason.INVALID_SHARE
        return complaints

    def _end_response_phase(self) -> list[Message]:
        self.phase = Phase.JUSTIFICATION
        excluded: dict[int, str] = {}
        for i in sorted(self._dealer_set):
            if i not in self._deals:
                excluded[i] = "silent: no deal bundle"
            elif len(self._deals[i]) > 1:
                excluded[i] = "equivocation: signed two different deal bundles"
        singles = {i: d for i, d in self._single_deals().items() if i not in excluded}
        for i, evidence in self._echoed_equivocations(singles).items():
            excluded[i] = evidence
        candidates = {i: d for i, d in singles.items() if i not in excluded}

        complaints: dict[int, list[int]] = {}
        for j, responses in sorted(self._responses.items()):
            for response in responses.values():
                explicit = {c.dealer for c in response.complaints}
                echoed = {(e.dealer, e.bundle_hash) for e in response.echoes}
                for i, deal in candidates.items():
                    # a complaint is explicit, or implicit: no echo of the bundle held here
                    if i in explicit or (i, deal.message.body_hash) not in echoed:
                        if j not in complaints.setdefault(i, []):
                            complaints[i].append(j)
        complaints = {i: tuple(js) for i, js in sorted(complaints.items())}
        self._excluded = excluded
        self._complaints = complaints
        self._expected_justifications = frozenset(complaints)

        me = self.dealer_index
        if me is None or me not in complaints:
            return []
        reveals = tuple(Reveal(j, self._reveal_share(j)) for j in complaints[me])
        justification = self._sign(MessageKind.JUSTIFICATION, me, JustificationBody(reveals).encode())
        self._ingest(justification)
        return [justification]

    def _echoed_equivocations(self, singles: dict[int, _Deal]) -> dict[int, str]:
        """Dealers whose signature is echoed on a bundle other than the one held here."""
        found: dict[int, str] = {}
        verified: set[tuple[int, bytes]] = set()
        for responder, responses in sorted(self._responses.items()):
            for response in responses.values():
                for echo in response.echoes:
                    deal = singles.get(echo.dealer)
                    if deal is None or echo.dealer in found or echo.bundle_hash == deal.message.body_hash:
                        continue
                    key = (echo.dealer, echo.bundle_hash)
                    if key not in verified:
                        payload = signed_payload(
                            deal.message.version, self.config.network, self.config.epoch, self._session_id,
                            MessageKind.DEAL, echo.dealer, echo.bundle_hash,
                        )
                        if not verify_signature(self._dealer_keys[echo.dealer], echo.dealer_signature, payload):
                            continue  # the responder lied; its echo proves nothing
                        verified.add(key)
                    found[echo.dealer] = f"equivocation: a second signed bundle echoed by member {responder}"
        return found

    def _finish(self) -> None:
        excluded = dict(self._excluded)
        singles = self._single_deals()
        valid_reveals: dict[tuple[int, int], tuple[int, int]] = {}
        for i, complainers in self._complaints.items():
            deal = singles[i]
            for j in complainers:
                reveal = self._valid_reveal(i, j, deal)
                if reveal is None:
                    excluded[i] = f"complaint by member {j} not answered with a valid share"
                    break
                valid_reveals[(i, j)] = reveal
        qualified = tuple(i for i in sorted(singles) if i not in excluded)
        needed = self.config.qualified_needed
        if len(qualified) < needed:
            reasons = "; ".join(f"{i}: {why}" for i, why in sorted(excluded.items()))
            self._fail(FailReason.TOO_FEW_QUALIFIED, f"{len(qualified)} qualified dealers, need {needed} ({reasons})")
            return
        used = qualified if self.config.previous is None else qualified[:needed]
        weights = self._dealer_weights(used)

        keys: list[PublicKeys] = []
        for s, name in enumerate(SECRETS):
            rows = [singles[i].commitments[s] for i in used]
            combined = [
                batch.point_sum([row[k] for row in rows]) if weights is None
                else batch.linear_combination([row[k] for row in rows], [weights[i] for i in used])
                for k in range(self._t)
            ]
            group_key = batch.to_g2(combined[0])
            if self.config.previous is not None and group_key != self.config.previous.keys(s).group_key:
                self._fail(FailReason.GROUP_KEY_MISMATCH, f"recombined {name} key differs from the old group key")
                return
            if group_key.is_identity():
                self._fail(FailReason.DEGENERATE_KEY, f"the {name} group key is the identity")
                return
            share_keys = {m: batch.to_g2(batch.evaluate(combined, m)) for m in self.config.recipients.indices}
            keys.append(PublicKeys(group_key, share_keys))

        shares = None
        j = self.recipient_index
        if j is not None:
            mine = []
            for s in range(2):
                total = 0
                for i in used:
                    value = valid_reveals[(i, j)][s] if (i, j) in valid_reveals else singles[i].my_shares[s]
                    total += value if weights is None else weights[i] * value
                mine.append(total % R)
            shares = KeyShares(mine[0], mine[1])

        self._result = DkgResult(
            network=self.config.network,
            epoch=self.config.epoch,
            session_id=self._session_id,
            committee=self.config.committee,
            index=j,
            qualified=qualified,
            used=used,
            excluded=excluded,
            sig=keys[0],
            kd=keys[1],
            shares=shares,
            transcript_hash=transcript_hash(self._session_id, [(i, singles[i].message.body_hash) for i in used]),
        )
        self.phase = Phase.FINISHED
        self._polynomials = None  # nothing left to justify: drop this dealer's secret polynomials

    def _dealer_weights(self, used: tuple[int, ...]) -> dict[int, int] | None:
        """Lagrange coefficients at 0 over the old indices in a reshare; None (all ones) in a DKG."""
        if self.config.previous is None:
            return None
        return lagrange_coefficients(used, 0)

    def _valid_reveal(self, dealer: int, recipient: int, deal: _Deal) -> tuple[int, int] | None:
        for justification in self._justifications.get(dealer, {}).values():
            for reveal in justification.reveals:
                if reveal.recipient == recipient and all(
                    batch.share_matches(batch.evaluate(deal.commitments[s], recipient), reveal.shares[s])
                    for s in range(2)
                ):
                    return reveal.shares
        return None

    def _fail(self, reason: FailReason, detail: str) -> None:
        self._failure = DkgFailed(reason, detail)
        self.phase = Phase.FAILED
        self._polynomials = None
