"""TDX measurements from the CCEL event log (TCG2 crypto-agile format), replayed into RTMRs.

Format (TCG PC Client Platform Firmware Profile, little-endian): one ``TCG_PCClientPCREvent`` holding the
"Spec ID Event03" header (the algorithms and digest sizes that follow), then ``TCG_PCR_EVENT2`` records
(``u32 index, u32 type, u32 digest count, {u16 alg, digest}*, u32 size, event``) until padding (a record
header of all 0x00 or all 0xFF). CC measurement register index 0 is MRTD, 1..4 are RTMR0..3.

Replay: RTMR[i-1] := SHA-384(RTMR[i-1] || SHA-384 digest) from 48 zero bytes, for every event of index i in
1..4 except EV_NO_ACTION. :func:`apply_event_log` checks the replay against the verified quote's RTMRs
(``event_log_mismatch`` names the register) and re-keys the Claims' measurement to
:data:`derot.attest.claims.TDX_EVENTLOG_REGISTERS`: MRTD, the RTMR0-2 boot chain, MRCONFIGID and
``APP_EVENTS``, the digest of RTMR3's named app events (not every instance-specific byte).

derot app events (what an app's launcher extends into RTMR3 and appends to the log): type EV_EVENT_TAG with
tagged event id :data:`DEROT_EVENT_TAG`, data ``u16le len(name) || name || payload``, digest = SHA-384 of the
whole event data (checked). Names starting ``app.`` (e.g. ``app.compose``, ``app.image``) are identity;
other names (``instance.id``…) are replayed but not pinned.
``APP_EVENTS = SHA-384(for each identity event, in order: u32be len(name) || name || u32be len(payload) ||
payload)``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace

from derot.attest._reader import Reader
from derot.attest.claims import TDX_EVENTLOG_REGISTERS, Claims, measurement_digest
from derot.attest.errors import EvidenceParseError, VerificationError
from derot.constants import Platform

MAX_LOG_SIZE = 4 << 20
MAX_EVENTS = 65536
MAX_EVENT_SIZE = 1 << 20
SPEC_ID_SIGNATURE = b"Spec ID Event03\0"
ALG_SHA384 = 0x000C
EV_NO_ACTION, EV_EVENT_TAG = 0x3, 0x6
DEROT_EVENT_TAG = 0x44524F54  # "TORD" little-endian: derot app event
APP_PREFIX = "app."
ZERO = bytes(48)

EVENT_TYPES = {
    0x0: "EV_PREBOOT_CERT", 0x1: "EV_POST_CODE", 0x2: "EV_UNUSED", 0x3: "EV_NO_ACTION", 0x4: "EV_SEPARATOR",
    0x5: "EV_ACTION", 0x6: "EV_EVENT_TAG", 0x7: "EV_S_CRTM_CONTENTS", 0x8: "EV_S_CRTM_VERSION",
    0x9: "EV_CPU_MICROCODE", 0xA: "EV_PLATFORM_CONFIG_FLAGS", 0xB: "EV_TABLE_OF_DEVICES", 0xC: "EV_COMPACT_HASH",
    0xD: "EV_IPL", 0xE: "EV_IPL_PARTITION_DATA", 0xF: "EV_NONHOST_CODE", 0x10: "EV_NONHOST_CONFIG",
    0x11: "EV_NONHOST_INFO", 0x12: "EV_OMIT_BOOT_DEVICE_EVENTS",
    0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG", 0x80000002: "EV_EFI_VARIABLE_BOOT",
    0x80000003: "EV_EFI_BOOT_SERVICES_APPLICATION", 0x80000004: "EV_EFI_BOOT_SERVICES_DRIVER",
    0x80000005: "EV_EFI_RUNTIME_SERVICES_DRIVER", 0x80000006: "EV_EFI_GPT_EVENT", 0x80000007: "EV_EFI_ACTION",
    0x80000008: "EV_EFI_PLATFORM_FIRMWARE_BLOB", 0x80000009: "EV_EFI_HANDOFF_TABLES",
    0x8000000A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2", 0x8000000B: "EV_EFI_HANDOFF_TABLES2",
    0x8000000C: "EV_EFI_VARIABLE_BOOT2", 0x8000000D: "EV_EFI_GPT_EVENT2", 0x80000010: "EV_EFI_HCRTM_EVENT",
    0x800000E0: "EV_EFI_VARIABLE_AUTHORITY", 0x800000E1: "EV_EFI_SPDM_FIRMWARE_BLOB",
    0x800000E2: "EV_EFI_SPDM_FIRMWARE_CONFIG",
}


class EventLogMismatch(VerificationError):
    """Replaying the event log does not give the quote's RTMR (or a derot app event's digest is wrong)."""

    reason = "event_log_mismatch"


@dataclass(frozen=True)
class Event:
    """One TCG_PCR_EVENT2. ``digests`` maps TPM algorithm id -> digest; ``offset`` is where it starts."""

    index: int
    event_type: int
    digests: Mapping[int, bytes]
    data: bytes
    offset: int

    @property
    def type_name(self) -> str:
        return EVENT_TYPES.get(self.event_type, f"0x{self.event_type:08x}")

    @property
    def sha384(self) -> bytes:
        return self.digests[ALG_SHA384]

    @property
    def digest_matches_event(self) -> bool:
        return hashlib.sha384(self.data).digest() == self.sha384

    def app_event(self) -> tuple[str, bytes] | None:
        """(name, payload) if this is a derot app event, else None. Raises on a malformed one."""
        if self.event_type != EV_EVENT_TAG or len(self.data) < 8:
            return None
        tag, size = struct.unpack_from("<II", self.data)
        if tag != DEROT_EVENT_TAG:
            return None
        body = self.data[8:]
        if size != len(body) or len(body) < 2 or 2 + int.from_bytes(body[:2], "little") > len(body):
            raise EvidenceParseError("event log: malformed derot app event", self.offset)
        n = int.from_bytes(body[:2], "little")
        try:
            name = body[2:2 + n].decode("ascii")
        except UnicodeDecodeError:
            raise EvidenceParseError("event log: derot app event name is not ASCII", self.offset) from None
        return name, body[2 + n:]


@dataclass(frozen=True)
class EventLog:
    """A parsed CCEL log: the algorithms its header declares, its events (header excluded) and ``size``, the
    bytes up to the end of the last event (where padding begins)."""

    algorithms: Mapping[int, int]
    events: tuple[Event, ...]
    size: int

    def replay(self) -> tuple[bytes, bytes, bytes, bytes]:
        """RTMR0..3 as the log's SHA-384 digests extend them."""
        rtmr = [ZERO] * 4
        for e in self.events:
            if e.event_type != EV_NO_ACTION and 1 <= e.index <= 4:
                rtmr[e.index - 1] = hashlib.sha384(rtmr[e.index - 1] + e.sha384).digest()
        return tuple(rtmr)  # type: ignore[return-value]

    def app_events(self) -> tuple[tuple[str, bytes], ...]:
        """Every derot app event in RTMR3, in order; their digests are checked."""
        out = []
        for e in self.events:
            if e.index != 4 or e.event_type == EV_NO_ACTION:
                continue
            app = e.app_event()
            if app is not None:
                if not e.digest_matches_event:
                    raise EventLogMismatch(f"derot app event {app[0]!r} at offset {e.offset}: digest is not "
                                           "SHA-384 of its data")
                out.append(app)
        return tuple(out)


