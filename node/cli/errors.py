"""One line per error and documented exit codes for every ``derot`` command; never a traceback.

Exit codes (docs/operations.md repeats them):

| code | meaning |
|---|---|
| 0 | success |
| 1 | the operation failed or was refused: a request refused by the nodes, a reverted transaction, an invalid certificate |
| 2 | usage or configuration: bad arguments, a missing or invalid config, key or input file, a bad log level |
| 3 | unreachable: the Ethereum RPC or the nodes do not answer |
| 4 | a listen address is in use or cannot be bound |
| 5 | the sealed store cannot be opened: wrong passphrase or sealing key, no store yet |
| 70 | an internal error (a bug): one line; ``DEROT_DEBUG=1`` prints the traceback |
| 130 | interrupted |

Messages go to stderr as ``derot: <reason>: <detail>``; with ``--json`` as one JSON object
``{"error": reason, "detail": ..., "exit_code": ...}``.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
import traceback

from derot.errors import DerotError

OK, FAILED, USAGE, UNREACHABLE, ADDRESS_IN_USE, SEALED, INTERNAL, INTERRUPTED = 0, 1, 2, 3, 4, 5, 70, 130


class CommandError(DerotError):
    """A user-facing failure with its ``reason`` code and exit ``code``; printed as one line."""

    def __init__(self, reason: str, detail: str, code: int = FAILED):
        self.reason, self.detail, self.code = reason, detail, code
        super().__init__(f"{reason}: {detail}")


class CliError(DerotError):
    """Invalid user input (arguments, files, environment): a command reports it as ``invalid_input``."""

    reason = "cli_error"


def classify(exc: BaseException) -> CommandError:
    """The one-line error and exit code for ``exc``."""
    if isinstance(exc, CommandError):
        return exc
    name = type(exc).__name__
    module = type(exc).__module__
    if name == "ConfigError":
        return CommandError("config_error", str(exc), USAGE)
    if name in ("StoreError", "UnsealError") or (name == "SetupError" and "PASSPHRASE" in str(exc)):
        return CommandError("store_error", str(exc), SEALED)
    if name == "SetupError":
        return CommandError("setup_error", str(exc), FAILED)
    if name == "TransactionFailed":
        return CommandError("transaction_failed", str(exc), FAILED)
    if name == "RequestFailed":
        return CommandError(exc.reason, str(exc).partition(": ")[2] or str(exc), FAILED)
    if isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES) \
            and not exc.filename:
        return CommandError("address_in_use", exc.strerror or str(exc), ADDRESS_IN_USE)
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        where = f"{exc.filename}: " if exc.filename else ""
        return CommandError("file_error", f"{where}{exc.strerror or exc}", USAGE)
    if isinstance(exc, ConnectionError) or module.startswith(("requests.", "urllib3.")) or \
            name in ("ProviderConnectionError", "TimeoutError", "ReadTimeout", "ConnectTimeout"):
        return CommandError("unreachable", _short(exc), UNREACHABLE)
    if module.startswith("web3.") or name == "ChainReadError":
        return CommandError("chain_error", _short(exc), FAILED)
    if isinstance(exc, DerotError):
        return CommandError(exc.reason, str(exc), FAILED)
    return CommandError("internal_error", f"{name}: {_short(exc)}", INTERNAL)


def _short(exc: BaseException) -> str:
    """The first line of an exception's message, without a library's nested reprs past 300 characters; for a
    JSON-RPC error answer (web3's ``rpc_response``), its message and code rather than the dict's repr."""
    response = getattr(exc, "rpc_response", None)
    error = response.get("error") if isinstance(response, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"].strip():
        code = error.get("code")
        text = f"the RPC refused: {error['message'].strip().splitlines()[0]}" + \
            (f" (code {code})" if isinstance(code, int) else "")
        return text if len(text) <= 300 else text[:297] + "..."
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def report(error: CommandError, as_json: bool = False, stream=None) -> int:
    """Print ``error`` as one line (or one JSON object) and return its exit code."""
    stream = stream or sys.stderr
    if as_json:
        print(json.dumps({"error": error.reason, "detail": error.detail, "exit_code": error.code}), file=stream)
    else:
        print(f"derot: {error.reason}: {error.detail}", file=stream)
    return error.code


def guarded(handler):
    """Wrap a command handler: its return value is the exit code; any exception becomes one line."""

    @functools.wraps(handler)
    def run(args) -> int:
        try:
            return int(handler(args) or 0)
        except KeyboardInterrupt:
            print("derot: interrupted", file=sys.stderr)
            return INTERRUPTED
        except BrokenPipeError:  # the reader went away (`derot ... | head`): nothing left to say
            sys.stderr = open(os.devnull, "w")
            return FAILED
        except SystemExit:
            raise
        except Exception as exc:
            if os.environ.get("DEROT_DEBUG"):
                traceback.print_exc()
            return report(classify(exc), getattr(args, "json", False))

    return run
