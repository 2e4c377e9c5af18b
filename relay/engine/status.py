"""Signed status heartbeats: a node's retained MQTT status is a COSE_Sign1 of kind STATUS, signed
with the node key. Pure code (time is passed in).

A status is accepted only when it verifies against the roster, its signer is a *node* and is the
node whose topic carried it, and it is not older than the last status accepted from that node
(an old retained status replayed later cannot bring a node back, nor an old Will mark it offline;
each state is ordered on its own, see ``check_status``). Everything
else is a ``Rejection`` with a reason; the engine counts it (docs/broker.md, "Status").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from relay import cose
from relay.envelope import (
    Audience,
    Decision,
    Kind,
    Precedence,
    Reason,
    Rejection,
    open_envelope,
    seal,
)
from relay.trust import Accepted, Role, TrustState

__all__ = [
    "STATES",
    "AuditHead",
    "PeerStatus",
    "audit_head",
    "check_status",
    "open_checkpoint",
    "seal_checkpoint",
    "seal_status",
]

STATES = frozenset({"online", "offline"})
# A retained status outlives its node (the broker keeps it): after a day it no longer counts.
STATUS_LIFETIME_S = 86400
_MAX_FIELDS = 16
_MAX_LIST = 32


@dataclass(frozen=True, slots=True)
class AuditHead:
    """A signed audit checkpoint: the node's audit chain had head ``head`` after row ``n``, when
    the node signed it at ``issued_at`` (docs/store.md, "The audit chain")."""

    n: int
    head: bytes
    issued_at: int


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """An accepted status: the node's own fields, and when it signed them (Unix seconds)."""

    node: str
    fields: dict[str, Any]
    issued_at: int
    audit: AuditHead | None = None  # the audit checkpoint the status carries

    @property
    def online(self) -> bool:
        return self.fields.get("state") != "offline"


def seal_status(
    fields: Mapping[str, Any], key: Ed25519PrivateKey, now: float, *, kid: bytes | None = None
) -> bytes:
    """Sign a status (``state`` "online" unless given) as a STATUS envelope."""
    data = {"state": "online", **fields}
    issued = int(now)
    decision = Decision(
        issued_at=issued,
        expires_at=issued + STATUS_LIFETIME_S,
        precedence=Precedence.ROUTINE,
        audience=Audience.all(),
        seq=0,  # statuses are ordered by issued-at, not by the node's message sequence
        kind=Kind.STATUS,
        data=data,
    )
    return seal(decision, key, kid=kid)


def seal_checkpoint(
    n: int,
    head: bytes,
    key: Ed25519PrivateKey,
    now: float,
    *,
    state: str = "online",
    kid: bytes | None = None,
) -> bytes:
    """A signed audit checkpoint on its own: a status whose ``audit`` field names the chain head.

    The node's heartbeat status carries the same field, so every status it publishes is a
    checkpoint too; this is the form it keeps in its own store."""
    return seal_status(
        {"state": state, "time": now, "audit": {"n": n, "head": head.hex()}}, key, now, kid=kid
    )


def audit_head(fields: Mapping[str, Any], issued_at: int) -> AuditHead | str | None:
    """The ``audit`` field of a status (``{"n": row, "head": 64 hex digits}``): None when the
    status has none, a reason when it is malformed."""
    value = fields.get("audit")
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"n", "head"}:
        return "status field 'audit' must be a map of n and head"
    n, head = value["n"], value["head"]
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < 2**63:
        return "status field 'audit' n must be a row number"
    if not isinstance(head, str) or len(head) != 64 or head.strip("0123456789abcdef"):
        return "status field 'audit' head must be 64 lowercase hex digits"
    return AuditHead(n, bytes.fromhex(head), issued_at)


