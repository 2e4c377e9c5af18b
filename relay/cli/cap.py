"""``relay cap import`` and ``relay cap export``: CAP 1.2 alerts in and out (docs/cap.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from relay.airtime import MAX_PRIVATE_PAYLOAD as FRAME_BUDGET
from relay.envelope import PAYLOAD_VERSIONS


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cap", help="CAP 1.2 alerts: import (sign as a decision) and export")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    imp = actions.add_parser("import", help="sign a CAP 1.2 alert as a decision")
    imp.add_argument(
        "alert", type=Path, metavar="ALERT.xml", help="the CAP 1.2 alert (XML), or - for stdin"
    )
    imp.add_argument(
        "--key", type=Path, required=True, metavar="ISSUER.key", help="the issuer's private key"
    )
    imp.add_argument(
        "-o", "--output", required=True, metavar="OUT.cose", help="output file, or - for stdout"
    )
    imp.add_argument(
        "--to", metavar="AUDIENCE", help="instead of the alert's areas: all, region:VR09, …"
    )
    _add_trust_arguments(imp)
    imp.add_argument(
        "--payload-version",
        type=int,
        choices=list(PAYLOAD_VERSIONS),
        help="payload version to emit (default: what the roster allows)",
    )
    imp.add_argument(
        "--max-bytes",
        type=int,
        default=FRAME_BUDGET,
        help=f"size budget of the signed message (default {FRAME_BUDGET}: one LoRa frame); "
        "headline and description are cut to fit",
    )
    imp.set_defaults(handler=cmd_import)

    exp = actions.add_parser("export", help="write a decision as a CAP 1.2 alert")
    exp.add_argument(
        "source",
        metavar="ID|FILE.cose",
        help="a message id (or a unique prefix of one) in the store, or a signed message file",
    )
    exp.add_argument(
        "-o", "--output", default="-", metavar="OUT.xml", help="output file (default: stdout)"
    )
    _add_trust_arguments(exp)
    exp.set_defaults(handler=cmd_export)


def _add_trust_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="a node's relay.toml: its roster, root and store")
    p.add_argument("--roster", type=Path, help="the roster file (with --root)")
    p.add_argument("--root", type=Path, help="the root authority's public key (with --roster)")
    p.add_argument("--store", type=Path, help="a node's store (relay.db), read-only")
    p.add_argument(
        "--regions",
        type=Path,
        help="the safety-region table (TOML; default: the shipped cap/regions.toml)",
    )


def cmd_import(args: argparse.Namespace) -> int:
    from relay.cli.cap_run import run_import

    return run_import(args)


def cmd_export(args: argparse.Namespace) -> int:
    from relay.cli.cap_run import run_export

    return run_export(args)
