"""What the engine asks of the world: store operations and actions. Pure data.

The engine never writes anything itself. It returns a ``Persist`` carrying store operations and
holds back every action that depends on them (showing, acknowledging, forwarding) until the daemon
reports the batch durable with ``Engine.persisted(token)`` -- invariant 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.envelope import Reason
from relay.vocab import Channel, OutboundChannelName

# ----------------------------------------------------------------------- store operations


@dataclass(frozen=True, slots=True)
class PutMessage:
    id: bytes
    raw: bytes
    kid: bytes
    signer: str
    seq: int
    kind: int
    precedence: int
    exercise: bool
    audience: str
    issued_at: int
    expires_at: int
    received_at: float
    received_via: str
    origin: bool  # submitted at this node


@dataclass(frozen=True, slots=True)
class PutInbox:
    id: bytes
    at: float


@dataclass(frozen=True, slots=True)
class PutOutbox:
    """A message waiting for (re)transmission on a link; replaces any earlier row."""

    id: bytes
    link: str
    attempts: int
    next_at: float
    awaiting_receipts: bool


@dataclass(frozen=True, slots=True)
class DeleteOutbox:
    id: bytes
    link: str


@dataclass(frozen=True, slots=True)
class PutReceipt:
    msg_id: bytes
    node: str
    receipt_id: bytes
    signed_at: int
    received_at: float
    via: str


@dataclass(frozen=True, slots=True)
class PutReplay:
    kid: bytes
    high: int
    bits: bytes


@dataclass(frozen=True, slots=True)
class SetCounter:
    name: str
    value: int


@dataclass(frozen=True, slots=True)
class AuditEvent:
    at: float
    event: str
    msg_id: bytes | None = None
    link: str | None = None
    node: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class PutPeerCheckpoint:
    """The latest audit checkpoint heard from another node (its signed status, as it came), so
    that node can be held to its history (docs/store.md, "The audit chain")."""

    node: str
    n: int
    head: bytes
    issued_at: int
    heard_at: float
    raw: bytes


@dataclass(frozen=True, slots=True)
class DeleteMessages:
    """Remove messages (expired, or evicted by the size bound). Evicted ids become tombstones
    so that a later copy is still recognised as a duplicate until it expires."""

    ids: tuple[bytes, ...]
    tombstone: bool


@dataclass(frozen=True, slots=True)
class PruneTombstones:
    before: float


@dataclass(frozen=True, slots=True)
class PutAttestation:
    """A verified ML-DSA-44 attestation of a stored message (relay.engine.pq)."""

    msg_id: bytes
    raw: bytes
    received_at: float
    via: str


StoreOp = (
    PutMessage
    | PutInbox
    | PutOutbox
    | DeleteOutbox
    | PutReceipt
    | PutReplay
    | SetCounter
    | AuditEvent
    | PutPeerCheckpoint
    | DeleteMessages
    | PruneTombstones
    | PutAttestation
)

# ----------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Persist:
    token: int
    ops: tuple[StoreOp, ...]


@dataclass(frozen=True, slots=True)
class Transmit:
    link: str
    channel: Channel | OutboundChannelName  # msg or rcpt
    id: bytes
    raw: bytes
    precedence: int


@dataclass(frozen=True, slots=True)
class Deliver:
    """A verified, stored decision is now in this node's inbox: show it."""

    id: bytes
    signer: str
    precedence: int
    exercise: bool
    via: str


@dataclass(frozen=True, slots=True)
class Rejected:
    link: str
    reason: Reason
    detail: str
    id: bytes | None = None


@dataclass(frozen=True, slots=True)
class Submitted:
    """Answer to a local submission (``Engine.submit``), released once it is durable."""

    ticket: int
    id: bytes | None
    reason: Reason | None = None
    detail: str = ""
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class DeliveredAt:
    """A recipient node signed a receipt for a message that originated here."""

    id: bytes
    node: str
    via: str


@dataclass(frozen=True, slots=True)
class SendSummary:
    """Send a healing summary (relay.engine.sync) on a link's ``sync`` channel: not a message,
    no outbox entry, no id; a lost one is simply followed by the next."""

    link: str
    raw: bytes


Action = Persist | Transmit | Deliver | Rejected | Submitted | DeliveredAt | SendSummary
