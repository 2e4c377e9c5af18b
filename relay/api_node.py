"""The node's local API: the operator ops, and `relay status`. The console's ops are in
relay.api_console; the socket and the request framing in relay.api.

    {"op": "submit", "raw": "<base64>"}       -> {"ok": true, "id": "<hex>", "duplicate": false}
    {"op": "inbox", "limit": 1000}            -> {"ok": true, "messages": [...]}
    {"op": "status"}                          -> {"ok": true, "node": ..., "links": [...], ...}
    {"op": "message", "id": "<hex prefix>"}   -> {"ok": true, "message": {...}}
    {"op": "audit", "since": 0}               -> {"ok": true, "node": ..., "events": [...]}
    {"op": "audit_verify"}                    -> {"ok": true, "node": ..., "chain": {...}}
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from relay import api, api_console, pq
from relay.api_console import CONSOLE_OPS, console_op
from relay.engine.ops import Submitted
from relay.envelope import Envelope, Rejection, open_envelope
from relay.links import LinkDriver
from relay.render import as_json
from relay.senders import SenderQueues
from relay.store import StoreError

MAX_INBOX_LIMIT = 100_000  # `inbox` answers at most this many messages
MAX_SQLITE_INT = 2**63 - 1


@dataclass
class LinkView:
    """What the daemon knows about a link's health, for `relay status`."""

    kind: str
    state: str = "down"
    since: float = field(default_factory=time.time)  # the daemon passes its own clock's time
    detail: str = ""


class Node(api_console.Node, Protocol):
    """What the API needs of a running node (``relay.daemon.Node``): a protocol, so this module
    does not import the daemon that imports it."""

    store_refused: int  # submissions refused while the store cannot be written

    @property
    def views(self) -> Mapping[str, LinkView]: ...

    @property
    def links(self) -> Mapping[str, LinkDriver]: ...

    @property
    def api_stats(self) -> api.ApiStats: ...

    @property
    def overload_drops(self) -> int: ...

    @property
    def link_crashes(self) -> Mapping[str, int]: ...

    @property
    def link_changes(self) -> Mapping[str, int]: ...

    @property
    def send_queues(self) -> SenderQueues: ...

    @property
    def input_queue_size(self) -> int: ...

    @property
    def public_key(self) -> Ed25519PublicKey: ...  # the node key's, for audit_verify

    @property
    def acks_released(self) -> int: ...

    @property
    def peers(self) -> dict[str, dict[str, Any]]: ...

    async def submit(self, raw: bytes) -> Submitted: ...


async def handle(node: Node, req: dict[str, Any]) -> dict[str, Any]:
    """One operator or console request (the ops are in the module's docstring)."""
    op = req.get("op")
    if op in CONSOLE_OPS:
        return await console_op(node, req)
    try:
        match op:
            case "submit":
                raw = base64.b64decode(api.text(req, "raw"), validate=True)
                if (fault := node.store_fault) is not None:
                    node.store_refused += 1
                    node.log.warning("submit_refused", reason=fault["reason"])
                    return {
                        "ok": False,
                        "error": f"refused: {fault['reason']}: the store cannot be written "
                        f"({fault['detail']}); stored messages are still served",
                        "reason": fault["reason"],
                    }
                result = await node.submit(raw)
                if result.reason is not None:
                    return {
                        "ok": False,
                        "error": f"rejected: {result.reason}: {result.detail}",
                        "reason": str(result.reason),
                    }
                assert result.id is not None
                return {"ok": True, "id": result.id.hex(), "duplicate": result.duplicate}
            case "inbox":
                limit = api.integer(req, "limit", default=1000, lo=1, hi=MAX_INBOX_LIMIT)
                return {"ok": True, "messages": await inbox(node, limit)}
            case "status":
                return {"ok": True, **await status(node)}
            case "message":
                return await message(node, api.text(req, "id", max_len=64))
            case "audit":
                since = api.integer(req, "since", default=0, lo=0, hi=MAX_SQLITE_INT)
                events = await node.store.audit(since)
                return {"ok": True, "node": node.config.node, "events": events}
            case "audit_verify":
                try:
                    report = await node.store.verify_chain(node.public_key)
                except StoreError as exc:
                    return {"ok": False, "error": f"audit chain: {exc}"}
                return {"ok": True, "node": node.config.node, "chain": report.to_json()}
    except (ValueError, TypeError) as exc:
        return {"ok": False, "error": f"bad request: {exc}"}
    return {"ok": False, "error": f"unknown op {op!r}"}


