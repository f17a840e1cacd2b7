"""A bounds-checked cursor over evidence bytes, shared by the binary parsers.

Every read either returns exactly the bytes asked for or raises :class:`EvidenceParseError` naming the
field and its absolute byte offset, so a parser built on it cannot raise anything else on short input.
"""

from __future__ import annotations

from derot.attest.errors import EvidenceParseError


class Reader:
    """Sequential reader; ``pos`` is the absolute offset of the next byte."""

    __slots__ = ("data", "pos", "end", "what")

    def __init__(self, data: bytes, what: str, pos: int = 0, end: int | None = None):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise EvidenceParseError(f"{what}: expected bytes, got {type(data).__name__}", 0)
        self.data = bytes(data)
        self.what = what
        self.pos = pos
        self.end = len(self.data) if end is None else end

    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise EvidenceParseError(
                f"{self.what}: truncated {field}: need {n} bytes, {self.remaining()} left", self.pos
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "little")

    def u24(self, field: str) -> int:
        return int.from_bytes(self.take(3, field), "little")

    def u32(self, field: str) -> int:
        return int.from_bytes(self.take(4, field), "little")

    def u64(self, field: str) -> int:
        return int.from_bytes(self.take(8, field), "little")

    def sub(self, n: int, field: str) -> "Reader":
        """A reader over the next ``n`` bytes (offsets stay absolute); advances past them."""
        start = self.pos
        self.take(n, field)
        return Reader(self.data, self.what, start, start + n)

    def fail(self, message: str, offset: int | None = None) -> EvidenceParseError:
        return EvidenceParseError(f"{self.what}: {message}", self.pos if offset is None else offset)
