"""Nodes whose clocks are 30 days off (a Pi without RTC or NTP): real processes, real mosquitto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from relay.daemon import CLOCK_SKEW_ENV
from relay.sim.broker import Mosquitto
from relay.sim.cluster import NodeSpec
from tests.node.util import cluster_of, inbox_ids, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.subprocess]

DAY = 86400.0
FAST, SLOW = "vr05-twente", "vr07-amersfoort"
RIGHT = ("hq", "vr07-utrecht", "vr05-almelo")


def test_nodes_30_days_fast_and_slow_keep_their_store_accept_fresh_decisions_and_warn(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Test that a node restarted 30 days fast keeps every stored decision, that it and a node
    30 days slow accept a fresh decision (neither expired nor not-yet-valid) and sign receipts
    the others accept, and that both warn about their clock while the right ones do not."""
    urls = (mosquitto.url,)
    specs = [
        NodeSpec("hq", (), urls),
        NodeSpec("vr07-utrecht", ("VR07",), urls),
        NodeSpec("vr05-almelo", ("VR05",), urls),
        NodeSpec(FAST, ("VR05",), urls),
        NodeSpec(SLOW, ("VR07",), urls),
    ]
    with cluster_of(tmp_path, specs) as c:
        before = [c.submit("hq", c.sign("national", f"Voor {i}")) for i in range(2)]
        for name in (FAST, SLOW):
            wait_until(lambda n=name: set(before) <= set(inbox_ids(c, n)), 30,  # type: ignore[misc]
                       f"the first decisions at {name}")  # fmt: skip
        held = c.status(FAST)["engine"]["messages"]
        for name, skew in ((FAST, 30 * DAY), (SLOW, -30 * DAY)):
            c.stop(name)
            c.start(name, env={CLOCK_SKEW_ENV: repr(skew)})
        for name in (FAST, SLOW):
            c.wait_ready(name)
            wait_until(lambda n=name: c.status(n)["clock_warning"], 30,  # type: ignore[misc]
                       f"the clock warning at {name}")  # fmt: skip
        assert c.status(FAST)["engine"]["messages"] >= held  # nothing purged at start
        assert set(before) <= set(inbox_ids(c, FAST))

        fresh = c.submit("hq", c.sign("national", "Na de klokfout"))
        for name in (FAST, SLOW):
            wait_until(lambda n=name: fresh in inbox_ids(c, n), 30,  # type: ignore[misc]
                       f"the fresh decision at {name}")  # fmt: skip
        wait_until(lambda: all(r["signed"] for r in c.message("hq", fresh)["delivery"]
                               if r["node"] in (FAST, SLOW)), 30,
                   "the receipts of both wrong clocks at hq")  # fmt: skip

        fast, slow = c.status(FAST), c.status(SLOW)
        assert fast["engine"]["clock_offset_s"] == pytest.approx(-30 * DAY, abs=120)
        assert slow["engine"]["clock_offset_s"] == pytest.approx(30 * DAY, abs=120)
        for name in (FAST, SLOW):
            # No message was refused for its time (statuses are not audited: while the evidence
            # is still gathering, the other nodes' signed statuses can fail the time checks).
            timed_out = [e for e in c.audit(name) if e["event"] == "rejected"
                         and str(e["detail"]).startswith(("expired", "not-yet-valid"))]  # fmt: skip
            assert timed_out == [], name
        assert fast["engine"]["messages"] >= held + 2  # the fresh one and its receipt too
        for name in RIGHT:
            assert c.status(name)["clock_warning"] is False, name
        text = subprocess.run(
            [sys.executable, "-m", "relay", "status", "--config", str(c.config_path(FAST))],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        assert "WARNING: this node's clock differs from message times by -259" in text, text
        assert '"event": "clock_wrong"' in c.log(FAST, tail=1_000_000)
