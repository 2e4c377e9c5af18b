"""A node flooded faster than it can verify and commit: the broker holds the rest, none is lost."""

import asyncio
import time
from pathlib import Path

import aiomqtt
import pytest

from relay.envelope import Audience, Decision, Kind, Precedence, seal
from relay.keys import load_private
from relay.sim.broker import Mosquitto
from relay.sim.cluster import Cluster, NodeSpec
from tests.node.util import cluster_of, inbox_ids, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.subprocess]

WINDOW = 50  # the node's inbound_queue (MQTT v5 Receive Maximum): small, so the flood overflows it
PER_CLIENT = 150


def signed(c: Cluster, issuer: str, n: int, *, to: str, first_seq: int = 1) -> list[bytes]:
    """n decisions by ``issuer`` with sequence numbers from ``first_seq`` (one key load, not one
    per decision as ``Cluster.sign``: the flood is about the node, not about signing)."""
    key = load_private(c.keys / f"{issuer}.key")
    now = int(time.time())
    return [
        seal(
            Decision(
                issued_at=now,
                expires_at=now + 3600,
                precedence=Precedence.PRIORITY,
                audience=Audience.parse(to),
                seq=first_seq + i,
                text=f"Besluit {i}: vloed {issuer}",
                kind=Kind.DECISION,
            ),
            key,
        )
        for i in range(n)
    ]


async def flood(port: int, bursts: list[list[bytes]]) -> None:
    """Each burst from its own client, all at once, QoS 1, without waiting between messages."""

    async def one(i: int, raws: list[bytes]) -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier=f"flood-{i}") as client:
            await asyncio.gather(*(client.publish(f"crisis/pub{i}/msg", r, qos=1) for r in raws))

    await asyncio.gather(*(one(i, raws) for i, raws in enumerate(bursts)))


def test_flooded_node_loses_nothing_and_shows_each_decision_once(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Test that 450 signed decisions published at once by three clients into a node that holds
    only 50 uncommitted messages all end up in its inbox exactly once (no sender retries), with
    no queue-full drop and no reconnect, and that decisions taken together shared receipts."""
    node = NodeSpec("rx", ("VR07",), (mosquitto.url,), mqtt_options={"inbound_queue": WINDOW})
    with cluster_of(tmp_path, [node]) as c:
        # Each publisher keeps its issuer's sequence numbers in order on the wire (the replay
        # window would refuse sequence numbers far out of order).
        bursts = [
            signed(c, "national", PER_CLIENT, to="region:VR07"),
            signed(c, "vr07-rbt", PER_CLIENT, to="region:VR07"),
            signed(c, "national", PER_CLIENT, to="all", first_seq=PER_CLIENT + 1),
        ]
        asyncio.run(flood(mosquitto.port, bursts))
        want = 3 * PER_CLIENT
        wait_until(lambda: len(inbox_ids(c, "rx")) >= want, 60, f"{want} decisions at rx")
        ids = inbox_ids(c, "rx")
        assert len(ids) == len(set(ids)) == want
        status = c.status("rx")
        assert status["overload_drops"] == 0
        mqtt = next(lk for lk in status["links"] if lk["kind"] == "mqtt")["mqtt"]
        # Every message was acknowledged only after its commit. Where the broker oversteps the
        # Receive Maximum (mosquitto 2.0.11) the link stopped reading instead of dropping:
        # nothing had to be re-sent, so no drop and no reconnect.
        assert mqtt["acked"] >= want
        assert mqtt["rejected_queue_full"] == 0
        assert mqtt["connects"] == 1
        counters = status["engine"]["counters"]
        assert counters["delivered"] == want
        # Taken many at a time, the decisions shared receipts (relay.engine.receipts): fewer
        # signatures and publishes than decisions, and still one receipt on record for each.
        assert counters["receipts_shared"] > 0
