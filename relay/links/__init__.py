"""Links carry signed bytes between nodes. Each outside library has exactly one module here:
``mqtt`` (aiomqtt) and ``meshtastic_bridge`` (meshtastic; the emulator in ``relay.sim`` uses
meshtastic's protobufs for the device side). The ``*_driver`` modules adapt them to the daemon.

Errors from links form one flat tree, in aiomqtt's shape (DESIGN.md "Errors from links"), and
every link and the daemon's senders use it the same way::

    LinkError
    ├── LinkUnavailable   broken: the link cannot carry anything now; retry soon
    └── LinkRefused       refused: the broker or peer refused this one message; audit the
                          reason, count it, back off long (an operator may fix an ACL); the
                          link itself is fine and all other traffic keeps flowing

Neither ever ends the daemon; only our own bugs do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from relay.engine.ops import Transmit
from relay.envelope import Reason


class LinkError(Exception):
    """Base of every link's errors."""


class LinkUnavailable(LinkError):
    """Broken: the link is down, went down or timed out; what was sent may or may not have
    arrived (the durable outbox retries and receivers dedupe by message id)."""


class LinkRefused(LinkError):
    """Refused: the broker or peer answered that it will not take this message.

    ``reason`` is short and stable enough to count by (e.g. "135 Not authorized", "TOO_LARGE");
    ``target`` names what was refused (an MQTT topic, a radio); ``code`` is the protocol's own
    reason code when it has one (MQTT v5 PUBACK, Meshtastic routing error).
    """

    def __init__(
        self, message: str, *, reason: str, target: str = "", code: int | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.target = target
        self.code = code


class LinkHost(Protocol):
    """What a link driver may call on the daemon (always on the event loop thread)."""

    def link_received(
        self,
        link: str,
        raw: bytes,
        *,
        channel: str,
        peer: str,
        ack: Callable[[], None] | None = None,
    ) -> None:
        """``ack``: call it once what the bytes led to is durably stored (or finally refused)."""
        ...

    def link_rejected(self, link: str, reason: Reason, detail: str) -> None: ...

    def link_state(self, link: str, state: str, detail: str = "") -> None: ...

    def statuses_waiting(self, link: str, take: Callable[[int], list[tuple[str, bytes]]]) -> None:
        """Peer statuses wait on ``link``: ``take(n)`` hands over up to n (peer, raw status),
        fewer once none is left; called again when statuses wait after that."""
        ...

    def sign_status(self, status: dict[str, Any]) -> bytes: ...


class LinkDriver(Protocol):
    name: str
    kind: str

    async def run(self) -> None: ...

    async def send(self, t: Transmit) -> None: ...

    async def publish_status(self, status: dict[str, Any]) -> None: ...

    def describe(self) -> dict[str, Any]: ...
