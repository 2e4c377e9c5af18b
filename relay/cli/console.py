"""``relay console`` (the web console) and ``relay console user add`` (its accounts)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from relay.cli import CliError
from relay.config import Config, ConfigError, load


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from relay.console.settings import DEFAULT_LISTEN

    p = sub.add_parser("console", help="the crisis-team web console (compose, inbox, delivery)")
    p.add_argument("--config", type=Path, help="the node's relay.toml")
    p.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        help=f"HOST:PORT (default {DEFAULT_LISTEN}); other than loopback needs [console] TLS",
    )
    p.set_defaults(handler=cmd_console)
    s = p.add_subparsers(dest="console_command", metavar="COMMAND")
    user = s.add_parser("user", help="console accounts")
    us = user.add_subparsers(dest="user_command", metavar="COMMAND", required=True)
    add = us.add_parser("add", help="bind a person to an issuer key (stored encrypted)")
    add.add_argument("name", help="the person's login name")
    add.add_argument("--config", type=Path, required=True)
    add.add_argument("--key", type=Path, required=True, help="the issuer's private key file")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first stdin line"
    )
    add.set_defaults(handler=cmd_user_add)


def _config(path: Path | None) -> Config:
    if path is None:
        raise CliError("--config relay.toml is required")
    try:
        return load(path)
    except ConfigError as exc:
        raise CliError(f"config: {exc}") from exc


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    first = getpass.getpass("Wachtwoord / password: ")
    if getpass.getpass("Nogmaals / again: ") != first:
        raise CliError("the two passwords differ")
    return first


def cmd_user_add(args: argparse.Namespace) -> int:
    from relay.console.accounts import AccountError, Accounts
    from relay.console.settings import console_settings
    from relay.keys import KeyError_, SequenceCounter, kid_of, load_private, load_public
    from relay.rosterfile import RosterFileError, load_trust
    from relay.trust import Role

    cfg = _config(args.config)
    try:
        settings = console_settings(cfg)
        key = load_private(args.key)
        trust = load_trust(cfg.roster, load_public(cfg.root))
    except (ConfigError, KeyError_, RosterFileError) as exc:
        raise CliError(str(exc)) from exc
    kid = kid_of(key.public_key())
    entry = trust.entry_for(kid)
    if entry is None or entry.role not in (Role.ISSUER, Role.COORDINATOR):
        raise CliError(
            f"{args.key} is not an issuer's key on the node's roster (key id {kid.hex()})"
        )
    password = _password(args.password_stdin)
    try:
        user = Accounts(settings.users).add(
            args.name, password, key, entry.name, seq_floor=SequenceCounter(args.key).last()
        )
    except (AccountError, KeyError_) as exc:
        raise CliError(str(exc)) from exc
    print(
        f"user {user.name} added: signs as {entry.name} (key id {kid.hex()}, scope "
        f"{','.join(entry.scope.specs()) or 'none'}); users file {settings.users}"
    )
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    if args.console_command is not None:  # pragma: no cover - argparse routes subcommands
        raise CliError("unknown console command")
    from relay import log
    from relay.console.serve import ServeError, run

    cfg = _config(args.config)
    log.configure(cfg.log_level, cfg.log_format)
    try:
        return run(cfg, args.listen)
    except ServeError as exc:
        raise CliError(str(exc)) from exc