def parse_event_log(raw: bytes) -> EventLog:
    """Parse a TCG2 crypto-agile event log (bounded: size, event count, event size)."""
    r = Reader(raw, "event log")
    if len(r.data) > MAX_LOG_SIZE:
        raise r.fail(f"{len(r.data)} bytes exceeds {MAX_LOG_SIZE}", 0)
    r.u32("header index")
    if r.u32("header type") != EV_NO_ACTION:
        raise r.fail("the first event is not the EV_NO_ACTION Spec ID header", 4)
    r.take(20, "header digest")
    spec = r.sub(r.u32("header size"), "Spec ID event")
    if spec.take(16, "signature") != SPEC_ID_SIGNATURE:
        raise spec.fail("not a crypto-agile log (no 'Spec ID Event03')", spec.pos - 16)
    spec.take(8, "platform class, version, uintn size")
    count = spec.u32("numberOfAlgorithms")
    if not 1 <= count <= 8:
        raise spec.fail(f"{count} algorithms")
    algorithms = {}
    for _ in range(count):
        alg, size = spec.u16("algorithmId"), spec.u16("digestSize")
        if size > 64:
            raise spec.fail(f"digest size {size}")
        algorithms[alg] = size
    if ALG_SHA384 not in algorithms:
        raise spec.fail("the log has no SHA-384 digests")
    events: list[Event] = []
    end = r.pos
    while r.remaining() >= 8:
        head = r.data[r.pos:r.pos + 8]
        if head in (b"\0" * 8, b"\xff" * 8):
            break
        if len(events) >= MAX_EVENTS:
            raise r.fail(f"more than {MAX_EVENTS} events")
        events.append(_event(r, algorithms))
        end = r.pos
    return EventLog(algorithms, tuple(events), end)


