"""Local API ops for the web console (relay.console), kept apart from the operator ops in
relay.daemon so that each stays small. Every field is validated here; a bad one is a clear
``bad request`` answer, never an exception.

    {"op": "roster"}                          -> {"ok": true, "serial": n, "entries": [...]}
    {"op": "sent", "limit": 50}                        -> {"ok": true, "messages": [...]}
    {"op": "rejections", "limit": 50}                  -> {"ok": true, "events": [...]}
    {"op": "trail", "id": "<64 hex>"}                   -> {"ok": true, "events": [...]}
    {"op": "console-audit", "user": "NAME", "event": "login", "id": "<hex>", "detail": "…"}
                                                       -> {"ok": true}  (once committed)
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any, Protocol

from relay.config import Config
from relay.engine.core import Engine
from relay.engine.ops import AuditEvent
from relay.envelope import Kind, Rejection, open_envelope
from relay.render import as_json
from relay.store import Store


class Node(Protocol):
    """What the console ops need of a running node (``relay.daemon.Node``): a protocol, so this
    module does not import the daemon that imports it."""

    @property
    def config(self) -> Config: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def log(self) -> Any: ...  # structlog's bound logger

    @property
    def store(self) -> Store: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def store_fault(self) -> dict[str, Any] | None: ...

    async def record_audit(self, event: AuditEvent) -> None: ...


AUDIT_COMMIT_WAIT_S = 5.0  # console-audit answers once its row is committed, or after this
CONSOLE_OPS = frozenset({"roster", "sent", "rejections", "trail", "console-audit"})
# What the console records, with the user's name in the audit row's node column.
CONSOLE_EVENTS = frozenset(
    {"login", "login-failed", "login-throttled", "logout", "sign", "send", "refused"}
)
MAX_DETAIL = 300
SENT_KINDS = (Kind.DECISION, Kind.NOTICE, Kind.CANCEL, Kind.SUPERSEDE)  # not receipts, rosters
_USER = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
_ID = re.compile(r"^[0-9a-f]{64}$")


class BadRequest(ValueError):
    pass


def _limit(req: dict[str, Any], default: int, hi: int) -> int:
    value = req.get("limit", default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
        raise BadRequest(f"limit must be an integer from 1 to {hi}")
    return value


async def console_op(node: Node, req: dict[str, Any]) -> dict[str, Any]:
    try:
        match req.get("op"):
            case "roster":
                return _roster(node)
            case "sent":
                return await _sent(node, _limit(req, 50, 500))
            case "rejections":
                events = await node.store.recent_audit("rejected", _limit(req, 50, 500))
                return {"ok": True, "events": events}
            case "trail":
                ident = req.get("id")
                if not isinstance(ident, str) or not _ID.match(ident):
                    raise BadRequest("id must be 64 lowercase hex digits")
                return {"ok": True, "events": await node.store.audit_of(bytes.fromhex(ident))}
            case "console-audit":
                event = _audit_event(req, node.clock())
                if (fault := node.store_fault) is not None:  # the row could not be written now
                    return {"ok": False, "error": f"refused: {fault['reason']}: store not writable"}
                try:
                    async with asyncio.timeout(AUDIT_COMMIT_WAIT_S):
                        await node.record_audit(event)
                except TimeoutError:  # the disk filled up meanwhile, or is very slow
                    why = f"not committed after {AUDIT_COMMIT_WAIT_S:.0f} s (store slow or full)"
                    return {"ok": False, "error": f"refused: {why}; it stays queued"}
                return {"ok": True}
    except BadRequest as exc:
        node.log.warning("console_bad_request", op=req.get("op"), reason=str(exc))
        return {"ok": False, "error": f"bad request: {exc}"}
    raise AssertionError(f"not a console op: {req.get('op')!r}")


def _roster(node: Node) -> dict[str, Any]:
    roster = node.engine.trust.roster
    entries = [] if roster is None else roster.entries
    return {
        "ok": True,
        "node": node.config.node,
        "regions": sorted(node.config.regions),
        "serial": roster.serial if roster else None,
        "entries": [
            {
                "name": e.name,
                "role": str(e.role),
                "kid": e.kid.hex(),
                "scope": e.scope.specs(),
                "regions": sorted(e.scope.regions),
                "kinds": sorted(k.name.lower() for k in e.kinds),
                "not_before": e.not_before,
                "not_after": e.not_after,
            }
            for e in entries
        ],
    }


async def _sent(node: Node, limit: int) -> dict[str, Any]:
    out = []
    for msg_id in await node.store.sent_ids(SENT_KINDS, limit):
        info = await node.store.message(msg_id)
        if info is None:  # expired between the two reads
            continue
        env = open_envelope(info["raw"], max_bytes=1 << 20)
        if isinstance(env, Rejection):
            raise AssertionError(f"stored message {msg_id.hex()} no longer parses")
        expected = node.engine.recipients_of(env.id)
        recipients = set(expected[0]) if expected else set()
        signed = {r["node"] for r in info["receipts"]}
        item = as_json(env.decision, info["signer"], env.id)
        item.update(
            received_at=info["received_at"],
            recipients=len(recipients | signed),
            signed=len(signed),
        )
        out.append(item)
    return {"ok": True, "messages": out}


def _audit_event(req: dict[str, Any], now: float) -> AuditEvent:
    user, event = req.get("user"), req.get("event")
    if not isinstance(user, str) or not _USER.match(user):
        raise BadRequest("user must be 1-64 letters, digits or . _ @ -")
    if event not in CONSOLE_EVENTS:
        raise BadRequest(f"event must be one of {', '.join(sorted(CONSOLE_EVENTS))}")
    ident = req.get("id")
    if ident is not None and (not isinstance(ident, str) or not _ID.match(ident)):
        raise BadRequest("id must be 64 lowercase hex digits")
    detail = req.get("detail")
    if detail is not None and (not isinstance(detail, str) or len(detail) > MAX_DETAIL):
        raise BadRequest(f"detail must be a string of at most {MAX_DETAIL} characters")
    return AuditEvent(
        now,
        f"console-{event}",
        bytes.fromhex(ident) if ident else None,
        "console",
        user,
        detail,
    )
