"""``relay run`` and the operator commands that talk to a running node."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

from relay import api
from relay.checks import failed, run_checks
from relay.cli import CliError
from relay.cli.common import add_message_arguments, sign_from_args
from relay.cli.pqfiles import make_attestation, read_beside
from relay.config import Config, ConfigError, load
from relay.envelope import PAYLOAD_VERSION
from relay.keys import KeyError_, load_public
from relay.render import EXERCISE_MARKER, timestamp
from relay.rosterfile import RosterFileError, load_trust


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run a relay node (the daemon)")
    run.add_argument("--config", type=Path, required=True)
    run.add_argument(
        "--check",
        action="store_true",
        help="check the config and the files it names (keys, roster, store directory), then exit",
    )
    run.set_defaults(handler=cmd_run)

    send = sub.add_parser("send", help="sign a decision and submit it to the running node")
    send.add_argument("--config", type=Path, required=True)
    add_message_arguments(send)
    send.set_defaults(handler=cmd_send)

    submit = sub.add_parser(
        "submit",
        help="submit an already signed message (decision, roster, revocation) to the running node",
    )
    submit.add_argument("--config", type=Path, required=True)
    submit.add_argument("file", help="the signed message (from relay sign or relay roster), or -")
    submit.set_defaults(handler=cmd_submit)

    inbox = sub.add_parser("inbox", help="decisions received by the running node")
    inbox.add_argument("--config", type=Path, required=True)
    inbox.add_argument("--json", action="store_true")
    inbox.add_argument("--limit", type=int, default=200)
    inbox.set_defaults(handler=cmd_inbox)

    status = sub.add_parser("status", help="links, queues and peers; or one message's delivery")
    status.add_argument("id", nargs="?", help="a message id (or a unique prefix of one)")
    status.add_argument("--config", type=Path, required=True)
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)


def _config(path: Path) -> Config:
    try:
        return load(path)
    except ConfigError as exc:
        raise CliError(f"config: {exc}") from exc


def _call(cfg: Config, req: dict[str, Any]) -> dict[str, Any]:
    try:
        answer = api.call(cfg.api_socket, req)
    except api.ApiError as exc:
        raise CliError(str(exc), status=3) from exc
    if not answer.get("ok"):
        raise CliError(str(answer.get("error", "the node refused the request")), status=1)
    return answer


# A node that is not on the roster still runs (its receipts are refused, and the daemon warns);
# the store's own faults are reported by the store in one line ("the node cannot start: …").
# Every other failing check would end ``relay run`` with a traceback, so it refuses to start.
NOT_FATAL_AT_START = frozenset({"node.name", "node.store", "node.sequence"})


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _config(args.config)
    checks = run_checks(cfg)
    if args.check:
        for check in checks:
            print(check.line())
        if failed(checks):
            print(f"{args.config}: NOT ready to run (node {cfg.node})")
            return 1
        print(f"{args.config}: ok (node {cfg.node})")
        return 0
    fatal = [c for c in checks if c.status == "fail" and c.key not in NOT_FATAL_AT_START]
    if fatal:
        for check in fatal:
            print(f"relay: {check.key}: {check.message}", file=sys.stderr)
        return 2
    from relay import log
    from relay.daemon import run_node, skewed_clock

    try:
        clock = skewed_clock(os.environ)
    except ValueError as exc:
        raise CliError(str(exc), status=2) from None
    from relay.errors import CannotStart

    log.configure(cfg.log_level, cfg.log_format)
    try:
        return run_node(cfg, clock=clock)
    except CannotStart as exc:
        raise CliError(f"the node cannot start: {exc}", status=exc.status) from None


def _submit(cfg: Config, raw: bytes) -> int:
    """Hand signed bytes to the node; print the id, or the rejection (exit 1)."""
    try:
        answer = api.call(cfg.api_socket, {"op": "submit", "raw": base64.b64encode(raw).decode()})
    except api.ApiError as exc:
        raise CliError(str(exc), status=3) from exc
    if not answer.get("ok"):
        error = str(answer.get("error", "the node refused the request"))
        if answer.get("reason") == "replay":
            error += f"; {REPLAY_HINT}"
        raise CliError(error, status=1)
    print(answer["id"])
    if answer.get("duplicate"):
        print("relay: the node already had this message (duplicate)", file=sys.stderr)
    return 0


# Two devices signing with one copied key both count from sequence 1 (docs/wire-format.md).
REPLAY_HINT = (
    "wordt deze sleutel ook op een ander apparaat gebruikt? Geef elk apparaat een eigen sleutel"
    " / is this issuer key also used on another device? Give each device its own key"
    " (relay keys new; relay roster add --name ISSUER --pub DEVICE.pub --device LABEL)"
)


def _roster_version(cfg: Config) -> int:
    """The payload version the node's roster file allows (1 when it cannot be read: the node
    itself will say what is wrong with it)."""
    try:
        state = load_trust(cfg.roster, load_public(cfg.root))
    except (KeyError_, RosterFileError):
        return PAYLOAD_VERSION
    return state.roster.emit_version if state.roster else PAYLOAD_VERSION


def cmd_send(args: argparse.Namespace) -> int:
    cfg = _config(args.config)
    raw = sign_from_args(args, roster_version=_roster_version(cfg))
    attestation = make_attestation(args, raw)
    status = _submit(cfg, raw)
    if attestation is not None:
        _submit_attestation(cfg, attestation)
    return status


def _submit_attestation(cfg: Config, attestation: bytes) -> None:
    """The decision's ML-DSA attestation, after the decision (docs/wire-format.md section 9)."""
    try:
        answer = api.call(
            cfg.api_socket, {"op": "submit", "raw": base64.b64encode(attestation).decode()}
        )
    except api.ApiError as exc:
        raise CliError(str(exc), status=3) from exc
    if answer.get("reason") == "pq-not-enabled":  # [trust] pq = "off" there: not an error
        print(f"relay: attestation not kept: {answer.get('error')}", file=sys.stderr)
        return
    if not answer.get("ok"):
        raise CliError(f"attestation: {answer.get('error', 'refused')}", status=1)
    print("relay: ML-DSA-44 attestation submitted", file=sys.stderr)


