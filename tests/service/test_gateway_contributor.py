"""The gateway, the contributor and the request checker as units: a 3-of-5 committee of real components
(request checker, policy, evidence verification, issuance, the one fan-out path) in one process, with peers
reached through :class:`LocalPeering` instead of sockets. Apps use devnet evidence, verified for real."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time

import pytest

from derot import _proto
from derot.attest.binding import RequestBinding, network_id
from derot.attest.devnet import DevnetGpu, DevnetRoots, DevnetTee, devnet_measurement_digest, image_registers
from derot.attest.policy import PolicyEngine
from derot.attest.replay import ReplayCache
from derot.attest.snapshot import AppRecord, PlatformRule
from derot.attest.trust import TrustConfig
from derot.certs.certificate import Certificate
from derot.constants import DST_CERT, GPU_MODEL_UNRECOGNISED, GpuModel, KeyType, Platform, TcbStatus
from derot.crypto import kd
from derot.crypto import threshold as th
from derot.crypto.bls import G1
from derot.limits import LIMITS
from derot.net import status
from derot.net.status import Refusal
from derot.service import issuance
from derot.service.config import LimitsSection
from derot.service.contributor import Contributor
from derot.service.gateway import Gateway
from derot.service.metrics import Metrics
from derot.service.requests import RequestChecker
from derot.service.signing import FanOut
from derot.service.storage import NodeStore
from derot.service.verification import EvidenceVerifier
from derot.service.view import Admission, NodeView

pb = _proto.load("node_pb2")
APP_ID = bytes(range(32))
IMAGE = image_registers(Platform.SEV_SNP, "unit-test app v1")


@pytest.fixture(scope="module")
def roots():
    return DevnetRoots.generate()


class Network:
    """Five members' admissions and contributors; member 1's gateway."""

    def __init__(self, committee, roots, tmp_path, *, faulty=(), snapshot_changes=None, gpu_digest=None,
                 platforms=None):
        state = committee.state()
        allowed = {(Platform.SEV_SNP, devnet_measurement_digest(Platform.SEV_SNP, IMAGE))}
        if gpu_digest is not None:
            allowed.add((Platform.NVIDIA_GPU, gpu_digest))
        snap = dataclasses.replace(
            state.snapshot,
            platforms=platforms or {Platform.SEV_SNP: PlatformRule(enabled=True), Platform.TDX: PlatformRule(enabled=True),
                                    Platform.NVIDIA_GPU: PlatformRule(enabled=True)},
            apps={APP_ID: AppRecord(APP_ID, "0x" + "00" * 20, 1, measurements=frozenset(allowed))},
            **(snapshot_changes or {}),
        )
        self.state = dataclasses.replace(state, snapshot=snap)
        self.network = network_id(snap.chain_id, snap.registry)
        self.deployment = issuance.Deployment(snap.chain_id, snap.registry)
        self.trust = TrustConfig.devnet(roots)
        self.verifiers, self.contributors, self.admissions = [], {}, {}
        self.stores = []
        for i in range(1, committee.n + 1):
            view = NodeView(self.state, committee.keys(i))
            verifier = EvidenceVerifier(self.trust, workers=2, fetch_workers=1)
            checker = RequestChecker(network=self.network, trust=self.trust,
                                     policy=PolicyEngine.default(replay=ReplayCache(), max_age=300))
            admission = Admission(view, checker, verifier, Metrics())
            store = NodeStore.open(tmp_path / f"node-{i}.db", key=b"k" * 32, create=True)
            self.verifiers.append(verifier)
            self.stores.append(store)
            self.admissions[i] = admission
            self.contributors[i] = Contributor(view, admission, None, store, self.deployment, LimitsSection(),
                                               frozenset({"corrupt_shares"}) if i in faulty else frozenset())
        self.metrics = Metrics()
        self.gateway = Gateway(self.admissions[1].view, self.admissions[1], FanOut(self, self.metrics,
                               LimitsSection(extra_peers=committee.n - committee.threshold)),
                               self.stores[0], self.deployment, LimitsSection())

    async def call(self, info, method, message):  # Peering.call, in process
        contributor = self.contributors[info.index]
        handler = {"DeriveShare": contributor.derive_share, "PartialSign": contributor.partial_sign}[method]
        return await handler(message, "gateway")

    def close(self):
        for v in self.verifiers:
            v.close()
        for s in self.stores:
            s.close()


@pytest.fixture
def net(committee, roots, tmp_path):
    network = Network(committee, roots, tmp_path)
    yield network
    network.close()


def app_request(net, roots, *, tpk=b"", subject_key=b"", key_type=0, context=b"", timestamp=None, gpus=(),
                **overrides):
    timestamp, nonce = timestamp or int(time.time()), os.urandom(16)
    binding = RequestBinding(net.network, APP_ID, 1, context, tpk, subject_key, timestamp, nonce)
    tee = DevnetTee(roots, Platform.SEV_SNP, IMAGE)
    evidence = tee.quote(binding.report_data())
    if gpus:
        evidence = dataclasses.replace(evidence, gpus=tuple(g.evidence_for(binding.report_data()) for g in gpus))
    fields = dict(evidence=evidence.encode(), app_id=APP_ID, key_version=1,
                  context=context, transport_public_key=tpk, subject_key=subject_key, key_type=key_type,
                  timestamp=timestamp, nonce=nonce)
    fields.update(overrides)
    return pb.AppRequest(**fields)


def test_the_gateway_derives_a_key_that_verifies_against_the_group_key(net, roots, committee):
    transport = kd.TransportKey.generate()
    request = app_request(net, roots, tpk=transport.public.to_bytes(), context=b"wallet")
    reply = asyncio.run(net.gateway.derive_key(pb.DeriveKeyRequest(request=request), "app"))
    hashed = kd.kd_point(APP_ID, 1, b"wallet")
    key = kd.decrypt(kd.EncryptedKey.decode(reply.encrypted_key), transport, committee.public(committee.kd).group_key,
                     hashed)
    assert key == hashed * committee.kd(0)  # the master secret never existed anywhere: the oracle is the polynomial
    assert len(reply.contributors) == committee.threshold and not reply.excluded


def test_the_gateway_issues_a_certificate_signed_by_the_group_key(net, roots, committee):
    subject = b"\x04" + os.urandom(64)
    request = app_request(net, roots, subject_key=subject, key_type=int(KeyType.SECP256K1))
    reply = asyncio.run(net.gateway.issue_certificate(pb.IssueCertificateRequest(request=request), "app"))
    cert = Certificate.decode(reply.certificate)
    assert cert.app_id == APP_ID and cert.subject_key == subject and cert.epoch == 1
    signature = G1.from_bytes(reply.signature)
    assert th.verify(committee.public(committee.sig).group_key, cert.digest, signature, DST_CERT)
    assert net.stores[0].certificate_count() == 1


def test_faulty_contributors_are_excluded_and_named(committee, roots, tmp_path):
    network = Network(committee, roots, tmp_path, faulty=(2, 3))
    try:
        # the gateway asks t members first, round robin: within n requests the faulty ones are asked
        excluded: set[int] = set()
        for _ in range(len(committee.members) if hasattr(committee, "members") else 5):
            transport = kd.TransportKey.generate()
            request = app_request(network, roots, tpk=transport.public.to_bytes())
            reply = asyncio.run(network.gateway.derive_key(pb.DeriveKeyRequest(request=request), "app"))
            assert not set(reply.contributors) & {2, 3}
            excluded |= set(reply.excluded)
        assert excluded and excluded <= {2, 3}
    finally:
        network.close()


def test_a_contributor_signs_only_the_certificate_it_rebuilds(net, roots):
    subject = b"\x04" + os.urandom(64)
    request = app_request(net, roots, subject_key=subject, key_type=int(KeyType.SECP256K1))
    checked = asyncio.run(net.admissions[1].check(request, "certify", "test"))[2]
    honest = issuance.build_certificate(checked, net.deployment, 1, now=int(time.time()), lifetime=3600,
                                        policy_block=net.state.block_number)
    forged = dataclasses.replace(honest, subject_key=b"\x04" + os.urandom(64))
    with pytest.raises(Refusal) as refused:
        asyncio.run(net.contributors[2].partial_sign(
            pb.PartialSignRequest(request=request, certificate=forged.encode()), "gateway"))
    assert refused.value.reason == status.CERTIFICATE_MISMATCH


def _issue(net, roots, **request_fields) -> Certificate:
    subject = b"\x04" + os.urandom(64)
    request = app_request(net, roots, subject_key=subject, key_type=int(KeyType.SECP256K1), **request_fields)
    reply = asyncio.run(net.gateway.issue_certificate(pb.IssueCertificateRequest(request=request), "app"))
    return Certificate.decode(reply.certificate)


def test_a_certificate_records_the_attested_gpus_and_their_models(committee, roots, tmp_path):
    """SNP + two devnet H100s (board G520) and one GPU of a board derot does not know: gpuCount 3, gpuModels
    H100 | UNRECOGNISED; CPU-only evidence: 0 and 0."""
    gpus = [DevnetGpu(roots), DevnetGpu(roots, fwid=os.urandom(48)), DevnetGpu(roots, project="X999")]
    gpu_digest = gpus[0].measurement_digest
    network = Network(committee, roots, tmp_path, gpu_digest=gpu_digest)
    try:
        cert = _issue(network, roots, gpus=gpus)
        assert (cert.gpu_count, cert.gpu_models) == (3, int(GpuModel.H100) | GPU_MODEL_UNRECOGNISED)
        assert _issue(network, roots, gpus=gpus[:1]).gpu_models == int(GpuModel.H100)
        assert (_issue(network, roots).gpu_count, _issue(network, roots).gpu_models) == (0, 0)
    finally:
        network.close()


def test_a_contributor_refuses_a_certificate_that_misstates_the_gpus(committee, roots, tmp_path):
    gpus = [DevnetGpu(roots)]
    network = Network(committee, roots, tmp_path / "gpu", gpu_digest=gpus[0].measurement_digest)
    try:
        request = app_request(network, roots, subject_key=b"\x04" + os.urandom(64), key_type=1, gpus=gpus)
        checked = asyncio.run(network.admissions[1].check(request, "certify", "test"))[2]
        honest = issuance.build_certificate(checked, network.deployment, 1, now=int(time.time()), lifetime=3600,
                                            policy_block=network.state.block_number)
        for member, lie in ((2, dict(gpu_count=2)), (3, dict(gpu_models=int(GpuModel.H200)))):
            with pytest.raises(Refusal) as refused:
                asyncio.run(network.contributors[member].partial_sign(pb.PartialSignRequest(
                    request=request, certificate=dataclasses.replace(honest, **lie).encode()), "gateway"))
            assert refused.value.reason == status.CERTIFICATE_MISMATCH and next(iter(lie)) in str(refused.value)
    finally:
        network.close()


def test_the_certificate_carries_the_effective_tcb_status(committee, roots, tmp_path):
    """Governance's SEV-SNP minimum TCB for the product (Milan) makes an UpToDate report OUT_OF_DATE: the
    certificate says so, and a contributor refuses a gateway's proposal that carries the raw status."""
    floor = {Platform.SEV_SNP: PlatformRule(enabled=True, tcb_floor=TcbStatus.OUT_OF_DATE)}
    network = Network(committee, roots, tmp_path, snapshot_changes=dict(snp_min_tcb={"Milan": {"snp": 250}}),
                      platforms=floor)
    try:
        assert _issue(network, roots).tcb_status == TcbStatus.OUT_OF_DATE
        request = app_request(network, roots, subject_key=b"\x04" + os.urandom(64), key_type=1)
        checked = asyncio.run(network.admissions[1].check(request, "certify", "test"))[2]
        assert checked.claims.tcb_status == TcbStatus.UP_TO_DATE  # the report itself is up to date
        proposed = dataclasses.replace(issuance.build_certificate(
            checked, network.deployment, 1, now=int(time.time()), lifetime=3600,
            policy_block=network.state.block_number), tcb_status=int(TcbStatus.UP_TO_DATE))
        with pytest.raises(Refusal) as refused:
            asyncio.run(network.contributors[3].partial_sign(
                pb.PartialSignRequest(request=request, certificate=proposed.encode()), "gateway"))
        assert refused.value.reason == status.CERTIFICATE_MISMATCH and "tcb_status" in str(refused.value)
    finally:
        network.close()
    plain = Network(committee, roots, tmp_path / "plain", platforms=floor)
    try:
        assert _issue(plain, roots).tcb_status == TcbStatus.UP_TO_DATE
    finally:
        plain.close()


