"""On-chain verifyCertificate: RFC 9380 hashing, each refusal reason, threshold signatures, and agreement
with the off-chain verifier over hundreds of random certificates."""

from __future__ import annotations

import collections
import dataclasses
import os
import random
from hashlib import sha256

import pytest
from py_ecc.bls.hash_to_curve import hash_to_G1 as py_ecc_hash_to_g1
from py_ecc.optimized_bls12_381 import normalize

from derot.certs import Reason
from derot.chain import actions as A
from derot.chain.state import read_state
from derot.chain.types import RevocationKind
from derot.attest.identity import hardware_key
from derot.constants import CERT_VERSION, DST_CERT, Platform, TcbStatus
from derot.crypto import threshold
from derot.crypto.bls import G1, G2, random_scalar
from derot.crypto.hazmat.poly import Polynomial


def test_hash_to_g1_matches_blst_and_py_ecc(chain):
    for _ in range(16):
        digest = os.urandom(32)
        assert chain.registry.hash_to_g1(digest) == G1.hash_to_curve(digest, DST_CERT).to_eip2537()
    digest = os.urandom(32)
    x, y = (int(c) for c in normalize(py_ecc_hash_to_g1(digest, DST_CERT, sha256)))
    assert chain.registry.hash_to_g1(digest) == x.to_bytes(64, "big") + y.to_bytes(64, "big")


def test_valid_certificate_verifies(chain):
    cert = chain.cert()
    sig = cert.sign(chain.sk)
    assert chain.registry.verify_certificate(cert.encode(), sig) is Reason.OK
    ok, reason = chain.registry.contract.functions.verifyCertificate(cert.encode(), sig.to_eip2537()).call()
    assert ok is True and reason == 0


def test_flipped_bits_are_refused(chain):
    reg = chain.registry
    cert = chain.cert(hardware=(os.urandom(32), os.urandom(32)))
    encoded, sig = cert.encode(), cert.sign(chain.sk).to_eip2537()
    # serial, appId, gpuCount, gpuModels, subjectKey, a hardware key
    for position in (0x20 + 4 * 32 + 7, 0x20 + 5 * 32, 0x20 + 17 * 32 + 31, 0x20 + 18 * 32 + 28, 0x20 + 0x280 + 5,
                     len(encoded) - 40):
        bad = bytearray(encoded)
        bad[position] ^= 0x01
        assert reg.verify_certificate(bytes(bad), sig) is Reason.BAD_SIGNATURE
    bad = bytearray(encoded)
    bad[0x20 + 31] ^= 0x01  # version 3 → 2
    assert reg.verify_certificate(bytes(bad), sig) is Reason.WRONG_VERSION
    bad[0x20 + 31] ^= 0x01
    bad[0x20 + 30] ^= 0x01  # dirty high byte of the version: not version 3 either
    assert reg.verify_certificate(bytes(bad), sig) is Reason.WRONG_VERSION
    bad = bytearray(encoded)
    bad[0x20 + 7 * 32 + 30] ^= 0x01  # dirty uint8 keyType: not canonical
    assert reg.verify_certificate(bytes(bad), sig) is Reason.MALFORMED
    for position in (0x20 + 17 * 32 + 30, 0x20 + 18 * 32 + 27):  # gpuCount above uint8, gpuModels above uint32
        bad = bytearray(encoded)
        bad[position] ^= 0x01
        assert reg.verify_certificate(bytes(bad), sig) is Reason.MALFORMED
    bad_sig = bytearray(sig)
    bad_sig[100] ^= 0x01  # y changes: not on the curve
    assert reg.verify_certificate(encoded, bytes(bad_sig)) is Reason.MALFORMED_SIGNATURE
    assert reg.verify_certificate(encoded, sig[:-1]) is Reason.MALFORMED_SIGNATURE
    assert reg.verify_certificate(encoded, G1.identity().to_eip2537()) is Reason.BAD_SIGNATURE


