"""``derot gov deploy``: deploy token, timelock, governor and registry, with governance parameters an operator
may set (docs/chain-trust.md discusses the defaults)."""

from __future__ import annotations

import argparse
from pathlib import Path

from derot.cli.errors import CliError


def add_parser(sub, run) -> None:
    """Register ``deploy`` on ``gov``'s subparsers; ``run`` wraps the handler as gov's other commands."""
    p = sub.add_parser("deploy", help="deploy token, timelock, governor and registry")
    p.add_argument("--devnet", action="store_true", help="fast governance (1-block delay, 20 blocks, 60 s)")
    p.add_argument("--holder", action="append", default=[], metavar="ADDRESS:AMOUNT",
                   help="initial token holder and whole-token amount (repeatable)")
    p.add_argument("--council", help="SecurityCouncil address")
    p.add_argument("--out", type=Path, help="where to write the deployment JSON (default: --deployment)")
    for flag, unit in _GOVERNANCE_FLAGS.items():
        p.add_argument(f"--{flag}", type=_natural, metavar="N",
                       help=f"governance parameter in {unit} (default: the production or --devnet default)")
    p.add_argument("--no-council-cancel", action="store_true",
                   help="do not give the SecurityCouncil the timelock CANCELLER role (its veto)")
    p.set_defaults(func=run(cmd_deploy))


#: ``gov deploy`` flags that override a DeployParams default (flag -> unit, for the help text)
_GOVERNANCE_FLAGS = {
    "voting-delay": "blocks", "voting-period": "blocks", "quorum-percent": "percent of supply",
    "proposal-threshold": "token base units", "timelock-delay": "seconds", "epoch-timeout": "blocks",
}


def _natural(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value


def governance_overrides(args) -> dict:
    """The DeployParams fields the operator set on the command line (docs/chain-trust.md discusses them)."""
    overrides = {flag.replace("-", "_"): getattr(args, flag.replace("-", "_")) for flag in _GOVERNANCE_FLAGS}
    overrides = {name: value for name, value in overrides.items() if value is not None}
    if not 1 <= overrides.get("quorum_percent", 4) <= 100:
        raise CliError("--quorum-percent must be between 1 and 100")
    if overrides.get("epoch_timeout", 1) == 0 or overrides.get("voting_period", 1) == 0:
        raise CliError("--epoch-timeout and --voting-period must be at least 1 block")
    if getattr(args, "no_council_cancel", False):
        overrides["council_cancels"] = False
    return overrides


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
    from derot.cli.gov_cmd import _account, _w3, emit

    w3 = _w3(args)
    account = _account(args)
    make = DeployParams.devnet if args.devnet else DeployParams.production
    deployment = deploy(w3, account, make(holders, args.council, **governance_overrides(args)))
    out = args.out or args.deployment
    out.parent.mkdir(parents=True, exist_ok=True)
    deployment.save(out)
    names = ("registry", "governor", "timelock", "token")
    emit(args, {"chain_id": deployment.chain_id, "deployer": account.address, "file": str(out),
                **{name: getattr(deployment, name) for name in names}},
         [f"deployed on chain {deployment.chain_id} by {account.address}; wrote {out}"]
         + [f"  {name:9s} {getattr(deployment, name)}" for name in names]
         + ["token holders must delegate (derot gov delegate) before their votes count"])
    return 0
