"""``derot`` entry point.

Each command group lives in its own module under ``derot.cli`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` on every leaf command. The group modules
are imported statically; they import heavy libraries (web3, grpc) and every devnet tool inside their
handlers, so ``derot --help`` stays fast and ``derot node run`` loads no ``derot.devnet`` code
(tests/cli/test_runtime_imports.py). A handler returns an exit code (0 = success).
"""

from __future__ import annotations

import argparse
import sys

from derot import untrusted
from derot.cli import app_cmd, attest_cmd, compose_cmd, demo_cmd, devnet_cmd, gov_cmd, node_cmd

#: the command groups, in help order
GROUPS = (node_cmd, gov_cmd, app_cmd, attest_cmd, devnet_cmd, demo_cmd, compose_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="derot",
        description="derot: a decentralized root of trust for TEEs",
    )
    parser.add_argument("-V", "--version", action="version", version="derot " + _version())
    sub = parser.add_subparsers(dest="group", metavar="COMMAND")
    for module in GROUPS:
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
