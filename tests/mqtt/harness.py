"""Helpers for the MQTT link tests: an event recorder, running links, a raw MQTT publisher."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from relay.links.mqtt import (
    BrokerConfig,
    Inbound,
    LinkEvent,
    LinkStateChanged,
    MqttLink,
    MqttSettings,
)

WAIT_S = 10.0
E = TypeVar("E")


class Recorder:
    """An ``on_event`` callback that keeps every event and lets a test await one.

    With ``ack=True`` (the default) it acknowledges every ``Inbound`` at once, as a consumer that
    has stored it; with ``ack=False`` the test decides (``Inbound.ack()``).
    """

    def __init__(self, *, ack: bool = True) -> None:
        self.events: list[LinkEvent] = []
        self._ack = ack
        self._waiters: list[tuple[Callable[[LinkEvent], bool], asyncio.Future[LinkEvent]]] = []

    def __call__(self, event: LinkEvent) -> None:
        if self._ack and isinstance(event, Inbound):
            event.ack()
        self.events.append(event)
        for predicate, future in self._waiters:
            if not future.done() and predicate(event):
                future.set_result(event)

    def mark(self) -> int:
        """Position to pass as ``since`` so only later events count."""
        return len(self.events)

    async def wait_for(
        self, predicate: Callable[[LinkEvent], bool], *, since: int = 0, within: float = WAIT_S
    ) -> LinkEvent:
        for event in self.events[since:]:
            if predicate(event):
                return event
        future: asyncio.Future[LinkEvent] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(within):
                return await future
        finally:
            self._waiters.remove(entry)

    async def state(
        self, state: str, url: str | None = None, *, since: int = 0, within: float = WAIT_S
    ) -> LinkStateChanged:
        def match(e: LinkEvent) -> bool:
            return (
                isinstance(e, LinkStateChanged)
                and e.state == state
                and (url is None or e.broker_url == url)
            )

        event = await self.wait_for(match, since=since, within=within)
        assert isinstance(event, LinkStateChanged)
        return event

    async def inbound(
        self, channel: str, payload: bytes, *, since: int = 0, within: float = WAIT_S
    ) -> Inbound:
        def match(e: LinkEvent) -> bool:
            return isinstance(e, Inbound) and e.channel == channel and e.payload == payload

        event = await self.wait_for(match, since=since, within=within)
        assert isinstance(event, Inbound)
        return event

    def of_type(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]


def settings(node: str, *brokers: str | BrokerConfig, **overrides: Any) -> MqttSettings:
    configs = tuple(b if isinstance(b, BrokerConfig) else BrokerConfig(b) for b in brokers)
    return MqttSettings(node=node, brokers=configs, **overrides)


@asynccontextmanager
async def running(*links: MqttLink) -> AsyncIterator[None]:
    """Run the links' supervisors for the duration of the block, then cancel them."""
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(link.run(), name=f"test-link-{i}") for i, link in enumerate(links)]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()


def run(scenario: Callable[[], Awaitable[None]], *, timeout: float = 60.0) -> None:
    """Run an async scenario with an overall deadline."""

    async def bounded() -> None:
        async with asyncio.timeout(timeout):
            await scenario()

    asyncio.run(bounded())


# -- a deliberately dumb MQTT 3.1.1 publisher, to send what our link never would ---------------


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def raw_publish(port: int, topic: str, payload: bytes, *, client_id: str = "raw") -> None:
    """Connect to 127.0.0.1:port, publish one QoS 1 message, wait for PUBACK, disconnect."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        body = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 30) + _utf8(client_id)
        sock.sendall(b"\x10" + _remaining_length(len(body)) + body)
        assert sock.recv(4) == b"\x20\x02\x00\x00", "CONNACK refused"
        body = _utf8(topic) + struct.pack("!H", 1) + payload
        sock.sendall(b"\x32" + _remaining_length(len(body)) + body)
        ack = b""
        while len(ack) < 4:
            chunk = sock.recv(4 - len(ack))
            assert chunk, "broker closed before PUBACK"
            ack += chunk
        assert ack == b"\x40\x02\x00\x01", ack
        sock.sendall(b"\xe0\x00")
