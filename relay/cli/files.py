"""``relay files``: the run-time files the package ships (systemd unit, radio profiles, …)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from relay import resources
from relay.cli import CliError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("files", help="the files the package ships: systemd unit, radio profiles")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser("list", help="list the shipped files")
    ls.set_defaults(handler=cmd_list)
    show = actions.add_parser("show", help="print one shipped file")
    show.add_argument("name", help="e.g. systemd/relay.service")
    show.set_defaults(handler=cmd_show)
    copy = actions.add_parser("copy", help="copy one shipped file to a path")
    copy.add_argument("name")
    copy.add_argument("dest", type=Path)
    copy.set_defaults(handler=cmd_copy)


def cmd_list(args: argparse.Namespace) -> int:
    for name in resources.names():
        print(name)
    return 0


def _read(name: str) -> bytes:
    try:
        return resources.read_bytes(name)
    except resources.ResourceError as exc:
        raise CliError(str(exc)) from None


def cmd_show(args: argparse.Namespace) -> int:
    sys.stdout.buffer.write(_read(args.name))
    sys.stdout.flush()
    return 0


def cmd_copy(args: argparse.Namespace) -> int:
    data = _read(args.name)
    dest: Path = args.dest / Path(args.name).name if args.dest.is_dir() else args.dest
    try:
        dest.write_bytes(data)
    except OSError as exc:
        raise CliError(f"cannot write {dest}: {exc.strerror}") from None
    print(dest)
    return 0