def _event(r: Reader, algorithms: Mapping[int, int]) -> Event:
    """One TCG_PCR_EVENT2 at ``r.pos`` (struct-based: the hot path of a replay)."""
    data, start = r.data, r.pos
    if start + 12 > r.end:
        raise r.fail("truncated event header", start)
    index, kind, count = struct.unpack_from("<III", data, start)
    if index > 4:
        raise r.fail(f"CC measurement register index {index} is not 0..4", start)
    if count != len(algorithms):
        raise r.fail(f"{count} digests, the header declares {len(algorithms)}", start + 8)
    pos, digests = start + 12, {}
    for _ in range(count):
        if pos + 2 > r.end:
            raise r.fail("truncated digest algorithm", pos)
        (alg,) = struct.unpack_from("<H", data, pos)
        size = algorithms.get(alg)
        if size is None or alg in digests:
            raise r.fail(f"digest algorithm 0x{alg:04x} not declared by the header (or repeated)", pos)
        if pos + 2 + size > r.end:
            raise r.fail("truncated digest", pos + 2)
        digests[alg] = data[pos + 2:pos + 2 + size]
        pos += 2 + size
    if pos + 4 > r.end:
        raise r.fail("truncated event size", pos)
    (size,) = struct.unpack_from("<I", data, pos)
    if size > MAX_EVENT_SIZE or pos + 4 + size > r.end:
        raise r.fail(f"event of {size} bytes exceeds {MAX_EVENT_SIZE} or the log", pos)
    r.pos = pos + 4 + size
    return Event(index, kind, digests, data[pos + 4:r.pos], start)


def app_events_digest(events: tuple[tuple[str, bytes], ...]) -> bytes:
    """The ``APP_EVENTS`` register: SHA-384 over the identity (``app.``) events (module docstring)."""
    h = hashlib.sha384()
    for name, payload in events:
        if name.startswith(APP_PREFIX):
            raw = name.encode("ascii")
            h.update(struct.pack(">I", len(raw)) + raw + struct.pack(">I", len(payload)) + payload)
    return h.digest()


def app_event(name: str, payload: bytes) -> tuple[bytes, bytes]:
    """(event data, SHA-384 digest) of a derot app event: what a launcher extends into RTMR3 and logs."""
    raw = name.encode("ascii")
    body = struct.pack("<H", len(raw)) + raw + payload
    data = struct.pack("<II", DEROT_EVENT_TAG, len(body)) + body
    return data, hashlib.sha384(data).digest()


def event_record(index: int, event_type: int, data: bytes, digest: bytes) -> bytes:
    """A TCG_PCR_EVENT2 record with one SHA-384 digest (for logs whose header declares only SHA-384)."""
    return struct.pack("<IIIH", index, event_type, 1, ALG_SHA384) + digest + struct.pack("<I", len(data)) + data


def apply_event_log(claims: Claims, raw_log: bytes) -> Claims:
    """Check the log against verified TDX claims and return them keyed by the event-log measurement."""
    if claims.platform != Platform.TDX:
        raise EventLogMismatch(f"an event log is replayed against TDX evidence, not {claims.platform.name}")
    log = parse_event_log(raw_log)
    replayed = log.replay()
    for i, value in enumerate(replayed):
        quoted = claims.measurements[f"RTMR{i}"]
        if value != quoted:
            raise EventLogMismatch(f"event log replay gives RTMR{i} {value.hex()}, the quote has {quoted.hex()}")
    apps = log.app_events()
    registers = dict(claims.measurements, APP_EVENTS=app_events_digest(apps))
    details = dict(claims.details, full_measurement_digest=claims.measurement_digest,
                   event_log_events=len(log.events),
                   app_events=[{"name": n, "payload": p} for n, p in apps])
    return replace(claims, measurements=registers, details=details,
                   measurement_digest=measurement_digest(Platform.TDX, registers, TDX_EVENTLOG_REGISTERS))
