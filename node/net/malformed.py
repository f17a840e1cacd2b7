"""Answer undecodable request bytes with ``malformed_request`` instead of gRPC's ``UNKNOWN``.

grpc decodes a request with the handler's ``request_deserializer`` before any servicer code runs; a
protobuf ``DecodeError`` there reaches the client as ``UNKNOWN "Unexpected DecodeError"``, with no reason
code. :class:`MalformedRequests` wraps every unary-unary handler: its deserializer returns a marker
instead of raising, and the wrapped handler refuses the marker with ``malformed_request`` (INVALID_ARGUMENT,
the reason in the status details like every other refusal). Decoding stays bounded by the server's
``grpc.max_receive_message_length`` and protobuf's own nesting limit.
"""

from __future__ import annotations

import logging

import grpc

from derot.net import status
from derot.net.status import Refusal, abort_with

log = logging.getLogger("derot.net")


class _Undecodable:
    """What the deserializer returns for bytes that do not decode: only their size and the error class."""

    __slots__ = ("size", "error")

    def __init__(self, size: int, error: str):
        self.size, self.error = size, error


def _safe(deserializer):
    def decode(data: bytes):
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, or anything a hostile message provokes in the parser
            return _Undecodable(len(data), type(exc).__name__)

    return decode


def _refusing(behavior, method: str):
    async def handle(request, context):
        if isinstance(request, _Undecodable):
            log.info("refused", extra={"method": method, "reason": status.MALFORMED_REQUEST,
                                       "detail": f"{request.size} bytes, {request.error}"})
            await abort_with(context, Refusal(status.MALFORMED_REQUEST,
                                              f"the request ({request.size} bytes) is not a valid protobuf message"))
            return None
        return await behavior(request, context)

    return handle


class MalformedRequests(grpc.aio.ServerInterceptor):
    """A server interceptor: ``grpc.aio.server(interceptors=[MalformedRequests()])``."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            _refusing(handler.unary_unary, handler_call_details.method),
            request_deserializer=_safe(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
