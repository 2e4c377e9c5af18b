"""Healing with real node processes once nodes have signed more than 1,024 receipts of their own
(a summary then describes a history longer than the replay window)."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from relay.sim.broker import Mosquitto
from tests.node.util import cluster_of, inbox_ids, three_nodes, wait_until

# 50-120 s, most of it building the history: slow. The default run keeps the engine-level
# variant on virtual time (tests/engine/test_sync_long_history.py).
pytestmark = [pytest.mark.broker, pytest.mark.subprocess, pytest.mark.slow]

HISTORY = 1100  # decisions each node signs a receipt for: more than the 1,024 of the window


def test_node_with_more_than_1024_own_receipts_is_cut_off_and_heals(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Test that a node that has signed 1,100 receipts of its own (the decisions submitted from
    16 threads at once), cut off while decisions go out (its broker session lost, their origin
    stopped), gets them all once through healing, and that no node rejects anyone's summary."""
    with cluster_of(tmp_path, three_nodes(mosquitto)) as c:
        began = time.monotonic()
        # Submitted from 16 threads at once: hq then floods the others. With mosquitto 2.0.11
        # overstepping the Receive Maximum, the link's drop-and-reconnect churn kept the history
        # from completing in 120 s (docs/mqtt.md, "Acknowledgement").
        with ThreadPoolExecutor(16) as pool:
            history = list(pool.map(lambda i: c.submit("hq", c.sign("national", f"B{i}")),
                                    range(HISTORY)))  # fmt: skip
        for name in ("vr07-utrecht", "vr05-twente"):
            wait_until(lambda n=name: set(history) <= set(inbox_ids(c, n)), 120,  # type: ignore[misc]
                       f"the history at {name}")  # fmt: skip
        filled = time.monotonic() - began
        c.stop("vr07-utrecht")
        missed = [c.submit("hq", c.sign("national", f"Tijdens {i}")) for i in range(5)]
        wait_until(lambda: set(missed) <= set(inbox_ids(c, "vr05-twente")), 30,
                   "the missed decisions at vr05-twente")  # fmt: skip
        c.stop("hq")
        mosquitto.restart()  # no persistence: the session queued for vr07-utrecht is gone
        c.wait_ready("vr05-twente", timeout=30)
        c.start("vr07-utrecht")
        c.wait_ready("vr07-utrecht")
        healed_from = time.monotonic()
        wait_until(lambda: set(missed) <= set(inbox_ids(c, "vr07-utrecht")), 60,
                   "the missed decisions at vr07-utrecht")  # fmt: skip
        took = time.monotonic() - healed_from
        ids = Counter(inbox_ids(c, "vr07-utrecht"))
        assert max(ids.values()) == 1
        assert set(ids) == set(history) | set(missed)
        for name in ("vr07-utrecht", "vr05-twente"):
            engine = c.status(name)["engine"]
            assert engine["rejections"] == {}, name
            assert engine["counters"]["sync_summaries_sent"] >= 1
        print(f"history of {HISTORY} in {filled:.1f} s; healed in {took:.2f} s")
