"""One timeline of drill events, from nodes' audit logs and from the drill runner.

A node's audit log (relay/store, table ``audit``) is the source of truth for what happened at that
node, so a drill on real radios can be reported the same way as a simulated one: collect each
node's log, over its operator API while it runs (``collect_api``) or from its SQLite store
afterwards (``collect_stores``), and merge them with the runner's own events.

Node events (``node`` = the node's name):

- ``accepted``  msg, link it arrived on, peer = signer, detail = decision kind
- ``delivered`` msg, link, peer = this node (shown in the inbox)
- ``rejected``  msg (when known), link, detail = "reason: detail"
- ``revoked``   msg, link, detail = revoked key ids
- ``sent``      msg, link that confirmed the transmission, detail may carry "airtime_s=1.23"
- ``receipt``   msg = decision id, link, peer = recipient node that signed the receipt
- ``link``      link, detail = new state "up" / "degraded" / "down"
- ``airtime``   link, detail = JSON {"airtime_s", "budget_s"}: the node's own mesh airtime, from
  its status when collected over the API (not an audit row)
- ``audience``  msg, detail = JSON {"audience": "region:VR07", "nodes": [...] or null, "from":
  "roster" | "origin" | null}: who should get a decision the node holds, from the message's
  audience and a roster (``collect(..., roster=)``: the roster's nodes and their regions), or from
  the origin node's own recipient list when asked over the API; null when neither is known.
  Not an audit row: derived at collection, so real (non-drill) traffic has an expected audience.

Runner events (``node`` = "drill"): ``phase``, ``inject``, ``fault``, ``restore``, ``airtime``
(see docs/drills.md).
"""

from __future__ import annotations

import asyncio
import json
import math
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from relay import api, store
from relay.envelope import Audience, Kind
from relay.trust import Roster

RUNNER = "drill"
NODE_EVENTS = frozenset(
    {"accepted", "delivered", "rejected", "revoked", "sent", "receipt", "link", "airtime",
     "audience"}
)  # fmt: skip
SHOWN_KINDS = frozenset({"decision", "notice", "cancel", "supersede"})  # have an audience to reach
RUNNER_EVENTS = frozenset({"phase", "inject", "fault", "restore", "airtime"})

_PAGE = 10_000  # rows per audit request (the store's own limit)


class EventError(ValueError):
    """An event or an audit row is malformed."""


@dataclass(frozen=True, slots=True)
class Event:
    t: float  # unix seconds as recorded (the node's own clock for node events)
    node: str  # node name, or "drill" for runner events
    event: str
    msg: str | None = None  # message id, hex
    link: str | None = None  # "mqtt", "mesh", "local", ... as the node names its links
    peer: str | None = None  # signer / recipient / other node, event-dependent
    detail: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "t": self.t,
            "node": self.node,
            "event": self.event,
            "msg": self.msg,
            "link": self.link,
            "peer": self.peer,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Event:
        """Parse one event; a malformed one raises ``EventError`` saying which field is wrong."""
        if not isinstance(d, Mapping):
            raise EventError(f"an event must be a JSON object, not {type(d).__name__}")
        t = d.get("t")
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
            raise EventError(f"event field 't' must be a finite number, got {t!r}")
        node, event = d.get("node"), d.get("event")
        if not isinstance(node, str) or not node:
            raise EventError(f"event field 'node' must be a non-empty string, got {node!r}")
        if not isinstance(event, str) or not event:
            raise EventError(f"event field 'event' must be a non-empty string, got {event!r}")
        opt: dict[str, str | None] = {}
        for key in ("msg", "link", "peer", "detail"):
            value = d.get(key)
            if value is not None and not isinstance(value, str):
                raise EventError(f"event field {key!r} must be a string or null, got {value!r}")
            opt[key] = value
        msg = opt["msg"]
        if msg is not None and not _is_hex(msg):
            raise EventError(f"event field 'msg' must be a hex message id, got {msg!r}")
        return cls(float(t), node, event, msg, opt["link"], opt["peer"], opt["detail"])


def _is_hex(s: str) -> bool:
    return bool(s) and all(c in "0123456789abcdef" for c in s)


def from_audit(node: str, rows: Sequence[Mapping[str, Any]]) -> list[Event]:
    """Turn audit rows as the API op "audit" (and ``Store.audit``) gives them into events.

    The row's ``node`` column is the other party (signer, recipient); the node the log belongs
    to is ``node``.
    """
    out = []
    for row in rows:
        try:
            out.append(
                Event.from_json(
                    {
                        "t": row["at"],
                        "node": node,
                        "event": row["event"],
                        "msg": row.get("msg_id"),
                        "link": row.get("link"),
                        "peer": row.get("node"),
                        "detail": row.get("detail"),
                    }
                )
            )
        except KeyError as exc:
            raise EventError(f"audit row of {node} lacks {exc}") from exc
        except EventError as exc:
            raise EventError(f"audit row {row.get('n')} of {node}: {exc}") from exc
    return out


