"""A chain endpoint reads its proxy and CA settings from the environment once, when it is made, not per call
(requests re-read and decoded all of ``os.environ`` twice on every request), and keeps its connection."""

from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from derot.chain.quorum import Endpoint


class _Rpc(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as RPC providers do

    def do_POST(self):  # noqa: N802 - http.server's name
        if self.path != "/":
            self.send_error(404)
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        reply = json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": "0x2a"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture
def rpc_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Rpc)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_calls_do_not_read_the_environment(rpc_url, monkeypatch):
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    endpoint = Endpoint(rpc_url, timeout=5)

    def forbidden(*args, **kwargs):
        raise AssertionError("the proxy environment was read during a call")

    monkeypatch.setattr(urllib.request, "getproxies_environment", forbidden)
    monkeypatch.setattr(urllib.request, "proxy_bypass_environment", forbidden)
    for _ in range(3):
        assert endpoint.call("eth_blockNumber", [])["result"] == "0x2a"


def test_proxy_and_ca_bundle_are_taken_from_the_environment_at_start(monkeypatch, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    far = Endpoint("https://rpc.example/v1", timeout=5)
    assert far.proxy == "http://proxy.example:3128" and far.ca_bundle == str(bundle)
    assert far.pool.proxy is not None and far.pool.proxy.host == "proxy.example"
    monkeypatch.setenv("NO_PROXY", "rpc.example")
    direct = Endpoint("https://rpc.example/v1", timeout=5)
    assert direct.proxy is None and getattr(direct.pool, "proxy", None) is None


def test_an_http_error_status_is_a_transport_failure_and_the_connection_is_reused(rpc_url):
    """One persistent connection serves many calls; a non-2xx status is the endpoint's failure (an OSError,
    which the quorum counts as a non-vote), not an answer."""
    from derot.chain.quorum import RpcTransportError

    endpoint = Endpoint(rpc_url, timeout=5)
    for _ in range(5):
        assert endpoint.call("eth_blockNumber", [])["result"] == "0x2a"
    pool = endpoint.pool.connection_from_url(rpc_url)
    assert pool.num_connections == 1  # kept alive across the five calls
    with pytest.raises(RpcTransportError, match="HTTP 404"):
        Endpoint(rpc_url + "/missing", timeout=5).call("eth_blockNumber", [])
