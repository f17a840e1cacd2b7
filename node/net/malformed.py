"""Answer undecodable request bytes with ``malformed_request`` instead of gRPC's ``UNKNOWN``.

grpc decodes a request with the handler's ``request_deserializer`` before any servicer code runs; a
protobuf ``DecodeError`` there reaches the client as ``UNKNOWN "Unexpected DecodeError"``, with no reason
code. :class:`MalformedRequests` wraps every unary-unary handler: its deserializer returns a marker
instead of raising, and the wrapped handler refuses the marker with ``malformed_request`` (INVALID_ARGUMENT,
the reason in the status details like every other refusal). Decoding stays bounded by the server's
``grpc.max_receive_message_length`` and protobuf's own nesting limit.

It wraps the handlers once, where they are registered (``add_services(MalformedRequests(server), api)``),
not per call: a grpc.aio server interceptor costs a coroutine and a new handler on every request.
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


def _wrap(handler, method: str):
    """``handler`` with a deserializer that never raises (unary-unary with a deserializer; others unchanged)."""
    if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
        return handler
    return grpc.unary_unary_rpc_method_handler(
        _refusing(handler.unary_unary, method),
        request_deserializer=_safe(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )


class _SafeGeneric(grpc.GenericRpcHandler):
    """A generic handler whose unary-unary handlers are wrapped, each once (per registered method)."""

    def __init__(self, inner: grpc.GenericRpcHandler):
        self._inner = inner
        self._wrapped: dict[str, object] = {}  # only methods the inner handler serves: bounded

    def service(self, handler_call_details):
        method = handler_call_details.method
        hit = self._wrapped.get(method)
        if hit is not None:
            return hit
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        wrapped = self._wrapped[method] = _wrap(handler, method)
        return wrapped


class MalformedRequests:
    """Registers handlers on a ``grpc.aio.Server`` wrapped as described above; everything else is the
    server's own: ``add_services(MalformedRequests(server), api)``."""

    def __init__(self, server):
        self._server = server

    def add_generic_rpc_handlers(self, handlers) -> None:
        self._server.add_generic_rpc_handlers(tuple(_SafeGeneric(h) for h in handlers))

    def add_registered_method_handlers(self, service_name: str, method_handlers) -> None:
        self._server.add_registered_method_handlers(service_name, {
            name: _wrap(handler, f"/{service_name}/{name}") for name, handler in method_handlers.items()})

    def __getattr__(self, name):
        return getattr(self._server, name)
