"""Notice encoding: canonical ABI layout (checked word by word), strict decoding with offsets, signatures
checked against py_ecc, and the broker URL."""

from __future__ import annotations

from dataclasses import replace
from hashlib import sha256

import eth_abi
import pytest
from Crypto.Hash import keccak as pycryptodome_keccak
from hypothesis import given, settings
from hypothesis import strategies as st
from py_ecc.bls.hash_to_curve import hash_to_G1 as py_ecc_hash_to_g1
from py_ecc.optimized_bls12_381 import FQ, FQ2, final_exponentiate, normalize, pairing
from py_ecc.optimized_bls12_381 import G2 as PY_G2

from derot.certs import Certificate, CertificateDecodeError
from derot.constants import DST_CERT
from derot.crypto.bls import G1, G2
from derot.certs.notices import (
    HEADER_ABI_TYPE,
    MAGIC,
    BrokerAddress,
    EpochInfo,
    Notice,
    NoticeDecodeError,
    NoticeKind,
    PlatformStatus,
    RevocationSet,
    SignedNotice,
    topic,
)

from .conftest import CHAIN_ID, FMSPC, REGISTRY, epochs, revocations


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def hand_encoding(n: Notice) -> bytes:
    """Independent oracle for a revocation notice with one FMSPC, one platform rule and no other entries:
    the ABI layout written out word by word, as ``abi.decode`` in Solidity reads it."""
    (fmspc,), (rule,) = n.content.fmspcs, n.content.platforms
    tuple_head = [_word(off) for off in (320, 384, 416, 448, 480, 512, 544, 672, 704, 736)]  # 10 dynamic lists
    tails = [_word(1), fmspc.ljust(32, b"\0")] + [_word(0)] * 5 + [
        _word(1), _word(rule.platform), _word(int(rule.enabled)), _word(rule.tcb_floor)] + [_word(0)] * 3
    body = _word(0x20) + b"".join(tuple_head + tails)
    head = [
        MAGIC, _word(2), _word(int(NoticeKind.REVOCATIONS)), _word(n.chain_id),
        bytes(12) + bytes.fromhex(n.registry[2:]), _word(n.block_number), n.block_hash, _word(n.block_timestamp),
        _word(n.epoch), _word(10 * 32),  # offset of body inside the tuple
    ]
    return _word(0x20) + b"".join(head) + _word(len(body)) + body


def one_fmspc_notice() -> Notice:
    notice = revocations(321, fmspcs=[FMSPC])
    content = replace(notice.content, platforms=notice.content.platforms[:1])
    return replace(notice, content=content)


def test_layout_matches_the_hand_written_abi_words():
    notice = one_fmspc_notice()
    assert len(hand_encoding(notice)) == 32 + 10 * 32 + 32 + 800
    assert notice.encode() == hand_encoding(notice)
    assert Notice.decode(hand_encoding(notice)) == notice


def test_digest_is_keccak256_of_the_encoding():
    notice = one_fmspc_notice()
    assert notice.digest == pycryptodome_keccak.new(digest_bits=256, data=notice.encode()).digest()


def _py_g1(point: G1):
    raw = point.to_eip2537()
    return (FQ(int.from_bytes(raw[:64], "big")), FQ(int.from_bytes(raw[64:], "big")), FQ.one())


def _py_g2(point: G2):
    raw = point.to_eip2537()
    x0, x1, y0, y1 = (int.from_bytes(raw[i:i + 64], "big") for i in range(0, 256, 64))
    return (FQ2([x0, x1]), FQ2([y0, y1]), FQ2.one())


def test_threshold_signature_verifies_with_the_py_ecc_oracle(committee):
    """The combined signature is x·H_cert(digest) as py_ecc computes H and the pairings."""
    signed = committee.sign(one_fmspc_notice())
    hashed = py_ecc_hash_to_g1(signed.notice.digest, DST_CERT, sha256)
    assert normalize(hashed) == normalize(_py_g1(G1.hash_to_curve(signed.notice.digest, DST_CERT)))
    lhs = final_exponentiate(pairing(PY_G2, _py_g1(signed.signature)))
    rhs = final_exponentiate(pairing(_py_g2(committee.group_key_sig), hashed))
    assert lhs == rhs
    assert signed.verify(committee.group_key_sig)
    assert not signed.verify(committee.group_key_sig * 2)


def test_round_trip_both_kinds(committee):
    for notice in (revocations(7, fmspcs=[FMSPC, b"\x01" * 6]), epochs(9, group_key_sig=committee.group_key_sig)):
        assert Notice.decode(notice.encode()) == notice
        signed = committee.sign(notice, signers=(2, 3))
        assert SignedNotice.decode(signed.encode()) == signed
        assert signed.encode()[-48:] == signed.signature.to_bytes()


ids6 = st.binary(min_size=6, max_size=6)
ids_var = st.binary(min_size=1, max_size=64)
ids32 = st.binary(min_size=32, max_size=32)
rules = st.dictionaries(st.integers(0, 255), st.tuples(st.booleans(), st.integers(0, 255)), max_size=5)