def test_a_contributor_refuses_a_replayed_request(net, roots):
    transport = kd.TransportKey.generate()
    request = app_request(net, roots, tpk=transport.public.to_bytes())
    message = pb.DeriveShareRequest(request=request, epoch=1)
    asyncio.run(net.contributors[2].derive_share(message, "gateway"))
    with pytest.raises(Refusal) as refused:
        asyncio.run(net.contributors[2].derive_share(message, "gateway"))
    assert refused.value.reason == "replayed"


@pytest.mark.parametrize("field, value, reason", [
    ("app_id", b"\x01" * 31, status.MALFORMED_REQUEST),
    ("nonce", b"\x01" * 15, status.MALFORMED_REQUEST),
    ("context", b"c" * (LIMITS.max_context + 1), status.MALFORMED_REQUEST),
    ("transport_public_key", b"\x00" * 48, status.MALFORMED_REQUEST),
    ("evidence", b"", status.MALFORMED_REQUEST),
    ("evidence", b"\x0a\xff\xff\xff", "evidence_malformed"),
    ("key_version", 2, status.KEY_VERSION_MISMATCH),
])
def test_the_request_checker_names_what_is_wrong(net, roots, field, value, reason):
    transport = kd.TransportKey.generate()
    request = app_request(net, roots, tpk=transport.public.to_bytes(), **{field: value})
    with pytest.raises(Refusal) as refused:
        asyncio.run(net.admissions[1].check(request, "derive", "test"))
    assert refused.value.reason == reason


