"""The gateway: what this node answers apps on its public port.

Key derivation and certificate issuance check the request (:class:`~derot.service.view.Admission`), answer
with this node's own share and collect the rest from the committee (:class:`~derot.service.signing.FanOut`);
the combined result is verified before it leaves. Network info and certificate status read the confirmed view.
"""

from __future__ import annotations

import functools
import logging
import time

from derot import __version__, _proto
from derot.certs.verify import signature_bytes
from derot.constants import DST_CERT
from derot.crypto import kd
from derot.crypto.bls import G1, PointDecodeError
from derot.net import status
from derot.net.status import Refusal
from derot.service import issuance
from derot.service.config import LimitsSection
from derot.service.signing import FanOut, Linear, invalid_members
from derot.service.storage import NodeStore
from derot.service.view import Admission, NodeView

log = logging.getLogger("derot.node")


class Gateway:
    def __init__(self, view: NodeView, admission: Admission, fanout: FanOut, store: NodeStore,
                 deployment: issuance.Deployment, limits: LimitsSection):
        self.view, self.admission, self.fanout = view, admission, fanout
        self.store, self.deployment, self.limits = store, deployment, limits
        self._pb = _proto.load("node_pb2")

    async def derive_key(self, request, source: str):
        state, keys, checked = await self.admission.check(request.request, "derive", source)
        pb = self._pb

        @functools.cache
        def hashed() -> G1:  # hashed when first needed: by this node's own share, after the peer calls went out
            return kd.kd_point(checked.app_id, checked.key_version, checked.context)

        def every(answers):
            combined = kd.combine_verified(answers, keys.threshold, keys.kd.group_key, keys.kd.share_keys,
                                           hashed(), checked.tpk)
            return combined.key, combined.used, combined.bad

        linear = Linear(weigh=kd.weigh, total=kd.total,
                        checker=lambda: kd.KeyCheck(keys.kd.group_key, hashed(), checked.tpk))
        collected = await self.fanout.collect(
            state, keys,
            own=lambda weight: issuance.derive_share(keys, checked, hashed(), weight),
            method="DeriveShare", message=pb.DeriveShareRequest(request=request.request, epoch=keys.epoch),
            decode=lambda reply: kd.EncryptedKey.decode(reply.encrypted_share),
            linear=linear, every=every,
        )
        log.info("key derived", extra={
            "app_id": checked.app_id, "key_version": checked.key_version, "platform": checked.claims.platform.name,
            "measurement": checked.claims.measurement_digest, "contributors": sorted(collected.used),
            "failures": dict(collected.failures), "ms": round(collected.seconds * 1000, 1)})
        return pb.DeriveKeyResponse(
            epoch=keys.epoch,
            encrypted_key=collected.result.encode(),
            contributors=sorted(collected.used),
            excluded=invalid_members(collected),
        )

    async def issue_certificate(self, request, source: str):
        state, keys, checked = await self.admission.check(request.request, "certify", source)
        limits = self.limits
        lifetime = request.lifetime_seconds or limits.certificate_lifetime
        if not 0 < lifetime <= limits.max_certificate_lifetime:
            raise Refusal(status.MALFORMED_REQUEST, f"lifetime must be 1..{limits.max_certificate_lifetime} s",
                          metadata={"field": "lifetime_seconds"})
        cert = issuance.build_certificate(
            checked, self.deployment, keys.epoch, now=int(time.time()), lifetime=lifetime,
            policy_block=state.block_number,
        )
        cert_bytes = cert.encode()
        collected = await self.fanout.threshold_sign(
            state, keys, digest=cert.digest, dst=DST_CERT, own=lambda weight: issuance.partial_sign(keys, cert, weight),
            method="PartialSign", message=self._pb.PartialSignRequest(request=request.request, certificate=cert_bytes),
        )
        signature = collected.result
        log.info("certificate issued", extra={
            "serial": cert.serial, "app_id": cert.app_id, "platform": checked.claims.platform.name,
            "key_type": cert.key_type, "not_after": cert.not_after, "contributors": sorted(collected.used),
            "failures": dict(collected.failures), "ms": round(collected.seconds * 1000, 1)})
        self.store.log_certificate(cert.serial, keys.epoch, cert.app_id, cert.not_after, cert_bytes,
                                   signature.to_bytes())
        return self._pb.IssueCertificateResponse(
            certificate=cert_bytes,
            signature=signature.to_bytes(),
            signature_eip2537=signature_bytes(signature),
            epoch=keys.epoch,
            contributors=sorted(collected.used),
            excluded=invalid_members(collected),
        )

    def network_info(self, chain_id: int, registry: str):
        state, keys = self.view.state, self.view.keys
        pb = self._pb
        info = pb.NetworkInfo(chain_id=chain_id, registry=registry, version=__version__)
        if state is None:
            return info
        info.confirmed_block = state.block_number
        epoch = state.committee
        if epoch is not None:
            info.epoch, info.threshold = epoch.id, epoch.threshold
            info.group_key_sig = epoch.group_key_sig.to_bytes()
            info.group_key_kd = epoch.group_key_kd.to_bytes()
            for index, operator in enumerate(epoch.members, start=1):
                node = state.nodes.get(operator)
                if node is not None:
                    info.members.append(pb.Member(index=index, operator=operator, endpoint=node.endpoint,
                                                  tls_key_hash=node.tls_key_hash, identity_key=node.identity_key))
        if keys is not None:
            info.node_index = keys.index
        return info

    def certificate_status(self, request):
        state = self.view.state
        if state is None:
            raise Refusal(status.NO_ACTIVE_EPOCH, "this node has not read the registry yet")
        sig = bytes(request.signature)
        if len(sig) == G1.SIZE:
            try:
                sig = G1.from_bytes(sig, allow_identity=True).to_eip2537()
            except PointDecodeError:
                sig = b""
        verdict = state.verify_certificate(bytes(request.certificate), sig, now=int(time.time()))
        return self._pb.GetStatusResponse(valid=verdict.ok, reason=verdict.reason.name.lower(),
                                          confirmed_block=state.block_number)
