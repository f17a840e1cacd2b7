"""What a node contributes to a request once it has checked it: a key-derivation share, or a partial
signature over a certificate it has re-derived field by field.

A contributing node never signs a certificate it did not build itself from the request and its own
claims: :func:`check_proposed_certificate` compares every field the gateway proposed with what this node
derives, and allows only the gateway's choice of times within the network's bounds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from derot.attest.gpu_model import certificate_gpus
from derot.attest.identity import hardware_keys
from derot.certs.certificate import MIN_ENCODED_SIZE, Certificate, CertificateDecodeError, head_uint
from derot.constants import CERT_VERSION, DST_CERT
from derot.crypto import kd
from derot.crypto import threshold as th
from derot.crypto.bls import G1, R
from derot.limits import LIMITS
from derot.net import status
from derot.net.status import Refusal
from derot.service.epoch import EpochKeys
from derot.service.requests import CheckedRequest

SERIAL_DOMAIN = b"DEROT-V1-SERIAL"
#: how far a gateway's notBefore may lie from a contributor's clock
#: how far a gateway's policy block may lie ahead of / behind a contributor's confirmed block
POLICY_BLOCK_LEAD = 16
POLICY_BLOCK_LAG = 1024


@dataclass(frozen=True)
class Deployment:
    """The registry a node serves: certificates name it."""

    chain_id: int
    registry: str


def serial_of(checked: CheckedRequest) -> bytes:
    """A certificate serial every node derives alike: SHA-256(domain ‖ evidenceHash ‖ nonce)."""
    return hashlib.sha256(SERIAL_DOMAIN + checked.evidence_hash + checked.nonce).digest()


def build_certificate(
    checked: CheckedRequest, deployment: Deployment, epoch: int, *, now: int, lifetime: int, policy_block: int
) -> Certificate:
    """The certificate for a checked certification request (the gateway's proposal; a contributor rebuilds it
    from its own check). Its TCB status is the effective one (governance's minimum TCB applied), and
    gpuCount/gpuModels come from the verified GPU claims paired with the CPU evidence."""
    gpu_count, gpu_models = certificate_gpus(checked.claims)
    return Certificate(
        version=CERT_VERSION,
        chain_id=deployment.chain_id,
        registry=deployment.registry,
        epoch=epoch,
        serial=serial_of(checked),
        app_id=checked.app_id,
        key_version=checked.key_version,
        key_type=checked.key_type,
        subject_key=checked.subject_key,
        platform=int(checked.claims.platform),
        measurement=checked.claims.measurement_digest,
        evidence_hash=checked.evidence_hash,
        tcb_status=int(checked.tcb_status),
        not_before=now,
        not_after=now + lifetime,
        policy_block=policy_block,
        hardware=hardware_keys(checked.claims),
        gpu_count=gpu_count,
        gpu_models=gpu_models,
    )


def check_proposed_certificate(
    data: bytes,
    checked: CheckedRequest,
    deployment: Deployment,
    epoch: int,
    *,
    now: int,
    max_lifetime: int,
    confirmed_block: int,
) -> Certificate:
    """Accept the gateway's certificate only if it is the one this node would issue: the bytes of this node's
    own certificate, with the gateway's choice of notBefore, notAfter and policyBlock, or a refusal that names
    what differs."""
    cert = _own_if_identical(data, checked, deployment, epoch)
    if cert is None:
        raise _mismatch(data, checked, deployment, epoch)
    if abs(cert.not_before - now) > LIMITS.max_clock_skew:
        raise Refusal(status.CERTIFICATE_MISMATCH,
                      f"notBefore {cert.not_before} is more than {LIMITS.max_clock_skew} s from now")
    if cert.not_after - cert.not_before > max_lifetime:
        raise Refusal(status.CERTIFICATE_MISMATCH, f"lifetime exceeds the network maximum of {max_lifetime} s")
    if not confirmed_block - POLICY_BLOCK_LAG <= cert.policy_block <= confirmed_block + POLICY_BLOCK_LEAD:
        raise Refusal(
            status.CERTIFICATE_MISMATCH,
            f"policyBlock {cert.policy_block} is too far from this node's confirmed block {confirmed_block}",
        )
    return cert


def _own_if_identical(data: bytes, checked: CheckedRequest, deployment: Deployment, epoch: int) -> Certificate | None:
    """This node's certificate, built with the times ``data`` proposes, if its encoding is exactly ``data``
    (encodings are canonical, so that is the same as decoding ``data`` and comparing); else None."""
    if not isinstance(data, bytes) or len(data) < MIN_ENCODED_SIZE:
        return None
    not_before, not_after, policy_block = (head_uint(data, name)
                                           for name in ("not_before", "not_after", "policy_block"))
    if not not_before < not_after < 1 << 64 or policy_block >= 1 << 64:
        return None
    own = build_certificate(checked, deployment, epoch, now=not_before, lifetime=not_after - not_before,
                            policy_block=policy_block)
    return own if own.encode() == data else None


def _mismatch(data: bytes, checked: CheckedRequest, deployment: Deployment, epoch: int) -> Refusal:
    """Why ``data`` is not this node's certificate: malformed, another epoch, or the fields that differ."""
    try:
        cert = Certificate.decode(data)
    except CertificateDecodeError as exc:
        return Refusal(status.MALFORMED_REQUEST, f"certificate: {exc}", metadata={"field": "certificate"})
    if cert.epoch != epoch:
        return Refusal(status.WRONG_EPOCH, f"certificate names epoch {cert.epoch}, this node serves epoch {epoch}")
    mismatched = []
    if cert.not_after > cert.not_before:
        expected = build_certificate(checked, deployment, epoch, now=cert.not_before,
                                     lifetime=cert.not_after - cert.not_before, policy_block=cert.policy_block)
        mismatched = [name for name in cert.__dataclass_fields__ if getattr(cert, name) != getattr(expected, name)]
    return Refusal(status.CERTIFICATE_MISMATCH,
                   "the proposed certificate differs from this node's view: "
                   + (", ".join(mismatched) or "validity window"))


def derive_share(keys: EpochKeys, checked: CheckedRequest, hashed: G1 | None = None,
                 weight: int = 1) -> kd.EncryptedKey:
    """This node's encrypted key-derivation share for a checked request, made with its secret share times
    ``weight`` (a gateway's Lagrange weight; 1 for the share a peer sends). ``hashed`` is the request's kd point
    when the caller already computed it (it must be ``kd.kd_point`` of the checked request's fields)."""
    if hashed is None:
        hashed = kd.kd_point(checked.app_id, checked.key_version, checked.context)
    return kd.derive_share(keys.shares.kd * weight % R, hashed, checked.tpk)


def partial_sign(keys: EpochKeys, cert: Certificate, weight: int = 1) -> G1:
    """This node's partial signature of ``cert``, made with its secret share times ``weight``."""
    return th.partial_sign(keys.shares.sig * weight % R, cert.digest, DST_CERT)
