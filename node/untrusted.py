"""Bounded parsing of untrusted bytes: size and nesting are checked before any parser runs.

Invariants:
- :func:`json_loads` never hands the standard library's recursive JSON parser a document deeper than
  ``max_depth`` or longer than ``max_bytes``; it raises :class:`UntrustedInputError` instead.
- :func:`der_check_depth` refuses DER whose constructed nesting exceeds ``max_depth`` before a
  recursive (pure-Python) DER decoder sees it.
- :func:`pin_recursion_limit` undoes py_ecc's import-time ``sys.setrecursionlimit(100000)`` (py_ecc is
  imported by eth_account's keyfile module). With that limit, a deep structure overflows the C stack
  and kills the process instead of raising ``RecursionError``. Every untrusted-input entry point calls it.
"""

from __future__ import annotations

import json
import re
import sys

from derot.errors import DerotError
from derot.limits import LIMITS


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(r"[\[\]{}]")


class UntrustedInputError(DerotError, ValueError):
    """Untrusted input exceeds a size or nesting bound; nothing was parsed."""

    reason = "malformed_request"


def pin_recursion_limit() -> None:
    """Lower the recursion limit back to :data:`derot.limits.LIMITS`'s ``safe_recursion_limit`` if an import raised it."""
    if sys.getrecursionlimit() > LIMITS.safe_recursion_limit:
        sys.setrecursionlimit(LIMITS.safe_recursion_limit)


def json_depth(text: str) -> int:
    """Maximum bracket nesting of ``text``, ignoring brackets inside JSON strings."""
    depth = deepest = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def json_loads(data: str | bytes, *, what: str, max_bytes: int = LIMITS.max_json_bytes,
               max_depth: int = LIMITS.max_json_depth):
    """``json.loads`` after checking size and nesting; malformed JSON raises :class:`UntrustedInputError`."""
    pin_recursion_limit()
    if len(data) > max_bytes:
        raise UntrustedInputError(f"{what} is {len(data)} bytes, over the limit of {max_bytes}")
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    depth = json_depth(data)
    if depth > max_depth:
        raise UntrustedInputError(f"{what} nests {depth} deep, over the limit of {max_depth}")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise UntrustedInputError(f"{what} is not JSON: {exc}") from None


def der_check_depth(raw: bytes, *, what: str, max_depth: int = LIMITS.max_der_depth) -> None:
    """Walk DER TLV headers iteratively; refuse nesting deeper than ``max_depth`` or a bad length."""
    pin_recursion_limit()
    ends = [len(raw)]  # end offsets of the open constructed values
    pos = 0
    while pos < len(raw):
        while ends and pos >= ends[-1]:
            ends.pop()
        if not ends:
            raise UntrustedInputError(f"{what}: trailing bytes at offset {pos}")
        tag = raw[pos]
        pos += 1
        if tag & 0x1F == 0x1F:  # high tag number form
            while pos < len(raw) and raw[pos] & 0x80:
                pos += 1
            pos += 1
        if pos >= len(raw):
            raise UntrustedInputError(f"{what}: truncated header at offset {pos}")
        first = raw[pos]
        pos += 1
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if count == 0 or count > 4 or pos + count > len(raw):
                raise UntrustedInputError(f"{what}: unsupported length form at offset {pos - 1}")
            length = int.from_bytes(raw[pos:pos + count], "big")
            pos += count
        end = pos + length
        if end > ends[-1]:
            raise UntrustedInputError(f"{what}: value at offset {pos} overruns its container")
        if tag & 0x20:  # constructed: descend
            ends.append(end)
            if len(ends) - 1 > max_depth:
                raise UntrustedInputError(f"{what} nests over {max_depth} deep")
        else:
            pos = end
