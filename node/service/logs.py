"""Structured JSON logs (one object per line) with the ``extra`` fields of each record.

Invariant: nothing secret is ever passed to a logger; the formatter also refuses to serialise values
whose type is known to hold secrets (key shares, transport keys, sealers), as a second line of defence.
A log file derot creates is mode 0600 in a folder it creates 0700 (:func:`open_private`): logs name
apps, peers and requests, which are nobody else's business on a shared host.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_SECRET_TYPES = ("KeyShares", "TransportKey", "Sealer", "EpochKeys", "Identity", "AppKeys", "TlsIdentity")


def _safe(value):
    if type(value).__name__ in _SECRET_TYPES:
        return f"<{type(value).__name__} withheld>"
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_safe(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    def __init__(self, node: str = ""):
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.node:
            entry["node"] = self.node
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = _safe(value)
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return json.dumps(entry, separators=(",", ":"))


def open_private(path: str | os.PathLike, mode: str = "ab"):
    """Open a log file for appending, created 0600 (and tightened to 0600 if it exists looser), its
    missing folders created 0700. ``mode`` is ``"ab"`` (bytes: a child process's stdout) or ``"a"``."""
    from derot.service.storage import private_dir, private_file

    path = Path(path)
    private_dir(path.parent)
    private_file(path)
    if mode not in ("ab", "a"):
        raise ValueError("log files are opened for appending: mode 'ab' or 'a'")
    return open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"}))


def configure(level: str = "info", fmt: str = "json", node: str = "", stream=None, file: str = "") -> None:
    """Route every ``derot.*`` logger (and warnings) to ``stream`` (or, with ``file``, to that file,
    opened with :func:`open_private`) in the chosen format."""
    if file:
        stream = open_private(file, "a")
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(node))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("derot").setLevel(level.upper())
    logging.captureWarnings(True)