def open_checkpoint(raw: object, key: Ed25519PublicKey) -> AuditHead | str:
    """Verify a checkpoint (or any status with an ``audit`` field) against the node's own public
    key, without a roster: the head it signed, or why it is not acceptable. Never raises."""
    if not isinstance(raw, bytes):  # read from a file someone may have edited
        return f"not a signed message ({type(raw).__name__})"
    env = open_envelope(raw, max_bytes=1 << 16)
    if isinstance(env, Rejection):
        return f"{env.reason}: {env.detail}"
    if env.decision.kind != Kind.STATUS:
        return f"a {env.decision.kind.name} message, not a status"
    try:
        cose.verify_parsed(env.sign1, key)
    except cose.CoseError as exc:
        return f"{exc.reason}: not signed by this node's key ({exc.detail})"
    fields = _fields(env.decision.data)
    if isinstance(fields, str):
        return fields
    head = audit_head(fields, env.decision.issued_at)
    return "the status has no audit field" if head is None else head


def _fields(data: object) -> dict[str, Any] | str:
    """The status fields, or why they are not acceptable."""
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        return "status data is not a map of names"
    if len(data) > _MAX_FIELDS:
        return f"status has {len(data)} fields (at most {_MAX_FIELDS})"
    if data.get("state") not in STATES:
        return f"status state {data.get('state')!r} is not one of {sorted(STATES)}"
    checks: dict[str, type | tuple[type, ...]] = {
        "time": (int, float),
        "gateway": bool,
        "clock_warning": bool,
        "regions": list,
        "links": dict,
    }
    for name, kind in checks.items():
        if name in data and not isinstance(data[name], kind):
            return f"status field {name!r} has the wrong type"
    if isinstance(data.get("time"), bool):
        return "status field 'time' has the wrong type"
    regions = data.get("regions", [])
    if len(regions) > _MAX_LIST or not all(isinstance(r, str) for r in regions):
        return f"status regions must be up to {_MAX_LIST} names"
    links = data.get("links", {})
    if len(links) > _MAX_LIST or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in links.items()
    ):
        return f"status links must be up to {_MAX_LIST} name: state pairs"
    return dict(data)


def check_status(
    trust: TrustState,
    node: str,
    raw: bytes,
    now: float,
    *,
    last_issued: Mapping[str, int],
    max_bytes: int,
    observe: Callable[[str, int], None] | None = None,
) -> PeerStatus | Rejection:
    """Verify a status published on ``node``'s status topic. Never raises on peer input.

    ``observe(signer, issued_at)`` is handed on to ``TrustState.check``: it sees the signer's clock
    once the signature is verified, before the time checks (evidence about our own clock)."""
    if raw[:1] == b"{":
        return Rejection(Reason.UNSIGNED, f"unsigned (JSON) status on {node!r}'s topic")
    env = open_envelope(raw, max_bytes=max_bytes)
    if isinstance(env, Rejection):
        return env
    d = env.decision
    if d.kind != Kind.STATUS:
        return Rejection(Reason.WRONG_TOPIC, f"{d.kind.name} message on {node!r}'s status topic")
    verdict = trust.check(env, now, observe=observe)
    if not isinstance(verdict, Accepted):
        return verdict
    if verdict.role != Role.NODE or verdict.signer != node:
        return Rejection(
            Reason.WRONG_SIGNER, f"status on {node!r}'s topic signed by {verdict.signer!r}"
        )
    fields = _fields(d.data)
    if isinstance(fields, str):
        return Rejection(Reason.MALFORMED, fields)
    # Ordered per state: the Last Will ("offline") is signed when the node connects, so it is
    # older than the heartbeats that follow it and is compared only with earlier Wills.
    last = last_issued.get(fields["state"])
    if last is not None and d.issued_at < last:
        return Rejection(
            Reason.REPLAY,
            f"{fields['state']} status of {node!r} issued {last - d.issued_at} s before"
            " the last one heard",
        )
    audit = audit_head(fields, d.issued_at)
    if isinstance(audit, str):
        return Rejection(Reason.MALFORMED, audit)
    return PeerStatus(node=node, fields=fields, issued_at=d.issued_at, audit=audit)
