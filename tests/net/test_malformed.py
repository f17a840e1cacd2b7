"""Undecodable request bytes get ``malformed_request`` (INVALID_ARGUMENT), over a real gRPC socket.

The server registers a unary method with the real generated deserializer; the client sends raw bytes.
A control server without the wrapper shows what the test catches: grpc's ``UNKNOWN`` with no reason.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from derot import _proto
from derot.net.malformed import MalformedRequests
from derot.net.status import refusal_from_rpc_error

METHOD = "/derot.test.Echo/Info"
BAD = [
    b"\xff\xff\xff",                 # truncated varint tag
    b"\x0a\xff\xff\xff\xff\x0f",     # a length-delimited field claiming 4 GiB
    b"\x08" + b"\x80" * 11,          # a varint longer than 10 bytes
]


def _good_bytes() -> bytes:
    pb = _proto.load("node_pb2")
    return pb.GetNetworkInfoRequest().SerializeToString()


async def _serve(wrapped: bool):
    pb = _proto.load("node_pb2")

    async def info(request, context):
        return pb.NetworkInfo(chain_id=7)

    handler = grpc.method_handlers_generic_handler("derot.test.Echo", {
        "Info": grpc.unary_unary_rpc_method_handler(
            info, request_deserializer=pb.GetNetworkInfoRequest.FromString,
            response_serializer=pb.NetworkInfo.SerializeToString),
    })
    server = grpc.aio.server()
    (MalformedRequests(server) if wrapped else server).add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def _call(port: int, payload: bytes):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        return await call(payload, timeout=10)


def _run(wrapped: bool, payload: bytes):
    async def go():
        server, port = await _serve(wrapped)
        try:
            return await _call(port, payload)
        finally:
            await server.stop(None)

    return asyncio.run(go())


@pytest.mark.parametrize("payload", BAD)
def test_undecodable_bytes_are_malformed_request(payload):
    with pytest.raises(grpc.RpcError) as failed:
        _run(True, payload)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refusal_from_rpc_error(failed.value).reason == "malformed_request"


def test_a_valid_request_still_reaches_the_handler():
    pb = _proto.load("node_pb2")
    reply = pb.NetworkInfo.FromString(_run(True, _good_bytes()))
    assert reply.chain_id == 7


def test_control_without_the_wrapper_grpc_says_unknown():
    with pytest.raises(grpc.RpcError) as failed:
        _run(False, BAD[0])
    assert failed.value.code() != grpc.StatusCode.INVALID_ARGUMENT
    assert refusal_from_rpc_error(failed.value).reason != "malformed_request"


@pytest.mark.parametrize("payload", BAD)
def test_registered_method_handlers_are_wrapped_too(payload):
    """grpc's own services (health) register through add_registered_method_handlers: undecodable bytes sent
    to them are refused by name as well."""
    from grpc_health.v1 import health, health_pb2_grpc

    async def go():
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), MalformedRequests(server))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=None,
                                           response_deserializer=None)
                return await call(payload, timeout=10)
        finally:
            await server.stop(None)

    with pytest.raises(grpc.RpcError) as failed:
        asyncio.run(go())
    assert refusal_from_rpc_error(failed.value).reason == "malformed_request"


def test_handlers_are_wrapped_once_per_method_not_per_call():
    from derot.net.malformed import _SafeGeneric

    pb = _proto.load("node_pb2")

    async def info(request, context):
        return pb.NetworkInfo()

    inner = grpc.method_handlers_generic_handler("derot.test.Echo", {
        "Info": grpc.unary_unary_rpc_method_handler(info, request_deserializer=pb.GetNetworkInfoRequest.FromString,
                                                    response_serializer=pb.NetworkInfo.SerializeToString)})
    safe = _SafeGeneric(inner)

    class Details:
        def __init__(self, method):
            self.method = method

    first = safe.service(Details(METHOD))
    assert first is safe.service(Details(METHOD))
    assert first.request_deserializer(BAD[0]).__class__.__name__ == "_Undecodable"
    for k in range(100):  # unknown methods are not remembered: the cache holds only served methods
        assert safe.service(Details(f"/derot.test.Echo/Nope{k}")) is None
    assert len(safe._wrapped) == 1
