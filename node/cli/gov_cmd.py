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
``gov deploy`` and ``derot devnet up``). Signing key: ``--key-file`` or ``$DEROT_KEY`` (hex). Keys are never
printed; only the signer's address is.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from derot.errors import DerotError

DEFAULT_RPC = "http://127.0.0.1:8545"
DEFAULT_DEPLOYMENT = ".devnet/deployment.json"


class CliError(DerotError):
    """A user-facing error: printed without a traceback, exit code 1."""

    reason = "cli_error"


def register(subparsers) -> None:
    gov = subparsers.add_parser("gov", help="governance: proposals, votes, council actions, deployment",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gov.add_argument("--rpc", default=os.environ.get("DEROT_RPC", DEFAULT_RPC), help="JSON-RPC URL ($DEROT_RPC)")
    gov.add_argument("--deployment", type=Path, default=Path(os.environ.get("DEROT_DEPLOYMENT", DEFAULT_DEPLOYMENT)),
                     help="deployment JSON ($DEROT_DEPLOYMENT)")
    gov.add_argument("--key-file", type=Path, help="file holding the signing key (hex); default $DEROT_KEY")
    sub = gov.add_subparsers(dest="gov_command", metavar="COMMAND")

    p = sub.add_parser("actions", help="list the typed proposal actions")
    p.set_defaults(func=_run(cmd_actions))

    p = sub.add_parser("propose", help="submit a proposal: ACTION ARGS [+ ACTION ARGS ...]")
    p.add_argument("-m", "--description", required=True, help="proposal text (first line is the title)")
    p.add_argument("--dry-run", action="store_true", help="print the summary and calldata, send nothing")
    p.add_argument("words", nargs=argparse.REMAINDER, help="actions separated by '+'; see `derot gov actions`")
    p.set_defaults(func=_run(cmd_propose))

    p = sub.add_parser("vote", help="cast a vote")
    p.add_argument("proposal", type=_proposal_id)
    p.add_argument("support", choices=["for", "against", "abstain"])
    p.add_argument("--reason", default="")
    p.set_defaults(func=_run(cmd_vote))

    for name, helptext in (("queue", "queue a succeeded proposal in the timelock"),
                           ("execute", "execute a queued proposal once the timelock delay passed")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("proposal", type=_proposal_id)
        p.set_defaults(func=_run(cmd_queue if name == "queue" else cmd_execute))

    p = sub.add_parser("list", help="list proposals with their state")
    p.set_defaults(func=_run(cmd_list))

    p = sub.add_parser("show", help="show a proposal: actions, votes, state")
    p.add_argument("proposal", type=_proposal_id)
    p.set_defaults(func=_run(cmd_show))

    p = sub.add_parser("delegate", help="delegate your voting power (to yourself by default)")
    p.add_argument("to", nargs="?", help="address (default: the signer)")
    p.set_defaults(func=_run(cmd_delegate))

    p = sub.add_parser("council", help="SecurityCouncil: restrictive actions that take effect at once")
    p.add_argument("words", nargs=argparse.REMAINDER,
                   help="ACTION ARGS, e.g. `revoke fmspc 00906ed50000`, `disable-platform sev-snp`")
    p.set_defaults(func=_run(cmd_council))

    p = sub.add_parser("state", help="summarise the registry state")
    p.set_defaults(func=_run(cmd_state))

    p = sub.add_parser("deploy", help="deploy token, timelock, governor and registry")
    p.add_argument("--devnet", action="store_true", help="fast governance (1-block delay, 20 blocks, 60 s)")
    p.add_argument("--holder", action="append", default=[], metavar="ADDRESS:AMOUNT",
                   help="initial token holder and whole-token amount (repeatable)")
    p.add_argument("--council", help="SecurityCouncil address")
    p.add_argument("--out", type=Path, help="where to write the deployment JSON (default: --deployment)")
    p.set_defaults(func=_run(cmd_deploy))

    gov.set_defaults(func=lambda args: (gov.print_help(), 2)[1])


def _proposal_id(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a proposal id: {text!r}") from None


def _run(handler):
    def wrapped(args) -> int:
        from derot.chain.actions import ActionError
        from derot.chain.tx import TransactionFailed

        try:
            return handler(args) or 0
        except (CliError, ActionError, TransactionFailed, KeyError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return wrapped


# ------------------------------------------------------------------------------------------------
# context


def _w3(args):
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(args.rpc, request_kwargs={"timeout": 30}))
    if not w3.is_connected():
        raise CliError(f"no JSON-RPC node answers at {args.rpc}")
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

    print("Proposal actions (combine several with '+'); [council] = the SecurityCouncil may do it at once:\n")
    for name, cls in ACTIONS.items():
        usage = action_parser(name).format_usage().replace("usage: ", "").strip()
        flag = " [council]" if cls.council_allowed else ""
        print(f"  {usage}\n      {cls.help}{flag}")
    print(f"  {action_parser(SET_THRESHOLD).format_usage().replace('usage: ', '').strip()}\n"
          "      reshare to the current members with a new threshold")
    return 0


def _parse_actions(gov, words):
    from derot.chain.actions import ActionError, parse_action, split_actions

    groups = split_actions(words)
    if not groups:
        raise ActionError("no action given; see `derot gov actions`")
    current = gov.registry.current_epoch()
    members = gov.registry.epoch(current).members if current else None
    return [parse_action(group, current_members=members) for group in groups]


def cmd_propose(args) -> int:
    gov = _governance(args)
    actions = _parse_actions(gov, args.words)
    print("Proposal: " + args.description.splitlines()[0])
    for i, action in enumerate(actions, start=1):
        print(f"  {i}. {action.summary()}")
    if args.dry_run:
        for action in actions:
            target, data = action.encode(gov.registry)
            print(f"  call {target} 0x{data.hex()}")
        print(f"  proposal id would be {gov.proposal_id(actions, args.description)}")
        return 0
    account = _account(args)
    proposal_id = gov.propose(account, actions, args.description)
    p = gov.proposal(proposal_id)
    print(f"proposed by {account.address}: id {proposal_id}")
    print(f"voting opens after block {p.vote_start} and closes at block {p.vote_end}")
    return 0


def cmd_vote(args) -> int:
    from derot.chain.governance import Support

    gov = _governance(args)
    account = _account(args)
    receipt = gov.vote(account, args.proposal, Support[args.support.upper()], args.reason)
    weight = gov.votes(account.address, gov.proposal(args.proposal).vote_start)
    print(f"{account.address} voted {args.support} with {weight / 10**18:g} votes; {_tx_line(receipt)}")
    return 0


def cmd_queue(args) -> int:
    gov = _governance(args)
    receipt = gov.queue(_account(args), args.proposal)
    eta = gov.proposal(args.proposal).eta
    print(f"queued; executable from Unix time {eta}; {_tx_line(receipt)}")
    return 0


def cmd_execute(args) -> int:
    gov = _governance(args)
    receipt = gov.execute(_account(args), args.proposal)
    print(f"executed; {_tx_line(receipt)}")
    for action in gov.proposal(args.proposal).actions:
        print(f"  done: {action.summary() if hasattr(action, 'summary') else action}")
    return 0


def cmd_list(args) -> int:
    gov = _governance(args)
    proposals = gov.proposals()
    if not proposals:
        print("no proposals")
        return 0
    for p in proposals:
        title = p.description.splitlines()[0] if p.description else ""
        print(f"{p.id}\n    {p.state.name.lower():9s} {len(p.actions)} action(s)  {title}")
    return 0


def cmd_show(args) -> int:
    gov = _governance(args)
    print(gov.proposal(args.proposal).summary())
    return 0


def cmd_delegate(args) -> int:
    gov = _governance(args)
    account = _account(args)
    receipt = gov.delegate(account, args.to)
    print(f"{account.address} delegated to {args.to or 'itself'}; {_tx_line(receipt)}")
    return 0


def cmd_council(args) -> int:
    from derot.chain.actions import ActionError, parse_action

    gov = _governance(args)
    action = parse_action(args.words)
    if not action.council_allowed:
        raise ActionError(f"{action.name} is not a council action: the council can only restrict "
                          "(revoke, disable, suspend, freeze, raise a floor, abort)")
    account = _account(args)
    council = gov.registry.security_council()
    if council != account.address:
        raise CliError(f"{account.address} is not the SecurityCouncil ({council or 'none set'})")
    receipt = gov.registry.apply(account, [action])
    print(f"council: {action.summary()}; {_tx_line(receipt)}")
    return 0


def cmd_state(args) -> int:
    from derot.chain.state import read_state

    gov = _governance(args)
    block = gov.w3.eth.get_block("latest")
    s = read_state(gov.registry, bytes(block["hash"]), block["number"], block["timestamp"])
    snap = s.snapshot
    print(f"registry {snap.registry} on chain {snap.chain_id} at block {snap.block_number}")
    print(f"  owner {s.owner}; council {s.council or 'none'}")
    if s.committee:
        c = s.committee
        print(f"  epoch {c.id} ACTIVE: {len(c.members)} members, threshold {c.threshold}")
        print(f"    PK_sig {c.pk_sig.to_bytes().hex()}")
    else:
        print("  no active epoch")
    if s.pending:
        print(f"  epoch {s.pending.id} {s.pending.phase.name} pending: {len(s.pending.members)} members, "
              f"threshold {s.pending.threshold}")
    for platform, rule in sorted(snap.platforms.items()):
        name = getattr(platform, "name", str(platform))
        print(f"  platform {name}: {'enabled' if rule.enabled else 'disabled'}, TCB floor "
              f"{getattr(rule.tcb_floor, 'name', rule.tcb_floor)}")
    print(f"  nodes: {len(s.nodes)} registered, {len(s.approved_nodes())} approved; apps: {len(snap.apps)}")
    for label, values in (("FMSPCs", snap.revoked_fmspcs), ("chip ids", snap.revoked_chip_ids),
                          ("GPU FWIDs", snap.revoked_gpu_fwids), ("measurements", snap.revoked_measurements),
                          ("certificate serials", s.revoked_serials),
                          ("evidence hashes", s.revoked_evidence_hashes)):
        if values:
            print(f"  revoked {label}: " + ", ".join(sorted(v.hex() for v in values)))
    return 0


def cmd_deploy(args) -> int:
    from eth_utils import to_checksum_address

    from derot.chain.deploy import TOKEN_UNIT, DeployParams, deploy

    holders = []
    for item in args.holder:
        address, _, amount = item.partition(":")
        try:
            holders.append((to_checksum_address(address), int(amount) * TOKEN_UNIT))
        except ValueError:
            raise CliError(f"--holder wants ADDRESS:AMOUNT, got {item!r}") from None
    if not holders:
        raise CliError("at least one --holder is needed, or nobody can ever vote")
    w3 = _w3(args)
    account = _account(args)
    make = DeployParams.devnet if args.devnet else DeployParams.production
    deployment = deploy(w3, account, make(holders, args.council))
    out = args.out or args.deployment
    out.parent.mkdir(parents=True, exist_ok=True)
    deployment.save(out)
    print(f"deployed on chain {deployment.chain_id} by {account.address}; wrote {out}")
    for name in ("registry", "governor", "timelock", "token"):
        print(f"  {name:9s} {getattr(deployment, name)}")
    print("token holders must delegate (derot gov delegate) before their votes count")
    return 0