async def audit_rows_api(node: str, socket: Path) -> list[dict[str, Any]]:
    """All audit rows of running node ``node`` (checked: names matter), paged over its API."""
    rows: list[dict[str, Any]] = []
    since = 0
    while True:
        answer = await api.request(socket, {"op": "audit", "since": since})
        if not answer.get("ok"):
            raise api.ApiError(f"{socket}: {answer.get('error', 'audit failed')}")
        page = answer.get("events")
        if not isinstance(page, list):
            raise api.ApiError(f"{socket}: the audit answer has no event list")
        named = answer.get("node")
        if named != node:
            raise EventError(f"{socket}: that is node {named!r}, not {node!r}")
        rows.extend(page)
        if len(page) < _PAGE:
            return rows
        since = int(page[-1]["n"])


async def airtime_api(node: str, socket: Path) -> list[Event]:
    """A running node's own airtime per mesh link (from its status), as ``airtime`` events.

    This is what the node's ledger counts for its own transmissions since it started, against
    the duty-cycle budget per hour; it is not in the audit log, so a stopped node has none.
    """
    answer = await api.request(socket, {"op": "status"})
    if not answer.get("ok"):
        raise api.ApiError(f"{socket}: {answer.get('error', 'status failed')}")
    t, out = answer.get("time"), []
    for link in answer.get("links", []):
        mesh = link.get("mesh") if isinstance(link, dict) else None
        if not isinstance(mesh, dict) or not isinstance(t, int | float):
            continue
        total, budget = mesh.get("airtime_total_s"), mesh.get("airtime_budget_s")
        if isinstance(total, int | float) and isinstance(budget, int | float):
            detail = json.dumps({"airtime_s": total, "budget_s": budget})
            out.append(Event(float(t), node, "airtime", None, str(link["name"]), None, detail))
    return out


def audience_event(
    node: str, msg: str, t: float, audience: str, nodes: Sequence[str] | None, source: str | None
) -> Event:
    """An ``audience`` event: who should get decision ``msg`` (module doc)."""
    detail = {"audience": audience, "nodes": None if nodes is None else sorted(nodes),
              "from": source}  # fmt: skip
    return Event(t, node, "audience", msg, None, None, json.dumps(detail))


def _recipients(audience: str, roster: Roster) -> list[str] | None:
    try:
        return roster.recipients(Audience.parse(audience))
    except ValueError:
        return None  # stored messages were verified: only a corrupt copy gets here


async def audiences_api(
    node: str, socket: Path, events: Sequence[Event], roster: Roster | None
) -> list[Event]:
    """``audience`` events for the decisions running node ``node`` accepted (its audit events):
    by the roster when given, else the recipients the node computed if it is their origin."""
    out = []
    ids = dict.fromkeys(e.msg for e in events
                        if e.event == "accepted" and e.msg and e.detail in SHOWN_KINDS)  # fmt: skip
    for msg in ids:
        assert msg is not None
        answer = await api.request(socket, {"op": "message", "id": msg})
        info = answer.get("message")
        if not answer.get("ok") or not isinstance(info, dict):
            continue  # pruned since: its audit rows still count, its audience is unknown
        audience = ",".join(str(a) for a in info.get("audience", []))
        t = float(info.get("received_at", 0.0))
        if roster is not None:
            out.append(audience_event(node, msg, t, audience, _recipients(audience, roster),
                                      "roster"))  # fmt: skip
        elif info.get("origin") and info.get("recipients"):
            out.append(audience_event(node, msg, t, audience, info["recipients"], "origin"))
        else:
            out.append(audience_event(node, msg, t, audience, None, None))
    return out


async def audiences_store(node: str, path: Path, roster: Roster | None) -> list[Event]:
    """``audience`` events for the decisions in a stopped node's store, by the roster."""
    out = []
    for m in await store.read_messages(path):
        try:
            kind = Kind(m["kind"]).name.lower()
        except ValueError:
            continue
        if kind not in SHOWN_KINDS:
            continue
        nodes = None if roster is None else _recipients(m["audience"], roster)
        source = None if nodes is None else "roster"
        out.append(audience_event(node, m["id"], m["received_at"], m["audience"], nodes, source))
    return out


async def collect_api_async(
    sockets: Mapping[str, Path], roster: Roster | None = None
) -> list[Event]:
    events: list[Event] = []
    for node, socket in sockets.items():
        audit = from_audit(node, await audit_rows_api(node, socket))
        events.extend(audit)
        events.extend(await airtime_api(node, socket))
        events.extend(await audiences_api(node, socket, audit, roster))
    return sort_events(events)