async def inbox(node: Node, limit: int) -> list[dict[str, Any]]:
    out = []
    for row in await node.store.inbox(limit):
        env = open_envelope(row["raw"], max_bytes=1 << 20)
        if isinstance(env, Rejection):  # stored only after verification: corruption
            raise AssertionError(f"stored message {row['id'].hex()} no longer parses")
        item = as_json(env.decision, row["signer"], env.id)
        item.update(received_via=row["via"], received_at=row["received_at"], verdict="valid")
        item.update(pq_fields(node, env))
        out.append(item)
    return out


def pq_fields(node: Node, env: Envelope) -> dict[str, Any]:
    """The decision's quantum-safe signature (relay.engine.pq): with ``[trust] pq =
    "require"`` a PQ-enabled issuer's decision is not "valid" until its attestation came."""
    hook = node.engine.pq
    state = hook.state(node.engine, env.id, env.kid, env.decision.kind)
    fields: dict[str, Any] = {
        "pq": str(state),
        "pq_label": pq.label(state, "nl"),
        "pq_label_en": pq.label(state, "en"),
    }
    if not hook.verified(state):
        fields["verdict"] = "pq-pending"
    return fields


async def message(node: Node, ident: str) -> dict[str, Any]:
    ids = await node.store.find_ids(ident.lower())
    if len(ids) != 1:
        return {"ok": False, "error": f"{len(ids)} messages match id {ident!r}"}
    info = await node.store.message(ids[0])
    assert info is not None
    env = open_envelope(info.pop("raw"), max_bytes=1 << 20)
    assert not isinstance(env, Rejection)
    expected = node.engine.recipients_of(env.id)
    recipients = sorted(expected[0]) if expected else []
    signed = {r["node"]: r for r in info["receipts"]}
    matrix = [
        {"node": n, "signed": n in signed, **({k: v for k, v in signed[n].items()
                                                if k != "node"} if n in signed else {})}
        for n in sorted(set(recipients) | set(signed))
    ]  # fmt: skip
    # Attempts per link: the sends the audit log records (they survive restarts and the
    # outbox row's deletion), and the live outbox entries with their current attempt counts
    # (failed transmissions included), in place of the store rows written with 0.
    sends = await node.store.sends(env.id)
    live = node.engine.outbox_of(env.id)
    attempts = [
        {"link": name, "sent": n, "last_sent_at": at} for name, (n, at) in sorted(sends.items())
    ]
    return {
        "ok": True,
        "message": {
            **as_json(env.decision, info["signer"], env.id),
            **{k: v for k, v in info.items() if k not in ("receipts", "outbox")},
            **pq_fields(node, env),
            "pq_attestation": await node.store.attestation_of(env.id),
            "outbox": live,
            "attempts": attempts,
            "recipients": recipients,
            "delivery": matrix,
        },
    }


async def status(node: Node) -> dict[str, Any]:
    """What `relay status` shows (and the metrics endpoint exports)."""
    stats = node.engine.statistics()
    depths = node.engine.outbox_depths()
    health = node.engine.link_health(node.clock())
    links = [
        {
            "name": name,
            "kind": view.kind,
            "state": view.state,
            "since": view.since,
            "routing": health[name]["effective"],
            "routing_since": health[name]["changed_at"],
            "detail": view.detail,
            "outbox": depths.get(name, 0),
            **node.send_queues.statistics(name),
            **node.links[name].describe(),
        }
        for name, view in node.views.items()
    ]
    return {
        "node": node.config.node,
        "regions": sorted(node.config.regions),
        "links": links,
        "engine": stats,
        "rejections": stats["rejections"],
        "refusals": stats["refusals"],
        "clock_warning": stats["clock_warning"],
        "store": await node.store.stats(),
        "store_fault": node.store_fault,
        "store_refused": node.store_refused,
        "api": node.api_stats.as_dict(),
        "input_queue": node.input_queue_size,
        "overload_drops": node.overload_drops,
        "acks_released": node.acks_released,
        "link_crashes": node.link_crashes,
        "link_changes": node.link_changes,
        "store_bytes": sum(
            p.stat().st_size
            for p in (
                node.config.store,
                node.config.store.with_name(node.config.store.name + "-wal"),
            )
            if p.exists()
        ),
        "peers": node.peers,
        "engine_peers": dict(node.engine.peers),
        "gateway_peers": dict(node.engine.gateway_peers),
        "bridge_slot_s": round(node.engine.config.bridge_slot_s, 3),  # from the mesh preset
        "mesh_peers": dict(node.engine.mesh_peers),  # nodes heard signing on a mesh link
        "time": node.clock(),
    }
