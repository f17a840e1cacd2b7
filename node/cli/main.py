"""``derot`` entry point.

Each command group lives in its own module under ``derot.cli`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` on every leaf command.
Group modules import heavy libraries (web3, grpc) inside their handlers, so ``derot --help``
stays fast. A handler returns an exit code (0 = success).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from derot import untrusted

# (module, group) in help order; a module that is not written yet is skipped.
GROUPS = ("node", "gov", "app", "attest", "devnet", "demo", "compose")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="derot",
        description="derot: a decentralized root of trust for TEEs",
    )
    parser.add_argument("--version", action="version", version="derot " + _version())
    sub = parser.add_subparsers(dest="group", metavar="COMMAND")
    for name in GROUPS:
        try:
            module = importlib.import_module(f"derot.cli.{name}_cmd")
        except ModuleNotFoundError as exc:
            if exc.name == f"derot.cli.{name}_cmd":
                continue
            raise
        module.register(sub)
    return parser


def _version() -> str:
    from derot import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    untrusted.pin_recursion_limit()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        # a group without a sub-command: show that group's help
        parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "--help"])
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
