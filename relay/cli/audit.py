"""``relay audit verify``: check a node's tamper-evident audit log (docs/store.md, "The audit
chain") and report ok or the first broken link; exit status 1 when it is broken."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from relay.cli import CliError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser("audit", help="the node's tamper-evident audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    verify = audit_sub.add_parser(
        "verify",
        help="verify the audit chain and its signed checkpoints",
        description="Verify a node's audit chain: every row against the one before it and "
        "every checkpoint against the node's key. Prints ok, or the first broken link (a "
        "changed, deleted or reordered row, a truncated tail, a checkpoint that does not "
        "match), and exits 1 when it is broken. Give --config (the node's relay.toml: its "
        "store, and its key from the roster) or --store with --pub.",
    )
    verify.add_argument("--config", type=Path, help="the node's relay.toml")
    verify.add_argument("--store", type=Path, metavar="DB", help="a store file (read-only)")
    verify.add_argument("--pub", type=Path, metavar="NODE.pub", help="the node's public key")
    verify.add_argument("--json", action="store_true", help="the whole result as JSON")
    verify.set_defaults(handler=cmd_verify)


def _from_config(path: Path) -> tuple[Path, Ed25519PublicKey]:
    from relay.config import ConfigError, load
    from relay.keys import KeyError_, load_public
    from relay.rosterfile import RosterFileError, load_trust

    try:
        cfg = load(path)
    except ConfigError as exc:
        raise CliError(f"config: {exc}") from exc
    try:
        roster = load_trust(cfg.roster, load_public(cfg.root)).roster
        entry = roster.by_name(cfg.node) if roster is not None else None
        if entry is not None:
            return cfg.store, Ed25519PublicKey.from_public_bytes(entry.public_key)
    except (RosterFileError, KeyError_):
        pass  # the node's own key file below says it as well
    try:
        return cfg.store, load_public(cfg.key)
    except KeyError_ as exc:
        raise CliError(f"node.key: {exc}") from exc


def cmd_verify(args: argparse.Namespace) -> int:
    from relay.keys import KeyError_, load_public
    from relay.store import StoreError, verify_store

    if args.config is not None:
        if args.store is not None or args.pub is not None:
            raise CliError("give --config, or --store with --pub, not both")
        store, key = _from_config(args.config)
    elif args.store is not None and args.pub is not None:
        store = args.store
        try:
            key = load_public(args.pub)
        except KeyError_ as exc:
            raise CliError(f"--pub {args.pub}: {exc}") from exc
    else:
        raise CliError("give --config relay.toml, or --store DB --pub NODE.pub")
    try:
        report = asyncio.run(verify_store(store, key))
    except StoreError as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        print(json.dumps({"store": str(store), **report.to_json()}, indent=1))
        return 0 if report.ok else 1
    if not report.ok:
        print(f"FOUT / BROKEN: {store}: {report.problem}")
        return 1
    latest = report.latest
    print(
        f"in orde / ok: {store}: {report.rows} rijen / rows ({report.first}-{report.last}), "
        f"{report.checkpoints} checkpoint(s)"
        + (f", laatste / latest bij rij / at row {latest.n}" if latest else "")
    )
    if report.uncovered:
        print(f"  {report.uncovered} rij(en) na het laatste checkpoint, nog niet ondertekend / "
              f"row(s) after the latest checkpoint, not yet signed (a running node signs them "
              "within a minute, a stopped one at its next start)")  # fmt: skip
    if report.legacy:
        span = "-".join(map(str, report.legacy))
        print(f"  rijen {span} zijn van voor de keten (schema 1), verankerd door het "
              f"genesis-checkpoint / rows {span} predate the chain (schema 1), anchored by the "
              "genesis checkpoint")  # fmt: skip
    if report.pruned_to:
        print(f"  opgeschoond t/m rij {report.pruned_to}, verankerd door een checkpoint / "
              f"pruned up to row {report.pruned_to}, anchored by a checkpoint")  # fmt: skip
    return 0
