"""gRPC servicers: thin adapters from the wire to a :class:`derot.net.api.NodeApi`.

Every handler bounds the request (size, concurrency, deadline), turns a :class:`Refusal` into a gRPC status
with the reason in its details, and counts the outcome. An unexpected exception is logged and answered
with ``internal_error``: one bad request never takes the node down.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from derot import _proto
from derot.net import status
from derot.net.api import NodeApi
from derot.net.status import Refusal, abort_with

log = logging.getLogger("derot.net")


class _Bounded:
    """Shared request bounds: size, concurrent requests, deadline; outcome metrics."""

    def __init__(self, api: NodeApi):
        self.metrics = api.metrics
        limits = api.limits
        self.max_bytes = limits.max_request_bytes
        self.max_inflight = limits.max_concurrent_requests
        self.deadline = limits.request_deadline
        self.inflight = 0

    async def handle(self, method: str, request, context, work):
        metrics = self.metrics
        started = time.perf_counter()
        outcome = "ok"
        try:
            if request.ByteSize() > self.max_bytes:
                raise Refusal(status.REQUEST_TOO_LARGE, f"request is {request.ByteSize()} bytes, limit {self.max_bytes}")
            if self.inflight >= self.max_inflight:
                raise Refusal(status.OVERLOADED, f"{self.inflight} requests in flight; retry later or elsewhere")
            self.inflight += 1
            try:
                result = work()
                if asyncio.iscoroutine(result):
                    async with asyncio.timeout(self.deadline):  # no extra task per request, unlike wait_for
                        result = await result
                return result
            finally:
                self.inflight -= 1
        except Refusal as refusal:
            outcome = refusal.reason
            log.info("refused", extra={"method": method, "reason": refusal.reason, "detail": refusal.detail})
            await abort_with(context, refusal)
        except asyncio.TimeoutError:
            outcome = status.DEADLINE_EXCEEDED
            await abort_with(context, Refusal(status.DEADLINE_EXCEEDED, f"no answer within {self.deadline} s"))
        except (grpc.aio.AbortError, asyncio.CancelledError):
            outcome = "aborted"
            raise
        except Exception:
            outcome = status.INTERNAL
            log.exception("request failed", extra={"method": method})
            await abort_with(context, Refusal(status.INTERNAL, "internal error (logged by the node)"))
        finally:
            metrics.requests.labels(method, outcome).inc()
            metrics.latency.labels(method).observe(time.perf_counter() - started)


def _servicer_bases():
    grpc_mod = _proto.load("node_pb2_grpc")
    return grpc_mod.RootOfTrustServicer, grpc_mod.PeerServicer, grpc_mod


#: the services whose health the node reports ("" is the whole server)
HEALTH_SERVICES = ("", "derot.v1.RootOfTrust", "derot.v1.Peer")


class Health:
    """The gRPC health service's answers: SERVING once the node holds the active epoch's shares, NOT_SERVING
    otherwise (and while stopping)."""

    def __init__(self, servicer: health.aio.HealthServicer):
        self._servicer = servicer

    async def set_serving(self, serving: bool) -> None:
        answer = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in HEALTH_SERVICES:
            await self._servicer.set(service, answer)

    async def set_service(self, service: str, serving: bool) -> None:
        """One named service's answer (e.g. ``derot.v1.Tee``, the node's own TEE attestation)."""
        answer = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        await self._servicer.set(service, answer)


def add_services(server: grpc.aio.Server, api: NodeApi) -> Health:
    """Register RootOfTrust, Peer, gRPC health and reflection on ``server``; returns the health reporter."""
    root_base, peer_base, grpc_mod = _servicer_bases()
    pb = _proto.load("node_pb2")
    bounded = _Bounded(api)

    class RootOfTrust(root_base):
        async def GetNetworkInfo(self, request, context):
            return await bounded.handle("GetNetworkInfo", request, context, api.network_info)

        async def DeriveKey(self, request, context):
            return await bounded.handle("DeriveKey", request, context, lambda: api.derive_key(request, context.peer()))

        async def IssueCertificate(self, request, context):
            return await bounded.handle("IssueCertificate", request, context, lambda: api.issue_certificate(request, context.peer()))

        async def GetStatus(self, request, context):
            return await bounded.handle("GetStatus", request, context, lambda: api.certificate_status(request))

        async def GetNodeEvidence(self, request, context):  # public: the evidence's hash is on-chain anyway
            return await bounded.handle("GetNodeEvidence", request, context, api.public_node_evidence)

    class Peer(peer_base):
        async def SubmitDkgMessage(self, request, context):
            def work():
                api.receive_dkg(request.epoch, request.message, api.caller_operator(context))
                return pb.Ack()

            return await bounded.handle("SubmitDkgMessage", request, context, work)

        async def SyncDkg(self, request, context):
            def work():
                return pb.DkgSyncResponse(
                    messages=api.sync_dkg(request.epoch, request.held, api.caller_operator(context)))

            return await bounded.handle("SyncDkg", request, context, work)

        async def GetNodeEvidence(self, request, context):
            return await bounded.handle("GetNodeEvidence", request, context,
                                        lambda: api.node_evidence(api.caller_operator(context)))

        async def GetEpochKeys(self, request, context):
            return await bounded.handle("GetEpochKeys", request, context,
                                        lambda: api.epoch_keys(request, api.caller_operator(context)))

        async def PartialSign(self, request, context):
            return await bounded.handle("PartialSign", request, context,
                                        lambda: api.partial_sign(request, api.caller_operator(context)))

        async def DeriveShare(self, request, context):
            return await bounded.handle("DeriveShare", request, context,
                                        lambda: api.derive_share(request, api.caller_operator(context)))

        async def SignNotice(self, request, context):
            return await bounded.handle("SignNotice", request, context,
                                        lambda: api.sign_notice(request, api.caller_operator(context)))

    grpc_mod.add_RootOfTrustServicer_to_server(RootOfTrust(), server)
    grpc_mod.add_PeerServicer_to_server(Peer(), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [
        pb.DESCRIPTOR.services_by_name["RootOfTrust"].full_name,
        pb.DESCRIPTOR.services_by_name["Peer"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    reflection.enable_server_reflection(names, server)
    return Health(health_servicer)