@settings(max_examples=60, deadline=None)
@given(fmspcs=st.sets(ids6, max_size=5), chips=st.sets(ids_var, max_size=5), gpus=st.sets(ids_var, max_size=3),
       measurements=st.sets(ids32, max_size=4), serials=st.sets(ids32, max_size=3),
       evidence=st.sets(ids32, max_size=3), platform_rules=rules, block=st.integers(0, 2**64 - 1),
       chain_id=st.integers(0, 2**256 - 1))
def test_any_revocation_set_round_trips(fmspcs, chips, gpus, measurements, serials, evidence, platform_rules, block,
                                        chain_id):
    content = RevocationSet(tuple(sorted(fmspcs)), tuple(sorted(chips)), tuple(sorted(gpus)),
                            tuple(sorted(measurements)), tuple(sorted(serials)), tuple(sorted(evidence)),
                            tuple(PlatformStatus(p, e, f) for p, (e, f) in sorted(platform_rules.items())))
    notice = revocations(1, block_number=block, chain_id=chain_id, content=content)
    encoded = notice.encode()
    assert Notice.decode(encoded) == notice
    assert Notice.decode(encoded).encode() == encoded


def test_of_sorts_unordered_registry_sets():
    class Rule:
        def __init__(self, enabled, tcb_floor):
            self.enabled, self.tcb_floor = enabled, tcb_floor

    content = RevocationSet.of(fmspcs={b"\x09" * 6, b"\x01" * 6}, chip_ids=frozenset({b"\x02", b"\x01\x00"}),
                               gpu_fwids=(), measurements=(), cert_serials=(), evidence_hashes=(),
                               platforms={3: Rule(True, 7), 1: Rule(False, 0)})
    assert content.fmspcs == (b"\x01" * 6, b"\x09" * 6)
    assert content.chip_ids == (b"\x01\x00", b"\x02")
    assert [r.platform for r in content.platforms] == [1, 3]


@pytest.mark.parametrize("field, values, message", [
    ("fmspcs", (b"\x02" * 6, b"\x01" * 6), "fmspcs[1] is not strictly greater"),
    ("fmspcs", (FMSPC, FMSPC), "fmspcs[1] is not strictly greater"),
    ("chip_ids", (b"",), "chip_ids[0] must be 1..64 bytes"),
    ("measurements", (b"\x01" * 31,), "measurements[0] must be 32 bytes"),
])
def test_unsorted_duplicate_or_misshapen_lists_are_refused(field, values, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        RevocationSet(**{field: values})


def _encode_raw(notice: Notice, body_values, body_type=RevocationSet.ABI_TYPE, **header) -> bytes:
    """An encoding built outside Notice.encode, so it can break the rules Notice enforces."""
    body = eth_abi.encode([body_type], [body_values])
    values = dict(magic=MAGIC, version=2, kind=int(notice.kind), chain_id=notice.chain_id,
                  registry=notice.registry, number=notice.block_number, block_hash=notice.block_hash,
                  timestamp=notice.block_timestamp, epoch=notice.epoch, body=body)
    values.update(header)
    return eth_abi.encode([HEADER_ABI_TYPE], [tuple(values.values())])


def test_decoding_refuses_an_unsorted_set_naming_it():
    notice = revocations(5)
    raw = _encode_raw(notice, ([b"\x02" * 6, b"\x01" * 6], [], [], [], [], [], [], [], [], []))
    with pytest.raises(NoticeDecodeError, match=r"revocations notice: fmspcs\[1\] is not strictly greater"):
        Notice.decode(raw)


def test_decoding_refuses_an_invalid_group_key():
    notice = epochs(5)
    content = notice.content
    bad_key = b"\xa0" + bytes(95)  # compressed-infinity flag with the sign bit set: not a point encoding
    raw = _encode_raw(notice, (content.threshold, list(content.members), bad_key, content.group_key_kd.to_bytes(),
                               content.transcript_hash, content.activated_block), EpochInfo.ABI_TYPE)
    with pytest.raises(NoticeDecodeError, match="group_key_sig"):
        Notice.decode(raw)


def test_decoding_names_the_offset_of_header_errors():
    good = revocations(5).encode()
    cases = [
        (good[:100], "shorter than the minimum", 100),
        (good[:32] + b"X" + good[33:], "magic word is wrong", 32),
        (_encode_raw(revocations(5), ([], [], [], [], [], [], [], [], [], []), version=1), "unsupported notice version 1",
         64),
        (good[:96] + _word(9) + good[128:], "unknown notice kind 9", 96),
        (good + bytes(32), "not the canonical encoding", len(good)),
    ]
    for data, message, offset in cases:
        with pytest.raises(NoticeDecodeError, match=message) as info:
            Notice.decode(data)
        assert info.value.offset == offset, message


def test_non_canonical_padding_is_refused_at_its_offset():
    good = revocations(5, fmspcs=[FMSPC]).encode()
    # the FMSPC is a bytes6 left-aligned in its word: dirty its padding
    at = good.index(FMSPC) + 6
    dirty = good[:at] + b"\x01" + good[at + 1:]
    with pytest.raises(NoticeDecodeError):
        Notice.decode(dirty)


def test_a_broken_body_names_its_offset():
    good = revocations(5).encode()
    body_start = 32 + 10 * 32 + 32
    broken = good[:body_start] + _word(2**40) + good[body_start + 32:]  # the body's own offset word
    with pytest.raises(NoticeDecodeError, match="revocations body is not ABI-encoded") as info:
        Notice.decode(broken)
    assert info.value.offset == body_start


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_garbage_raises_only_notice_decode_error(data):
    with pytest.raises(NoticeDecodeError):
        Notice.decode(data)
    with pytest.raises(NoticeDecodeError):
        SignedNotice.decode(data)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 255))
