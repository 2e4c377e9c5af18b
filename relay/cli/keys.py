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
    SequenceCounter,
    fingerprint,
    kid_of,
    load_public,
    raw_public,
    write_keypair,
)
from relay.pq import key_hash
from relay.pqkeys import pq_paths, write_pq_keypair


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
    new.add_argument(
        "--pq",
        action="store_true",
        help="also write an ML-DSA-44 key pair, DIR/NAME.pq.key and DIR/NAME.pq.pub, for "
        "post-quantum attestations on the IP path (relay sign --pq)",
    )
    new.set_defaults(handler=cmd_new)
    show = ks.add_parser("show", help="print a key's id and fingerprint (never the key itself)")
    show.add_argument("file", type=Path)
    show.set_defaults(handler=cmd_show)
    adv = ks.add_parser(
        "advance",
        help="move a key's sequence counter forward, e.g. after restoring it from a backup",
        description="A sequence file restored from a backup is behind the numbers this key "
        "already signed: new decisions would be refused as replays. Advance it past them "
        "(skipped numbers are harmless) before the key signs again.",
    )
    adv.add_argument("key", type=Path, help="the private key file (NAME.key; NAME.seq beside it)")
    how = adv.add_mutually_exclusive_group()
    how.add_argument("--by", type=int, default=ADVANCE_BY, help=f"default {ADVANCE_BY}")
    how.add_argument("--to", type=int, help="at least this number (the highest seen, plus one)")
    adv.set_defaults(handler=cmd_advance)


ADVANCE_BY = 100_000  # far more than one issuer signs between two backups


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
    passphrase = _passphrase() if args.encrypt else None
    if args.pq and not args.force:
        for path in pq_paths(args.dir / f"{args.name}.key")[:1]:
            if path.exists():
                raise CliError(f"{path} exists; refusing to overwrite a key (use --force)")
    try:
        key_path, pub_path, key = write_keypair(
            args.dir, args.name, passphrase=passphrase, force=args.force
        )
        pq = (
            write_pq_keypair(args.dir, args.name, passphrase=passphrase, force=args.force)
            if args.pq
            else None
        )
    except KeyError_ as exc:
        raise CliError(str(exc)) from exc
    pub = key.public_key()
    print(f"private key  {key_path} (mode 0600)")
    print(f"public key   {pub_path}")
    print(f"key id       {kid_of(pub).hex()}")
    print(f"fingerprint  {fingerprint(raw_public(pub))}")
    if pq is not None:
        pq_key_path, pq_pub_path, pq_key = pq
        digest = key_hash(pq_key.public_key().public_bytes_raw())
        print(f"ML-DSA-44    {pq_key_path} (mode 0600)")
        print(f"ML-DSA-44    {pq_pub_path}")
        print(f"pq key hash  {digest.hex()}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    try:
        pub = load_public(args.file)
    except KeyError_ as exc:
        raise CliError(str(exc)) from exc
    print(f"key id       {kid_of(pub).hex()}")
    print(f"fingerprint  {fingerprint(raw_public(pub))}")
    return 0


def cmd_advance(args: argparse.Namespace) -> int:
    if not args.key.is_file():
        raise CliError(f"no key file {args.key}")
    counter = SequenceCounter(args.key)
    try:
        before = counter.last()
    except KeyError_ as exc:
        raise CliError(str(exc)) from exc
    if (args.to is not None and args.to < 1) or (args.to is None and args.by < 1):
        raise CliError("--by and --to take a positive number")
    floor = args.to - 1 if args.to is not None else before + args.by - 1
    after = counter.reserve(floor=floor)
    print(f"{counter.path}: sequence {before} -> {after}; the next message is numbered above it")
    return 0
