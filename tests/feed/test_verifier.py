"""FeedVerifier: what a subscriber accepts, drops and refuses, and the changes it reports."""

from __future__ import annotations

from dataclasses import replace

import pytest

from derot.app.watch import (
    BAD_SIGNATURE,
    CONFLICT,
    MALFORMED,
    STALE,
    WRONG_TOPIC,
    FeedVerifier,
    NoticeRefused,
    changes,
)
from derot.constants import Platform
from derot.crypto.bls import G2
from derot.crypto.hazmat.poly import Polynomial
from derot.certs.notices import NoticeKind, PlatformStatus, SignedNotice

from .conftest import CHAIN_ID, FMSPC, REGISTRY, Committee, epochs, revocations

OTHER_REGISTRY = "0x" + "ab" * 20


@pytest.fixture
def verifier(committee):
    return FeedVerifier(CHAIN_ID, REGISTRY, committee.group_key_sig)


def feed(verifier, signed: SignedNotice, topic: str | None = None):
    return verifier.check(topic or signed.notice.topic, signed.encode())


def refusal(verifier, signed_or_payload, topic) -> NoticeRefused:
    payload = signed_or_payload.encode() if isinstance(signed_or_payload, SignedNotice) else signed_or_payload
    with pytest.raises(NoticeRefused) as info:
        verifier.check(topic, payload)
    return info.value


def test_first_notice_lists_the_state_then_only_changes(verifier, committee):
    first = feed(verifier, committee.sign(revocations(100)))
    assert first.first and [str(c) for c in first.changes] == [
        "platform tdx enabled, TCB floor up-to-date", "platform sev-snp enabled, TCB floor up-to-date"]
    revoked = feed(verifier, committee.sign(revocations(105, fmspcs=[FMSPC])))
    assert not revoked.first and [str(c) for c in revoked.changes] == ["revoked FMSPC 00906ed50000"]
    heartbeat = feed(verifier, committee.sign(revocations(130, fmspcs=[FMSPC])))
    assert heartbeat.changes == ()
    lifted = feed(verifier, committee.sign(revocations(140)))
    assert [str(c) for c in lifted.changes] == ["unrevoked FMSPC 00906ed50000"]
    assert verifier.latest[NoticeKind.REVOCATIONS].block_number == 140


def test_platform_rule_changes_are_reported():
    before = revocations(1)
    rules = (PlatformStatus(int(Platform.TDX), False, 7),)
    after = replace(before, block_number=2, content=replace(before.content, platforms=rules))
    assert [str(c) for c in changes(before, after)] == ["platform tdx disabled", "platform sev-snp no rule (disabled)"]


def test_epoch_changes_are_reported(committee, verifier):
    first = feed(verifier, committee.sign(epochs(100, group_key_sig=committee.group_key_sig)))
    assert first.changes[0].action == "epoch" and "2 of 3 members" in first.changes[0].value
    second = feed(verifier, committee.sign(epochs(200, epoch=2, group_key_sig=committee.group_key_sig)))
    assert [c.action for c in second.changes] == ["epoch"] and second.changes[0].subject == "2"
    fresh = changes(epochs(200, epoch=2), epochs(300, epoch=3, group_key_sig=G2.generator() * 11))
    assert [c.action for c in fresh] == ["epoch", "group key"]


def test_the_same_notice_again_is_a_silent_duplicate(verifier, committee):
    signed = committee.sign(revocations(100))
    assert feed(verifier, signed) is not None
    assert feed(verifier, signed) is None
    assert feed(verifier, committee.sign(revocations(100), signers=(2, 3))) is None  # unique threshold signature


def test_an_older_notice_is_refused_as_stale(verifier, committee):
    old = committee.sign(revocations(100))
    feed(verifier, old)
    feed(verifier, committee.sign(revocations(110, fmspcs=[FMSPC])))
    refused = refusal(verifier, old, old.notice.topic)
    assert refused.reason == STALE and "100 is older than the accepted block 110" in refused.detail
    # kinds are sequenced separately: an epochs notice of block 100 is still new
    assert feed(verifier, committee.sign(epochs(100, group_key_sig=committee.group_key_sig))) is not None


def test_another_notice_for_the_same_block_is_a_conflict(verifier, committee):
    feed(verifier, committee.sign(revocations(100)))
    other = committee.sign(revocations(100, fmspcs=[FMSPC]))
    assert refusal(verifier, other, other.notice.topic).reason == CONFLICT


def test_forgeries_are_refused(verifier, committee):
    outsider = Committee(2, Polynomial.random(1))
    forged = outsider.sign(revocations(200, fmspcs=[FMSPC]))
    assert refusal(verifier, forged, forged.notice.topic).reason == BAD_SIGNATURE
    # a genuine signature moved onto other content
    genuine = committee.sign(revocations(200))
    swapped = SignedNotice(revocations(200, fmspcs=[FMSPC]), genuine.signature)
    assert refusal(verifier, swapped, swapped.notice.topic).reason == BAD_SIGNATURE
    # a single member's partial signature is not the committee's
    partial = SignedNotice(genuine.notice, genuine.notice.sign(committee.polynomial(1)))
    assert refusal(verifier, partial, partial.notice.topic).reason == BAD_SIGNATURE
    assert NoticeKind.REVOCATIONS not in verifier.latest  # nothing was accepted


def test_misrouted_and_malformed_messages_are_refused(verifier, committee):
    signed = committee.sign(revocations(100))
    epochs_topic = verifier.topics[NoticeKind.EPOCHS]
    assert refusal(verifier, signed, epochs_topic).reason == WRONG_TOPIC
    elsewhere = committee.sign(revocations(100, registry=OTHER_REGISTRY))
    assert refusal(verifier, elsewhere, signed.notice.topic).reason == WRONG_TOPIC
    assert refusal(verifier, signed, f"derot/1/{REGISTRY.lower()}/revocations").reason == WRONG_TOPIC
    garbage = refusal(verifier, b"\x00" * 500, signed.notice.topic)
    assert garbage.reason == MALFORMED and "magic" in garbage.detail
    assert feed(verifier, signed) is not None  # refusals leave the verifier working
