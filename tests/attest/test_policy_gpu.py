"""Per-app GPU policy (``AppRecord.gpu_required`` / ``gpu_models``, set on-chain by ``setAppGpuPolicy``) and
the on-chain waiver bits (``derot.chain.tee_policy``) against the rules that read them.

Claims come from real verification of devnet TDX and NVIDIA evidence. The model cases set the verified
claims' ``tee_attributes["gpu_model"]`` (what the GPU verifier derives from the chip and board,
derot.attest.gpu_model) to each model in turn; an unknown model is refused wherever the app restricts models.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import replace

import pytest

from derot.attest import policy as P
from derot.attest import policy_tee
from derot.attest.devnet import DevnetGpu, DevnetTee
from derot.attest.sev_snp import POLICY_BITS
from derot.attest.snapshot import AppRecord, GovernanceSnapshot, PlatformRule
from derot.attest.verify import verify_evidence
from derot.chain import tee_policy
from derot.constants import GpuModel, Platform, TcbStatus

APP = hashlib.sha256(b"gpu-policy app").digest()
R = P.PolicyReason


@pytest.fixture(scope="module")
def now(devnet):
    return devnet.created + 86400


@pytest.fixture(scope="module")
def pair(devnet, devnet_trust, now):
    """Verified TDX claims paired with a verified devnet GPU."""
    rd = bytes(64)
    evidence = replace(DevnetTee(devnet, Platform.TDX).quote(rd), gpus=(DevnetGpu(devnet).evidence_for(rd),))
    return verify_evidence(evidence, devnet_trust, at=now)


def with_model(claims, model: str):
    gpu = replace(claims.gpus[0], tee_attributes={**claims.gpus[0].tee_attributes, "gpu_model": model})
    return claims.with_gpus((gpu,))


def snap(claims, **app_fields) -> GovernanceSnapshot:
    allowed = {(c.platform, c.measurement_digest) for c in (claims, *claims.gpus)}
    app = AppRecord(APP, "0xowner", 1, measurements=frozenset(allowed), **app_fields)
    return GovernanceSnapshot(chain_id=1, registry="0x" + "22" * 20, block_number=1,
                              platforms={p: PlatformRule(True, TcbStatus.UP_TO_DATE) for p in Platform}, apps={APP: app})


def decide(claims, snapshot, purpose="app"):
    req = P.PolicyRequest(purpose, claims.not_before + 1 if claims.not_before else 0, app_id=APP,
                          expected_report_data=claims.report_data)
    return P.PolicyEngine.default().decide(claims, snapshot, req)


def test_gpu_required_refuses_cpu_only_evidence(pair):
    cpu_only = replace(pair, gpus=())
    assert decide(pair, snap(pair, gpu_required=True)).allowed
    verdict = decide(cpu_only, snap(cpu_only, gpu_required=True))
    assert verdict.reason is R.GPU_REQUIRED and "requires an attested GPU" in verdict.detail
    assert decide(cpu_only, snap(cpu_only)).allowed  # the default asks for no GPU


@pytest.mark.parametrize("model,allowed", [
    ("H100", GpuModel.H100), ("H200", GpuModel.H100 | GpuModel.H200), ("GB200", GpuModel.GB200 | GpuModel.B200),
])
def test_allowed_gpu_models_pass(pair, model, allowed):
    claims = with_model(pair, model)
    assert decide(claims, snap(claims, gpu_models=int(allowed))).allowed


@pytest.mark.parametrize("model,allowed", [
    ("H200", GpuModel.H100), ("B100", GpuModel.B200 | GpuModel.GB200), ("H100", GpuModel.GB200),
    ("", GpuModel.H100), ("A100", int(sum(GpuModel))),  # a model the verifier cannot name fails closed
])
def test_other_gpu_models_are_refused_by_name(pair, model, allowed):
    claims = with_model(pair, model)
    verdict = decide(claims, snap(claims, gpu_models=int(allowed)))
    assert verdict.reason is R.GPU_MODEL_NOT_ALLOWED
    assert (model if model in GpuModel.__members__ else "unknown model") in verdict.detail


def test_no_model_restriction_accepts_any_gpu_and_node_membership_ignores_app_gpu_policy(pair):
    assert decide(pair, snap(pair, gpu_models=0)).allowed  # no model reported, none required
    cpu_only = replace(pair, gpus=())
    node_snap = replace(snap(cpu_only, gpu_required=True), node_measurements=frozenset(
        {(cpu_only.platform, cpu_only.measurement_digest)}))
    assert decide(cpu_only, node_snap, purpose="node").allowed


def test_every_onchain_waiver_bit_names_a_waiver_the_policy_reads():
    """A bit whose name policy_tee never consults would be a silent no-op for the app owner who sets it."""
    source = inspect.getsource(policy_tee)
    for name in tee_policy.TEE_EXCEPTION_BITS:
        if name.startswith("snp_policy:"):
            assert name.split(":", 1)[1] in POLICY_BITS and 'f"snp_policy:{name}"' in source
        else:
            assert f'"{name}"' in source, name
    assert tee_policy.decode_exceptions(tee_policy.encode_exceptions(tee_policy.TEE_EXCEPTION_BITS)) == set(
        tee_policy.TEE_EXCEPTION_BITS)
    # the reserved-bits check has no waiver, and its reason is no waiver name
    assert "td_attributes_reserved" not in tee_policy.TEE_EXCEPTION_BITS
    with pytest.raises(tee_policy.PolicyEncodingError):
        tee_policy.encode_exceptions(["reserved"])
