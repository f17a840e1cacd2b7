"""The contributor: what this node answers other committee members on its Peer port.

Every share it gives is for a request it checked again itself, against its own confirmed view of the
registry (a gateway is never trusted): a key-derivation share, a partial signature over a certificate it
rebuilt, a partial signature over a feed notice it rebuilt. It also serves its epochs' public keys and its
own membership evidence.
"""

from __future__ import annotations

import time

from derot import _proto
from derot.crypto import kd
from derot.net import status
from derot.net.status import Refusal
from derot.service import faults, issuance
from derot.service.config import LimitsSection
from derot.service.epoch import EpochKeys
from derot.service.notice_source import NoticeSource
from derot.service.storage import NodeStore
from derot.service.view import Admission, NodeView


class Contributor:
    def __init__(self, view: NodeView, admission: Admission, notices: NoticeSource, store: NodeStore,
                 deployment: issuance.Deployment, limits: LimitsSection, faults_active: frozenset[str]):
        self.view, self.admission, self.notices = view, admission, notices
        self.store, self.deployment, self.limits = store, deployment, limits
        self.corrupt = "corrupt_shares" in faults_active  # devnet fault injection
        self._pb = _proto.load("node_pb2")

    async def derive_share(self, request, caller: str):
        """Peer DeriveShare: this node's encrypted key-derivation share."""
        _state, keys, checked = await self.admission.check(request.request, "derive", caller)
        if request.epoch != keys.epoch:
            raise Refusal(status.WRONG_EPOCH, f"asked for epoch {request.epoch}, this node serves {keys.epoch}")
        share = issuance.derive_share(keys, checked)
        if self.corrupt:
            share = kd.EncryptedKey(share.c1, share.c2, faults.corrupt_point(share.c3))
        return self._pb.DeriveShareResponse(index=keys.index, epoch=keys.epoch, encrypted_share=share.encode())

    async def partial_sign(self, request, caller: str):
        """Peer PartialSign: a partial signature over a proposed certificate this node rebuilt identically."""
        state, keys, checked = await self.admission.check(request.request, "certify", caller)
        cert = issuance.check_proposed_certificate(
            request.certificate, checked, self.deployment, keys.epoch, now=int(time.time()),
            max_lifetime=self.limits.max_certificate_lifetime, confirmed_block=state.block_number,
        )
        partial = issuance.partial_sign(keys, cert)
        if self.corrupt:
            partial = faults.corrupt_point(partial)
        return self._pb.PartialSignResponse(index=keys.index, epoch=keys.epoch,
                                            partial_signature=partial.to_bytes())

    async def sign_notice(self, request):
        """Peer SignNotice: a partial signature over a feed notice this node rebuilds identically."""
        state, keys = self.view.serving()
        notice = await self.notices.check_proposed(request.notice, state, keys.epoch)
        partial = notice.sign(keys.shares.sig)
        if self.corrupt:
            partial = faults.corrupt_point(partial)
        return self._pb.SignNoticeResponse(index=keys.index, epoch=keys.epoch, partial_signature=partial.to_bytes())

    def epoch_keys(self, request):
        """Peer GetEpochKeys: the public keys of an epoch this node took part in."""
        record = self.store.epoch(request.epoch)
        if record is None or record.status == "pending":
            raise Refusal(status.WRONG_EPOCH, f"this node holds no keys of epoch {request.epoch}")
        keys = EpochKeys.load_public(record.public)
        pb = self._pb
        return pb.EpochKeys(
            epoch=request.epoch, threshold=keys.threshold, group_key_sig=keys.sig.group_key.to_bytes(),
            group_key_kd=keys.kd.group_key.to_bytes(),
            share_keys=[pb.ShareKeys(index=i, sig=keys.sig.share_keys[i].to_bytes(),
                                     kd=keys.kd.share_keys[i].to_bytes()) for i in keys.sig.share_keys],
        )

    def node_evidence(self):
        """Peer GetNodeEvidence: the membership evidence this node registered."""
        evidence = self.store.meta("node_evidence")
        if evidence is None:
            raise Refusal(status.NOT_A_MEMBER, "this node has no registered evidence")
        return self._pb.NodeEvidence(evidence=evidence, timestamp=int(time.time()))
