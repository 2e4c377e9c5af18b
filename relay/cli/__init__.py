"""The ``relay`` command line.

Each command group lives in its own module with a ``register(subparsers)`` function that adds its
parsers and sets ``handler`` to a function taking the parsed namespace and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from relay import __version__

# Modules under relay.cli that register commands, in the order they appear in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "keys",
    "roster",
    "sign",
    "node",
    "audit",
    "demo",
    "sim",
    "drill",
    "console",
    "broker",
    "files",
    "doctor",
    "cap",
)

Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A user error: printed as one line on stderr, exit status 2 unless given."""

    def __init__(self, message: str, *, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay",
        description="Relay for signed crisis decisions over MQTT and LoRa mesh.",
    )
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"relay.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except CliError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
