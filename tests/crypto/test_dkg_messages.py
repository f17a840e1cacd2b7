"""DKG wire format and message refusal: every bad message is refused with its reason, state unchanged,
and the member still finishes with the same result as everyone else."""

import dataclasses

import pytest
from google.protobuf.message import DecodeError

from derot import _proto
from derot.crypto.hazmat import batch
from derot.crypto.dkg import (
    DkgConfig,
    DkgMessageRejected,
    DkgSession,
    Identity,
    Message,
    MessageKind,
    RejectReason,
)
from derot.crypto.dkg.local import LocalBroadcast, committee_of, generate_identities, make_sessions
from derot.crypto.dkg.messages import (
    EMPTY_BOX,
    VERSION,
    AnnounceBody,
    Complaint,
    DealBody,
    Digest,
    ResponseBody,
    ShareBox,
)

NETWORK = b"\x00" * 31 + b"\x01" + b"\x11" * 20
pb = _proto.load("dkg_pb2")


@dataclasses.dataclass
class Scenario:
    identities: dict
    config: DkgConfig
    sessions: dict
    deals: dict

    @property
    def target(self) -> DkgSession:
        return self.sessions[1]

    def sign(self, name, message: Message, **changes) -> bytes:
        """Re-sign ``message`` with ``changes`` applied, by identity ``name`` (or an outsider Identity)."""
        fields = {f.name: getattr(message, f.name) for f in dataclasses.fields(Message) if f.name != "signature"}
        fields.update(changes)
        key = name.signing_key if isinstance(name, Identity) else self.identities[name].signing_key
        unsigned = Message(**{**fields, "signature": b""})
        return dataclasses.replace(unsigned, signature=key.sign(unsigned.payload)).encode()

    def finish(self):
        """Deliver every deal honestly and run to the end."""
        net = LocalBroadcast(self.sessions)
        for name, deal in self.deals.items():
            net.inject(name, [deal])
        net.run(start=False)
        return net


@pytest.fixture
def scenario():
    identities = dict(enumerate(generate_identities(4), start=1))
    config = DkgConfig(NETWORK, 7, committee_of(list(identities.values()), 3))
    sessions = make_sessions(config, identities)
    announces = {i: s.start()[0] for i, s in sessions.items()}
    deals = {}
    for i, s in sessions.items():  # every member gets every key and deals; no deal is delivered yet
        for j, a in announces.items():
            if j != i:
                deals.update({m.sender: m for m in s.receive(a.encode())})
    return Scenario(identities, config, sessions, deals)


def state(session):
    return (session.phase, session.progress, session.inventory())


def refuse(session, data, reason, detail=""):
    before = state(session)
    with pytest.raises(DkgMessageRejected) as info:
        session.receive(data)
    assert info.value.reason is reason, info.value
    assert detail in info.value.detail
    assert state(session) == before
    return info.value


def deal_body(s: Scenario, dealer=2) -> DealBody:
    return DealBody.decode(s.deals[dealer].body, threshold=3, recipients=4)


def with_body(body: DealBody, **changes) -> bytes:
    return dataclasses.replace(body, **changes).encode()


def resigned_deal(s: Scenario, body: bytes, dealer=2) -> bytes:
    return s.sign(dealer, s.deals[dealer], body=body)


def other_run_deal(s: Scenario, **config_changes) -> bytes:
    """Dealer 2's first message (its key announcement) in a different run (other epoch, network, committee)."""
    config = dataclasses.replace(s.config, **config_changes)
    return DkgSession(config, s.identities[2]).start()[0].encode()


# --------------------------------------------------------------------------------------------------
# wire format


def test_message_round_trip(scenario):
    deal = scenario.deals[2]
    assert Message.decode(deal.encode()) == deal
    parsed = pb.DkgMessage.FromString(deal.encode())  # the generated protobuf class reads it as well
    assert (parsed.version, parsed.kind, parsed.sender, parsed.epoch) == (VERSION, pb.DKG_MESSAGE_KIND_DEAL, 2, 7)
    body = deal_body(scenario)
    assert body.encode() == deal.body and len(body.commitments[0]) == 3 and len(body.boxes) == 4


