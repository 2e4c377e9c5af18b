"""Pieces shared by the commands that sign (``relay sign`` and ``relay send``)."""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.cli import CliError
from relay.envelope import (
    PAYLOAD_VERSION,
    PAYLOAD_VERSIONS,
    Audience,
    Decision,
    Kind,
    Precedence,
    seal,
)
from relay.keys import KeyError_, SequenceCounter, load_private

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 60, "s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_EXPIRY = {
    Precedence.FLASH: 6 * 3600,
    Precedence.IMMEDIATE: 12 * 3600,
    Precedence.PRIORITY: 24 * 3600,
    Precedence.ROUTINE: 72 * 3600,
}


def parse_duration(text: str) -> int:
    """``90s``, ``30m``, ``6h``, ``2d`` (a bare number is minutes) -> whole minutes, in seconds."""
    m = _DURATION.match(text)
    if not m or int(m.group(1)) == 0:
        raise CliError(f"duration {text!r}: expected a positive number with s, m, h or d")
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    return -(-seconds // 60) * 60  # the wire carries whole minutes: round up


def add_message_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key", type=Path, required=True, help="the signer's private key")
    p.add_argument(
        "--precedence", required=True, type=str.upper, choices=[x.name for x in Precedence]
    )
    p.add_argument("--to", required=True, help="all, region:VR07, node:NAME (comma-separated)")
    p.add_argument("--text", required=True)
    p.add_argument("--exercise", action="store_true", help="mark as exercise (OEFENING)")
    p.add_argument("--expires", help="lifetime, e.g. 30m, 6h, 2d (default by precedence)")
    p.add_argument(
        "--kind",
        default="decision",
        type=str.lower,
        choices=["decision", "notice", "cancel", "supersede", "status"],
    )
    p.add_argument("--ref", action="append", default=[], help="id of an earlier message (hex)")
    p.add_argument(
        "--payload-version",
        type=int,
        choices=list(PAYLOAD_VERSIONS),
        help="payload version to emit (default: what the roster allows, else 1; "
        "docs/wire-format.md section 2a)",
    )
    p.add_argument(
        "--pq",
        action="store_true",
        help="also sign a post-quantum attestation with the ML-DSA-44 key beside --key "
        "(NAME.pq.key); it travels over MQTT beside the decision (wire-format.md section 9)",
    )


def sign_from_args(
    args: argparse.Namespace, *, now: float | None = None, roster_version: int = PAYLOAD_VERSION
) -> bytes:
    """Build, number and sign a message from the common arguments; returns the signed bytes."""
    try:
        key: Ed25519PrivateKey = load_private(args.key)
    except KeyError_ as exc:
        raise CliError(str(exc)) from exc
    precedence = Precedence[args.precedence]
    lifetime = parse_duration(args.expires) if args.expires else DEFAULT_EXPIRY[precedence]
    try:
        audience = Audience.parse(args.to)
        refs = tuple(bytes.fromhex(r) for r in args.ref)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    kind = Kind[args.kind.upper()]
    if kind in (Kind.CANCEL, Kind.SUPERSEDE) and not refs:
        raise CliError(f"a {args.kind} message needs --ref ID of the message it replaces")
    issued = int(time.time() if now is None else now)
    try:
        decision = Decision(
            issued_at=issued,
            expires_at=issued + lifetime,
            precedence=precedence,
            audience=audience,
            seq=SequenceCounter(args.key).reserve(),
            text=args.text,
            kind=kind,
            exercise=args.exercise,
            refs=refs,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    version = args.payload_version or roster_version
    return seal(decision, key, version=version)