def test_wrong_key_expiry_and_revocations_are_refused_with_their_reason(chain):
    reg = chain.registry
    now = chain.now()
    cert = chain.cert(not_before=now - 100, not_after=now + 100)
    encoded = cert.encode()
    assert reg.verify_certificate(encoded, cert.sign(random_scalar())) is Reason.BAD_SIGNATURE
    sig = cert.sign(chain.sk)
    assert reg.verify_certificate(encoded, sig, at=now + 101) is Reason.EXPIRED
    assert reg.verify_certificate(encoded, sig, at=now - 101) is Reason.NOT_YET_VALID
    assert reg.verify_certificate(encoded, sig, at=now + 100) is Reason.OK
    for claim, expected in (
        (dict(epoch=7), Reason.UNKNOWN_EPOCH),
        (dict(chain_id=1), Reason.WRONG_CHAIN),
        (dict(registry=chain.deployment.governor), Reason.WRONG_REGISTRY),
        (dict(app_id=os.urandom(32)), Reason.UNKNOWN_APP),
        (dict(key_version=2), Reason.KEY_VERSION_MISMATCH),
        (dict(platform=int(Platform.SGX)), Reason.PLATFORM_DISABLED),
    ):
        other = chain.cert(**claim)
        assert reg.verify_certificate(other.encode(), other.sign(chain.sk)) is expected, claim

    council = chain.council
    # each case restricts something the certificate depends on; later cases use a SEV-SNP certificate
    # because earlier ones restricted TDX
    snp_app = chain.registry.register_app(chain.app_owner, os.urandom(32))
    cases = [
        (lambda c: [A.SetTcbFloor(int(Platform.TDX), int(TcbStatus.UP_TO_DATE))],
         dict(tcb_status=int(TcbStatus.SW_HARDENING_NEEDED)), Reason.TCB_BELOW_FLOOR),
        (lambda c: [A.Revoke(RevocationKind.MEASUREMENT, c.measurement)],
         dict(measurement=os.urandom(32)), Reason.MEASUREMENT_REVOKED),
        (lambda c: [A.DisablePlatform(int(Platform.TDX))], dict(measurement=os.urandom(32)), Reason.PLATFORM_DISABLED),
        (lambda c: [A.FreezeApp(c.app_id)], dict(app_id=snp_app, platform=int(Platform.SEV_SNP)), Reason.APP_FROZEN),
    ]
    for actions, claim, expected in cases:
        other = chain.cert(**claim)
        other_sig = other.sign(chain.sk)
        assert reg.verify_certificate(other.encode(), other_sig) is Reason.OK
        reg.apply(council, actions(other))
        assert reg.verify_certificate(other.encode(), other_sig) is expected
    # a specific certificate, by serial or by evidence hash
    for kind, field in ((RevocationKind.CERT_SERIAL, "serial"), (RevocationKind.EVIDENCE_HASH, "evidence_hash")):
        other = chain.cert(app_id=chain.registry.register_app(chain.app_owner, os.urandom(32)),
                           platform=int(Platform.SEV_SNP))
        other_sig = other.sign(chain.sk)
        assert reg.verify_certificate(other.encode(), other_sig) is Reason.OK
        reg.apply(council, [A.Revoke(kind, getattr(other, field))])
        assert reg.verify_certificate(other.encode(), other_sig) is Reason.CERT_REVOKED


def test_threshold_signature_from_t_of_n_shares_verifies(chain):
    """A 3-of-5 committee: shares of a fresh DKG epoch, partial signatures combined by Lagrange."""
    reg = chain.registry
    t, n = 3, 5
    poly = Polynomial.random(t - 1)
    shares = {i: poly(i) for i in range(1, n + 1)}
    group_key = G2.generator() * poly(0)
    chain.enact([A.StartDkg(tuple(node.address for node in chain.nodes), t)])
    epoch_id = reg.epoch_count()
    for node in chain.nodes[:t]:
        reg.report_epoch(node, epoch_id, group_key, chain.kd, bytes(32))
    assert reg.current_epoch() == epoch_id
    cert = chain.cert()
    partials = {i: threshold.partial_sign(shares[i], cert.digest, DST_CERT) for i in (2, 4, 5)}
    combined = threshold.combine(partials)
    assert threshold.verify(group_key, cert.digest, combined, DST_CERT)
    assert reg.verify_certificate(cert.encode(), combined) is Reason.OK
    # t-1 partials, or a partial from a wrong share, do not make a valid signature
    assert reg.verify_certificate(cert.encode(), threshold.combine({2: partials[2], 4: partials[4]})) \
        is Reason.BAD_SIGNATURE
    forged = dict(partials)
    forged[5] = threshold.partial_sign(shares[5] + 1, cert.digest, DST_CERT)
    assert reg.verify_certificate(cert.encode(), threshold.combine(forged)) is Reason.BAD_SIGNATURE


