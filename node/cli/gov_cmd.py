"""derot gov: governance as a DAO member uses it.

    derot gov actions                                   the action vocabulary
    derot gov propose -m "Revoke FMSPC" revoke-fmspc 00906ed50000 + set-tcb-floor tdx up-to-date
    derot gov vote <id> for|against|abstain [--reason TEXT]
    derot gov queue <id>      derot gov execute <id>
    derot gov list            derot gov show <id>
    derot gov delegate [ADDRESS]                        votes count only once delegated
    derot gov council revoke fmspc 00906ed50000         the SecurityCouncil acts at once (restrict only)
    derot gov state                                     what the registry says now
    derot gov deploy --devnet --holder ADDR:AMOUNT ...  deploy token, timelock, governor and registry

Connection: ``--rpc`` (``$DEROT_RPC``), ``--deployment`` file (``$DEROT_DEPLOYMENT``, written by
``gov deploy`` and ``derot devnet up``); with neither, ``$DEROT_DEVNET`` names a devnet directory whose chain and
deployment are used. Signing key: ``--key-file`` or ``$DEROT_KEY`` (hex). Keys are never
printed; only the signer's address is. These options and ``--json`` are accepted before or after the command
(``derot gov council revoke fmspc 00906ed50000 --key-file K``).

Proposal ids are shown as a short unique hex prefix (``#3f2a9c1b``); every command accepts that prefix, the full
hex id or the full decimal id. Times are ISO 8601 UTC; voting windows are shown in blocks and in time (estimated
from the chain's recent block rate while in the future). Reverts are decoded ("proposal is Defeated").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from derot.cli import gov_deploy
from derot.cli.errors import UNREACHABLE, CliError, CommandError, guarded
from derot.cli.gov_view import (exclusions_view, hex_id, humanize_revert, iso, proposal_view, short_ids, snp_policy_view,
                                votes_text, window, window_text)

DEFAULT_RPC = "http://127.0.0.1:8545"
DEFAULT_DEPLOYMENT = ".devnet/deployment.json"


def connection_defaults(environ=os.environ) -> tuple[str, Path]:
    """``--rpc`` and ``--deployment`` when not given: ``$DEROT_RPC`` and ``$DEROT_DEPLOYMENT``; else, with
    ``$DEROT_DEVNET``, that devnet's chain (its devnet.json) and deployment.json; else the local defaults."""
    rpc, deployment = environ.get("DEROT_RPC", ""), environ.get("DEROT_DEPLOYMENT", "")
    devnet = environ.get("DEROT_DEVNET", "")
    if devnet and not rpc:
        try:
            rpc = str(json.loads((Path(devnet) / "devnet.json").read_text()).get("rpc_url") or "")
        except (OSError, ValueError, AttributeError):
            rpc = ""  # no running devnet there: the commands say which RPC did not answer
    if devnet and not deployment:
        deployment = str(Path(devnet) / "deployment.json")
    return rpc or DEFAULT_RPC, Path(deployment or DEFAULT_DEPLOYMENT)


