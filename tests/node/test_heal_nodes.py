"""Partition healing with real node processes over a real mosquitto."""

import time
from collections import Counter
from pathlib import Path

import pytest

from relay.sim.broker import Mosquitto
from relay.sim.cluster import Cluster
from tests.node.util import ISSUERS, cluster_of, inbox_ids, three_nodes, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.subprocess]


def test_late_node_gets_what_it_missed_through_healing(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Test that a node joining after 120 decisions went out, while their origin is stopped
    (its retries gone with it) and the broker kept nothing for it, receives every one of them
    once, from another node's answer to its summary."""
    c = Cluster(tmp_path / "cluster")
    c.create(three_nodes(mosquitto), ISSUERS)
    try:
        for name in ("hq", "vr05-twente"):
            c.start(name)
        for name in ("hq", "vr05-twente"):
            c.wait_ready(name)
        sent: dict[str, str] = {}
        for i in range(120):
            issuer, audience = ("vr07-rbt", "region:VR07") if i % 6 == 0 else ("national", "all")
            sent[c.submit("hq", c.sign(issuer, f"Besluit {i}", to=audience))] = audience
        national = {i for i, aud in sent.items() if aud == "all"}

        def settled() -> bool:
            # vr05-twente holds all 120 (it shows only the national ones), and hq has its receipt
            # for each national one. (Not a count of messages: in a burst one receipt may cover
            # up to three decisions, relay.engine.receipts.)
            held = {e["msg_id"] for e in c.audit("vr05-twente") if e["event"] == "accepted"}
            confirmed = {e["msg_id"] for e in c.audit("hq")
                         if e["event"] == "receipt" and e["node"] == "vr05-twente"}  # fmt: skip
            return set(sent) <= held and national <= confirmed

        wait_until(settled, 60, "vr05-twente holding every decision, hq its receipts")
        c.stop("hq")

        c.start("vr07-utrecht")
        started = time.monotonic()
        c.wait_ready("vr07-utrecht")
        wait_until(lambda: set(sent) <= set(inbox_ids(c, "vr07-utrecht")), 60,
                   "the 120 decisions at vr07-utrecht")  # fmt: skip
        took = time.monotonic() - started
        for name in ("vr07-utrecht", "vr05-twente"):
            ids = Counter(inbox_ids(c, name))
            assert max(ids.values()) == 1, f"duplicates in the inbox of {name}"
        assert set(inbox_ids(c, "vr07-utrecht")) == set(sent)
        engine = c.status("vr07-utrecht")["engine"]
        assert engine["counters"]["sync_summaries_sent"] >= 1
        assert engine["rejections"] == {}
        twente = c.status("vr05-twente")["engine"]["counters"]
        assert twente["sync_pushed"] >= 120
        print(f"healed 120 decisions in {took:.2f} s (from process start)")
    finally:
        c.stop_all()


def test_stopped_node_whose_session_and_retries_are_gone_catches_up(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Test that a node stopped while 100 decisions flowed, whose broker session was lost (a
    broker restart without persistence) and whose messages' origin is stopped, gets all 100
    once through healing when it returns, and that nobody's inbox holds a duplicate."""
    with cluster_of(tmp_path, three_nodes(mosquitto)) as c:
        c.stop("vr07-utrecht")
        sent = [c.submit("hq", c.sign("national", f"Besluit {i}")) for i in range(100)]
        wait_until(lambda: set(sent) <= set(inbox_ids(c, "vr05-twente")), 60,
                   "the 100 decisions at vr05-twente")  # fmt: skip
        c.stop("hq")
        mosquitto.restart()  # no persistence: the session queued for vr07-utrecht is gone
        c.wait_ready("vr05-twente", timeout=30)
        c.start("vr07-utrecht")
        c.wait_ready("vr07-utrecht")
        wait_until(lambda: set(sent) <= set(inbox_ids(c, "vr07-utrecht")), 60,
                   "the 100 decisions at vr07-utrecht")  # fmt: skip
        c.start("hq")  # back: what it re-sends must not be delivered twice
        c.wait_ready("hq")
        for name in c.specs:
            ids = Counter(inbox_ids(c, name))
            assert ids and max(ids.values()) == 1, f"duplicates in the inbox of {name}"
        assert c.status("vr05-twente")["engine"]["counters"]["sync_pushed"] >= 100
