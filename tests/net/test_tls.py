"""TLS identities pinned by key hash; mutual TLS refuses a peer whose key is not pinned."""

import asyncio
import ssl
import socket

import grpc
import pytest

from derot.net import tls


def test_spki_hash_is_stable_and_distinct():
    a, b = tls.generate_identity(), tls.generate_identity()
    assert len(a.key_hash) == 32 and a.key_hash == tls.spki_hash(a.cert_pem) and a.key_hash != b.key_hash
    assert b"PRIVATE" not in repr(a).encode()


def _serve_tls(identity):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    import tempfile, os
    with tempfile.TemporaryDirectory() as d:
        cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
        open(cert, "wb").write(identity.cert_pem)
        open(key, "wb").write(identity.key_pem)
        context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    return context, listener


def test_fetch_pinned_certificate_checks_the_hash(monkeypatch):
    """The fetch trusts only the pin: it never loads a CA store (parsing the system bundle cost ~30 ms of CPU
    per fetch, thousands of times in a 64-member committee's start)."""
    import threading

    def no_ca_store(*args, **kwargs):
        raise AssertionError("a certificate fetch loaded a CA store")

    monkeypatch.setattr(ssl, "create_default_context", no_ca_store)
    monkeypatch.setattr(ssl.SSLContext, "load_default_certs", no_ca_store)
    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", no_ca_store)

    server_id = tls.generate_identity()
    context, listener = _serve_tls(server_id)
    port = listener.getsockname()[1]

    def accept(n):
        for _ in range(n):
            conn, _ = listener.accept()
            try:
                context.wrap_socket(conn, server_side=True).close()
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=accept, args=(2,), daemon=True)
    thread.start()
    fetched = tls.fetch_pinned_certificate("127.0.0.1", port, server_id.key_hash)
    assert tls.spki_hash(fetched) == server_id.key_hash
    with pytest.raises(tls.PinMismatch):
        tls.fetch_pinned_certificate("127.0.0.1", port, tls.generate_identity().key_hash)
    thread.join(5)
    listener.close()
    assert tls._FETCH_CONTEXT.cert_store_stats()["x509"] == 0


def test_mutual_tls_refuses_unpinned_client():
    server_id, member, stranger = (tls.generate_identity() for _ in range(3))

    async def scenario():
        server = grpc.aio.server()
        echo = grpc.unary_unary_rpc_method_handler(
            lambda req, ctx: tls.spki_hash(ctx.auth_context()["x509_pem_cert"][0])
        )
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.T", {"Who": echo})])
        creds = grpc.ssl_server_credentials(
            [(server_id.key_pem, server_id.cert_pem)], root_certificates=member.cert_pem, require_client_auth=True
        )
        port = server.add_secure_port("127.0.0.1:0", creds)
        await server.start()
        results = {}
        for label, client in (("member", member), ("stranger", stranger)):
            creds = grpc.ssl_channel_credentials(server_id.cert_pem, client.key_pem, client.cert_pem)
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options=tls.channel_options()) as ch:
                try:
                    results[label] = await ch.unary_unary("/t.T/Who")(b"", timeout=5)
                except grpc.aio.AioRpcError as exc:
                    results[label] = exc.code()
        await server.stop(0)
        return results

    results = asyncio.run(scenario())
    assert results["member"] == member.key_hash
    assert results["stranger"] == grpc.StatusCode.UNAVAILABLE