def register(subparsers) -> None:
    gov = subparsers.add_parser("gov", help="governance: proposals, votes, council actions, deployment",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    rpc, deployment = connection_defaults()
    gov.add_argument("--rpc", default=rpc, help="JSON-RPC URL ($DEROT_RPC, else $DEROT_DEVNET's chain)")
    gov.add_argument("--deployment", type=Path, default=deployment,
                     help="deployment JSON ($DEROT_DEPLOYMENT, else $DEROT_DEVNET/deployment.json)")
    gov.add_argument("--key-file", type=Path, help="file holding the signing key (hex); default $DEROT_KEY")
    gov.add_argument("--json", action="store_true", help="machine-readable output")
    # the same options after the command; SUPPRESS keeps a value given before the command
    late = argparse.ArgumentParser(add_help=False)
    late.add_argument("--rpc", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    late.add_argument("--deployment", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    late.add_argument("--key-file", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    late.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    sub = _Subparsers(gov.add_subparsers(dest="gov_command", metavar="COMMAND"), late)

    p = sub.add_parser("actions", help="list the typed proposal actions")
    p.set_defaults(func=_run(cmd_actions))

    p = sub.add_parser("propose", help="submit a proposal: ACTION ARGS [+ ACTION ARGS ...]")
    p.add_argument("-m", "--description", required=True, help="proposal text (first line is the title)")
    p.add_argument("--dry-run", action="store_true", help="print the summary and calldata, send nothing")
    p.add_argument("words", nargs=argparse.REMAINDER, help="actions separated by '+'; see `derot gov actions`")
    p.add_argument("--no-summary", action="store_true", help="do not append the actions' summary to the description")
    p.set_defaults(func=_run(cmd_propose))

    p = sub.add_parser("vote", help="cast a vote")
    p.add_argument("proposal", type=_proposal_ref)
    p.add_argument("support", choices=["for", "against", "abstain"])
    p.add_argument("--reason", default="")
    p.set_defaults(func=_run(cmd_vote))

    for name, helptext in (("queue", "queue a succeeded proposal in the timelock"),
                           ("execute", "execute a queued proposal once the timelock delay passed")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("proposal", type=_proposal_ref)
        p.set_defaults(func=_run(cmd_queue if name == "queue" else cmd_execute))

    p = sub.add_parser("list", help="list proposals with their state")
    p.set_defaults(func=_run(cmd_list))

    p = sub.add_parser("show", help="show a proposal: actions, votes, state")
    p.add_argument("proposal", type=_proposal_ref)
    p.set_defaults(func=_run(cmd_show))

    p = sub.add_parser("delegate", help="delegate your voting power (to yourself by default)")
    p.add_argument("to", nargs="?", help="address (default: the signer)")
    p.set_defaults(func=_run(cmd_delegate))

    p = sub.add_parser("council", help="SecurityCouncil: restrictive actions that take effect at once")
    p.add_argument("words", nargs=argparse.REMAINDER,
                   help="ACTION ARGS, e.g. `revoke fmspc 00906ed50000`, `disable-platform sev-snp`, or "
                        "`cancel PROPOSAL_ID` (veto a queued proposal during the timelock delay)")
    p.set_defaults(func=_run(cmd_council))

    p = sub.add_parser("state", help="summarise the registry state")
    p.add_argument("--members", action="store_true",
                   help="also fetch and verify each committee member's TEE evidence: is its machine revoked?")
    devnet = os.environ.get("DEROT_DEVNET")
    p.add_argument("--devnet", type=Path, metavar="DIR", default=Path(devnet) if devnet else None,
                   help="with --members: trust the roots of this devnet (its directory or its roots/ folder; "
                        "default $DEROT_DEVNET)")
    p.set_defaults(func=_run(cmd_state))

    gov_deploy.add_parser(sub, _run)

    gov.set_defaults(func=lambda args: (gov.print_help(), 2)[1])


class _Subparsers:
    """``add_subparsers()`` whose every command also takes the late (after-the-command) options."""

    def __init__(self, inner, late):
        self.inner, self.late = inner, late

    def add_parser(self, name, **kwargs):
        return self.inner.add_parser(name, parents=[self.late], **kwargs)


def _proposal_ref(text: str) -> str:
    """A proposal reference as typed: a full decimal id, a full hex id, or a hex prefix (``#`` optional)."""
    ref = text.strip().lower().removeprefix("#")
    body = ref[2:] if ref.startswith("0x") else ref
    if not body or not re.fullmatch(r"[0-9a-f]+", body):
        raise argparse.ArgumentTypeError(f"not a proposal id or id prefix: {text!r}")
    return ref


def resolve_proposal(gov, ref: str) -> int:
    """The proposal id ``ref`` names: decimal ids longer than 20 digits are taken as they are; anything
    else is a hex prefix that must match exactly one proposal."""
    if ref.isdigit() and len(ref) > 20:
        return int(ref)
    prefix = ref.removeprefix("0x")
    matches = [p.id for p in gov.proposals() if hex_id(p.id).startswith(prefix)]
    if ref.isdigit() and not matches:
        matches = [p.id for p in gov.proposals() if str(p.id) == ref]
    if not matches:
        raise CliError(f"no proposal matches {ref!r} (see `derot gov list`)")
    if len(set(matches)) > 1:
        raise CliError(f"{ref!r} matches {len(set(matches))} proposals: give more digits")
    return matches[0]


_LATE_VALUES = {"--rpc": ("rpc", str), "--deployment": ("deployment", Path), "--key-file": ("key_file", Path)}


def take_late_options(args) -> None:
    """Commands whose action words run to the end of the line (propose, council) still accept the global
    options among them: ``council revoke fmspc X --key-file K``. They are taken out of ``args.words``."""
    words = getattr(args, "words", None)
    if not words:
        return
    rest, i = [], 0
    while i < len(words):
        word = words[i]
        name, eq, inline = word.partition("=")
        if word == "--json":
            args.json = True
        elif name in _LATE_VALUES and (eq or i + 1 < len(words)):
            attr, kind = _LATE_VALUES[name]
            value = inline if eq else words[i + 1]
            setattr(args, attr, kind(value))
            i += 0 if eq else 1
        else:
            rest.append(word)
        i += 1
    args.words = rest


def _run(handler):
    def wrapped(args) -> int:
        from derot.chain.actions import ActionError
        from derot.chain.tx import TransactionFailed

        take_late_options(args)
        try:
            return handler(args) or 0
        except TransactionFailed as exc:
            raise CommandError("transaction_failed", humanize_revert(str(exc))) from None
        except (CliError, ActionError, KeyError) as exc:
            raise CommandError("invalid_input", str(exc).strip("'\"")) from None

    return guarded(wrapped)


def emit(args, data: dict, lines: list[str]) -> None:
    """``data`` as JSON with ``--json``, else the human ``lines``."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        print("\n".join(lines))


# ------------------------------------------------------------------------------------------------
# context


def _w3(args):
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(args.rpc, request_kwargs={"timeout": 30}))
    if not w3.is_connected():
        raise CommandError("unreachable", f"no JSON-RPC node answers at {args.rpc}", UNREACHABLE)
    return w3


def _deployment(args):
    from derot.chain.deploy import Deployment

    if not args.deployment.is_file():
        raise CliError(f"no deployment file at {args.deployment} (use --deployment or $DEROT_DEPLOYMENT)")
    return Deployment.load(args.deployment)


def _governance(args):
    from derot.chain.governance import Governance

    w3 = _w3(args)
    deployment = _deployment(args)
    if w3.eth.chain_id != deployment.chain_id:
        raise CliError(f"{args.rpc} is chain {w3.eth.chain_id}, the deployment is on chain {deployment.chain_id}")
    return Governance(w3, deployment)


def _account(args):
    from eth_account import Account

    if args.key_file:
        secret = args.key_file.read_text().strip()
    else:
        secret = os.environ.get("DEROT_KEY", "").strip()
    if not secret:
        raise CliError("no signing key: pass --key-file or set $DEROT_KEY")
    try:
        return Account.from_key(secret)
    except (ValueError, TypeError):
        raise CliError("the signing key is not a valid secp256k1 private key (hex)") from None


def _tx_line(receipt) -> str:
    return f"tx {receipt['transactionHash'].hex()} in block {receipt['blockNumber']} (gas {receipt['gasUsed']:,})"


# ------------------------------------------------------------------------------------------------
# handlers


def cmd_actions(args) -> int:
    from derot.chain.actions import ACTIONS, SET_THRESHOLD, action_parser

    def usage(name: str) -> str:
        return action_parser(name).format_usage().replace("usage: ", "").strip()

    items = [{"name": name, "usage": usage(name), "help": cls.help, "council": bool(cls.council_allowed)}
             for name, cls in ACTIONS.items()]
    items.append({"name": SET_THRESHOLD, "usage": usage(SET_THRESHOLD), "council": False,
                  "help": "reshare to the current members with a new threshold"})
    lines = ["Proposal actions (combine several with '+'); [council] = the SecurityCouncil may do it at once:\n"]
    lines += [f"  {i['usage']}\n      {i['help']}{' [council]' if i['council'] else ''}" for i in items]
    emit(args, {"actions": items}, lines)
    return 0


def _parse_actions(gov, words):
    from derot.chain.actions import ActionError, parse_action, split_actions

    groups = split_actions(words)
    if not groups:
        raise ActionError("no action given; see `derot gov actions`")
    current = gov.registry.current_epoch()
    members = gov.registry.epoch(current).members if current else None
    return [parse_action(group, current_members=members) for group in groups]


def describe(description: str, actions) -> str:
    """The proposal description with the actions' human summary appended (what Tally-style indexers show
    voters), unless the description already carries it."""
    marker = "Actions:"
    if marker in description:
        return description
    lines = [f"{i}. {a.summary()}" for i, a in enumerate(actions, start=1)]
    return description.rstrip() + "\n\n" + marker + "\n" + "\n".join(lines)


def cmd_propose(args) -> int:
    gov = _governance(args)
    actions = _parse_actions(gov, args.words)
    description = args.description if args.no_summary else describe(args.description, actions)
    summaries = [a.summary() for a in actions]
    head = ["Proposal: " + description.splitlines()[0]] + [f"  {i}. {t}" for i, t in enumerate(summaries, start=1)]
    if args.dry_run:
        pid = gov.proposal_id(actions, description)
        calls = [action.encode(gov.registry) for action in actions]
        emit(args, {"dry_run": True, "id": str(pid), "short_id": "#" + hex_id(pid)[:8], "actions": summaries,
                    "description": description, "calls": [{"target": t, "data": "0x" + d.hex()} for t, d in calls]},
             head + [f"  call {t} 0x{d.hex()}" for t, d in calls]
             + [f"  proposal id would be {pid} (#{hex_id(pid)[:8]})"])
        return 0
    account = _account(args)
    _warn_without_votes(gov, account.address, None, "propose")
    proposal_id = gov.propose(account, actions, description)
    p = gov.proposal(proposal_id)
    short = short_ids([q.id for q in gov.proposals()])[proposal_id]
    voting = window(gov.w3, p.vote_start, p.vote_end)
    emit(args, {"id": str(proposal_id), "short_id": short, "proposer": account.address, "actions": summaries,
                "voting": voting},
         head + [f"proposed by {account.address}: id {proposal_id} ({short})", f"voting: {window_text(voting)}"])
    return 0


def _warn_without_votes(gov, address: str, block: int | None, doing: str) -> int:
    weight = gov.votes(address, block)
    if weight == 0:
        print(f"warning: {address} has 0 votes" + (f" at the proposal's snapshot block {block}" if block else "")
              + f" and will {doing} with no weight; delegate first (derot gov delegate) — delegation counts only "
              "for proposals created after it", file=sys.stderr)
    return weight


def cmd_vote(args) -> int:
    from derot.chain.governance import Support

    gov = _governance(args)
    pid = resolve_proposal(gov, args.proposal)
    account = _account(args)
    snapshot = gov.proposal(pid).vote_start
    weight = _warn_without_votes(gov, account.address, snapshot if snapshot < gov.w3.eth.block_number else None,
                                 "vote")
    receipt = gov.vote(account, pid, Support[args.support.upper()], args.reason)
    emit(args, {"id": str(pid), "voter": account.address, "support": args.support, "votes": votes_text(weight),
                **_tx_data(receipt)},
         [f"{account.address} voted {args.support} with {votes_text(weight)} votes; {_tx_line(receipt)}"])
    return 0


def _tx_data(receipt) -> dict:
    return {"tx": receipt["transactionHash"].hex(), "block": receipt["blockNumber"], "gas": receipt["gasUsed"]}


def cmd_queue(args) -> int:
    gov = _governance(args)
    pid = resolve_proposal(gov, args.proposal)
    receipt = gov.queue(_account(args), pid)
    eta = gov.proposal(pid).eta
    emit(args, {"id": str(pid), "state": "queued", "executable_from": iso(eta), **_tx_data(receipt)},
         [f"queued; executable from {iso(eta)}; {_tx_line(receipt)}"])
    return 0


def cmd_execute(args) -> int:
    gov = _governance(args)
    pid = resolve_proposal(gov, args.proposal)
    receipt = gov.execute(_account(args), pid)
    done = [a.summary() if hasattr(a, "summary") else str(a) for a in gov.proposal(pid).actions]
    emit(args, {"id": str(pid), "state": "executed", "actions": done, **_tx_data(receipt)},
         [f"executed; {_tx_line(receipt)}"] + [f"  done: {text}" for text in done])
    return 0


def cmd_list(args) -> int:
    gov = _governance(args)
    proposals = gov.proposals()
    shorts = short_ids([p.id for p in proposals])
    views = [proposal_view(gov, p, shorts[p.id]) for p in proposals]
    lines = [f"{v['short_id']}  {v['state']:9s} {len(v['actions'])} action(s)  {v['title']}\n"
             f"    voting {window_text(v['voting'])}" for v in views] or ["no proposals"]
    emit(args, {"proposals": views}, lines)
    return 0


def cmd_show(args) -> int:
    gov = _governance(args)
    pid = resolve_proposal(gov, args.proposal)
    v = proposal_view(gov, gov.proposal(pid), short_ids([p.id for p in gov.proposals()])[pid])
    lines = [
        f"proposal {v['short_id']} ({v['id']})",
        f"  state:    {v['state']}",
        f"  proposer: {v['proposer']}",
        f"  title:    {v['title'] or '(none)'}",
        f"  voting:   {window_text(v['voting'])}",
        f"  votes:    for {v['votes']['for']}, against {v['votes']['against']}, abstain {v['votes']['abstain']} "
        f"(quorum {v['votes']['quorum']})",
    ]
    if v["eta"]:
        lines.append(f"  eta:      {v['eta']}")
    lines.append("  actions:")
    for i, action in enumerate(v["actions"], start=1):
        council = " [council may also do this at once]" if action["council_may_act_at_once"] else ""
        lines.append(f"    {i}. {action['summary']}{council}")
    emit(args, v, lines)
    return 0


def cmd_delegate(args) -> int:
    gov = _governance(args)
    account = _account(args)
    receipt = gov.delegate(account, args.to)
    weight = gov.votes(args.to or account.address)
    emit(args, {"delegator": account.address, "delegate": args.to or account.address,
                "delegate_votes": votes_text(weight), **_tx_data(receipt)},
         [f"{account.address} delegated to {args.to or 'itself'} ({votes_text(weight)} votes now); "
          f"{_tx_line(receipt)}"])
    return 0


def cmd_council(args) -> int:
    from derot.chain.actions import ActionError, parse_action

    gov = _governance(args)
    if args.words[:1] == ["cancel"] and len(args.words) == 2:  # the council's veto (timelock CANCELLER role)
        try:
            proposal = resolve_proposal(gov, _proposal_ref(args.words[1]))
        except argparse.ArgumentTypeError as exc:
            raise CliError(str(exc)) from None
        account = _account(args)
        receipt = gov.council_cancel(account, proposal)
        short = short_ids([p.id for p in gov.proposals()]).get(proposal, hex_id(proposal))
        emit(args, {"council": account.address, "id": str(proposal), "short_id": short, "state": "cancelled",
                    **_tx_data(receipt)},
             [f"council: cancelled queued proposal {short}; {_tx_line(receipt)}"])
        return 0
    action = parse_action(args.words)
    if not action.council_allowed:
        raise ActionError(f"{action.name} is not a council action: the council can only restrict "
                          "(revoke, disable, suspend, freeze, raise a floor, abort)")
    account = _account(args)
    council = gov.registry.security_council()
    if council != account.address:
        raise CliError(f"{account.address} is not the SecurityCouncil ({council or 'none set'})")
    receipt = gov.registry.apply(account, [action])
    emit(args, {"council": account.address, "action": action.summary(), **_tx_data(receipt)},
         [f"council: {action.summary()}; {_tx_line(receipt)}"])
    return 0


def cmd_state(args) -> int:
    from derot.chain.state import read_state
    from derot.chain.types import EpochPhase

    gov = _governance(args)
    block = gov.w3.eth.get_block("latest")
    s = read_state(gov.registry, bytes(block["hash"]), block["number"], block["timestamp"])
    snap = s.snapshot
    data: dict = {"registry": snap.registry, "chain_id": snap.chain_id, "block": snap.block_number,
                  "time": iso(snap.block_timestamp), "owner": s.owner, "council": s.council or None}
    lines = [f"registry {snap.registry} on chain {snap.chain_id} at block {snap.block_number} "
             f"({iso(snap.block_timestamp)})", f"  owner {s.owner}; council {s.council or 'none'}"]
    if s.committee:
        c = s.committee
        data["active_epoch"] = {"epoch": c.id, "members": len(c.members), "threshold": c.threshold,
                                "group_key_sig": c.group_key_sig.to_bytes().hex()}
        lines += [f"  epoch {c.id} active: {len(c.members)} members, threshold {c.threshold}",
                  f"    PK_sig {c.group_key_sig.to_bytes().hex()}"]
    else:
        data["active_epoch"] = None
        lines.append("  no active epoch")
    if s.pending:
        data["pending_epoch"] = {"epoch": s.pending.id, "phase": s.pending.phase.name.lower(),
                                 "members": len(s.pending.members), "threshold": s.pending.threshold}
        lines.append(f"  epoch {s.pending.id} {s.pending.phase.name.lower()} pending: {len(s.pending.members)} "
                     f"members, threshold {s.pending.threshold}")
    failed = sorted((e for e in s.epochs.values() if e.phase == EpochPhase.ABORTED), key=lambda e: e.id)
    data["aborted_epochs"] = [{"epoch": e.id, "members": len(e.members), "threshold": e.threshold} for e in failed]
    for e in failed[-5:]:
        lines.append(f"  epoch {e.id} aborted (failed run): {len(e.members)} members, threshold {e.threshold}")
    shown = [e for e in (s.committee, s.pending, *failed[-2:]) if e is not None]
    data["exclusions"], more = exclusions_view(gov.registry, s, shown)
    lines += more
    data["snp_policy"], more = snp_policy_view(snap)
    lines += more
    data["platforms"] = {}
    for platform, rule in sorted(snap.platforms.items()):
        name = _platform_word(platform)
        floor = _tcb_word(rule.tcb_floor)
        data["platforms"][name] = {"enabled": rule.enabled, "tcb_floor": floor}
        lines.append(f"  platform {name}: {'enabled' if rule.enabled else 'disabled'}, TCB floor {floor}")
    data.update(nodes_registered=len(s.nodes), nodes_approved=len(s.approved_nodes()), apps=len(snap.apps))
    lines.append(f"  nodes: {len(s.nodes)} registered, {len(s.approved_nodes())} approved; apps: {len(snap.apps)}")
    data["revoked"] = {}
    for label, values in (("FMSPCs", snap.revoked_fmspcs), ("chip ids", snap.revoked_chip_ids),
                          ("GPU FWIDs", snap.revoked_gpu_fwids), ("measurements", snap.revoked_measurements),
                          ("Intel PPIDs", snap.revoked_ppids), ("Intel PCK certificates", snap.revoked_pck_certs),
                          ("GPU devices", snap.revoked_gpu_devices),
                          ("certificate serials", s.revoked_serials),
                          ("evidence hashes", s.revoked_evidence_hashes)):
        data["revoked"][label.replace(" ", "_").lower()] = sorted(v.hex() for v in values)
        if values:
            lines.append(f"  revoked {label}: " + ", ".join(sorted(v.hex() for v in values)))
    emit(args, data, lines)
    if getattr(args, "members", False):
        _print_member_machines(args, s)
    return 0


def _print_member_machines(args, state) -> None:
    """Issue 16: say which committee members run on a revoked machine (derot.cli.gov_members)."""
    from derot.attest.trust import TrustConfig
    from derot.cli.gov_members import check_member_machines, describe, grpc_fetch

    if args.devnet:
        from derot.attest.devnet import DevnetRoots

        roots = args.devnet / "roots" if (args.devnet / "roots").is_dir() else args.devnet
        trust = TrustConfig.devnet(DevnetRoots.load(roots))
    else:
        trust = TrustConfig.production_defaults()
    for machine in check_member_machines(state, grpc_fetch(), trust):
        print("  " + describe(machine))


def _platform_word(platform) -> str:
    """One spelling per platform: tdx, sgx, sev-snp, nvidia-gpu."""
    from derot.chain.actions import platform_name

    try:
        return platform_name(platform)
    except Exception:
        return str(getattr(platform, "name", platform)).lower().replace("_", "-")


def _tcb_word(floor) -> str:
    from derot.chain.actions import tcb_name

    try:
        return tcb_name(floor)
    except Exception:
        return str(getattr(floor, "name", floor)).lower().replace("_", "-")
