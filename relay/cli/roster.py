"""``relay roster``: the root authority's list of who may sign what."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.cli import CliError
from relay.envelope import PAYLOAD_VERSIONS, Kind, seal
from relay.keys import KeyError_, fingerprint, load_private, load_public, raw_public
from relay.pq import key_hash
from relay.pqkeys import load_pq_public
from relay.render import timestamp
from relay.rosterfile import RosterFileError, load_trust, next_serial, write_roster
from relay.trust import (
    DEFAULT_KINDS,
    Device,
    Role,
    Roster,
    RosterEntry,
    Scope,
    revocation_decision,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("roster", help="create and change the root-signed roster")
    rs = p.add_subparsers(dest="roster_command", metavar="ACTION", required=True)

    new = rs.add_parser("new", help="create an empty roster signed by the root key")
    new.add_argument("--root-key", type=Path, required=True)
    new.add_argument("-o", "--output", type=Path, required=True)
    new.add_argument("--force", action="store_true", help="replace an existing roster file")
    new.set_defaults(handler=cmd_new)

    add = rs.add_parser("add", help="add a key (issuer, node or exercise coordinator)")
    add.add_argument("roster", type=Path)
    add.add_argument("--root-key", type=Path, required=True)
    add.add_argument("--pub", type=Path, required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--role", choices=[r.value for r in Role], help="required unless --device")
    add.add_argument(
        "--scope",
        action="append",
        help="audience the key may address (issuers) or serves (nodes): all, region:VR07, "
        "node:NAME; repeatable; required unless --device",
    )
    add.add_argument(
        "--device",
        metavar="LABEL",
        help="add the key as another device of the existing issuer NAME (a second laptop): it "
        "signs as NAME with NAME's role and scope, and numbers its messages on its own",
    )
    add.add_argument(
        "--kinds",
        help="comma-separated kinds it may sign (default by role: "
        + "; ".join(
            f"{r.value}: {','.join(sorted(k.name.lower() for k in DEFAULT_KINDS[r]))}" for r in Role
        )
        + ")",
    )
    add.add_argument("--valid-days", type=int, help="key valid for this many days from now")
    add.add_argument(
        "--pq-pub",
        type=Path,
        help="the issuer's ML-DSA-44 public key (NAME.pq.pub from relay keys new --pq): the "
        "roster holds its SHA-256, and the issuer's decisions need an attestation where a "
        "node's [trust] pq is require",
    )
    add.set_defaults(handler=cmd_add)

    rev = rs.add_parser("revoke", help="revoke a key: a new roster lists it as revoked")
    rev.add_argument("roster", type=Path)
    rev.add_argument("--root-key", type=Path, required=True)
    rev.add_argument("--name", required=True)
    rev.add_argument("--device", metavar="LABEL", help="revoke only this device key of NAME")
    rev.add_argument(
        "--message",
        type=Path,
        help="also write an explicit root-signed revocation message here, to send as FLASH",
    )
    rev.set_defaults(handler=cmd_revoke)

    pay = rs.add_parser(
        "payload",
        help="declare the payload version every node on the roster reads (signers then emit it)",
    )
    pay.add_argument("roster", type=Path)
    pay.add_argument("--root-key", type=Path, required=True)
    pay.add_argument("--version", type=int, required=True, choices=list(PAYLOAD_VERSIONS))
    pay.set_defaults(handler=cmd_payload)

    show = rs.add_parser("show", help="print a roster (its signature checked when --root given)")
    show.add_argument("roster", type=Path)
    show.add_argument("--root", type=Path, help="root public key (default: ROOT.pub beside it)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_show)


def _load(roster: Path, root_key: Path) -> tuple[Roster, Ed25519PrivateKey]:
    try:
        key = load_private(root_key)
        state = load_trust(roster, key.public_key())
    except (KeyError_, RosterFileError) as exc:
        raise CliError(str(exc)) from exc
    assert state.roster is not None
    return state.roster, key


def cmd_new(args: argparse.Namespace) -> int:
    if args.output.exists() and not args.force:
        raise CliError(f"{args.output} exists (use --force to start a new roster)")
    try:
        key = load_private(args.root_key)
    except KeyError_ as exc:
        raise CliError(str(exc)) from exc
    serial = next_serial(args.root_key, 0)
    write_roster(args.output, Roster(serial=serial), key)
    print(f"roster {args.output}: serial {serial}, no entries")
    return 0


def _kinds(spec: str | None, role: Role) -> frozenset[Kind]:
    if spec is None:
        return DEFAULT_KINDS[role]
    try:
        kinds = frozenset(Kind[k.strip().upper()] for k in spec.split(",") if k.strip())
    except KeyError as exc:
        raise CliError(f"unknown kind {exc.args[0]!r}") from exc
    if kinds & {Kind.ROSTER, Kind.REVOCATION}:
        raise CliError("only the root key signs rosters and revocations")
    return kinds


def cmd_add(args: argparse.Namespace) -> int:
    roster, key = _load(args.roster, args.root_key)
    if args.device is not None:
        return _add_device(args, roster, key)
    if args.role is None or not args.scope:
        raise CliError("--role and --scope are required (unless --device adds a device key)")
    role = Role(args.role)
    try:
        scope = Scope.parse(args.scope)
        pub = raw_public(load_public(args.pub))
        pq_pub = None if args.pq_pub is None else load_pq_public(args.pq_pub)
        pq_key = None if pq_pub is None else key_hash(pq_pub.public_bytes_raw())
    except (ValueError, KeyError_) as exc:
        raise CliError(str(exc)) from exc
    now = int(time.time())
    entry = RosterEntry(
        public_key=pub,
        name=args.name,
        role=role,
        scope=scope,
        kinds=_kinds(args.kinds, role),
        not_before=now - 86400 if args.valid_days else 0,
        not_after=now + args.valid_days * 86400 if args.valid_days else None,
        pq_key=pq_key,
    )
    if pq_key is not None and role == Role.NODE:
        raise CliError("--pq-pub is for issuers and coordinators: a node's receipts stay Ed25519")
    try:
        updated = roster.with_entry(entry, next_serial(args.root_key, roster.serial))
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    write_roster(args.roster, updated, key)
    print(
        f"roster {args.roster}: serial {updated.serial}, added {role.value} {args.name!r} "
        f"(key id {entry.kid.hex()}, scope {','.join(scope.specs())})"
    )
    return 0


def cmd_payload(args: argparse.Namespace) -> int:
    roster, key = _load(args.roster, args.root_key)
    if args.version < roster.payload:
        raise CliError(
            f"the roster already declares payload version {roster.payload}: nodes may be "
            "emitting it, so it is never lowered (a node that cannot read it must be upgraded)"
        )
    updated = replace(
        roster, serial=next_serial(args.root_key, roster.serial), payload=args.version
    )
    write_roster(args.roster, updated, key)
    print(
        f"roster {args.roster}: serial {updated.serial}, payload version {args.version}: "
        "submit it to a node (relay submit) so that every node and signer learns it"
    )
    return 0


def _add_device(args: argparse.Namespace, roster: Roster, key: Ed25519PrivateKey) -> int:
    if args.role is not None or args.scope or args.kinds or args.valid_days or args.pq_pub:
        raise CliError("a device key takes the role, scope, kinds and validity of its entry")
    try:
        device = Device(raw_public(load_public(args.pub)), args.device)
        updated = roster.with_device(args.name, device, next_serial(args.root_key, roster.serial))
    except (ValueError, KeyError_) as exc:
        raise CliError(str(exc)) from exc
    write_roster(args.roster, updated, key)
    print(
        f"roster {args.roster}: serial {updated.serial}, added device {args.device!r} of "
        f"{args.name!r} (key id {device.kid.hex()})"
    )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    roster, key = _load(args.roster, args.root_key)
    entry = roster.by_name(args.name)
    try:
        serial = next_serial(args.root_key, roster.serial)
        updated = roster.without(args.name, serial, device=args.device)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    write_roster(args.roster, updated, key)
    what = f"device {args.device!r} of {args.name!r}" if args.device else repr(args.name)
    print(f"roster {args.roster}: serial {updated.serial}, revoked {what}")
    if args.message and entry is not None:
        kids = [d.kid for d in entry.devices if d.label == args.device] or entry.kids()
        seq = next_serial(args.root_key, updated.serial)
        raw = seal(revocation_decision(kids, seq, int(time.time())), key)
        args.message.write_bytes(raw)
        print(f"revocation message {args.message} ({len(raw)} bytes): send it as FLASH")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    root_path = args.root or args.roster.with_name("root.pub")
    try:
        state = load_trust(args.roster, load_public(root_path))
    except (KeyError_, RosterFileError) as exc:
        raise CliError(str(exc)) from exc
    roster = state.roster
    assert roster is not None
    entries = [
        {
            "name": e.name,
            "role": e.role.value,
            "scope": e.scope.specs(),
            "kinds": sorted(k.name.lower() for k in e.kinds),
            "key_id": e.kid.hex(),
            "fingerprint": fingerprint(e.public_key),
            "not_before": e.not_before or None,
            "not_after": e.not_after,
            "devices": [
                {"label": d.label, "key_id": d.kid.hex(), "fingerprint": fingerprint(d.public_key)}
                for d in e.devices
            ],
            "pq_key_hash": e.pq_key.hex() if e.pq_key else None,
        }
        for e in roster.entries
    ]
    revoked = [{"name": r.name, "key_id": r.kid.hex()} for r in roster.revoked]
    if args.json:
        print(
            json.dumps(
                {
                    "serial": roster.serial,
                    "payload_version": roster.payload,
                    "entries": entries,
                    "revoked": revoked,
                },
                indent=2,
            )
        )
        return 0
    print(
        f"roster serial {roster.serial}, root key id {state.root_kid.hex()}, "
        f"payload version {roster.payload}"
    )
    for e in roster.entries:
        until = f" until {timestamp(e.not_after)}" if e.not_after else ""
        kinds = ",".join(sorted(k.name.lower() for k in e.kinds))
        pq = f"  ML-DSA-44 {e.pq_key.hex()[:16]}" if e.pq_key else ""
        print(
            f"  {e.name:<24} {e.role.value:<21} {e.kid.hex()}  scope {','.join(e.scope.specs())}"
            f"  kinds {kinds}{until}{pq}"
        )
        for d in e.devices:
            print(f"  {'':<24} {'device ' + d.label:<21} {d.kid.hex()}")
    for r in roster.revoked:
        print(f"  {r.name:<24} {'REVOKED':<21} {r.kid.hex()}")
    return 0
