"""Roster files: the raw signed roster message, verified against the root key on reading."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from relay.envelope import Kind, Rejection, open_envelope, seal
from relay.keys import SequenceCounter, raw_public
from relay.trust import Accepted, Roster, TrustState, roster_decision


class RosterFileError(Exception):
    """A roster file is missing, not a roster, or not signed by the given root."""


def load_trust(path: Path, root: Ed25519PublicKey, *, now: float | None = None) -> TrustState:
    """Verify the roster at ``path`` against ``root`` and return the resulting trust state."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RosterFileError(f"cannot read roster {path}: {exc.strerror}") from exc
    return trust_from_bytes(raw, root, now=now, source=str(path))


def trust_from_bytes(
    raw: bytes, root: Ed25519PublicKey, *, now: float | None = None, source: str = "roster"
) -> TrustState:
    state = TrustState(root_public=raw_public(root))
    env = open_envelope(raw, max_bytes=1 << 20)
    if isinstance(env, Rejection):
        raise RosterFileError(f"{source}: {env.reason}: {env.detail}")
    if env.decision.kind != Kind.ROSTER:
        raise RosterFileError(f"{source} is a {env.decision.kind.name} message, not a roster")
    verdict = state.check(env, time.time() if now is None else now)
    if not isinstance(verdict, Accepted):
        raise RosterFileError(f"{source}: {verdict.reason}: {verdict.detail}")
    state.apply(verdict)
    return state


def write_roster(
    path: Path, roster: Roster, root_key: Ed25519PrivateKey, *, now: float | None = None
) -> bytes:
    raw = seal(roster_decision(roster, int(time.time() if now is None else now)), root_key)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return raw


def next_serial(root_key_path: Path, current: int) -> int:
    """The root's sequence counter numbers rosters and revocations alike."""
    return SequenceCounter(root_key_path).reserve(floor=current)
