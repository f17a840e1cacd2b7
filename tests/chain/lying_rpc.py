"""A JSON-RPC proxy on localhost that lies: a real HTTP server in front of a real anvil that forwards every
request and rewrites chosen answers, the way a malicious, compromised or lagging RPC provider would.

Lies it can tell (each an attribute tests set and clear while it runs):
- ``calls``: eth_call answers replaced by calldata prefix (hex without 0x → result hex), e.g. a fake
  ``currentEpoch`` or ``getEpoch(7)``; ``call_errors``: calldata prefixes answered "out of gas";
- ``drop_log``: a predicate; matching logs are left out of eth_getLogs answers;
- ``log_lie``: a function that edits each eth_getLogs entry (returns the entry to answer);
- ``batch_lie``: a function that edits the list of replies to a JSON-RPC batch;
- ``frozen_head``: eth_blockNumber and the ``latest`` block stay at this number;
- ``header_lie``: a function that edits block objects (e.g. a fake timestamp) without fixing their hash.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


class LyingRpc:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.calls: dict[str, str] = {}
        self.call_errors: set[str] = set()
        self.drop_log = None
        self.log_lie = None
        self.batch_lie = None
        self.frozen_head: int | None = None
        self.header_lie = None
        self.requests = 0
        self._session = requests.Session()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                reply = [proxy._answer(r) for r in body] if isinstance(body, list) else proxy._answer(body)
                if isinstance(body, list) and proxy.batch_lie is not None:
                    reply = proxy.batch_lie(reply)
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def honest(self) -> None:
        self.calls, self.drop_log, self.frozen_head, self.header_lie = {}, None, None, None
        self.log_lie = self.batch_lie = None
        self.call_errors = set()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _forward(self, request: dict) -> dict:
        return self._session.post(self.upstream, json=request, timeout=30).json()

    def _answer(self, request: dict) -> dict:
        self.requests += 1
        method, params = request.get("method"), list(request.get("params") or [])
        if method == "eth_blockNumber" and self.frozen_head is not None:
            return {"jsonrpc": "2.0", "id": request.get("id"), "result": hex(self.frozen_head)}
        if method == "eth_getBlockByNumber" and params and params[0] == "latest" and self.frozen_head is not None:
            params[0] = hex(self.frozen_head)
            request = {**request, "params": params}
        if method == "eth_call" and (self.calls or self.call_errors):
            data = str(params[0].get("data") or params[0].get("input") or "").removeprefix("0x")
            if any(data.startswith(prefix) for prefix in self.call_errors):
                return {"jsonrpc": "2.0", "id": request.get("id"), "error": {"code": -32000, "message": "out of gas"}}
            for prefix, result in self.calls.items():
                if data.startswith(prefix):
                    return {"jsonrpc": "2.0", "id": request.get("id"), "result": "0x" + result}
        reply = self._forward(request)
        result = reply.get("result")
        if method == "eth_getLogs" and self.drop_log is not None and isinstance(result, list):
            reply["result"] = [entry for entry in result if not self.drop_log(entry)]
        if method == "eth_getLogs" and self.log_lie is not None and isinstance(result, list):
            reply["result"] = [self.log_lie(dict(entry)) for entry in reply["result"]]
        if method in ("eth_getBlockByNumber", "eth_getBlockByHash") and self.header_lie and isinstance(result, dict):
            reply["result"] = self.header_lie(dict(result))
        return reply
