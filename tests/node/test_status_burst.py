"""A national-scale retained status burst at connect: statuses coalesce, decisions pass first."""

import asyncio
import time
from pathlib import Path

import pytest

from bench.retained_status import decisions, publish_decisions, publish_statuses
from relay.sim.broker import Mosquitto
from relay.sim.cluster import Cluster, NodeSpec
from relay.sim.statuses import signed_statuses, sim_nodes
from tests.node.util import ISSUERS, inbox_ids, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.subprocess]

NODES = 3000
DECISIONS = 100


def test_retained_burst_of_3000_statuses_loses_no_decision_and_is_counted(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Test that a node starting against 3,000 retained validly signed statuses, then a second
    round of newer ones, gets every decision published meanwhile exactly once, drops nothing,
    has the engine verify every status the link handed over, and counts what it coalesced."""
    sims = sim_nodes(NODES)
    c = Cluster(tmp_path / "cluster")
    c.create([NodeSpec("rx", ("VR07",), (mosquitto.url,))], ISSUERS, extra=[s.entry for s in sims])
    now = time.time()
    asyncio.run(publish_statuses(mosquitto.port, signed_statuses(sims, now), name="round-1"))
    raws = decisions(c, DECISIONS)
    try:
        c.start("rx")
        c.wait_ready("rx", timeout=60)

        async def during_the_burst() -> None:
            await asyncio.gather(
                publish_decisions(mosquitto.port, raws),
                publish_statuses(mosquitto.port, signed_statuses(sims, now + 1), name="round-2"),
            )

        asyncio.run(during_the_burst())
        wait_until(lambda: len(inbox_ids(c, "rx")) >= DECISIONS, 90, "the decisions at rx")

        def mqtt_view() -> dict[str, int]:
            status = c.status("rx")
            return next(lk for lk in status["links"] if lk["kind"] == "mqtt")["mqtt"]  # type: ignore[no-any-return]

        # Both rounds are in (the retained one and the live one), none left waiting; waiting
        # for only the first round raced the second one still arriving on a slow machine.
        view: dict[str, int] = wait_until(
            lambda: (
                v
                if (v := mqtt_view())["statuses_in"] >= 2 * NODES and not v["statuses_pending"]
                else {}
            ),
            90,
            "every status handed to the engine",
        )
        status = c.status("rx")
        ids = inbox_ids(c, "rx")
        assert len(ids) == len(set(ids)) == DECISIONS
        counters = status["engine"]["counters"]
        assert counters["delivered"] == DECISIONS
        assert status["overload_drops"] == 0
        assert view["rejected_queue_full"] == 0
        assert view["statuses_dropped_full"] == 0
        assert view["statuses_in"] >= 2 * NODES  # both rounds: nothing was lost on the way
        # Every status is either superseded while waiting or verified by the engine, never both.
        assert view["statuses_in"] == view["statuses_taken"] + view["statuses_coalesced"]
        assert counters["statuses"] == view["statuses_taken"]
        assert counters.get("statuses_rejected", 0) == 0
    finally:
        c.stop_all()
