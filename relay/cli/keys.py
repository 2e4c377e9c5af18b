"""``relay keys``: create and inspect Ed25519 keys."""

from __future__ import annotations

import argparse
import getpass
import os
from pathlib import Path

from relay.cli import CliError
from relay.keys import (
    PASSPHRASE_ENV,
    KeyError_,
    fingerprint,
    kid_of,
    load_public,
    raw_public,
    write_keypair,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keys", help="create and inspect Ed25519 keys")
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    new = ks.add_parser("new", help="write DIR/NAME.key (mode 0600) and DIR/NAME.pub")
    new.add_argument("name")
    new.add_argument("--dir", type=Path, default=Path("keys"))
    new.add_argument(
        "--encrypt",
        action="store_true",
        help=f"encrypt the private key with a passphrase (from ${PASSPHRASE_ENV} or a prompt)",
    )
    new.add_argument("--force", action="store_true", help="overwrite an existing key")
    new.set_defaults(handler=cmd_new)
    show = ks.add_parser("show", help="print a key's id and fingerprint (never the key itself)")
    show.add_argument("file", type=Path)
    show.set_defaults(handler=cmd_show)


def _passphrase() -> bytes:
    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV].encode()
    first = getpass.getpass("passphrase: ")
    if not first or first != getpass.getpass("again: "):
        raise CliError("passphrases are empty or differ")
    return first.encode()


def cmd_new(args: argparse.Namespace) -> int:
    if "/" in args.name or args.name.startswith("."):
        raise CliError(f"key name {args.name!r} must be a plain file name")
    try:
        key_path, pub_path, key = write_keypair(
            args.dir,
            args.name,
            passphrase=_passphrase() if args.encrypt else None,
            force=args.force,
        )
    except KeyError_ as exc:
        raise CliError(str(exc)) from exc
    pub = key.public_key()
    print(f"private key  {key_path} (mode 0600)")
    print(f"public key   {pub_path}")
    print(f"key id       {kid_of(pub).hex()}")
    print(f"fingerprint  {fingerprint(raw_public(pub))}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    try:
        pub = load_public(args.file)
    except KeyError_ as exc:
        raise CliError(str(exc)) from exc
    print(f"key id       {kid_of(pub).hex()}")
    print(f"fingerprint  {fingerprint(raw_public(pub))}")
    return 0
