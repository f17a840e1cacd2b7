"""``derot attest measurement``: compute the measurement digest an app owner allows on-chain.

    derot attest measurement --platform tdx --register MRTD=HEX --register RTMR0=HEX ... [--json]
    derot attest measurement --platform tdx-eventlog --register MRTD=HEX --event-log CCEL \\
        --app-event app.compose=HEX [--app-event app.image=HEX]
    derot attest measurement --platform azure-snp --register MEASUREMENT=HEX --pcrs PCRS.json

The digest is ``derot.attest.claims.measurement_digest`` of the platform's identity registers, the same value
a verifier puts in Claims, so what the owner allows is exactly what verification yields. ``tdx-eventlog``
replays the CCEL log for RTMR0-2 (or takes them as registers) and digests the ``app.`` events given;
MRCONFIGID and HOST_DATA default to zeros. ``--pcrs`` is a JSON list of 24 hex PCRs (trustee's
``tpm_quote.pcrs``) or an object {"PCR04": hex, ...}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from derot.errors import DerotError

PLATFORMS = {"tdx": "TDX", "tdx-eventlog": "TDX", "sgx": "SGX", "snp": "SEV_SNP", "sev-snp": "SEV_SNP",
             "azure-snp": "AZURE_SNP", "azure-tdx": "AZURE_TDX"}
DEFAULT_ZERO = {"MRCONFIGID": 48, "HOST_DATA": 32}


def register(sub) -> None:
    m = sub.add_parser("measurement", help="compute the measurement digest an app owner allows")
    m.add_argument("--platform", choices=sorted(PLATFORMS), required=True)
    m.add_argument("--register", action="append", default=[], metavar="NAME=HEX", help="identity register (repeatable)")
    m.add_argument("--event-log", help="tdx-eventlog: CCEL event log whose replay gives RTMR0-2")
    m.add_argument("--app-event", action="append", default=[], metavar="NAME=HEX",
                   help="tdx-eventlog: an RTMR3 app event (name starting 'app.') and its payload, in log order")
    m.add_argument("--pcrs", help="azure-*: JSON file with the vTPM's SHA-256 PCRs")
    m.add_argument("--json", action="store_true", help="print the registers and the digest as JSON")
    m.set_defaults(func=cmd_measurement)


def _pairs(items: list[str], what: str) -> list[tuple[str, bytes]]:
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{what} {item!r} is not NAME=HEX")
        out.append((name.strip(), bytes.fromhex(value.strip().removeprefix("0x"))))
    return out


def _pcrs(path: str) -> dict[str, bytes]:
    from derot import untrusted

    doc = untrusted.json_loads(Path(path).read_bytes(), what="PCR file", max_bytes=1 << 16, max_depth=3)
    if isinstance(doc, dict) and "tpm_quote" in doc:
        doc = doc["tpm_quote"].get("pcrs")
    if isinstance(doc, list):
        return {f"PCR{i:02d}": bytes.fromhex(v) for i, v in enumerate(doc)}
    if isinstance(doc, dict):
        return {k.upper(): bytes.fromhex(v) for k, v in doc.items()}
    raise ValueError("the PCR file is neither a list nor an object")


def compute(platform_key: str, registers: dict[str, bytes], *, event_log: bytes | None = None,
            app_events: list[tuple[str, bytes]] = ()) -> tuple[dict[str, bytes], bytes]:
    """(identity registers used, measurement digest). Raises ValueError naming a missing register."""
    from derot.attest import eventlog
    from derot.attest.claims import IDENTITY_REGISTERS, TDX_EVENTLOG_REGISTERS, measurement_digest
    from derot.constants import Platform

    platform = Platform[PLATFORMS[platform_key]]
    regs = {k.upper(): v for k, v in registers.items()}
    names = IDENTITY_REGISTERS[platform]
    if platform_key == "tdx-eventlog":
        names = TDX_EVENTLOG_REGISTERS
        if event_log is not None:
            replayed = eventlog.parse_event_log(event_log).replay()
            regs.update({f"RTMR{i}": replayed[i] for i in range(3)})
        bad = [n for n, _ in app_events if not n.startswith(eventlog.APP_PREFIX)]
        if bad:
            raise ValueError(f"app events must be named 'app.*' (identity events), not {bad}")
        regs["APP_EVENTS"] = eventlog.app_events_digest(tuple(app_events))
    for name, size in DEFAULT_ZERO.items():
        regs.setdefault(name, bytes(size))
    missing = [n for n in names if n not in regs]
    if missing:
        raise ValueError(f"missing identity registers for {platform_key}: {', '.join(missing)}")
    used = {n: regs[n] for n in names}
    return used, measurement_digest(platform, used, names)


def cmd_measurement(args) -> int:
    try:
        registers = dict(_pairs(args.register, "register"))
        if args.pcrs:
            registers.update(_pcrs(args.pcrs))
        log = Path(args.event_log).read_bytes() if args.event_log else None
        used, digest = compute(args.platform, registers, event_log=log,
                               app_events=_pairs(args.app_event, "app event"))
    except (ValueError, KeyError, OSError) as exc:
        text = exc.diagnostics() if isinstance(exc, DerotError) else str(exc)
        print(f"error: {text}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"platform": args.platform, "measurement": digest.hex(),
                          "registers": {k: v.hex() for k, v in used.items()}}, indent=2))
    else:
        for name, value in used.items():
            print(f"  {name:12}{value.hex()}")
        print(digest.hex())
    return 0
