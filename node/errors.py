"""The one error base of derot: every exception derot raises on purpose derives from :class:`DerotError`.

Invariant: ``reason`` is a stable, machine-readable code (the same string gRPC refusals carry in
``google.rpc.ErrorInfo.reason`` and the CLI prints); the message is for people. Neither ever holds
secret material.
"""

from __future__ import annotations


class DerotError(Exception):
    """Base of derot's errors. Subclasses set ``reason``; an instance may override it."""

    reason: str = "internal_error"

    def diagnostics(self) -> str:
        """One line for logs and the CLI: the reason code and what was wrong."""
        text = str(self)
        return f"{self.reason}: {text}" if text else self.reason
