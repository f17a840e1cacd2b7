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
from dataclasses import fields

import eth_abi

from derot.certs.certificate import CERT_ABI_TYPE, MAX_HARDWARE, MIN_ENCODED_SIZE, other_version
from derot.constants import CERT_VERSION

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
        _word(19 * 32),  # offset of subjectKey inside the tuple
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
    head.append(_word(19 * 32 + 32 + len(padded)))  # offset of hardware (version 2)
    head += [_word(c.gpu_count), _word(c.gpu_models)]  # version 3
    hardware = _word(len(c.hardware)) + b"".join(c.hardware)
    return _word(0x20) + b"".join(head) + _word(len(key)) + padded + hardware


certs = st.builds(
    make_cert,
    version=st.just(CERT_VERSION),
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
    hardware=st.lists(st.binary(min_size=32, max_size=32), max_size=MAX_HARDWARE).map(tuple),
    gpu_count=st.integers(0, 255),
    gpu_models=st.integers(0, 2**32 - 1),
)


@settings(max_examples=150, deadline=None)
@given(certs)
def test_encoding_matches_hand_written_layout_and_round_trips(cert):
    encoded = cert.encode()
    assert encoded == hand_encoding(cert)
    assert encoded == eth_abi.encode([CERT_ABI_TYPE], [tuple(getattr(cert, f.name) for f in fields(cert))])
    assert Certificate.decode(encoded) == cert == _eth_abi_decode(encoded)


def _eth_abi_decode(data: bytes) -> Certificate | None:
    """The oracle for Certificate.decode: eth_abi's decoder, this version only, canonical bytes only."""
    try:
        (values,) = eth_abi.decode([CERT_ABI_TYPE], data)
        cert = Certificate(*values)
    except Exception:  # noqa: BLE001 - any refusal counts as one
        return None
    canonical = eth_abi.encode([CERT_ABI_TYPE], [values])
    return cert if values[0] == CERT_VERSION and canonical == data else None


def _decode_or_none(data: bytes) -> Certificate | None:
    try:
        return Certificate.decode(data)
    except CertificateDecodeError:
        return None


#: words an attacker would aim at: the outer offset, the two tail offsets, the two tail lengths
_STRUCTURAL = st.sampled_from(["outer", "key_offset", "hardware_offset", "key_length", "hardware_count"])


def _structural_at(data: bytes, which: str) -> int:
    return {"outer": 0, "key_offset": 0x20 + 8 * 32, "hardware_offset": 0x20 + 16 * 32,
            "key_length": 0x20 + 19 * 32, "hardware_count": 0x20 + int.from_bytes(data[0x220:0x240], "big")}[which]


@settings(max_examples=400, deadline=None)
@given(certs, st.data())
def test_decode_agrees_with_eth_abi_on_mutated_encodings(cert, data):
    """Whatever the bytes, Certificate.decode accepts exactly what eth_abi decodes canonically, to the same
    value: byte flips, words an attacker aims at (offsets, lengths, up to 2**256 − 1), truncation, trailers."""
    encoded = bytearray(cert.encode())
    kind = data.draw(st.sampled_from(["flip", "word", "truncate", "extend"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 3))):
            encoded[data.draw(st.integers(0, len(encoded) - 1))] ^= data.draw(st.integers(1, 255))
    elif kind == "word":
        at = _structural_at(bytes(encoded), data.draw(_STRUCTURAL))
        value = data.draw(st.one_of(st.integers(0, 4096), st.integers(0, 2**256 - 1)))
        encoded[at:at + 32] = value.to_bytes(32, "big")
    elif kind == "truncate":
        del encoded[data.draw(st.integers(0, len(encoded) - 1)):]
    else:
        encoded += data.draw(st.binary(min_size=1, max_size=96))
    mutated = bytes(encoded)
    assert _decode_or_none(mutated) == _eth_abi_decode(mutated)


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
        (lambda b: b[:0x20 + 30] + b"\x01" + b[0x20 + 31 :], 0x20),  # dirty high byte of uint8 version
        (lambda b: b[:0x20 + 8 * 32 + 31] + b"\x40" + b[0x20 + 8 * 32 + 32 :], 0x20 + 8 * 32 + 31),  # key offset
        (lambda b: b[:0x20 + 0x280 + 0x40 - 1] + b"\x01" + b[0x20 + 0x280 + 0x40:], None),  # padding after subjectKey
        (lambda b: b[:0x20 + 16 * 32 + 31] + b"\x00" + b[0x20 + 16 * 32 + 32:], None),  # hardware offset
        (lambda b: b[:0x20 + 17 * 32 + 30] + b"\x01" + b[0x20 + 17 * 32 + 31:], 0x20 + 17 * 32 + 30),  # gpuCount > 255
        (lambda b: b[:0x20 + 18 * 32 + 27] + b"\x01" + b[0x20 + 18 * 32 + 28:], 0x20 + 18 * 32 + 27),  # gpuModels > u32
        (lambda b: b[:-32 * 3 - 1] + b"\x03" + b[-32 * 3:], None),  # hardware count 3 with 2 entries
        (lambda b: b[:-32] , None),  # hardware entry missing
    ],
)
def test_decode_refuses_non_canonical_encodings(mutate, offset):
    encoded = mutate(make_cert(subject_key=os.urandom(33), hardware=(os.urandom(32), os.urandom(32))).encode())
    with pytest.raises(CertificateDecodeError) as info:
        Certificate.decode(encoded)
    if offset is not None and info.value.offset is not None:
        assert info.value.offset == offset


def test_decode_refuses_too_many_hardware_keys():
    ok = make_cert(hardware=tuple(os.urandom(32) for _ in range(MAX_HARDWARE)))
    assert Certificate.decode(ok.encode()) == ok
    values = tuple(getattr(ok, f.name) for f in fields(ok))
    too_many = eth_abi.encode([CERT_ABI_TYPE], [values[:-3] + (ok.hardware + (bytes(32),),) + values[-2:]])
    with pytest.raises(CertificateDecodeError, match="hardware"):
        Certificate.decode(too_many)


def test_other_versions_are_named_not_decoded():
    """A version-1 certificate (16 fields, no hardware) and a version-2 one (no GPU fields) are refused naming
    their version."""
    v1 = eth_abi.encode(["(uint8,uint256,address,uint64,bytes32,bytes32,uint32,uint8,bytes,uint8,bytes32,bytes32,"
                         "uint8,uint64,uint64,uint64)"],
                        [(1, 1, "0x" + "11" * 20, 1, bytes(32), bytes(32), 1, 1, b"k", 1, bytes(32), bytes(32), 7, 0, 1, 0)])
    assert other_version(v1) == 1 and other_version(make_cert().encode()) is None
    with pytest.raises(CertificateDecodeError, match="version 1"):
        Certificate.decode(v1)
    v2 = eth_abi.encode([CERT_ABI_TYPE.removesuffix(",uint8,uint32)") + ")"],
                        [tuple(getattr(make_cert(version=2), f.name) for f in fields(Certificate))[:-2]])
    assert other_version(v2) == 2
    with pytest.raises(CertificateDecodeError, match="version 2"):
        Certificate.decode(v2)


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
