"""The report_data binding and the canonical measurement digest are fixed, unambiguous encodings."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import replace

import pytest

from derot.attest.binding import RequestBinding, gpu_nonce, network_id
from derot.attest.claims import measurement_digest
from derot.constants import Platform

B = RequestBinding(network=network_id(1, "0x" + "ab" * 20), app_id=b"\x01" * 32, key_version=7, context=b"ctx",
                   tpk=b"\x02" * 48, subject_key=b"\x03" * 33, timestamp=1_700_000_000, nonce=b"\x04" * 16)


def test_binding_encoding_written_out():
    lp = lambda b: len(b).to_bytes(4, "big") + b  # noqa: E731
    enc = (b"DEROT-V1-REQ" + lp(struct.pack(">Q", 1) + b"\xab" * 20) + b"\x01" * 32 + (7).to_bytes(4, "big")
           + lp(b"ctx") + lp(b"\x02" * 48) + lp(b"\x03" * 33) + (1_700_000_000).to_bytes(8, "big") + b"\x04" * 16)
    assert B.encoding() == enc
    assert B.report_data() == hashlib.sha512(enc).digest() and len(B.report_data()) == 64


@pytest.mark.parametrize("change", [
    {"network": network_id(2, "0x" + "ab" * 20)}, {"app_id": b"\x05" * 32}, {"key_version": 8},
    {"context": b"ctx2"}, {"tpk": b"\x02" * 47}, {"subject_key": b""}, {"timestamp": 1_700_000_001},
    {"nonce": b"\x06" * 16},
])
def test_every_field_is_bound(change):
    assert replace(B, **change).report_data() != B.report_data()


def test_length_prefix_prevents_shifting_bytes_between_fields():
    a = replace(B, context=b"ab", tpk=b"c")
    b = replace(B, context=b"a", tpk=b"bc")
    assert a.report_data() != b.report_data()


def test_binding_rejects_bad_sizes():
    with pytest.raises(ValueError):
        replace(B, app_id=b"\x01" * 31)
    with pytest.raises(ValueError):
        replace(B, nonce=b"\x01" * 15)
    with pytest.raises(ValueError):
        replace(B, key_version=2**32)


def test_gpu_nonce():
    assert gpu_nonce(bytes(64)) == hashlib.sha256(b"DEROT-V1-GPU" + bytes(64)).digest()


def test_measurement_digest_written_out():
    regs = {"MRTD": b"\x01" * 48, "RTMR0": b"\x02" * 48, "RTMR1": b"\x03" * 48, "RTMR2": b"\x04" * 48,
            "RTMR3": b"\x05" * 48, "MRCONFIGID": b"\x06" * 48, "MROWNER": b"\x07" * 48}
    h = hashlib.sha256(b"DEROT-V1-MEASUREMENT" + bytes([1]))
    for name in ("MRTD", "RTMR0", "RTMR1", "RTMR2", "RTMR3", "MRCONFIGID"):
        h.update(bytes([len(name)]) + name.encode() + (48).to_bytes(2, "big") + regs[name])
    assert measurement_digest(Platform.TDX, regs) == h.digest()
    # MROWNER identifies the operator, not the app: it does not change the digest
    assert measurement_digest(Platform.TDX, {**regs, "MROWNER": b"\x08" * 48}) == h.digest()
    assert measurement_digest(Platform.TDX, {**regs, "RTMR3": b"\x08" * 48}) != h.digest()


def test_measurement_digest_separates_platforms_and_orders_gpu_blocks():
    a = {"MEASUREMENT": b"\x01" * 48, "HOST_DATA": bytes(32)}
    assert measurement_digest(Platform.SEV_SNP, a) != measurement_digest(Platform.TDX, {
        "MRTD": b"\x01" * 48, "RTMR0": b"", "RTMR1": b"", "RTMR2": b"", "RTMR3": b"", "MRCONFIGID": b""})
    gpu = {"MEASUREMENT[2]": b"b", "MEASUREMENT[10]": b"c", "MEASUREMENT[1]": b"a"}
    h = hashlib.sha256(b"DEROT-V1-MEASUREMENT" + bytes([4]))
    for i, v in ((1, b"a"), (2, b"b"), (10, b"c")):
        name = f"MEASUREMENT[{i}]".encode()
        h.update(bytes([len(name)]) + name + (1).to_bytes(2, "big") + v)
    assert measurement_digest(Platform.NVIDIA_GPU, gpu) == h.digest()
