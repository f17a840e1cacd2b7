"""A chain endpoint reads its proxy and CA settings from the environment once, when it is made, not per call
(requests re-reads and decodes all of ``os.environ`` twice on every request otherwise)."""

from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from derot.chain.quorum import Endpoint


class _Rpc(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
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
    assert far.session.proxies.get("https") == "http://proxy.example:3128"
    assert far.session.verify == str(bundle)
    assert far.session.trust_env is False
    monkeypatch.setenv("NO_PROXY", "rpc.example")
    assert Endpoint("https://rpc.example/v1", timeout=5).session.proxies == {}
