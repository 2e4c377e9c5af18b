"""A recording LinkHost and small async helpers for driving MeshDrivers in tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from relay.envelope import Reason

WAIT_S = 30.0


class RecordingHost:
    """A LinkHost that keeps what the driver reports and wakes waiters on every call."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes, str]] = []
        self.rejected: list[tuple[str, Reason, str]] = []
        self.states: list[tuple[str, str, str]] = []
        self.changed = asyncio.Event()

    def link_received(
        self,
        link: str,
        raw: bytes,
        *,
        channel: str,
        peer: str,
        ack: Callable[[], None] | None = None,
    ) -> None:
        assert ack is None  # the mesh has no broker to acknowledge to
        self.received.append((link, raw, channel))
        self.changed.set()

    def link_rejected(self, link: str, reason: Reason, detail: str) -> None:
        self.rejected.append((link, reason, detail))
        self.changed.set()

    def link_state(self, link: str, state: str, detail: str = "") -> None:
        self.states.append((link, state, detail))
        self.changed.set()

    def statuses_waiting(self, link: str, take: Callable[[int], list[tuple[str, bytes]]]) -> None:
        self.changed.set()

    def sign_status(self, status: dict[str, Any]) -> bytes:
        raise AssertionError("a mesh link publishes no status")

    @property
    def state(self) -> str:
        return self.states[-1][1] if self.states else "none"

    async def wait_for(
        self, cond: Callable[[], bool], *also: asyncio.Event, timeout_s: float = WAIT_S
    ) -> None:
        """Wait until ``cond()`` holds, re-checking whenever the driver reports something (or
        one of the events ``also`` is set, e.g. a driver's ``activity``)."""
        await wait_until(cond, self.changed, *also, timeout_s=timeout_s)


async def wait_until(cond: Callable[[], bool], *events: asyncio.Event, timeout_s: float) -> None:
    """Wait until ``cond()`` holds, re-checking each time one of ``events`` is set."""
    async with asyncio.timeout(timeout_s):
        while not cond():
            for event in events:
                event.clear()
            waiters = [asyncio.ensure_future(event.wait()) for event in events]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
