"""``derot attest``: verify evidence standalone (like dcap-qvl's or snpguest's verifiers), make devnet evidence.

    derot attest verify EVIDENCE [--collateral FILE] [--at ISO8601] [--json] ...
    derot attest devnet-evidence --devnet DIR --platform tdx|sev-snp|azure-snp|azure-tdx --report-data HEX --out FILE
    derot attest measurement --platform P --register NAME=HEX ... [--event-log FILE] [--app-event NAME=HEX]

EVIDENCE is a derot Evidence envelope, or a raw Intel quote, SEV-SNP report or NVIDIA SPDM report
(binary or hex text; the kind is detected), or Azure vTPM evidence in trustee's JSON form. Exit codes: 0 verified and allowed by the standalone
policy, 1 verified but refused (the reason is printed), 2 not verified (malformed or a failed check).
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

from derot.cli.errors import guarded
from derot.constants import Platform, TcbStatus, spelled


def register(subparsers) -> None:
    parser = subparsers.add_parser("attest", help="verify TEE evidence; make devnet evidence")
    sub = parser.add_subparsers(dest="attest_cmd", metavar="COMMAND")

    v = sub.add_parser("verify", help="verify evidence and print its claims and a verdict")
    v.add_argument("evidence", help="evidence file: derot envelope, Intel quote, SNP report or GPU report")
    v.add_argument("--collateral", help="Intel collateral JSON (dcap-qvl QuoteCollateralV3 form)")
    v.add_argument("--at", help="verification time, ISO 8601 (default: now)")
    v.add_argument("--json", action="store_true", help="print claims and verdict as JSON")
    v.add_argument("--vek", help="SEV-SNP: VCEK/VLEK certificate (DER or PEM), or a PEM bundle VCEK/VLEK + ASK + ARK")
    v.add_argument("--gpu-certs", help="NVIDIA: the GPU's PEM certificate chain")
    v.add_argument("--nonce", help="NVIDIA: expected SPDM nonce (hex)")
    v.add_argument("--devnet", metavar="DIR", help="trust this devnet's roots instead of the production roots")
    v.add_argument("--pccs", default=None, help="PCCS/PCS base URL to fetch Intel collateral from")
    v.add_argument("--cache-dir", help="on-disk collateral cache directory")
    v.add_argument("--min-tcb", default="UP_TO_DATE", help="lowest acceptable TCB status (default UP_TO_DATE)")
    v.add_argument("--allow-debug", action="store_true", help="accept debug TEEs")
    v.add_argument("--expect-report-data", help="require this report_data (hex, 64 bytes)")
    v.add_argument("--expect-measurement", help="require this measurement digest (hex, 32 bytes)")
    v.add_argument("--allow-exception", action="append", default=[], metavar="NAME",
                   help="waive a named TEE check (sept_ve, td_migratable, td_profiling, service_td, seam_attributes, "
                        "vmpl, snp_policy:<bit>); repeatable")
    v.add_argument("--rim-dir", help="NVIDIA: directory of driver/VBIOS RIMs (<rim id>[.swidtag]); enables RIM checks")
    v.add_argument("--rim-url", help="NVIDIA: RIM service base URL (e.g. https://rim.attestation.nvidia.com/v1/rim); "
                                     "enables RIM checks, fetched RIMs cached under --cache-dir")
    v.add_argument("--snp-max-vmpl", type=int, default=0, help="SEV-SNP: highest VMPL accepted (default 0)")
    v.add_argument("--snp-require", action="append", default=[], metavar="BIT=0|1",
                   help="SEV-SNP: require a guest policy bit (e.g. smt=0, single_socket=1); default migrate_ma=0")
    v.add_argument("--snp-min-tcb", action="append", default=[], metavar="PRODUCT:NAME=SVN,...",
                   help="SEV-SNP: minimum TCB, e.g. Milan:bootloader=3,tee=0,snp=8,microcode=115; repeatable")
    v.add_argument("--event-log", help="TDX: the CCEL event log to replay against the quote's RTMRs")
    v.set_defaults(func=guarded(cmd_verify))

    d = sub.add_parser("devnet-evidence", help="make devnet TDX or SNP evidence")
    d.add_argument("--devnet", metavar="DIR", required=True, help="devnet roots directory (created if missing)")
    d.add_argument("--platform", type=lambda t: "sev-snp" if t.lower() in ("snp", "sev_snp") else t.lower(),
                   choices=["tdx", "sev-snp", "azure-snp", "azure-tdx"], required=True)
    d.add_argument("--report-data", default="00" * 64, help="64 bytes, hex")
    d.add_argument("--measurement", action="append", default=[], metavar="NAME=HEX",
                   help="identity register, e.g. MRTD=... or MEASUREMENT=... (repeatable)")
    d.add_argument("--debug", action="store_true")
    d.add_argument("--out", required=True, help="output file (derot Evidence envelope)")
    d.set_defaults(func=guarded(cmd_devnet_evidence))

    from derot.cli.attest_measure import register as register_measurement

    register_measurement(sub)


def _read_blob(path: str) -> bytes:
    data = Path(path).read_bytes()
    text = data.strip()
    try:
        if text and all(c in b"0123456789abcdefABCDEF" for c in text):
            return bytes.fromhex(text.decode())
    except ValueError:
        pass
    return data


def _detect(raw: bytes, args):
    from derot.attest.evidence import Evidence, GpuEvidence
    from derot.constants import Platform

    if len(raw) == 0x4A0 and int.from_bytes(raw[:4], "little") in (2, 3, 5):
        if not args.vek:
            raise SystemExit("error: a SEV-SNP report needs --vek")
        return Evidence(Platform.SEV_SNP, quote=raw, vek=Path(args.vek).read_bytes())
    if len(raw) > 4 and int.from_bytes(raw[:2], "little") in (3, 4, 5) and int.from_bytes(raw[2:4], "little") == 2:
        platform = Platform.TDX if int.from_bytes(raw[4:8], "little") == 0x81 else Platform.SGX
        coll = Path(args.collateral).read_bytes() if args.collateral else b""
        log = Path(args.event_log).read_bytes() if args.event_log else b""
        return Evidence(platform, quote=raw, collateral=coll, event_log=log)
    if len(raw) > 2 and raw[0] in (0x10, 0x11, 0x12) and raw[1] == 0xE0:
        if not args.gpu_certs:
            raise SystemExit("error: a GPU report needs --gpu-certs")
        return Evidence(Platform.NVIDIA_GPU, gpus=(GpuEvidence(raw, Path(args.gpu_certs).read_bytes()),))
    if raw.lstrip()[:1] == b"{":
        from derot.attest.azure import from_trustee_json

        return from_trustee_json(raw)
    ev = Evidence.decode(raw)
    if args.event_log:
        from dataclasses import replace

        ev = replace(ev, event_log=Path(args.event_log).read_bytes())
    if args.collateral and not ev.collateral:
        from dataclasses import replace

        ev = replace(ev, collateral=Path(args.collateral).read_bytes())
    return ev


def _parse_at(value: str | None) -> int | None:
    if value is None:
        return None
    dt = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return int(dt.timestamp())


def _iso(ts: int) -> str:
    try:
        return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return str(ts)


def cmd_verify(args) -> int:
    import time

    from derot.attest import policy as P
    from derot.attest.errors import AttestationError
    from derot.attest.snapshot import AppRecord, GovernanceSnapshot, PlatformRule
    from derot.attest.trust import TrustConfig
    from derot.attest.verify import verify_evidence
    from derot.constants import Platform, TcbStatus

    try:
        at = _parse_at(args.at)
        floor = TcbStatus[args.min_tcb.upper()]
        snp_policy = _snp_policy_args(args)
    except (ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.devnet:
        from derot.attest.devnet import DevnetRoots

        trust = TrustConfig.devnet(DevnetRoots.load(args.devnet), pccs_url=args.pccs, cache_dir=args.cache_dir)
    else:
        trust = TrustConfig.production_defaults(pccs_url=args.pccs, cache_dir=args.cache_dir)
    if args.rim_dir or args.rim_url:
        from dataclasses import replace as _replace

        from derot.attest.trust import production_rim_verifier

        rims = production_rim_verifier(bundle_dir=args.rim_dir, service_url=args.rim_url,
                                       cache_dir=Path(args.cache_dir) / "rim" if args.cache_dir else None)
        trust = _replace(trust, rims=rims)
    try:
        evidence = _detect(_read_blob(args.evidence), args)
        nonce = bytes.fromhex(args.nonce) if args.nonce else None
        claims = verify_evidence(evidence, trust, at=at, gpu_nonce_override=nonce)
    except AttestationError as exc:
        return _fail(args, exc.reason, str(exc))
    except OSError as exc:
        return _fail(args, "io_error", str(exc))

    now = at if at is not None else int(time.time())
    app_id = bytes(32)
    measurements = frozenset()
    from derot.attest import policy_tee

    rules: list = [P.PlatformEnabled(), P.TcbAtLeastFloor(), P.DebugAllowed(), policy_tee.TdAttributesAllowed(),
                   policy_tee.SnpVmplAllowed(), policy_tee.SnpGuestPolicyAllowed(), policy_tee.GpuRimMatches(),
                   P.EvidenceWindow()]
    if args.expect_measurement:
        digest = bytes.fromhex(args.expect_measurement)
        measurements = frozenset((c.platform, digest) for c in (claims, *claims.gpus))
        rules.append(P.MeasurementAllowed())
    if args.expect_report_data:
        rules.append(P.ReportDataBinds())
    snapshot = GovernanceSnapshot(
        chain_id=0, registry="standalone", block_number=0,
        platforms={p: PlatformRule(True, floor) for p in Platform},
        apps={app_id: AppRecord(app_id, "cli", 0, allow_debug=args.allow_debug, measurements=measurements,
                                tee_exceptions=frozenset(args.allow_exception))},
        **snp_policy,
    )
    expected = bytes.fromhex(args.expect_report_data).ljust(64, b"\0") if args.expect_report_data else None
    request = P.PolicyRequest("app", now, app_id=app_id, expected_report_data=expected)
    verdict = P.PolicyEngine(rules).decide(claims, snapshot, request)
    if args.json:
        print(json.dumps({"verified": True, "claims": claims.to_json_dict(), "revocable": _revocable(claims),
                          "verdict": {"allowed": verdict.allowed, "reason": verdict.code, "detail": verdict.detail}},
                         indent=2))
    else:
        _print_claims(claims)
        _print_revocable(claims)
        print(f"{'verdict':16}{'ALLOW' if verdict.allowed else 'REFUSE ' + verdict.code + ': ' + verdict.detail}")
    return 0 if verdict.allowed else 1


def _snp_policy_args(args) -> dict:
    """GovernanceSnapshot's SEV-SNP fields from --snp-max-vmpl, --snp-require and --snp-min-tcb."""
    required = {"migrate_ma": False}
    for item in args.snp_require:
        name, _, value = item.partition("=")
        if value not in ("0", "1"):
            raise ValueError(f"--snp-require {item!r}: expected BIT=0 or BIT=1")
        required[name.strip().lower()] = value == "1"
    minimums: dict[str, dict[str, int]] = {}
    for item in args.snp_min_tcb:
        product, _, comps = item.partition(":")
        if product not in ("Milan", "Genoa", "Turin"):
            raise ValueError(f"--snp-min-tcb {item!r}: product must be Milan, Genoa or Turin")
        for comp in comps.split(","):
            name, _, value = comp.partition("=")
            if name not in ("bootloader", "tee", "snp", "microcode", "fmc"):
                raise ValueError(f"--snp-min-tcb {item!r}: unknown component {name!r}")
            minimums.setdefault(product, {})[name] = int(value)
    return {"snp_max_vmpl": args.snp_max_vmpl, "snp_guest_policy": required, "snp_min_tcb": minimums}