def test_response_and_announce_bodies_round_trip():
    held = (Digest(MessageKind.DEAL, 1, b"\x01" * 32), Digest(MessageKind.DEAL, 2, b"\x00" * 32))
    response = ResponseBody(held, (Complaint(2, b"\x05" * 32, b"\x06" * 48, b"\x07" * 64),))
    assert ResponseBody.decode(response.encode(), dealers=frozenset({1, 2})) == response
    announce = AnnounceBody(b"\x08" * 48)
    assert AnnounceBody.decode(announce.encode()) == announce


# --------------------------------------------------------------------------------------------------
# refusals: envelope


@pytest.mark.parametrize("data, detail", [
    (b"\x0a\x05abc", "protobuf parse error"),
    (b"\xff\xff\xff\xff", "protobuf parse error"),
])
def test_garbage_refused(scenario, data, detail):
    refuse(scenario.target, data, RejectReason.MALFORMED, detail)
    scenario.finish()


def test_truncated_message_refused(scenario):
    refuse(scenario.target, scenario.deals[2].encode()[:-7], RejectReason.MALFORMED, "protobuf parse error")


def test_not_bytes_refused(scenario):
    refuse(scenario.target, "a string", RejectReason.MALFORMED, "expected bytes")


def test_empty_message_is_version_zero(scenario):
    refuse(scenario.target, b"", RejectReason.UNSUPPORTED_VERSION, "version 0")


def test_other_version_refused(scenario):
    refuse(scenario.target, scenario.sign(2, scenario.deals[2], version=1), RejectReason.UNSUPPORTED_VERSION)


def test_non_canonical_envelope_refused(scenario):
    data = scenario.deals[2].encode() + pb.DkgMessage(version=1).SerializeToString()  # repeated field
    refuse(scenario.target, data, RejectReason.MALFORMED, "canonical")


@pytest.mark.parametrize("field, value, detail", [
    ("session_id", b"\x00" * 31, "session_id"),
    ("kind", 7, "unknown kind"),
    ("sender", 0, "index 0"),
    ("network", b"", "network"),
])
def test_bad_envelope_fields_refused(scenario, field, value, detail):
    parsed = pb.DkgMessage.FromString(scenario.deals[2].encode())
    setattr(parsed, field, value)
    refuse(scenario.target, parsed.SerializeToString(), RejectReason.MALFORMED, detail)


def test_wrong_network_refused(scenario):
    refuse(scenario.target, other_run_deal(scenario, network=b"other-chain"), RejectReason.WRONG_NETWORK)


def test_replay_from_another_epoch_refused(scenario):
    refuse(scenario.target, other_run_deal(scenario, epoch=6), RejectReason.WRONG_EPOCH, "epoch 6")


def test_other_committee_same_epoch_refused(scenario):
    committee = dataclasses.replace(scenario.config.committee, threshold=4)
    refuse(scenario.target, other_run_deal(scenario, committee=committee), RejectReason.WRONG_SESSION)


def test_non_member_refused(scenario):
    outsider = Identity.generate()
    refuse(scenario.target, scenario.sign(outsider, scenario.deals[2], sender=9),
           RejectReason.UNKNOWN_SENDER, "deal from dealer 9: not a dealer")
    response = Message(NETWORK, 7, scenario.config.session_id, MessageKind.RESPONSE, 9, b"", b"")
    refuse(scenario.target, scenario.sign(outsider, response), RejectReason.UNKNOWN_SENDER, "not a recipient")


def test_impersonation_refused(scenario):
    refuse(scenario.target, scenario.sign(Identity.generate(), scenario.deals[2]), RejectReason.BAD_SIGNATURE)


def test_flipped_signature_and_tampered_body_refused(scenario):
    deal = scenario.deals[2]
    flipped = dataclasses.replace(deal, signature=bytes([deal.signature[0] ^ 1]) + deal.signature[1:])
    refuse(scenario.target, flipped.encode(), RejectReason.BAD_SIGNATURE, "dealer 2")
    tampered = dataclasses.replace(deal, body=deal.body[:-1] + bytes([deal.body[-1] ^ 1]))
    refuse(scenario.target, tampered.encode(), RejectReason.BAD_SIGNATURE)
    scenario.finish()
    assert scenario.target.result.transcript_hash == scenario.sessions[2].result.transcript_hash


