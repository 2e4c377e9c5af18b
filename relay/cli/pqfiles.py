"""Attestation files for the CLI: ``relay sign --pq`` writes ``OUT.pq`` beside ``OUT``, and
``relay submit`` and ``relay verify`` read it from there (docs/wire-format.md, section 9)."""

from __future__ import annotations

import argparse
from pathlib import Path

from relay import pq
from relay.cli import CliError
from relay.envelope import Reason, Rejection, message_id, open_envelope
from relay.keys import KeyError_
from relay.pqkeys import load_pq_private, pq_paths

SUFFIX = ".pq"


def beside(path: str | Path) -> Path:
    """``decision.cose`` -> ``decision.cose.pq``."""
    p = Path(path)
    return p.with_name(p.name + SUFFIX)


def make_attestation(args: argparse.Namespace, raw: bytes) -> bytes | None:
    """With ``--pq``: the attestation of the signed ``raw``, by the ML-DSA key beside --key."""
    if not getattr(args, "pq", False):
        return None
    key_path = pq_paths(args.key)[0]
    try:
        key = load_pq_private(key_path)
    except KeyError_ as exc:
        raise CliError(f"{exc} (relay keys new NAME --pq writes it beside NAME.key)") from exc
    env = open_envelope(raw, max_bytes=1 << 20)
    if isinstance(env, Rejection):  # our own bytes, just signed
        raise AssertionError(env.detail)
    return pq.attest(env.id, env.kid, key)


def read_beside(path: str, raw: bytes) -> bytes | None:
    """The attestation beside ``path`` when there is one, checked to name ``raw``'s id (a
    wrong file is a clear error, not something to hand on)."""
    if path == "-":
        return None
    att_path = beside(path)
    if not att_path.exists():
        return None
    try:
        att_raw = att_path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {att_path}: {exc.strerror}") from exc
    att = pq.open_attestation(att_raw)
    if isinstance(att, Rejection):
        raise CliError(f"{att_path}: rejected: {att.reason}: {att.detail}", status=1)
    if att.msg_id != message_id(raw):
        why = Reason.PQ_WRONG_MESSAGE
        raise CliError(
            f"{att_path}: rejected: {why}: it attests message {att.msg_id.hex()[:16]}, "
            f"not {message_id(raw).hex()[:16]} ({path})",
            status=1,
        )
    return att_raw