@pytest.fixture
def busy_world(chain):
    """Epochs 1 RETIRED (other key), 2 RETIRED (same key), 3 ACTIVE, 4 ABORTED, 5 DKG pending; plus apps,
    platforms and revocations of every kind."""
    reg = chain.registry
    members = tuple(node.address for node in chain.nodes[:3])
    sk = random_scalar()
    pk = G2.generator() * sk
    chain.enact([A.StartDkg(members, 2)])
    for node in chain.nodes[:2]:
        reg.report_epoch(node, 2, pk, chain.kd, bytes(32))
    chain.enact([A.StartReshare(members, 3)])
    for node in chain.nodes[:3]:
        reg.report_epoch(node, 3, pk, chain.kd, bytes(32))
    chain.enact([A.StartDkg(members, 2)])
    chain.enact([A.StartDkg(members, 2)])
    frozen_app = reg.register_app(chain.app_owner, b"\x02" * 32)
    rotated_app = reg.register_app(chain.app_owner, b"\x03" * 32)
    reg.raise_key_version(chain.app_owner, rotated_app, 5)
    revoked = {k: os.urandom(32) for k in ("serial", "evidence", "measurement")}
    revoked["ppid"], revoked["gpu"] = os.urandom(16), os.urandom(9)
    reg.apply(chain.council, [
        A.FreezeApp(frozen_app),
        A.SetTcbFloor(int(Platform.TDX), int(TcbStatus.SW_HARDENING_NEEDED)),
        A.Revoke(RevocationKind.CERT_SERIAL, revoked["serial"]),
        A.Revoke(RevocationKind.EVIDENCE_HASH, revoked["evidence"]),
        A.Revoke(RevocationKind.MEASUREMENT, revoked["measurement"]),
        A.Revoke(RevocationKind.PPID, revoked["ppid"]),
        A.Revoke(RevocationKind.GPU_DEVICE, revoked["gpu"]),
    ])
    revoked["hardware"] = [hardware_key(RevocationKind.PPID, revoked["ppid"]),
                           hardware_key(RevocationKind.GPU_DEVICE, revoked["gpu"])]
    return dict(sk=sk, apps=[chain.app_id, frozen_app, rotated_app, os.urandom(32)], revoked=revoked)


def test_on_chain_and_off_chain_agree_on_random_certificates(chain, busy_world):
    seed = int(os.environ.get("DEROT_TEST_SEED") or int.from_bytes(os.urandom(8), "big"))
    print(f"seed {seed} (replay with DEROT_TEST_SEED={seed})")
    rng = random.Random(seed)
    reg = chain.registry
    block = chain.w3.eth.get_block("latest")
    state = read_state(reg, bytes(block["hash"]), block["number"], block["timestamp"])
    assert [state.epochs[i].phase.name for i in range(1, 6)] == ["RETIRED", "RETIRED", "ACTIVE", "ABORTED", "DKG"]
    t0 = block["timestamp"]
    sk = busy_world["sk"]
    revoked = busy_world["revoked"]
    seen = collections.Counter()
    for i in range(240):
        clean = rng.random() < 0.3  # a certificate the committee would really issue
        claim = {} if clean else dict(
            epoch=rng.choice([1, 2, 3, 3, 3, 4, 5, 6]),
            app_id=rng.choice(busy_world["apps"] + [chain.app_id] * 3),
            key_version=rng.choice([1, 1, 1, 5]),
            platform=rng.choice([1, 1, 1, 2, 3, 4, 77]),
            tcb_status=rng.randrange(0, 9),
            not_before=t0 + rng.randrange(-500, 200),
            not_after=t0 + rng.randrange(-200, 500),
            version=rng.choice([CERT_VERSION] * 12 + [0, 1, 2, 4]),
            chain_id=rng.choice([chain.w3.eth.chain_id] * 12 + [1]),
            subject_key=os.urandom(rng.choice([0, 1, 32, 33, 65, 100])),
        )
        if not clean and rng.random() < 0.1:
            claim["serial"] = revoked["serial"]
        if not clean and rng.random() < 0.1:
            claim["evidence_hash"] = revoked["evidence"]
        if not clean and rng.random() < 0.1:
            claim["measurement"] = revoked["measurement"]
        if not clean and rng.random() < 0.05:
            claim["registry"] = chain.deployment.token
        hardware = [os.urandom(32) for _ in range(rng.choice([0, 1, 3, 3, 6]))]
        if not clean and rng.random() < 0.15:
            hardware.insert(rng.randrange(len(hardware) + 1), rng.choice(revoked["hardware"]))
        claim["hardware"] = tuple(hardware)
        claim["gpu_count"] = rng.choice([0, 0, 1, 8, 255])
        claim["gpu_models"] = rng.choice([0, 1, 3, 2**31 | 1, 2**32 - 1])
        cert = chain.cert(**claim)
        encoded = cert.encode()
        signer = sk if clean or rng.random() < 0.9 else random_scalar()
        sig = cert.sign(signer).to_eip2537()
        mutation = rng.random() * (2 if clean else 1)
        if mutation < 0.12:
            pos = rng.randrange(len(encoded))
            encoded = encoded[:pos] + bytes([encoded[pos] ^ (1 << rng.randrange(8))]) + encoded[pos + 1 :]
        elif mutation < 0.22:
            pos = rng.randrange(len(sig))
            sig = sig[:pos] + bytes([sig[pos] ^ (1 << rng.randrange(8))]) + sig[pos + 1 :]
        elif mutation < 0.25:
            encoded = encoded[: rng.randrange(len(encoded))] if rng.random() < 0.5 else encoded + bytes(32)
        elif mutation < 0.27:
            sig = rng.choice([bytes(128), os.urandom(128), sig + b"\x00", G1.identity().to_eip2537()])
        at = t0 + (0 if clean else rng.randrange(-100, 100))
        on_chain = reg.verify_certificate(encoded, sig, at=at, block=block["number"])
        off_chain = state.verify_certificate(encoded, sig, now=at).reason
        assert on_chain is off_chain, dict(seed=seed, i=i, claim=claim, on_chain=on_chain, off_chain=off_chain)
        seen[on_chain] += 1
    print("reasons reached:", {r.name: n for r, n in seen.items()})
    assert seen[Reason.OK] >= 20
    assert len(seen) >= 14, seen  # the random inputs reach most of the reason codes


