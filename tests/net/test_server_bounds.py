"""Half-open connections (issue 9 item 9): a client that connects and never completes the TLS handshake is
disconnected after the short handshake timeout, not after grpc's default two minutes."""

from __future__ import annotations

import asyncio
import socket
import time

import grpc

from derot.limits import LIMITS
from derot.net import tls
from derot.service.node import server_options


def test_a_half_open_connection_is_closed_after_the_handshake_timeout():
    identity = tls.generate_identity()

    async def scenario():
        server = grpc.aio.server(options=server_options(64 * 1024))
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(identity.key_pem,
                                                                                    identity.cert_pem)]))
        await server.start()
        try:
            sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]  # and send nothing
            started = time.monotonic()

            def wait_closed(sock: socket.socket) -> float:
                sock.settimeout(LIMITS.handshake_timeout + 30)
                try:
                    while sock.recv(4096):
                        pass
                except OSError:
                    pass
                return time.monotonic() - started

            closed = await asyncio.gather(*(asyncio.to_thread(wait_closed, s) for s in sockets))
            for s in sockets:
                s.close()
            return closed
        finally:
            await server.stop(None)

    closed = asyncio.run(scenario())
    print(f"half-open connections closed after {min(closed):.1f}..{max(closed):.1f} s")
    assert max(closed) < LIMITS.handshake_timeout + 10  # grpc's default would hold them for 120 s
    assert min(closed) >= LIMITS.handshake_timeout * 0.5  # closed by the timeout, not refused outright
