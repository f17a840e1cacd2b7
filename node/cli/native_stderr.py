"""JSON lines for what native code writes to stderr (gRPC's C core), so a node's log is JSON throughout.

C libraries write to file descriptor 2 directly, past Python's logging. :func:`capture` points fd 2 at a
pipe and keeps Python's ``sys.stderr`` on the real stderr; a daemon thread turns each line from the pipe
into one JSON object (logger ``grpc.core``, the level from the line's first letter, as gRPC writes
``E1130 00:00:00.000000 123 file.cc:42] message``). Lines are bounded to 4 KiB.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

LEVELS = {"E": "error", "W": "warning", "I": "info", "D": "debug", "F": "critical"}
MAX_LINE = 4096


def to_json(line: str, node: str = "") -> str:
    """One JSON log line for a native stderr line."""
    line = line[:MAX_LINE]
    level = LEVELS.get(line[:1], "warning") if line[1:2].isdigit() else "warning"
    entry = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z", "level": level,
             "logger": "grpc.core", "msg": line}
    if node:
        entry["node"] = node
    return json.dumps(entry, separators=(",", ":"))


def capture(node: str = "") -> threading.Thread:
    """Route fd 2 through a JSON-wrapping thread; Python's ``sys.stderr`` keeps writing to the real stderr.

    Returns the thread: it ends once fd 2 is closed and every line written before has been wrapped."""
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    out = os.fdopen(real, "w", buffering=1, encoding="utf-8", errors="replace")
    sys.stderr = out

    def pump() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for raw in pipe:
                text = raw.decode("utf-8", "replace").rstrip()
                if text:
                    out.write(to_json(text, node) + "\n")

    thread = threading.Thread(target=pump, name="native-stderr", daemon=True)
    thread.start()
    return thread
