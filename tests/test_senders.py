"""The daemon's bounded per-link sender queues (relay.senders)."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from relay.engine.inputs import EngineInput, Refused, Transmitted
from relay.engine.ops import Transmit
from relay.envelope import Precedence
from relay.links import LinkRefused, LinkUnavailable
from relay.senders import SenderQueues, run_sender

LOG = structlog.get_logger("test")


def tx(n: int, *, channel: str = "msg", precedence: Precedence = Precedence.PRIORITY) -> Transmit:
    return Transmit("mqtt", channel, bytes([n]) * 32, b"raw", int(precedence))  # type: ignore[arg-type]


def test_a_full_queue_refuses_and_counts_instead_of_growing() -> None:
    """Test that each queue holds at most its limit, and that what does not fit is counted:
    messages as deferred (they stay in the outbox), summaries as dropped."""
    q = SenderQueues(logger=LOG, limit=2)
    q.add_link("mqtt")
    assert [q.put(tx(i)) for i in range(3)] == [True, True, False]
    assert not q.put(tx(9, channel="sync", precedence=Precedence.ROUTINE))
    # FLASH has its own queue: a backlog below it does not keep it out.
    assert q.put(tx(5, precedence=Precedence.FLASH))
    assert q.statistics("mqtt") == {
        "queued": 2,
        "queued_flash": 1,
        "send_deferred": 1,
        "summaries_dropped": 1,
    }


class Driver:
    """A link driver that answers each send by the message id's first byte."""

    name, kind = "mqtt", "mqtt"

    async def send(self, t: Transmit) -> None:
        if t.id[0] == 1:
            raise LinkUnavailable("broker gone")
        if t.id[0] == 2:
            raise LinkRefused("not authorised", target="relay/x/msg", reason="acl")

    def __getattr__(self, name: str) -> Any:  # the rest of LinkDriver is not used here
        raise AttributeError(name)


def test_sender_reports_every_outcome() -> None:
    """Test that the sender task reports sent, broken and refused sends to the engine."""
    reports: list[EngineInput] = []

    async def main() -> None:
        all_in = asyncio.Event()

        def report(event: EngineInput) -> None:
            reports.append(event)
            if len(reports) == 3:
                all_in.set()

        q = SenderQueues(logger=LOG, limit=8)
        q.add_link("mqtt")
        for n in (0, 1, 2):
            assert q.put(tx(n))
        task = asyncio.create_task(
            run_sender("mqtt", q.ordinary["mqtt"], Driver(), report, logger=LOG)
        )
        async with asyncio.timeout(10):
            await all_in.wait()
        task.cancel()

    asyncio.run(main())
    assert reports == [
        Transmitted("mqtt", bytes([0]) * 32, True),
        Transmitted("mqtt", bytes([1]) * 32, False),
        Refused("mqtt", bytes([2]) * 32, "relay/x/msg", "acl"),
    ]