# -- revocable identities (issue 16): what `derot gov` can revoke, copied from the evidence of a machine --

def _revocable(claims) -> list[dict]:
    from derot.attest.identity import identities
    from derot.chain.actions import revoke_word

    return [{"kind": m.kind.name, "id": m.ident.hex(), "what": m.label, "per_machine": m.per_machine,
             "action": f"revoke-{revoke_word(m.kind)} {m.ident.hex()}"} for m in identities(claims)]


def _print_revocable(claims) -> None:
    for row in _revocable(claims):
        print(f"{'revocable':16}{row['what']}: derot gov council {row['action']}")


def _fail(args, reason: str, message: str) -> int:
    if args.json:
        print(json.dumps({"verified": False, "reason": reason, "error": message}, indent=2))
    else:
        print(f"verification failed [{reason}]: {message}", file=sys.stderr)
    return 2


def _print_claims(claims, indent: str = "") -> None:
    d = claims.details
    extra = ", ".join(f"{k}={d[k]}" for k in ("quote_version", "body", "product", "signing_key", "report_version",
                                               "driver_version", "vbios_version", "verified_by") if d.get(k) is not None)
    rows = [
        ("platform", f"{spelled(Platform, claims.platform)} ({extra}); root: {claims.root}"),
        ("tcb_status", f"{spelled(TcbStatus, claims.tcb_status)}; advisories: {', '.join(claims.advisory_ids) or '-'}"),
        ("measurement", claims.measurement_digest.hex()),
    ]
    rows += [(f"  {k}", v.hex()) for k, v in claims.measurements.items()]
    rows += [
        ("report_data", claims.report_data.hex()),
        ("debug", "yes" if claims.debug else "no"),
        ("hardware ids", ", ".join(f"{k}={v.hex()}" for k, v in vars(claims.hardware_ids).items() if v is not None)),
        ("valid", f"{_iso(claims.not_before)} .. {_iso(claims.not_after)}"),
    ]
    for key in ("sept_ve_disable", "mr_service_td_zero", "policy_flags", "vmpl", "reported_tcb", "nonce",
                "dcap_qvl_policy_objections", "tpm_nonce", "vm_configuration", "event_log_events", "app_events",
                "full_measurement_digest"):
        if key in d:
            value = d[key]
            rows.append((key, value.hex() if isinstance(value, bytes) else value))
    rows += _tee_rows(claims.tee_attributes)
    for name, value in rows:
        print(f"{indent}{name:16}{value}")
    for i, gpu in enumerate(claims.gpus):
        print(f"{indent}gpu[{i}]")
        _print_claims(gpu, indent + "  ")