def test_duplicate_refused(scenario):
    scenario.target.receive(scenario.deals[2].encode())
    refuse(scenario.target, scenario.deals[2].encode(), RejectReason.DUPLICATE, "already held")
    refuse(scenario.sessions[2], scenario.deals[2].encode(), RejectReason.DUPLICATE)  # its own, echoed back


def test_the_inventory_is_kept_until_a_message_is_stored(scenario):
    """The sorted inventory is served to every peer's sync, so it is kept between changes; it must never
    miss a message stored since, nor change on a refusal."""
    target = scenario.target
    before = target.inventory()
    assert target.inventory() is before and target.message_count == len(before)
    target.receive(scenario.deals[2].encode())
    after = target.inventory()
    assert scenario.deals[2].digest in after and scenario.deals[2].digest not in before
    assert list(after) == sorted(set(before) | {scenario.deals[2].digest}) and target.message_count == len(after)
    refuse(target, scenario.deals[2].encode(), RejectReason.DUPLICATE)
    assert target.inventory() is after


def test_a_third_bundle_is_refused_before_any_work(scenario):
    """Two different bundles from one dealer are kept (equivocation evidence); a third is refused."""
    target = scenario.target
    body = deal_body(scenario)
    second = resigned_deal(scenario, with_body(body, boxes=(EMPTY_BOX, *body.boxes[1:])))
    third = resigned_deal(scenario, with_body(body, boxes=(*body.boxes[:3], EMPTY_BOX)))
    target.receive(scenario.deals[2].encode())
    target.receive(second)
    refuse(target, third, RejectReason.OVER_BOUND, "2 different bodies already held")
    refuse(target, b"\x00" * 10 + third[10:], RejectReason.MALFORMED)


# --------------------------------------------------------------------------------------------------
# refusals: bodies


def test_wrong_commitment_count_refused(scenario):
    body = deal_body(scenario)
    short = with_body(body, commitments=(body.commitments[0][:2], body.commitments[1]))
    refuse(scenario.target, resigned_deal(scenario, short), RejectReason.MALFORMED,
           "sig_commitments: 2 points, expected t = 3")


def test_wrong_share_count_and_size_refused(scenario):
    body = deal_body(scenario)
    refuse(scenario.target, resigned_deal(scenario, with_body(body, boxes=body.boxes[:3])),
           RejectReason.MALFORMED, "3 boxes, expected n = 4")
    first = body.boxes[0]
    boxes = (dataclasses.replace(first, ciphertext=first.ciphertext[:-1]), *body.boxes[1:])
    refuse(scenario.target, resigned_deal(scenario, with_body(body, boxes=boxes)),
           RejectReason.MALFORMED, "boxes[0].ciphertext")


@pytest.mark.parametrize("bad, detail", [
    (lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]), "not a point on the curve"),
    (lambda raw: bytes(192), "identity"),
    (lambda raw: raw[:100], "100 bytes, expected 192"),
])
def test_bad_commitment_refused(scenario, bad, detail):
    body = deal_body(scenario)
    kd = list(body.commitments[1])
    kd[1] = bad(kd[1])
    data = resigned_deal(scenario, with_body(body, commitments=(body.commitments[0], tuple(kd))))
    reason = RejectReason.MALFORMED if "expected 192" in detail else RejectReason.BAD_POINT
    error = refuse(scenario.target, data, reason, detail)
    assert "kd_commitments[1]" in str(error)
    scenario.finish()  # and the honest bundle is still accepted afterwards
    assert scenario.target.result.qualified == (1, 2, 3, 4)


def test_non_canonical_body_refused(scenario):
    body = scenario.deals[2].body + pb.DealBundle(sig_commitments=[b"x"]).SerializeToString()
    refuse(scenario.target, resigned_deal(scenario, body), RejectReason.MALFORMED)


