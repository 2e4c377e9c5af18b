"""Receipts: signing ours for a delivered decision, and taking in the peers'. Pure.

A receipt is an ACK message signed with the node key, referring to the decisions it
acknowledges. Ours is stored and sent like any message; theirs tells the origin who has the
decision (``DeliveredAt``) and ends its retries once every recipient has signed.

One receipt may acknowledge up to ``MAX_REFS_PER_RECEIPT`` decisions that arrived together
(docs/mqtt.md, "Receipts for a burst"): one signature, one stored message and one publish for
them instead of one each. The bound keeps every receipt small enough for one mesh receipt-bundle
item (``relay.mesh.frames.MAX_BUNDLE_ITEM``, checked by the tests), so a gateway can still carry
it into the mesh for a radio post whose decision it acknowledges.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.engine.model import HeldMessage
from relay.engine.ops import AuditEvent, DeliveredAt, PutMessage, PutReceipt, StoreOp
from relay.envelope import Audience, Decision, Kind, message_id, seal
from relay.trust import Accepted

LOCAL_LINK = "local"  # "arrived by": submitted on this node, or made here (our receipts)
# Three refs make a receipt of at most 212 B here; a mesh receipt-bundle item holds 229 B.
MAX_REFS_PER_RECEIPT = 3


@dataclass(frozen=True, slots=True)
class Signed:
    """Our receipt, made and ready to store: its id, the held message and the store rows."""

    id: bytes
    msg: HeldMessage
    ops: tuple[StoreOp, ...]


def sign(
    items: Sequence[tuple[bytes, Decision]],
    now: float,
    *,
    issued: int,
    seq: int,
    node: str,
    key: Ed25519PrivateKey,
    kid: bytes,
    version: int,
) -> Signed:
    """Sign for the decisions ``items`` ((id, decision), 1..MAX_REFS_PER_RECEIPT of them, of
    one precedence and one exercise flag) with the node key. ``issued``: our trusted time (peers
    check our receipts against their clocks); it lives as long as the longest-lived of them, at
    least a minute, in whole minutes."""
    if not 1 <= len(items) <= MAX_REFS_PER_RECEIPT:
        raise ValueError(f"a receipt is for 1..{MAX_REFS_PER_RECEIPT} decisions, got {len(items)}")
    first = items[0][1]
    if any((d.precedence, d.exercise) != (first.precedence, first.exercise) for _, d in items):
        raise ValueError("one receipt is for decisions of one precedence and exercise flag")
    expires = max(max(d.expires_at for _, d in items), issued + 60)
    expires += -(expires - issued) % 60
    receipt = Decision(
        issued_at=issued,
        expires_at=expires,
        precedence=first.precedence,
        audience=Audience.all(),
        seq=seq,
        kind=Kind.ACK,
        exercise=first.exercise,
        refs=tuple(msg_id for msg_id, _ in items),
    )
    # Our own bytes, just made: their id and key id are known without parsing them again.
    raw = seal(receipt, key, kid=kid, version=version)
    rid = message_id(raw)
    ops: tuple[StoreOp, ...] = (
        PutMessage(
            id=rid,
            raw=raw,
            kid=kid,
            signer=node,
            seq=seq,
            kind=int(Kind.ACK),
            precedence=int(first.precedence),
            exercise=first.exercise,
            audience="all",
            issued_at=issued,
            expires_at=expires,
            received_at=now,
            received_via=LOCAL_LINK,
            origin=True,
        ),
        *(PutReceipt(msg_id, node, rid, issued, now, LOCAL_LINK) for msg_id, _ in items),
    )
    return Signed(rid, HeldMessage(raw, receipt, now, True, kid=kid), ops)


class Intake:
    """Receipts from peers. One that overtakes its decision's own persistence (FLASH receipts
    come back within milliseconds) is remembered until the decision is known."""

    def __init__(self, counters: Counter[str]) -> None:
        self.early: dict[bytes, set[str]] = {}  # msg id -> signers, for messages being persisted
        self.counters = counters

    def take_early(self, msg_id: bytes) -> set[str]:
        """The signers that came before the message itself was durable."""
        return self.early.pop(msg_id, set())

    def receive(
        self,
        verdict: Accepted,
        link: str,
        now: float,
        *,
        msgs: Mapping[bytes, HeldMessage],
        pending: set[bytes] | frozenset[bytes],
        ops: list[StoreOp],
    ) -> tuple[list[DeliveredAt], list[bytes]]:
        """A verified receipt: noted for every message it refers to (store rows into ``ops``).
        Returns what to tell the operator (receipts for our own messages) and the ids of our
        messages every recipient has now signed for (their retries end)."""
        d = verdict.envelope.decision
        told: list[DeliveredAt] = []
        complete: list[bytes] = []
        for ref in d.refs:
            ops.append(PutReceipt(ref, verdict.signer, verdict.envelope.id, d.issued_at, now, link))
            m = msgs.get(ref)
            if m is None and ref in pending:
                self.early.setdefault(ref, set()).add(verdict.signer)
                continue
            if m is None or verdict.signer in m.signed:
                continue
            m.signed.add(verdict.signer)
            self.counters["receipts"] += 1
            if m.origin:
                told.append(DeliveredAt(ref, verdict.signer, link))
                ops.append(AuditEvent(now, "receipt", ref, link, verdict.signer, None))
                if not m.recipients - m.signed:
                    complete.append(ref)
        return told, complete
