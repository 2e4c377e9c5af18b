"""Broker refusals with real node processes over a real mosquitto whose ACL refuses topics."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relay.sim.broker import Mosquitto
from relay.sim.cluster import Cluster, NodeSpec
from tests.node.util import ISSUERS, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.subprocess]

REFUSED_NODE = "vr05-twente"
NODES = ("hq", "vr07-utrecht", REFUSED_NODE)


def refusing_acl() -> str:
    """Everybody reads everything under crisis/; each node (username = node name) writes its
    own topics, except that vr05-twente may not write its ``status`` nor its ``msg`` topic."""
    lines = ["pattern read crisis/#"]
    for node in NODES:
        lines.append(f"user {node}")
        if node == REFUSED_NODE:
            lines += [f"topic readwrite crisis/{node}/{c}" for c in ("rcpt", "sync", "probe")]
        else:
            lines.append(f"topic readwrite crisis/{node}/#")
    return "\n".join(lines) + "\n"


def refused(c: Cluster, node: str, topic: str) -> list[dict[str, Any]]:
    return [e for e in c.audit(node) if e["event"] == "refused" and topic in (e["detail"] or "")]


def test_broker_refusing_a_nodes_status_and_msg_topics_does_not_stop_it(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    """Test that a node whose broker refuses its status and msg topics (ACL, PUBACK 135) keeps
    running: each refusal is audited with topic and reason, counted in `relay status --json`,
    warned in the log and retried only after a long backoff, while receipts and decisions from
    others keep flowing."""
    broker = mosquitto_factory(acl=refusing_acl())
    specs = [
        NodeSpec(n, r, (broker.url,), broker_options={"username": n})
        for n, r in (("hq", ()), ("vr07-utrecht", ("VR07",)), (REFUSED_NODE, ("VR05",)))
    ]
    c = Cluster(tmp_path / "cluster")
    c.create(specs, ISSUERS)
    try:
        for spec in specs:
            c.start(spec.name)
        for spec in specs:
            c.wait_ready(spec.name)
        status_topic = f"crisis/{REFUSED_NODE}/status"
        first = wait_until(lambda: refused(c, REFUSED_NODE, status_topic), 20,
                           "the refused status in the audit")  # fmt: skip
        assert "135" in first[0]["detail"] and first[0]["link"] == "mqtt"

        # Its own decision is refused by the broker: audited, counted, not retried soon.
        own = c.submit(REFUSED_NODE, c.sign("vr05-rbt", "Eigen besluit", to="region:VR05"))
        msg_topic = f"crisis/{REFUSED_NODE}/msg"
        # (The roster file read at start was published on the same topic and refused first.)
        rows = wait_until(lambda: [r for r in refused(c, REFUSED_NODE, msg_topic)
                                   if r["msg_id"] == own], 20,
                          "the refused decision in the audit")  # fmt: skip
        assert "135" in rows[0]["detail"]

        # Everything else flows: a decision from hq arrives, and vr05-twente's receipt for it
        # (its rcpt topic is allowed) reaches hq.
        other = c.submit("hq", c.sign("national", "Besluit voor iedereen"))
        wait_until(lambda: any(m["id"] == other for m in c.inbox(REFUSED_NODE)), 20,
                   "hq's decision at vr05-twente")  # fmt: skip
        wait_until(lambda: any(r["node"] == REFUSED_NODE and r["signed"]
                               for r in c.message("hq", other)["delivery"]), 20,
                   "vr05-twente's receipt at hq")  # fmt: skip

        out = subprocess.run(
            [sys.executable, "-m", "relay", "status", "--json",
             "--config", str(c.config_path(REFUSED_NODE))],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        st = json.loads(out.stdout)
        counts = st["refusals"]
        on_msg = len(refused(c, REFUSED_NODE, msg_topic))  # the roster and the decision, once each
        assert on_msg == 2
        assert counts[f"mqtt {status_topic}: 135 Not authorized"] == 1  # paused 60 s after one
        assert counts[f"mqtt {msg_topic}: 135 Not authorized"] == on_msg  # next try in 60 s
        assert st["engine"]["counters"]["transmit_refused"] == 1 + on_msg
        assert st["link_crashes"] == {}
        assert [lk["state"] for lk in st["links"]] == ["up"]
        assert c.procs[REFUSED_NODE].poll() is None
        log = c.log(REFUSED_NODE, tail=1_000_000)
        assert '"event": "status_refused"' in log and '"event": "transmit_refused"' in log
        assert "Traceback" not in log
        assert c.stop(REFUSED_NODE) == 0
    finally:
        c.stop_all()
