"""What the daemon feeds the engine: one frozen dataclass per kind of input, matched on class
by ``Engine.handle``. Pure data; the time comes with the call, not with the event."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from relay.envelope import Reason
from relay.vocab import Channel, LinkState


@dataclass(frozen=True, slots=True)
class Received:
    """A message, receipt or summary a link delivered. ``ack``: what the daemon calls once the
    store has committed what it led to (an MQTT PUBACK); the engine does not call it."""

    link: str
    raw: bytes
    channel: Channel
    peer: str = ""
    ack: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class StatusHeard:
    """A status published on ``peer``'s status topic."""

    link: str
    peer: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class Submit:
    """A message signed by a local operator, answered by ``Submitted(ticket, ...)``."""

    raw: bytes
    ticket: int


@dataclass(frozen=True, slots=True)
class Persisted:
    """The store has committed the ``Persist`` with this token."""

    token: int


@dataclass(frozen=True, slots=True)
class Transmitted:
    """The outcome of a ``Transmit`` (for MQTT: PUBACK received or not)."""

    link: str
    msg_id: bytes
    ok: bool


@dataclass(frozen=True, slots=True)
class Refused:
    """The broker or peer refused a transmission (``msg_id`` empty: not an outbox message)."""

    link: str
    msg_id: bytes
    target: str
    reason: str


@dataclass(frozen=True, slots=True)
class LinkChanged:
    """The link's own measurement of itself."""

    link: str
    state: LinkState


@dataclass(frozen=True, slots=True)
class LinkRejected:
    """A link refused input before it reached the engine (oversized, wrong topic)."""

    link: str
    reason: Reason
    detail: str


EngineInput = (
    Received | StatusHeard | Submit | Persisted | Transmitted | Refused | LinkChanged | LinkRejected
)