def _custom_error(call) -> tuple[str, bytes]:
    """The 4-byte selector and arguments of the custom error a call reverts with."""
    from web3.exceptions import ContractCustomError

    with pytest.raises(ContractCustomError) as info:
        call.call()
    data = info.value.data if isinstance(info.value.data, str) else info.value.args[0]
    raw = bytes.fromhex(data.removeprefix("0x"))
    return raw[:4].hex(), raw[4:]


def test_a_relying_contract_requires_attested_gpus_of_allowed_models(chain):
    """GpuGate (contracts/src/examples) reads gpuCount/gpuModels of a certificate the registry verified: a GPU is
    required, only H100/H200 allowed, an unrecognised GPU never passes, and the fields are under the signature."""
    from eth_utils import keccak

    from derot.chain.artifacts import load_artifact
    from derot.chain.tx import deploy_contract
    from derot.constants import GPU_MODEL_UNRECOGNISED, GpuModel

    allowed = int(GpuModel.H100 | GpuModel.H200)
    gate = deploy_contract(chain.w3, chain.app_owner, load_artifact("GpuGate"), chain.registry.address, 1, allowed)

    def check(cert, sig=None):
        sig = cert.sign(chain.sk) if sig is None else sig
        return gate.functions.check(cert.encode(), sig.to_eip2537())

    def selector(sig: str) -> str:
        return keccak(text=sig)[:4].hex()

    good = chain.cert(gpu_count=8, gpu_models=int(GpuModel.H100))
    app_id, key = check(good).call()
    assert app_id == good.app_id and key == good.subject_key
    assert check(chain.cert(gpu_count=2, gpu_models=allowed)).call()[0] == chain.app_id

    name, args = _custom_error(check(chain.cert()))  # CPU-only certificate
    assert name == selector("TooFewGpus(uint8,uint8)") and args == (0).to_bytes(32, "big") + (1).to_bytes(32, "big")
    for models in (int(GpuModel.B200), int(GpuModel.H100) | GPU_MODEL_UNRECOGNISED, 0):
        name, args = _custom_error(check(chain.cert(gpu_count=1, gpu_models=models)))
        assert name == selector("GpuModelNotAllowed(uint32,uint32)") and int.from_bytes(args[:32], "big") == models

    # the GPU fields are signed: a CPU-only certificate's signature does not carry over to a claimed GPU
    cpu_only = chain.cert()
    forged = dataclasses.replace(cpu_only, gpu_count=1, gpu_models=int(GpuModel.H100))
    name, args = _custom_error(check(forged, cpu_only.sign(chain.sk)))
    assert name == selector("CertificateRefused(uint8)") and int.from_bytes(args, "big") == Reason.BAD_SIGNATURE
    assert chain.registry.verify_certificate(forged.encode(), cpu_only.sign(chain.sk)) is Reason.BAD_SIGNATURE
