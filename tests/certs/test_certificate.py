"""Certificate encoding: canonical ABI layout, strict decoding, digest."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from Crypto.Hash import keccak as pycryptodome_keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from derot.certs import Certificate, CertificateDecodeError
from derot.certs.certificate import MIN_ENCODED_SIZE

from .conftest import make_cert


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def hand_encoding(c: Certificate) -> bytes:
    """Independent oracle: the ABI layout written out word by word (the layout the Solidity decoder reads)."""
    head = [
        _word(c.version),
        _word(c.chain_id),
        bytes(12) + bytes.fromhex(c.registry[2:]),
        _word(c.epoch),
        c.serial,
        c.app_id,
        _word(c.key_version),
        _word(c.key_type),
        _word(16 * 32),  # offset of subjectKey inside the tuple
        _word(c.platform),
        c.measurement,
        c.evidence_hash,
        _word(c.tcb_status),
        _word(c.not_before),
        _word(c.not_after),
        _word(c.policy_block),
    ]
    key = c.subject_key
    padded = key + bytes(-len(key) % 32)
    return _word(0x20) + b"".join(head) + _word(len(key)) + padded


certs = st.builds(
    make_cert,
    version=st.integers(0, 255),
    chain_id=st.integers(0, 2**256 - 1),
    epoch=st.integers(0, 2**64 - 1),
    key_version=st.integers(0, 2**32 - 1),
    key_type=st.integers(0, 255),
    subject_key=st.binary(max_size=200),
    platform=st.integers(0, 255),
    tcb_status=st.integers(0, 255),
    not_before=st.integers(0, 2**64 - 1),
    not_after=st.integers(0, 2**64 - 1),
    policy_block=st.integers(0, 2**64 - 1),
)


@settings(max_examples=150, deadline=None)
@given(certs)
def test_encoding_matches_hand_written_layout_and_round_trips(cert):
    encoded = cert.encode()
    assert encoded == hand_encoding(cert)
    assert Certificate.decode(encoded) == cert


def test_digest_is_keccak256_of_encoding():
    cert = make_cert()
    oracle = pycryptodome_keccak.new(digest_bits=256, data=cert.encode()).digest()
    assert cert.digest == oracle


@pytest.mark.parametrize(
    "mutate, offset",
    [
        (lambda b: b[:-1], None),  # truncated: length no longer matches
        (lambda b: b + bytes(32), None),  # trailing word
        (lambda b: b[:31] + b"\x40" + b[32:], 31),  # outer offset is not 0x20
        (lambda b: b[:0x20 + 30] + b"\x01" + b[0x20 + 31 :], 0x20 + 30),  # dirty high byte of uint8 version
        (lambda b: b[:0x20 + 8 * 32 + 31] + b"\x20" + b[0x20 + 8 * 32 + 32 :], 0x20 + 8 * 32 + 31),  # key offset
        (lambda b: b[:-1] + b"\x01", None),  # non-zero padding after subjectKey
    ],
)
def test_decode_refuses_non_canonical_encodings(mutate, offset):
    encoded = mutate(make_cert(subject_key=os.urandom(33)).encode())
    with pytest.raises(CertificateDecodeError) as info:
        Certificate.decode(encoded)
    if offset is not None and info.value.offset is not None:
        assert info.value.offset == offset


def test_decode_refuses_short_input_naming_the_size():
    with pytest.raises(CertificateDecodeError, match="shorter than the minimum"):
        Certificate.decode(bytes(MIN_ENCODED_SIZE - 1))
    with pytest.raises(CertificateDecodeError):
        Certificate.decode("not bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "field, value",
    [("version", 256), ("epoch", -1), ("key_version", 2**32), ("serial", b"short"), ("registry", "0x1234")],
)
def test_constructor_refuses_out_of_range_fields(field, value):
    with pytest.raises(ValueError, match=field):
        make_cert(**{field: value})


def test_certs_package_does_not_import_web3_or_server_code():
    code = (
        "import sys, derot.certs\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('web3', 'grpc') or m.startswith(('derot.chain', 'derot.service', 'derot.net'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