def test_the_request_checker_refuses_evidence_bound_to_another_request(net, roots):
    transport = kd.TransportKey.generate()
    request = app_request(net, roots, tpk=transport.public.to_bytes())
    request.context = b"another context"  # changed after the evidence bound the request
    with pytest.raises(Refusal) as refused:
        asyncio.run(net.admissions[1].check(request, "derive", "test"))
    assert refused.value.reason == "report_data_mismatch"


def test_a_contributor_refuses_a_certificate_that_misstates_the_hardware(committee, roots, tmp_path):
    """Issue 16: a gateway that drops a machine's hardware key from the certificate (so a later revocation of that
    chip or GPU would not reach it), or names another machine, gets no partial signature."""
    from derot.attest.identity import hardware_key
    from derot.constants import RevocationKind

    gpus = [DevnetGpu(roots)]
    network = Network(committee, roots, tmp_path / "hw", gpu_digest=gpus[0].measurement_digest)
    try:
        request = app_request(network, roots, subject_key=b"\x04" + os.urandom(64), key_type=1, gpus=gpus)
        checked = asyncio.run(network.admissions[1].check(request, "certify", "test"))[2]
        honest = issuance.build_certificate(checked, network.deployment, 1, now=int(time.time()), lifetime=3600,
                                            policy_block=network.state.block_number)
        chip_key = hardware_key(RevocationKind.CHIP_ID, checked.claims.hardware_ids.chip_id)
        assert chip_key in honest.hardware and len(honest.hardware) >= 2  # the chip and the GPU's ids
        other = tuple(sorted(k for k in honest.hardware if k != chip_key) + [hardware_key(RevocationKind.CHIP_ID,
                                                                                          os.urandom(64))])
        lies = (tuple(), tuple(k for k in honest.hardware if k != chip_key), tuple(sorted(other)))
        for member, hardware in zip((2, 3, 4), lies):
            with pytest.raises(Refusal) as refused:
                asyncio.run(network.contributors[member].partial_sign(pb.PartialSignRequest(
                    request=request, certificate=dataclasses.replace(honest, hardware=hardware).encode()), "gateway"))
            assert refused.value.reason == status.CERTIFICATE_MISMATCH and "hardware" in str(refused.value)
        reply = asyncio.run(network.contributors[5].partial_sign(pb.PartialSignRequest(
            request=request, certificate=honest.encode()), "gateway"))
        assert len(reply.partial_signature) == 48  # the honest certificate is signed by the same contributor code
    finally:
        network.close()


