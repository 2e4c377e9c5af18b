"""``relay sign`` and ``relay verify``: signed decisions as files."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from relay import pq
from relay.cli import CliError
from relay.cli.common import add_message_arguments, sign_from_args
from relay.cli.pqfiles import beside, make_attestation, read_beside
from relay.envelope import MAX_MESSAGE_BYTES, Reason, Rejection, open_envelope
from relay.keys import KeyError_, load_public
from relay.render import as_json, render
from relay.rosterfile import RosterFileError, load_trust
from relay.trust import Accepted, ReplayGuard, ReplayWindow, TrustState

EXIT_REJECTED = 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sign", help="sign a decision into a COSE_Sign1 file")
    add_message_arguments(p)
    p.add_argument("-o", "--output", required=True, help="output file, or - for stdout")
    p.set_defaults(handler=cmd_sign)

    v = sub.add_parser("verify", help="verify a signed message against the root and roster")
    v.add_argument("--root", type=Path, required=True, help="the root authority's public key")
    v.add_argument("--roster", type=Path, required=True)
    v.add_argument("file", help="the signed message, or - for stdin")
    v.add_argument("--json", action="store_true")
    v.add_argument(
        "--state",
        type=Path,
        help="remember issuer sequence numbers in this file, and reject replays of them",
    )
    v.add_argument("--skew", type=int, help="clock skew tolerance in seconds (default 6 h)")
    v.set_defaults(handler=cmd_verify)


def cmd_sign(args: argparse.Namespace) -> int:
    if args.pq and args.output == "-":
        raise CliError("--pq writes the attestation beside the output file: give -o FILE")
    raw = sign_from_args(args)
    attestation = make_attestation(args, raw)
    if args.output == "-":
        sys.stdout.buffer.write(raw)
        sys.stdout.buffer.flush()
    else:
        Path(args.output).write_bytes(raw)
        print(f"{args.output}: {len(raw)} bytes", file=sys.stderr)
    if attestation is not None:
        path = beside(args.output)
        path.write_bytes(attestation)
        print(f"{path}: {len(attestation)} bytes (ML-DSA-44 attestation)", file=sys.stderr)
    return 0


def _load_state(path: Path | None) -> ReplayGuard:
    guard = ReplayGuard()
    if path is None or not path.exists():
        return guard
    try:
        data = json.loads(path.read_text())
        for kid, (high, bits) in data.items():
            guard.windows[bytes.fromhex(kid)] = ReplayWindow.restore(high, bytes.fromhex(bits))
    except (ValueError, TypeError) as exc:
        raise CliError(f"state file {path} is corrupt: {exc}") from exc
    return guard


def _save_state(path: Path, guard: ReplayGuard) -> None:
    data = {kid.hex(): [w.high, w.to_bytes().hex()] for kid, w in guard.windows.items()}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from exc
    now = time.time()
    try:
        state = load_trust(args.roster, load_public(args.root), now=now)
    except (KeyError_, RosterFileError) as exc:
        raise CliError(str(exc)) from exc
    if args.skew is not None:
        state.skew_s = args.skew
    guard = _load_state(args.state)
    env = open_envelope(raw, max_bytes=MAX_MESSAGE_BYTES)
    verdict = env if isinstance(env, Rejection) else state.check(env, now, guard)
    if not isinstance(verdict, Accepted):
        print(f"relay: rejected: {verdict.reason}: {verdict.detail}", file=sys.stderr)
        return EXIT_REJECTED
    pq_state = _pq_state(args.file, raw, verdict, state)
    if isinstance(pq_state, Rejection):
        print(f"relay: rejected: {pq_state.reason}: {pq_state.detail}", file=sys.stderr)
        return EXIT_REJECTED
    if args.state is not None:
        guard.commit(verdict.envelope.kid, verdict.envelope.decision.seq)
        _save_state(args.state, guard)
    d, msg_id = verdict.envelope.decision, verdict.envelope.id
    if args.json:
        info = {"valid": True, "size": len(raw), **as_json(d, verdict.signer, msg_id)}
        print(json.dumps({**info, "pq": str(pq_state)}))
    else:
        print(render(d, verdict.signer, msg_id))
        if pq_state != pq.State.NONE:
            print(f"{pq.label(pq_state)} / {pq.label(pq_state, 'en')}")
    return 0


def _pq_state(path: str, raw: bytes, verdict: Accepted, state: TrustState) -> pq.State | Rejection:
    """The attestation beside the file, checked against the roster (section 9)."""
    env = verdict.envelope
    entry = state.entry_for(env.kid)
    pq_key = entry.pq_key if entry is not None else None
    try:
        att_raw = read_beside(path, raw)
    except CliError as exc:
        return Rejection(Reason.PQ_WRONG_MESSAGE, str(exc))
    if att_raw is None:
        return pq.State.PENDING if pq_key is not None else pq.State.NONE
    att = pq.open_attestation(att_raw)
    if isinstance(att, Rejection):
        return att
    why = pq.check(att, kid=env.kid, pq_key_hash=pq_key, msg_id=env.id)
    return why if why is not None else pq.State.VERIFIED