def cmd_submit(args: argparse.Namespace) -> int:
    cfg = _config(args.config)
    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from exc
    attestation = read_beside(args.file, raw)  # FILE.pq from relay sign --pq
    status = _submit(cfg, raw)
    if attestation is not None:
        _submit_attestation(cfg, attestation)
    return status


def _line(m: dict[str, Any]) -> str:
    marker = f"[{EXERCISE_MARKER}] " if m["exercise"] else ""
    pending = f"[{m['pq_label']}] " if m.get("pq") == "pending" else ""
    return (
        f"{marker}{timestamp(m['received_at'])}  {m['precedence']:<9}  {m['issuer']:<16} "
        f"via {m['received_via']:<6} {m['id'][:16]}  {pending}{m['text']}"
    )


def cmd_inbox(args: argparse.Namespace) -> int:
    cfg = _config(args.config)
    messages = _call(cfg, {"op": "inbox", "limit": args.limit})["messages"]
    if args.json:
        print(json.dumps(messages, indent=2))
    elif not messages:
        print("inbox is empty")
    else:
        for m in messages:
            print(_line(m))
    return 0


_RADIO_WARNINGS = {
    "preset-mismatch": (
        "LET OP: de radio gebruikt preset {preset}, relay.toml zegt {configured}; zendtijd, "
        "fragmenttijden en gateway-beurten gaan uit van {configured}",
        "WARNING: the radio uses preset {preset}, relay.toml says {configured}; airtime, "
        "fragment timers and gateway turns assume {configured}",
    ),
    "region-not-eu868": (
        "LET OP: de radio staat op regio {region}, niet EU_868 (duty cycle 10 %)",
        "WARNING: the radio's region is {region}, not EU_868 (10 % duty cycle)",
    ),
    "duty-cycle-overridden": (
        "LET OP: de radio negeert de wettelijke duty cycle (override_duty_cycle)",
        "WARNING: the radio overrides the legal duty cycle (override_duty_cycle)",
    ),
    "public-channel-key": (
        "LET OP: kanaal 0 van de radio heeft de publieke standaardsleutel of geen sleutel; "
        "zet een eigen PSK (firmware_configs/README.md)",
        "WARNING: the radio's channel 0 has the public default key or none; set a private "
        "PSK (firmware_configs/README.md)",
    ),
    "radio-config-unknown": (
        "LET OP: de radio gaf geen LoRa-instellingen; preset en regio niet gecontroleerd",
        "WARNING: the radio sent no LoRa settings; preset and region not checked",
    ),
}