def _held(sender, size=32, kind=MessageKind.DEAL):
    return Digest(kind, sender, b"\x00" * size)


def _complaint(dealer, secret=48):
    return Complaint(dealer, b"\x00" * 32, b"\x00" * secret, b"\x00" * 64)


@pytest.mark.parametrize("response, detail", [
    (ResponseBody((_held(9),), ()), "not a deal of a dealer"),
    (ResponseBody((_held(2, kind=MessageKind.RESPONSE),), ()), "not a deal of a dealer"),
    (ResponseBody((_held(2, 31),), ()), "body_hash"),
    (ResponseBody((_held(3), _held(2)), ()), "not sorted"),
    (ResponseBody((), (_complaint(2),) * 2), "repeated"),
    (ResponseBody((), (_complaint(9),)), "9 is not a dealer"),
    (ResponseBody((), (_complaint(2, 47),)), "shared_secret: 47 bytes"),
])
def test_malformed_response_refused(scenario, response, detail):
    message = Message(NETWORK, 7, scenario.config.session_id, MessageKind.RESPONSE, 3, response.encode(), b"")
    refuse(scenario.target, scenario.sign(3, message), RejectReason.MALFORMED, detail)


def test_announce_with_a_bad_key_refused(scenario):
    for key, reason in ((b"\x00" * 48, RejectReason.BAD_POINT), (b"\x00" * 47, RejectReason.MALFORMED)):
        message = Message(NETWORK, 7, scenario.config.session_id, MessageKind.ANNOUNCE, 3,
                          AnnounceBody(key).encode(), b"")
        refuse(scenario.target, scenario.sign(3, message), reason)


def test_box_sealed_to_an_unsigned_key_refused(scenario):
    """A dealer cannot seal member 3's box to a key 3 never signed (3 could not open or complain)."""
    body = deal_body(scenario)
    own = body.boxes[2]
    forged = ShareBox(deal_body(scenario, 3).deal_key, own.recipient_signature, own.ciphertext)
    data = resigned_deal(scenario, with_body(body, boxes=(*body.boxes[:2], forged, body.boxes[3])))
    refuse(scenario.target, data, RejectReason.BAD_BOX, "box 3")


def test_deal_key_without_its_proof_refused(scenario):
    body = deal_body(scenario)
    data = resigned_deal(scenario, with_body(body, deal_key_proof=deal_body(scenario, 3).deal_key_proof))
    refuse(scenario.target, data, RejectReason.BAD_PROOF)


def test_refusals_leave_the_result_unchanged(scenario):
    """A barrage of refused messages, then the honest run: the same result as the untouched members."""
    target = scenario.target
    bad = [b"\xff", b"", other_run_deal(scenario, epoch=8), scenario.sign(Identity.generate(), scenario.deals[3])]
    for data in bad:
        with pytest.raises(DkgMessageRejected):
            target.receive(data)
    net = scenario.finish()
    assert net.deadlines == 0
    results = [s.result for s in scenario.sessions.values()]
    assert len({(r.transcript_hash, r.sig, r.kd) for r in results}) == 1


def test_decode_error_type_is_not_leaked():
    with pytest.raises(DkgMessageRejected):
        Message.decode(b"\x0a\x05abc")
    with pytest.raises(DecodeError):  # sanity: the raw protobuf error is what we translate
        pb.DkgMessage.FromString(b"\x0a\x05abc")


def test_share_point_check_uses_the_committed_polynomial(scenario):
    """A commitment replaced by another valid point (re-signed) is accepted on receipt, but every
    recipient's share check then fails and it complains with a proof."""
    body = deal_body(scenario)
    sig = list(body.commitments[0])
    sig[2] = batch.encode_point(batch.generator_times(12345))
    data = resigned_deal(scenario, with_body(body, commitments=(tuple(sig), body.commitments[1])))
    target = scenario.target
    target.receive(data)
    for i in (3, 4):
        target.receive(scenario.deals[i].encode())
    assert [c.dealer for c in target._complaints()] == [2]
