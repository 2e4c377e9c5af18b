"""Links carry signed bytes between nodes. Each outside library has exactly one module here:
``mqtt`` (aiomqtt) and ``mesh`` (meshtastic). The ``*_driver`` modules adapt them to the daemon.
"""

from __future__ import annotations

from typing import Any, Protocol

from relay.engine.ops import Transmit
from relay.envelope import Reason


class LinkUnavailable(Exception):
    """A link could not carry a transmission now (down, timed out, refused)."""


class LinkHost(Protocol):
    """What a link driver may call on the daemon (always on the event loop thread)."""

    def link_received(self, link: str, raw: bytes, *, channel: str, peer: str) -> None: ...

    def link_rejected(self, link: str, reason: Reason, detail: str) -> None: ...

    def link_state(self, link: str, state: str, detail: str = "") -> None: ...

    def peer_status(self, peer: str, raw: bytes, *, link: str = ...) -> None: ...

    def sign_status(self, status: dict[str, Any]) -> bytes: ...


class LinkDriver(Protocol):
    name: str
    kind: str

    async def run(self) -> None: ...

    async def send(self, t: Transmit) -> None: ...

    async def publish_status(self, status: dict[str, Any]) -> None: ...

    def describe(self) -> dict[str, Any]: ...