def _radio_warnings(link: dict[str, Any]) -> list[str]:
    """Dutch, then English: what the radio reported at connect that differs from the config."""
    cfg = (link.get("mesh") or {}).get("radio_config") or {}
    facts = {
        "preset": cfg.get("preset"),
        "region": cfg.get("region"),
        "configured": cfg.get("configured_preset"),
    }
    out = []
    for code in cfg.get("warnings", []):
        nl, en = _RADIO_WARNINGS.get(code, (f"LET OP: {code}", f"WARNING: {code}"))
        out.append(f"{nl.format(**facts)} / {en.format(**facts)}")
    return out


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _config(args.config)
    if args.id:
        msg = _call(cfg, {"op": "message", "id": args.id})["message"]
        if args.json:
            print(json.dumps(msg, indent=2))
            return 0
        marker = f"[{EXERCISE_MARKER}] " if msg["exercise"] else ""
        print(
            f"{marker}{msg['precedence']} {msg['kind']} from {msg['issuer']} "
            f"to {','.join(msg['audience'])}  id {msg['id']}"
        )
        if msg.get("pq", "none") != "none":
            att = msg.get("pq_attestation")
            came = f", {timestamp(att['received_at'])} via {att['via']}" if att else ""
            print(f"  {msg['pq_label']} / {msg['pq_label_en']}{came}")
        for row in msg["delivery"]:
            if row["signed"]:
                print(
                    f"  {row['node']:<24} signed   {timestamp(row['received_at'])} via {row['via']}"
                )
            else:
                print(f"  {row['node']:<24} waiting")
        for sent in msg.get("attempts", []):
            print(
                f"  link {sent['link']:<8} {sent['sent']} keer verzonden / sent {sent['sent']} "
                f"times, laatst / last {timestamp(sent['last_sent_at'])}"
            )
        for out in msg["outbox"]:
            link = out["link"] if out["link"] != "*" else "best link"
            state = (
                f"in flight on {out['via']}"
                if out["inflight"]
                else (f"next {timestamp(out['next_at'])}")
            )
            print(f"  outbox {link}: {out['attempts']} attempts, {state}")
        return 0
    st = _call(cfg, {"op": "status"})
    st.pop("ok", None)
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(f"node {st['node']} regions {','.join(st['regions'])}")
    if st["clock_warning"]:
        off = st["engine"]["clock_offset_s"]
        print(f"WARNING: this node's clock differs from message times by {off:+.0f} s")
    for link in st["links"]:
        print(
            f"  link {link['name']:<8} {link['kind']:<5} {link['state']:<9} since "
            f"{timestamp(link['since'])}  outbox {link['outbox']}  {link['detail']}"
        )
        for line in _radio_warnings(link):
            print(f"    {line}")
    if fault := st.get("store_fault"):
        print(
            f"FOUT / ERROR: opslag niet schrijfbaar / store cannot be written ({fault['reason']}) "
            f"sinds / since {timestamp(fault['since'])}: nieuwe berichten geweigerd / new "
            f"submissions refused ({st['store_refused']}); {fault['detail']}"
        )
    eng = st["engine"]
    print(f"  messages {eng['messages']}  outbox {eng['outbox']}  in flight {eng['inflight']}")
    counters = ", ".join(f"{k} {v}" for k, v in sorted(eng["counters"].items()))
    print(f"  counters: {counters or 'none'}")
    if st["rejections"]:
        print("  rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(st["rejections"].items())))
    for what, count in sorted(st.get("refusals", {}).items()):
        print(f"  refused by broker/peer: {what} ({count}x)")
    for peer, info in sorted(st["peers"].items()):
        print(f"  peer {peer:<24} {info.get('state', '?'):<8} heard {timestamp(info['heard_at'])}")
    if (pqs := st.get("engine", {}).get("pq")) and pqs.get("pending"):
        print(
            f"  pq {pqs['policy']}: {pqs['pending']} besluit(en): kwantumveilige handtekening "
            f"volgt / {pqs['pending']} decision(s): quantum-safe signature pending"
        )
    return 0