def _with_word(data: bytes, at: int, value: int) -> bytes:
    return data[:at] + value.to_bytes(32, "big") + data[at + 32:]


def test_issuance_accepts_only_the_certificate_this_node_would_issue(net, roots):
    """derot.service.issuance.check_proposed_certificate, refusal by refusal: a field that differs, the epoch,
    undecodable bytes, an empty validity window, notBefore past the clock skew, a lifetime over the network's
    maximum, a policyBlock too far from this node's confirmed block. The honest proposal is accepted."""
    request = app_request(net, roots, subject_key=b"\x04" + os.urandom(64), key_type=int(KeyType.SECP256K1))
    checked = asyncio.run(net.admissions[1].check(request, "certify", "test"))[2]
    now, block = int(time.time()), net.state.block_number
    honest = issuance.build_certificate(checked, net.deployment, 1, now=now, lifetime=3600, policy_block=block)

    def check(cert_bytes: bytes, *, at: int = now, max_lifetime: int = 86400, confirmed: int = block):
        return issuance.check_proposed_certificate(cert_bytes, checked, net.deployment, 1, now=at,
                                                   max_lifetime=max_lifetime, confirmed_block=confirmed)

    assert check(honest.encode()) == honest
    skew = LIMITS.max_clock_skew
    assert check(honest.encode(), at=now + skew) == honest  # the bound itself is accepted
    cases = [
        (dataclasses.replace(honest, app_id=b"\x09" * 32).encode(), {}, status.CERTIFICATE_MISMATCH, "app_id"),
        (dataclasses.replace(honest, key_version=2).encode(), {}, status.CERTIFICATE_MISMATCH, "key_version"),
        (dataclasses.replace(honest, epoch=2).encode(), {}, status.WRONG_EPOCH, "epoch 2"),
        (honest.encode()[:-1], {}, status.MALFORMED_REQUEST, "certificate"),
        (honest.encode() + bytes(32), {}, status.MALFORMED_REQUEST, "canonical"),  # own bytes, then a trailer
        (_with_word(honest.encode(), 0x20 + 13 * 32, (1 << 64) + now), {}, status.MALFORMED_REQUEST, "uint64"),
        (_with_word(honest.encode(), 0, 0x40), {}, status.MALFORMED_REQUEST, "certificate"),
        (dataclasses.replace(honest, not_after=honest.not_before).encode(), {}, status.CERTIFICATE_MISMATCH,
         "validity window"),
        (honest.encode(), {"at": now + skew + 1}, status.CERTIFICATE_MISMATCH, f"more than {skew} s"),
        (honest.encode(), {"at": now - skew - 1}, status.CERTIFICATE_MISMATCH, f"more than {skew} s"),
        (honest.encode(), {"max_lifetime": 3599}, status.CERTIFICATE_MISMATCH, "lifetime exceeds"),
    ]
    lead, lag = issuance.POLICY_BLOCK_LEAD, issuance.POLICY_BLOCK_LAG
    ahead = issuance.build_certificate(checked, net.deployment, 1, now=now, lifetime=3600, policy_block=block + lead)
    assert check(ahead.encode()) == ahead and check(honest.encode(), confirmed=block + lag) == honest  # the bounds
    ahead = dataclasses.replace(ahead, policy_block=block + lead + 1)
    cases += [(ahead.encode(), {}, status.CERTIFICATE_MISMATCH, "policyBlock"),
              (honest.encode(), {"confirmed": block + lag + 1}, status.CERTIFICATE_MISMATCH, "policyBlock")]
    for data, kwargs, reason, words in cases:
        with pytest.raises(Refusal) as refused:
            check(data, **kwargs)
        assert refused.value.reason == reason and words in str(refused.value), (reason, words, str(refused.value))
