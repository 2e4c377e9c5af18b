"""What the MQTT link reports and raises: its events and errors, pure (no aiomqtt).

``relay.links.mqtt`` re-exports every name here; import them from there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from relay.links import LinkError, LinkRefused
from relay.vocab import Channel, LinkState

__all__ = [
    "Channel",
    "ConnectFailed",
    "Inbound",
    "InboundChannel",
    "InboundRejected",
    "LinkEvent",
    "LinkStateChanged",
    "MqttLinkError",
    "PublishRejected",
    "RejectReason",
]

InboundChannel = Channel  # msg, rcpt, sync, status (relay.vocab)
RejectReason = Literal["oversized", "wrong-topic", "queue-full", "bad-probe"]


def _no_ack() -> None:
    """The ``ack`` of an event that needs none (QoS 0, or acknowledged by the link itself)."""


# -- events and errors ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkStateChanged:
    """The link's state or broker changed. ``session_present`` is the CONNACK flag on "up"."""

    state: LinkState
    broker_url: str | None
    reason: str
    session_present: bool = False


@dataclass(frozen=True, slots=True)
class Inbound:
    """Bytes published by ``sender_node`` (our own node included), not decoded in any way.

    ``ack()`` sends the PUBACK: call it once the message is durably stored or finally refused.
    Until then the broker counts it against our Receive Maximum and re-sends it after a
    reconnect. An ack after the connection it came on has gone is dropped (the broker re-sends).
    """

    channel: InboundChannel
    sender_node: str
    payload: bytes
    broker_url: str
    retained: bool = False
    ack: Callable[[], None] = field(default=_no_ack, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class InboundRejected:
    """An inbound message we refused; ``size`` is its payload length (or count of drops)."""

    reason: RejectReason
    topic: str
    size: int
    broker_url: str


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """One connection attempt failed (refused, TLS handshake, timeout, ...); state unchanged."""

    broker_url: str
    error: str


LinkEvent = LinkStateChanged | Inbound | InboundRejected | ConnectFailed


# The link's errors are the shared tree of relay.links (broken vs refused); the names below are
# kept so callers of this module need not know where they live.
MqttLinkError = LinkError


class PublishRejected(LinkRefused):
    """The broker answered with a failure reason code (MQTT v5 PUBACK, e.g. 135)."""

    def __init__(self, message: str, *, reason_code: int, reason: str, topic: str) -> None:
        super().__init__(message, reason=reason, target=topic, code=reason_code)
        self.reason_code = reason_code