def test_any_flipped_byte_is_refused_or_is_another_canonical_notice(position, flip):
    good = epochs(5).encode()
    position %= len(good)
    mutated = good[:position] + bytes([good[position] ^ flip]) + good[position + 1:]
    try:
        notice = Notice.decode(mutated)
    except NoticeDecodeError:
        return
    assert notice.encode() == mutated and notice != epochs(5)


def test_signed_payload_errors_name_their_offset(committee):
    signed = committee.sign(revocations(5))
    payload = signed.encode()
    with pytest.raises(NoticeDecodeError, match="shorter than the minimum") as info:
        SignedNotice.decode(payload[:300])
    assert info.value.offset == 300
    not_a_point = payload[:-48] + b"\xff" * 48
    with pytest.raises(NoticeDecodeError, match="signature") as info:
        SignedNotice.decode(not_a_point)
    assert info.value.offset == len(payload) - 48
    identity = payload[:-48] + G1.identity().to_bytes()
    with pytest.raises(NoticeDecodeError, match="signature"):
        SignedNotice.decode(identity)
    with pytest.raises(NoticeDecodeError):  # the signature moved in front: the notice no longer parses
        SignedNotice.decode(payload[-48:] + payload[:-48])


def test_notices_and_certificates_never_share_a_message():
    """Same DST, disjoint encodings: a notice is never a certificate and a certificate is never a notice."""
    cert = Certificate(2, CHAIN_ID, REGISTRY, 1, bytes(32), bytes(32), 1, 1, b"\x02" * 33, 1, bytes(32), bytes(32),
                       7, 1_790_000_000, 1_790_086_400, 100)
    for notice in (revocations(5), epochs(5)):
        with pytest.raises(CertificateDecodeError):
            Certificate.decode(notice.encode())
    with pytest.raises(NoticeDecodeError, match="magic"):
        Notice.decode(cert.encode())


def test_topic_names_chain_registry_and_kind():
    assert topic(CHAIN_ID, REGISTRY, NoticeKind.REVOCATIONS) == f"derot/31337/{REGISTRY.lower()}/revocations"
    assert epochs(3).topic == f"derot/31337/{REGISTRY.lower()}/epochs"
    with pytest.raises(ValueError):
        topic(1, "0x1234", NoticeKind.EPOCHS)


def test_notice_fields_are_range_checked():
    with pytest.raises(ValueError, match="block_number"):
        revocations(1, block_number=2**64)
    with pytest.raises(ValueError, match="block_hash"):
        revocations(1, block_hash=b"\x01")
    with pytest.raises(ValueError, match="registry"):
        revocations(1, registry="not-an-address")
    with pytest.raises(ValueError, match="threshold"):
        EpochInfo(4, ("0x" + "01" * 20,), G2.generator(), G2.generator(), bytes(32), 1)


def test_broker_urls():
    plain = BrokerAddress.parse("mqtt://broker.example:1884")
    assert (plain.host, plain.port, plain.tls) == ("broker.example", 1884, False)
    secure = BrokerAddress.parse("mqtts://alice:s3cr%40t@broker.example")
    assert (secure.port, secure.tls, secure.username, secure.password) == (8883, True, "alice", "s3cr@t")
    assert "s3cr" not in str(secure) and "s3cr" not in repr(secure)
    assert BrokerAddress.parse("mqtt://127.0.0.1").port == 1883
    for bad in ("http://broker:1883", "mqtt://", "broker:1883", "mqtt://b:99999", "mqtt://b/derot/#"):
        with pytest.raises(ValueError):
            BrokerAddress.parse(bad)


def test_machine_revocations_round_trip_in_the_feed():
    """Notice version 2 carries the per-machine kinds (issue 16): PPIDs, PCK certificate ids, GPU devices."""
    content = RevocationSet.of(fmspcs={b"\x01" * 6}, ppids={b"\x07" * 16, b"\x03" * 16}, pck_certs={b"\x08" * 32},
                               gpu_devices={b"\x41" * 9, b"\x72" * 20}, platforms={})
    notice = revocations(5, content=content)
    assert Notice.decode(notice.encode()) == notice and notice.content.gpu_devices == (b"\x41" * 9, b"\x72" * 20)
    assert content.ppids == (b"\x03" * 16, b"\x07" * 16)
    with pytest.raises(ValueError, match="ppids"):
        RevocationSet(ppids=(b"\x01" * 15,))
    with pytest.raises(ValueError, match="gpu_devices"):
        RevocationSet(gpu_devices=(b"\x01" * 33,))
