"""The daemon's per-link sender queues and tasks (asyncio side of ``Transmit``).

Each link has two bounded queues, drained by its sender tasks: one for FLASH, so that FLASH
never waits behind a backlog of lower precedence that is itself waiting for airtime, and one for
the rest (healing summaries included). The engine already bounds what it has in flight per link
(``max_inflight_per_link``); the queues' own limit catches what that count does not see (sends
whose outbox entry was dropped while they waited). Nothing is lost silently: a ``Transmit`` that
does not fit is reported back as not sent, so it stays in the outbox and is tried again later
(counted as ``deferred``); a summary that does not fit is dropped and counted (it is not owed:
the next round sends a fresh one).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from relay.engine.inputs import EngineInput, Refused, Transmitted
from relay.engine.ops import Transmit
from relay.envelope import Precedence
from relay.links import LinkDriver, LinkRefused, LinkUnavailable
from relay.vocab import Channel

SEND_QUEUE_LIMIT = 256  # per link and queue: four times the engine's in-flight bound


class SenderQueues:
    """Bounded FLASH and ordinary queues per link, with what did not fit."""

    def __init__(self, *, logger: Any, limit: int = SEND_QUEUE_LIMIT) -> None:
        self.limit, self.log = limit, logger
        self.flash: dict[str, asyncio.Queue[Transmit]] = {}
        self.ordinary: dict[str, asyncio.Queue[Transmit]] = {}
        self.deferred: Counter[str] = Counter()  # per link: sends left in the outbox for later
        self.summaries_dropped: Counter[str] = Counter()  # per link

    def add_link(self, name: str) -> None:
        self.flash[name] = asyncio.Queue(self.limit)
        self.ordinary[name] = asyncio.Queue(self.limit)

    def put(self, t: Transmit) -> bool:
        """Queue ``t`` for its link's senders; False when that queue is full (counted)."""
        flash = t.precedence == Precedence.FLASH and t.channel != Channel.SYNC
        queue = (self.flash if flash else self.ordinary)[t.link]
        try:
            queue.put_nowait(t)
        except asyncio.QueueFull:
            if t.channel == Channel.SYNC:
                self.summaries_dropped[t.link] += 1
            else:
                self.deferred[t.link] += 1
            self.log.warning("send_queue_full", link=t.link, msg_id=t.id.hex() or None,
                        channel=str(t.channel), limit=self.limit)  # fmt: skip
            return False
        return True

    def queued(self, name: str) -> int:
        return self.ordinary[name].qsize() + self.flash[name].qsize()

    def statistics(self, name: str) -> dict[str, int]:
        return {
            "queued": self.ordinary[name].qsize(),
            "queued_flash": self.flash[name].qsize(),
            "send_deferred": self.deferred[name],
            "summaries_dropped": self.summaries_dropped[name],
        }


async def run_sender(
    name: str,
    queue: asyncio.Queue[Transmit],
    driver: LinkDriver,
    report: Callable[[EngineInput], None],
    *,
    logger: Any,
) -> None:
    """Send what the queue holds, one at a time, and report each outcome to the engine:
    broken (``LinkUnavailable``: retried soon) or refused (``LinkRefused``: audited, retried
    after a long backoff)."""
    while True:
        t = await queue.get()
        try:
            await driver.send(t)
        except LinkUnavailable as exc:
            logger.debug("transmit_failed", link=name, msg_id=t.id.hex(), error=str(exc))
            report(Transmitted(name, t.id, False))
        except LinkRefused as exc:
            logger.warning(
                "transmit_refused",
                link=name,
                msg_id=t.id.hex() or None,
                channel=t.channel,
                target=exc.target,
                reason=exc.reason,
                error=str(exc),
            )
            report(Refused(name, t.id, exc.target, exc.reason))
        else:
            report(Transmitted(name, t.id, True))
