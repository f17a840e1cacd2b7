"""Off-chain verification: every reason code, in the contract's order, against a hand-built registry view."""

from __future__ import annotations

import re
from pathlib import Path

from hashlib import sha256

import pytest
from py_ecc.bls.hash_to_curve import hash_to_G1 as py_ecc_hash_to_g1
from py_ecc.optimized_bls12_381 import normalize

from derot.attest.identity import hardware_key
from derot.constants import RevocationKind
from derot.certs import Reason, verify_certificate
from derot.certs.verify import SIGNATURE_SIZE
from derot.constants import DST_CERT, TcbStatus
from derot.crypto.bls import G1, random_scalar

from .conftest import NOW, make_cert

CONTRACT = Path(__file__).resolve().parents[2] / "contracts" / "src" / "DerotRegistry.sol"


def run(world, cert, sig=None, *, now=NOW, key=None):
    if sig is None:
        sig = cert.sign(world.secret)
    sig_bytes = sig if isinstance(sig, bytes) else sig.to_eip2537()
    return verify_certificate(
        cert.encode(), sig_bytes, group_key_sig=key or world.group_key_sig, snapshot=world.snapshot, now=now, trust=world.trust
    ).reason


def test_reason_enum_mirrors_the_solidity_enum():
    source = CONTRACT.read_text()
    body = re.search(r"enum Reason \{(.*?)\}", source, re.S).group(1)
    names = [re.sub(r"//.*", "", line).strip().rstrip(",") for line in body.splitlines()]
    names = [n for n in names if n]
    assert names == [r.name for r in Reason]


def test_valid_certificate_is_ok(world):
    cert = make_cert()
    verdict = verify_certificate(
        cert.encode(),
        cert.sign(world.secret).to_eip2537(),
        group_key_sig=world.group_key_sig,
        snapshot=world.snapshot,
        now=NOW,
        trust=world.trust,
    )
    assert verdict.ok and verdict.reason is Reason.OK and verdict.certificate == cert


def test_certificate_from_a_retired_epoch_with_the_same_key_is_ok(world):
    assert run(world, make_cert(epoch=1)) is Reason.OK


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (dict(version=4), Reason.WRONG_VERSION),
        (dict(version=2), Reason.WRONG_VERSION),
        (dict(chain_id=1), Reason.WRONG_CHAIN),
        (dict(registry="0x" + "22" * 20), Reason.WRONG_REGISTRY),
        (dict(epoch=9), Reason.UNKNOWN_EPOCH),
        (dict(epoch=3), Reason.EPOCH_NOT_ACTIVE),
        (dict(epoch=5), Reason.EPOCH_NOT_ACTIVE),
        (dict(epoch=4), Reason.EPOCH_KEY_RETIRED),
        (dict(serial=b"\x51" * 32), Reason.CERT_REVOKED),
        (dict(evidence_hash=b"\xe1" * 32), Reason.CERT_REVOKED),
        (dict(not_before=NOW + 1), Reason.NOT_YET_VALID),
        (dict(not_after=NOW - 1), Reason.EXPIRED),
        (dict(app_id=b"\xcc" * 32), Reason.UNKNOWN_APP),
        (dict(app_id=b"\xbb" * 32, key_version=1), Reason.APP_FROZEN),
        (dict(key_version=2), Reason.KEY_VERSION_MISMATCH),
        (dict(platform=3), Reason.PLATFORM_DISABLED),
        (dict(platform=200), Reason.PLATFORM_DISABLED),
        (dict(tcb_status=int(TcbStatus.CONFIGURATION_NEEDED)), Reason.TCB_BELOW_FLOOR),
        (dict(measurement=b"\x66" * 32), Reason.MEASUREMENT_REVOKED),
        (dict(hardware=(bytes(32), hardware_key(RevocationKind.PPID, b"\x77" * 16))), Reason.HARDWARE_REVOKED),
        (dict(hardware=(hardware_key(RevocationKind.GPU_DEVICE, b"\x99" * 9),)), Reason.HARDWARE_REVOKED),
    ],
)
def test_each_refusal_names_its_reason(world, overrides, expected):
    assert run(world, make_cert(**overrides)) is expected


def test_validity_window_is_inclusive(world):
    cert = make_cert(not_before=NOW, not_after=NOW)
    assert run(world, cert, now=NOW) is Reason.OK
    assert run(world, cert, now=NOW + 1) is Reason.EXPIRED


def test_signature_checks(world):
    cert = make_cert()
    good = cert.sign(world.secret)
    assert run(world, cert, good.to_eip2537()[:-1]) is Reason.MALFORMED_SIGNATURE
    flipped = bytearray(good.to_eip2537())
    flipped[127] ^= 1  # y no longer on the curve
    assert run(world, cert, bytes(flipped)) is Reason.MALFORMED_SIGNATURE
    assert run(world, cert, G1.identity().to_eip2537()) is Reason.BAD_SIGNATURE
    assert run(world, cert, cert.sign(random_scalar())) is Reason.BAD_SIGNATURE
    assert run(world, make_cert(), good) is Reason.BAD_SIGNATURE  # signature of another certificate
    # the relying party pins another key: the epoch's key is not the pinned one
    assert run(world, cert, good, key=world.other_key) is Reason.EPOCH_KEY_RETIRED
    assert SIGNATURE_SIZE == 128


def test_checks_run_in_contract_order(world):
    # a revoked, expired certificate with a bad signature reports the signature first
    cert = make_cert(serial=b"\x51" * 32, not_after=NOW - 1)
    assert run(world, cert, cert.sign(random_scalar())) is Reason.BAD_SIGNATURE
    assert run(world, cert) is Reason.CERT_REVOKED


def test_malformed_bytes_never_raise(world):
    for blob in (b"", bytes(640), make_cert().encode()[:-32]):
        verdict = verify_certificate(
            blob, bytes(128), group_key_sig=world.group_key_sig, snapshot=world.snapshot, now=NOW, trust=world.trust
        )
        assert verdict.reason is Reason.MALFORMED and verdict.certificate is None


def test_hash_point_matches_py_ecc_oracle():
    cert = make_cert()
    expected = normalize(py_ecc_hash_to_g1(cert.digest, DST_CERT, sha256))
    x, y = (int(c) for c in expected)
    raw = cert.hash_point().to_eip2537()
    assert int.from_bytes(raw[:64], "big") == x and int.from_bytes(raw[64:], "big") == y
