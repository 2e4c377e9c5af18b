"""What ``relay cap import`` and ``relay cap export`` do (relay/cli/cap.py parses their arguments).

A module of its own so that xmlschema is imported only when a CAP command runs, not for every
``relay`` command (it adds about half a second to the start).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from relay import resources
from relay.cap import (
    MAX_DOCUMENT,
    CapRejection,
    CapSchema,
    Held,
    RegionTable,
    RegionTableError,
    alert_xml,
    export_alert,
    import_alert,
    parse_alert,
    parse_xml,
)
from relay.cap.mapping import Imported, signer_refusal
from relay.cap.regions import REGIONS_RESOURCE
from relay.cap.schema import SCHEMA_RESOURCE
from relay.cli import CliError
from relay.cli.common import DEFAULT_EXPIRY
from relay.config import ConfigError, load
from relay.envelope import (
    MAX_MESSAGE_BYTES,
    Audience,
    Rejection,
    open_envelope,
    seal,
)
from relay.keys import KeyError_, SequenceCounter, kid_of, load_private, load_public
from relay.render import EXERCISE_MARKER
from relay.rosterfile import RosterFileError, load_trust
from relay.trust import Accepted, TrustState

EXIT_REJECTED = 1


@dataclass(frozen=True, slots=True)
class _Sources:
    trust: TrustState | None
    store: Path | None


def _sources(args: argparse.Namespace, *, now: float) -> _Sources:
    roster, root, store = args.roster, args.root, args.store
    if args.config is not None:
        try:
            cfg = load(args.config)
        except ConfigError as exc:
            raise CliError(f"config: {exc}") from exc
        roster, root = roster or cfg.roster, root or cfg.root
        store = store or cfg.store
    if (roster is None) != (root is None):
        raise CliError("--roster and --root go together")
    trust = None
    if roster is not None:
        try:
            trust = load_trust(roster, load_public(root), now=now)
        except (KeyError_, RosterFileError) as exc:
            raise CliError(str(exc)) from exc
    return _Sources(trust, store)


def _regions(path: Path | None) -> RegionTable:
    try:
        if path is None:
            return RegionTable.from_toml(resources.read_bytes(REGIONS_RESOURCE))
        return RegionTable.from_toml(path.read_bytes(), source=str(path))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    except RegionTableError as exc:
        raise CliError(f"region table: {exc}") from exc


def _schema() -> CapSchema:
    return CapSchema(resources.read_bytes(SCHEMA_RESOURCE))


def _held(store: Path) -> list[Held]:
    from relay.store import StoreError, read_held

    try:
        rows = asyncio.run(read_held(store))
    except StoreError as exc:
        raise CliError(str(exc)) from exc
    held = []
    for msg_id, raw, signer in rows:
        env = open_envelope(raw, max_bytes=MAX_MESSAGE_BYTES)
        if not isinstance(env, Rejection):  # a store holds only verified messages
            held.append(Held(msg_id, env.decision, signer))
    return held


def _reject(rejection: CapRejection | Rejection) -> int:
    print(f"relay: rejected: {rejection.reason}: {rejection.detail}", file=sys.stderr)
    return EXIT_REJECTED


def _read_document(path: Path) -> bytes:
    """At most one byte more than the limit: an oversized file is refused without reading it."""
    try:
        if str(path) == "-":
            return sys.stdin.buffer.read(MAX_DOCUMENT + 1)
        with path.open("rb") as f:
            return f.read(MAX_DOCUMENT + 1)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc


def _write(output: str, data: bytes) -> None:
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        Path(output).write_bytes(data)
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror}") from exc


def run_import(args: argparse.Namespace) -> int:
    now = time.time()
    src = _sources(args, now=now)
    if src.trust is None:
        raise CliError(
            "give --config relay.toml, or --roster ROSTER --root ROOT.pub: the roster says "
            "whether this key may sign real (Actual) alerts"
        )
    trust = src.trust
    try:
        audience = Audience.parse(args.to) if args.to else None
    except ValueError as exc:
        raise CliError(f"--to: {exc}") from exc
    if not 0 < args.max_bytes <= MAX_MESSAGE_BYTES:
        raise CliError(f"--max-bytes must be 1 … {MAX_MESSAGE_BYTES} (a node refuses more)")
    regions = _regions(args.regions)
    alert = parse_alert(_read_document(args.alert), _schema())
    if isinstance(alert, CapRejection):
        return _reject(alert)
    held: list[Held] = []
    if alert.msg_type in ("Update", "Cancel"):
        if src.store is None:
            raise CliError(
                f"a CAP {alert.msg_type} refers to earlier messages: give --store DB or "
                "--config relay.toml to find them"
            )
        held = _held(src.store)
    try:
        key = load_private(args.key)
    except KeyError_ as exc:
        raise CliError(str(exc)) from exc
    kid = kid_of(key.public_key())
    version = args.payload_version or (trust.roster.emit_version if trust.roster else 1)
    counter = SequenceCounter(args.key)

    def build(seq: int) -> Imported | CapRejection:
        return import_alert(
            alert,
            regions=regions,
            now=now,
            seq=seq,
            default_lifetime=DEFAULT_EXPIRY,
            held=held,
            audience=audience,
            version=version,
            budget=args.max_bytes,
            skew_s=trust.skew_s,
            known_nodes=frozenset(trust.roster.node_regions()) if trust.roster else frozenset(),
        )

    try:
        planned = counter.last() + 1
    except KeyError_ as exc:
        raise CliError(str(exc)) from exc
    result = build(planned)
    if isinstance(result, CapRejection):
        return _reject(result)
    refusal = signer_refusal(trust, kid, result.decision)
    if refusal is not None:
        return _reject(refusal)
    seq = counter.reserve()
    if seq != planned:  # another signer with this key took the number meanwhile
        result = build(seq)
        if isinstance(result, CapRejection):
            return _reject(result)
    raw = seal(result.decision, key, kid=kid, version=version)
    env = open_envelope(raw)
    verdict = env if isinstance(env, Rejection) else trust.check(env, now)
    if not isinstance(verdict, Accepted):  # what the checks above leave out: validity period
        return _reject(verdict)
    _write(args.output, raw)
    _report_import(args.output, raw, result, verdict)
    return 0


def _report_import(output: str, raw: bytes, result: Imported, verdict: Accepted) -> None:
    d = result.decision
    marker = f"[{EXERCISE_MARKER}] " if d.exercise else ""
    where = "stdout" if output == "-" else output
    print(
        f"{marker}ondertekend / signed {where}: {len(raw)} B, {d.precedence.name} "
        f"{d.kind.name.lower()} aan / to {d.audience}, id {verdict.envelope.id.hex()}",
        file=sys.stderr,
    )
    if result.cut is not None:
        print(f"relay: {result.cut.line()}", file=sys.stderr)
    if result.not_carried:
        parts = ", ".join(result.not_carried)
        print(f"relay: niet meegenomen / not carried: {parts}", file=sys.stderr)


def _find(held: list[Held], prefix: str) -> Held:
    wanted = prefix.lower()
    if not wanted or any(c not in "0123456789abcdef" for c in wanted):
        raise CliError(f"{prefix!r} is neither a file nor a message id")
    matches = [h for h in held if h.id.hex().startswith(wanted)]
    if not matches:
        raise CliError(f"no message {prefix} in the store")
    if len(matches) > 1:
        raise CliError(f"{prefix} names {len(matches)} messages: give more of the id")
    return matches[0]


def run_export(args: argparse.Namespace) -> int:
    now = time.time()
    src = _sources(args, now=now)
    regions = _regions(args.regions)
    held = _held(src.store) if src.store is not None else []
    path = Path(args.source)
    if path.is_file():
        if src.trust is None:
            raise CliError("give --config relay.toml, or --roster ROSTER --root ROOT.pub")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror}") from exc
        env = open_envelope(raw, max_bytes=MAX_MESSAGE_BYTES)
        if isinstance(env, Rejection):
            return _reject(env)
        # Verified as of its own issue time: an expired decision still exports (after-action
        # review), a revoked signer or a bad signature never does.
        verdict = src.trust.check(env, env.decision.issued_at)
        if not isinstance(verdict, Accepted):
            return _reject(verdict)
        msg = Held(env.id, env.decision, verdict.signer)
    elif src.store is None:
        raise CliError(f"{args.source} is not a file: give --store DB or --config to find it")
    else:
        msg = _find(held, args.source)
    alert = export_alert(
        msg.decision, msg_id=msg.id, signer=msg.signer, regions=regions, referenced=held
    )
    if isinstance(alert, CapRejection):
        return _reject(alert)
    body = alert_xml(alert)
    root = parse_xml(body)
    fault = _schema().first_error(root) if not isinstance(root, CapRejection) else root.detail
    if fault is not None:
        raise RuntimeError(f"the exported alert is not valid CAP 1.2: {fault}")  # our bug
    _write(args.output, body)
    if args.output != "-":
        marker = f"[{EXERCISE_MARKER}] " if msg.decision.exercise else ""
        print(
            f"{marker}geschreven / written {args.output}: CAP 1.2 {alert.msg_type} "
            f"{alert.status}, identifier {alert.identifier[:16]}…",
            file=sys.stderr,
        )
    return 0