def _tee_rows(facts) -> list[tuple[str, object]]:
    """TD attributes and SNP guest policy by name (set bits only), MRSERVICETD, VMPL, TCB components."""
    rows: list[tuple[str, object]] = []
    for key, label in (("td_attributes", "td_attributes"), ("guest_policy", "snp_policy")):
        if key in facts:
            named = facts[key]
            on = [k for k, v in named.items() if v is True]
            extra = f"; reserved {named['reserved']}" if int(str(named.get("reserved", "0")), 16) else ""
            rows.append((label, ", ".join(on) or "-") if not extra else (label, ", ".join(on) + extra))
    for key in ("mr_service_td", "seam_attributes", "vmpl", "product"):
        if facts.get(key) is not None:
            rows.append((key, facts[key]))
    if "tcb" in facts:
        rows.append(("tcb", ", ".join(f"{k}={v}" for k, v in facts["tcb"].items())))
    if "rim" in facts:
        rows.append(("rim", facts["rim"]))
    return rows


def cmd_devnet_evidence(args) -> int:
    from derot.attest.devnet import DevnetRoots, DevnetTee
    from derot.constants import Platform

    path = Path(args.devnet)
    roots = DevnetRoots.load(path) if (path / "devnet.json").exists() else DevnetRoots.generate(path)
    measurements = {}
    for item in args.measurement:
        name, _, value = item.partition("=")
        measurements[name.upper()] = bytes.fromhex(value)
    platform = {"tdx": Platform.TDX, "sev-snp": Platform.SEV_SNP, "azure-snp": Platform.AZURE_SNP,
                "azure-tdx": Platform.AZURE_TDX}[args.platform]
    if platform in (Platform.AZURE_SNP, Platform.AZURE_TDX):
        from derot.attest.devnet_azure import DevnetAzureVm

        pcrs = {int(k[3:]): v for k, v in measurements.items() if k.startswith("PCR")}
        hw = {k: v for k, v in measurements.items() if not k.startswith("PCR")}
        evidence = DevnetAzureVm(roots, platform, hw, pcrs, debug=args.debug).evidence(bytes.fromhex(args.report_data))
    else:
        evidence = DevnetTee(roots, platform, measurements, debug=args.debug).quote(bytes.fromhex(args.report_data))
    Path(args.out).write_bytes(evidence.encode())
    print(f"wrote {spelled(Platform, platform)} devnet evidence to {args.out}")
    return 0
