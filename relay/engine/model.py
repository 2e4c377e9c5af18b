"""What the engine is built from and restored from: its links and the store's snapshot. Pure data.

Kept apart from the engine's code so that the store (relay.store) can build a ``Snapshot``
without importing the engine itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relay.engine.ops import PutOutbox
from relay.envelope import Decision, Kind, Precedence
from relay.vocab import LinkKind, LinkKindName


@dataclass(frozen=True, slots=True)
class LinkInfo:
    name: str
    kind: LinkKind

    def __init__(self, name: str, kind: LinkKind | LinkKindName) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "kind", LinkKind(kind))


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """What the engine needs to know about a stored message after a restart."""

    raw: bytes
    received_via: str
    received_at: float
    origin: bool
    signer: str


@dataclass
class Snapshot:
    """Durable state loaded from the store at start-up."""

    messages: list[StoredMessage] = field(default_factory=list)
    tombstones: dict[bytes, float] = field(default_factory=dict)
    replay: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)
    outbox: list[PutOutbox] = field(default_factory=list)
    receipts: list[tuple[bytes, str]] = field(default_factory=list)  # (msg id, node)
    own_receipts: dict[bytes, bytes] = field(default_factory=dict)  # msg id -> our receipt id
    counters: dict[str, int] = field(default_factory=dict)
    attestations: dict[bytes, bytes] = field(default_factory=dict)  # msg id -> ML-DSA (pq.py)


@dataclass(slots=True)
class HeldMessage:
    """A held message, parsed once (when it was accepted, or restored)."""

    raw: bytes
    decision: Decision
    received_at: float
    origin: bool
    via_kind: LinkKind | None = None  # the kind of link it arrived by (None: not a link)
    recipients: frozenset[str] = frozenset()  # for origin messages: who must sign
    signed: set[str] = field(default_factory=set)
    meshed: set[str] = field(default_factory=set)  # mesh links it went out on or was heard on
    kid: bytes = b""  # signer key id (and decision.seq): what healing summaries describe

    @property
    def kind(self) -> Kind:
        return self.decision.kind

    @property
    def precedence(self) -> Precedence:
        return self.decision.precedence

    @property
    def expires_at(self) -> int:
        return self.decision.expires_at

    @property
    def seq(self) -> int:
        return self.decision.seq
