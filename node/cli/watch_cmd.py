"""``derot app watch``: follow the committee's signed revocation and epoch feed on MQTT.

    derot app watch --mqtt mqtt://127.0.0.1:1883 --rpc http://127.0.0.1:8545 --registry 0x…
    derot app watch --devnet .devnet --json --count 3          (broker, RPC and registry from devnet.json)
    derot app watch --group-key HEX --chain-id 31337 --registry 0x…      (offline: a pinned group key)

Every notice is verified against the group key (read from the registry through ``--rpc``, or pinned with
``--group-key``) before it is printed; the broker is not trusted. Forged, malformed, replayed (older) and
misrouted notices are printed as REFUSED. Exit status: 0, or 3 when anything was refused, or 1 on an error
(including ``--count`` not reached within ``--timeout``).

The ``app`` command group calls :func:`register_watch`; ``python -m derot.cli.watch_cmd`` runs it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from derot.cli.errors import guarded
from derot.errors import DerotError

DEFAULT_MQTT = "mqtt://127.0.0.1:1883"
DEFAULT_RPC = "http://127.0.0.1:8545"


def register_watch(app_subparsers) -> None:
    """Add ``watch`` to the ``derot app`` sub-commands."""
    parser = app_subparsers.add_parser(
        "watch", help="follow the signed revocation and epoch feed (MQTT), verifying every notice",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=guarded(run_watch))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mqtt", default=os.environ.get("DEROT_MQTT_URL"),
                        help=f"broker URL, mqtt:// or mqtts:// ($DEROT_MQTT_URL; else the devnet's; else "
                             f"{DEFAULT_MQTT})")
    parser.add_argument("--rpc", default=os.environ.get("DEROT_RPC"),
                        help=f"Ethereum JSON-RPC the group key is read from ($DEROT_RPC; else the devnet's; else "
                             f"{DEFAULT_RPC})")
    parser.add_argument("--registry", default=os.environ.get("DEROT_REGISTRY"),
                        help="DerotRegistry address ($DEROT_REGISTRY; else the devnet's)")
    devnet = os.environ.get("DEROT_DEVNET")
    parser.add_argument("--devnet", type=Path, default=Path(devnet) if devnet else None,
                        help="a devnet directory whose devnet.json names the broker, RPC and registry ($DEROT_DEVNET)")
    parser.add_argument("--group-key", help="pin this group key (96-byte compressed G2, hex) instead of reading "
                                            "it from the chain; needs --chain-id and --registry")
    parser.add_argument("--chain-id", type=int, help="chain id, with --group-key")
    parser.add_argument("--count", type=int, help="exit after this many accepted notices")
    parser.add_argument("--timeout", type=float, help="exit after this many seconds")
    parser.add_argument("--max-age", type=float, default=900.0,
                        help="report the feed as stale when its newest notice is older than this many seconds "
                             "of chain time (default 900; 0 = never)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


class WatchError(DerotError):
    """A setup problem, printed without a traceback."""

    reason = "watch_failed"


def _fill_from_devnet(args) -> None:
    """Missing --mqtt / --rpc / --registry from DEVNET/devnet.json, then the defaults."""
    state = {}
    if args.devnet is not None:
        try:
            state = json.loads((args.devnet / "devnet.json").read_text())
        except (OSError, ValueError) as exc:
            raise WatchError(f"--devnet {args.devnet}: cannot read devnet.json ({exc}); is the devnet up?") from None
    args.mqtt = args.mqtt or state.get("mqtt_url") or DEFAULT_MQTT
    args.rpc = args.rpc or state.get("rpc_url") or DEFAULT_RPC
    args.registry = args.registry or state.get("registry")


def _trust(args):
    """(chain_id, registry, group key, refresh function or None) from the arguments."""
    from derot.crypto.bls import G2, PointDecodeError

    registry = args.registry
    if registry is None:
        raise WatchError("which registry? give --registry or --devnet")
    if args.group_key:
        if args.chain_id is None:
            raise WatchError("--group-key needs --chain-id")
        try:
            return args.chain_id, registry, G2.from_bytes(bytes.fromhex(args.group_key.removeprefix("0x"))), None
        except (ValueError, PointDecodeError) as exc:
            raise WatchError(f"--group-key: {exc}") from None
    from derot.app.sdk import AppError, TrustAnchor

    try:
        anchor = TrustAnchor.from_chain(args.rpc, registry)
    except AppError as exc:
        raise WatchError(str(exc)) from None
    except Exception as exc:  # RPC unreachable, not a registry
        raise WatchError(f"cannot read the group key from {args.rpc} / {registry}: {exc}") from None
    return anchor.chain_id, anchor.registry, anchor.group_key_sig, lambda: TrustAnchor.from_chain(
        args.rpc, registry).group_key_sig


def _when(timestamp: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def format_event(event, as_json: bool) -> str:
    """One line (text or JSON) for a watch event."""
    from derot.app.watch import Accepted, Connection, Refused, Stale

    if isinstance(event, Accepted):
        n = event.notice
        if as_json:
            return json.dumps({"event": "accepted", "kind": n.kind.topic_suffix, "block": n.block_number,
                               "block_hash": n.block_hash.hex(), "timestamp": n.block_timestamp, "epoch": n.epoch,
                               "first": event.first, "changes": [vars(c) for c in event.changes],
                               "notice": n.describe()})
        head = f"{n.kind.topic_suffix:<11} block {n.block_number} {_when(n.block_timestamp)} epoch {n.epoch}"
        if not event.changes:
            return f"{head}  {'nothing revoked, no platform rules' if event.first else 'unchanged (heartbeat)'}"
        label = "state: " if event.first else ""
        return "\n".join(f"{head}  {label}{change}" for change in event.changes)
    if isinstance(event, Refused):
        kind = event.topic.rsplit("/", 1)[-1]
        if as_json:
            return json.dumps({"event": "refused", "topic": event.topic, "reason": event.reason,
                               "detail": event.detail})
        return f"REFUSED {kind:<11} {event.reason}: {event.detail}"
    if isinstance(event, Stale):
        if as_json:
            return json.dumps({"event": "stale", "kind": event.kind.topic_suffix, "block": event.block,
                               "age": round(event.age, 1)})
        newest = f"newest notice (block {event.block})" if event.block is not None else "no notice yet; subscribed"
        return (f"STALE   {event.kind.topic_suffix:<11} {newest} {event.age:.0f} s ago: nodes down or the broker "
                "withholds the feed")
    if isinstance(event, Connection):
        if as_json:
            return json.dumps({"event": "connected" if event.connected else "disconnected", "detail": event.detail})
        return f"{'connected:' if event.connected else 'connection lost (retrying):'} {event.detail}"
    raise TypeError(f"unknown event {event!r}")


def run_watch(args) -> int:
    import asyncio

    from derot.app.watch import Accepted, FeedVerifier, Refused, watch
    from derot.certs.notices import BrokerAddress

    try:
        _fill_from_devnet(args)
        address = BrokerAddress.parse(args.mqtt)
        chain_id, registry, group_key, refresh = _trust(args)
    except (ValueError, WatchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    verifier = FeedVerifier(chain_id, registry, group_key)
    counts = {"accepted": 0, "refused": 0}

    async def main() -> None:
        done = asyncio.Event()

        def on_event(event) -> None:
            print(format_event(event, args.json), flush=True)
            if isinstance(event, Accepted):
                counts["accepted"] += 1
                if args.count and counts["accepted"] >= args.count:
                    done.set()
            elif isinstance(event, Refused):
                counts["refused"] += 1

        task = asyncio.create_task(watch(address, verifier, on_event, max_age=args.max_age,
                                         refresh_group_key=refresh))
        try:
            await asyncio.wait_for(done.wait(), args.timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    if counts["refused"]:
        return 3
    if args.count and counts["accepted"] < args.count:
        print(f"error: {counts['accepted']} of {args.count} notices within {args.timeout} s", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="derot app watch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    try:
        return run_watch(parser.parse_args(argv))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