async def collect_stores_async(
    stores: Mapping[str, Path], roster: Roster | None = None, *, audiences: bool = True
) -> list[Event]:
    events: list[Event] = []
    for node, path in stores.items():
        events.extend(from_audit(node, await store.read_audit(path)))
        if audiences:
            events.extend(await audiences_store(node, path, roster))
    return sort_events(events)


def collect_api(sockets: Mapping[str, Path], roster: Roster | None = None) -> list[Event]:
    """Ask running nodes (name -> API socket) for their whole audit logs."""
    return asyncio.run(collect_api_async(sockets, roster))


def collect_stores(
    stores: Mapping[str, Path], roster: Roster | None = None, *, audiences: bool = True
) -> list[Event]:
    """Read nodes' stores (name -> SQLite file) offline and read-only."""
    return asyncio.run(collect_stores_async(stores, roster, audiences=audiences))


def sort_events(events: Sequence[Event]) -> list[Event]:
    """Order by time; ties keep their recorded order (a node's log is already in order)."""
    return sorted(events, key=lambda e: e.t)


def parse_sources(specs: Sequence[str]) -> dict[str, Path]:
    """``NODE=PATH`` arguments as a mapping; refuses a missing name, path or duplicate node."""
    out: dict[str, Path] = {}
    for spec in specs:
        node, sep, path = spec.partition("=")
        node = node.strip()
        if not sep or not node or not path:
            raise EventError(f"{spec!r}: expected NODE=PATH (a store file or an API socket)")
        if node == RUNNER:
            raise EventError(f"{spec!r}: {RUNNER!r} is the runner's name, not a node's")
        if node in out:
            raise EventError(f"{spec!r}: node {node!r} is given twice")
        out[node] = Path(path)
    return out


def source_kind(path: Path) -> str:
    """ "api" for a Unix socket (a running node), "store" for a file; anything else is refused."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise EventError(f"{path}: {exc.strerror or exc}") from exc
    if stat.S_ISSOCK(mode):
        return "api"
    if stat.S_ISREG(mode):
        return "store"
    raise EventError(f"{path}: neither a node's API socket nor a store file")


async def chains_async(
    sources: Mapping[str, Path], roster: Roster | None = None
) -> dict[str, dict[str, Any]]:
    """Whether each node's audit chain verifies (``ChainReport.to_json``), by node.

    A store file is verified with the node's key from ``roster`` (without one, only the links
    between rows are checked), against its own checkpoints and the latest checkpoint of it that
    every other store given holds; a running node verifies its own store (op "audit_verify")."""
    kinds = {node: source_kind(path) for node, path in sources.items()}
    held: dict[str, list[tuple[str, bytes]]] = {}
    for other, path in sources.items():
        if kinds[other] == "store":
            for node, raw in (await store.held_checkpoints(path)).items():
                held.setdefault(node, []).append((other, raw))
    out: dict[str, dict[str, Any]] = {}
    for node, path in sources.items():
        if kinds[node] == "api":
            answer = await api.request(path, {"op": "audit_verify"})
            chain = answer.get("chain")
            out[node] = chain if answer.get("ok") and isinstance(chain, dict) else {
                "ok": False, "problem": str(answer.get("error", "no answer"))}  # fmt: skip
            continue
        entry = roster.by_name(node) if roster is not None else None
        key = None if entry is None else Ed25519PublicKey.from_public_bytes(entry.public_key)
        try:
            report = await store.verify_store(path, key, held=held.get(node, []))
        except store.StoreError as exc:
            out[node] = {"ok": False, "problem": str(exc)}
            continue
        out[node] = report.to_json()
    return out


def chains(sources: Mapping[str, Path], roster: Roster | None = None) -> dict[str, dict[str, Any]]:
    """``chains_async`` for the command line."""
    return asyncio.run(chains_async(sources, roster))


def collect(sources: Mapping[str, Path], roster: Roster | None = None) -> list[Event]:
    """Audit logs of nodes given as API sockets or store files (``source_kind`` decides), with
    each decision's expected audience (``audience`` events; by ``roster`` when given)."""
    kinds = {node: source_kind(path) for node, path in sources.items()}
    sockets = {n: p for n, p in sources.items() if kinds[n] == "api"}
    stores = {n: p for n, p in sources.items() if kinds[n] == "store"}

    async def both() -> list[Event]:
        return sort_events(
            [*await collect_api_async(sockets, roster), *await collect_stores_async(stores, roster)]
        )

    return asyncio.run(both())
