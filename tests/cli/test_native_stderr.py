"""Native stderr lines (gRPC C-core writes fd 2 directly) come out as JSON log lines."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import os, sys
from derot.cli import native_stderr
pump = native_stderr.capture("node-9")
os.write(2, b"E1130 12:00:00.000000   77 chttp2_transport.cc:1234] connection reset\n")
os.write(2, b"plain native text\n")
print("from python", file=sys.stderr)
os.close(2)  # the pipe's only writer: the pump reads to the end and stops
pump.join(60)
assert not pump.is_alive()
"""


def test_every_stderr_line_is_json():
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line]
    native = [json.loads(line) for line in lines if line.startswith("{")]
    assert {(e["level"], e["msg"]) for e in native} == {
        ("error", "E1130 12:00:00.000000   77 chttp2_transport.cc:1234] connection reset"),
        ("warning", "plain native text"),
    }
    assert all(e["logger"] == "grpc.core" and e["node"] == "node-9" for e in native)
    assert "from python" in lines  # Python's own stderr is not wrapped twice
