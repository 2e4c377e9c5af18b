"""Relay nodes on a 3-member RabbitMQ cluster (MQTT plugin, v3.1.1): one member dies mid-traffic."""

import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from relay.sim import rabbitmq
from relay.sim.cluster import Cluster, NodeSpec
from tests.node.test_mqtt_nodes import AUDIENCES
from tests.node.util import PRECEDENCES, cluster_of, inbox_ids, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.broker,
    pytest.mark.subprocess,
    pytest.mark.skipif(
        not rabbitmq.available(),
        reason="rabbitmq-server is not installed: run deploy/dev-setup.sh --rabbitmq "
        "(apt-get install -y rabbitmq-server)",
    ),
]

DECISIONS = 60


def _nodes(urls: list[str]) -> list[NodeSpec]:
    """Three nodes, each listing the three members first-to-last from a different one."""
    names = [("hq", ()), ("vr07-utrecht", ("VR07",)), ("vr05-twente", ("VR05",))]
    return [
        NodeSpec(name, regions, tuple(urls[i:] + urls[:i]), mqtt_options={"protocol": "v311"})
        for i, (name, regions) in enumerate(names)
    ]


def _send(c: Cluster, sent: dict[str, str], rng: random.Random, stop: threading.Event) -> None:
    for i in range(DECISIONS):
        if stop.is_set():
            return
        issuer, audience = rng.choice(AUDIENCES)
        via = rng.choice(sorted(c.specs))
        raw = c.sign(issuer, f"Besluit {i} voor {audience}", to=audience,
                     precedence=rng.choice(PRECEDENCES))  # fmt: skip
        sent[c.submit(via, raw)] = audience
        time.sleep(0.1)  # paced traffic: the kill lands in the middle of it


def test_a_member_killed_mid_traffic_loses_nothing_and_doubles_nothing(tmp_path: Path) -> None:
    """Test that relay nodes on a 3-member RabbitMQ cluster with quorum session queues lose
    no decision and show none twice when the member hq is connected to is SIGKILLed."""
    with rabbitmq.RabbitCluster(size=3, workdir=tmp_path / "mq") as mq:
        assert len(mq.running_members()) == 3
        with cluster_of(tmp_path, _nodes(mq.urls)) as c:
            # Persistent sessions are quorum queues, replicated on all three members.
            queues = mq.ctl(1, "list_queues", "name", "type", "members", "--formatter", "json")
            assert '"type":"quorum"' in queues.replace(" ", ""), queues
            sent: dict[str, str] = {}
            stop = threading.Event()
            sender = threading.Thread(target=_send, args=(c, sent, random.Random(19), stop))
            sender.start()
            try:
                wait_until(lambda: len(sent) >= DECISIONS // 3, 60, "a third of the traffic")
                mq.kill(0)  # hq's first broker, vr05-twente's second
            finally:
                sender.join(timeout=120)
                stop.set()
            assert len(sent) == DECISIONS
            for node in c.specs:
                want = {i for i, aud in sent.items() if node in c.recipients(aud)}

                def have(n: str = node, w: set[str] = want) -> bool:
                    return w <= set(inbox_ids(c, n))

                wait_until(have, 120, f"{len(want)} decisions at {node}")
                ids = inbox_ids(c, node)
                assert len(ids) == len(set(ids)), f"duplicates in the inbox of {node}"
                assert {i for i in ids if i in sent} == want
                shown = Counter(e["msg_id"] for e in c.audit(node) if e["event"] == "delivered")
                assert max(shown.values()) == 1, f"{node} showed a decision twice"
            # hq moved to another member; the killed one is gone from the cluster's running set.
            assert len(mq.running_members(1)) == 2
            links = c.status("hq")["links"]
            assert any(lk["state"] == "up" for lk in links), links
            # ... and found its session there: the quorum queue outlived the member.
            assert '"connected, session resumed"' in c.log("hq", tail=1_000_000)
