"""Relay nodes (real processes) over brokers built from the kit: TLS client certificates,
signed statuses, a regional broker bridged to a national one, and a status flood."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from relay.engine.status import seal_status
from relay.keys import load_private
from relay.kit import Kit, write_kit
from relay.sim.broker import Mosquitto
from relay.sim.cluster import Cluster, NodeSpec
from relay.sim.net import free_port
from tests.kit.support import kit_root
from tests.node.util import ISSUERS, inbox_ids, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.subprocess]

# Fewer than the link's inbound queue (1000): a larger retained burst overflows it and the rest
# is dropped as queue-full (counted by the link, not by the status check this test is about).
FLOOD = 800


def _spec(name: str, regions: tuple[str, ...], kit: Kit) -> NodeSpec:
    cert, key = kit.nodes[name]
    return NodeSpec(name, regions, (f"mqtts://127.0.0.1:{kit.port}",), mqtt_tls=(kit.ca, cert, key))


@contextmanager
def _running(tmp: Path, specs: list[NodeSpec]) -> Iterator[Cluster]:
    c = Cluster(tmp / "cluster")
    c.create(specs, ISSUERS)
    try:
        for spec in specs:
            c.start(spec.name)
        for spec in specs:
            c.wait_ready(spec.name, timeout=40)
        yield c
    finally:
        c.stop_all()


def _holds(c: Cluster, node: str, msg_id: str) -> Callable[[], bool]:
    return lambda: msg_id in inbox_ids(c, node)


def _hears(c: Cluster, node: str, peers: set[str]) -> Callable[[], bool]:
    return lambda: peers <= _online_peers(c, node)


def _online_peers(c: Cluster, node: str) -> set[str]:
    peers = c.status(node)["peers"]
    return {p for p, info in peers.items() if info.get("state") == "online"}


def test_nodes_relay_decisions_over_the_kit_broker_with_signed_status(tmp_path: Path) -> None:
    """Test that nodes with kit certificates relay a decision and accept each other's signed
    statuses, rejecting none."""
    names = ["hq", "vr07-utrecht", "vr05-twente"]
    with kit_root() as root:
        kit = write_kit(
            root / "kit", ca_name="test CA", nodes=names, port=free_port(), bind="127.0.0.1"
        )
        regions = {"hq": (), "vr07-utrecht": ("VR07",), "vr05-twente": ("VR05",)}
        specs = [_spec(n, regions[n], kit) for n in names]
        with (
            Mosquitto.from_kit(kit.conf, port=kit.port),
            _running(tmp_path, specs) as c,
        ):
            msg_id = c.submit("hq", c.sign("national", "Besluit: scholen dicht.", to="all"))
            for node in names[1:]:
                wait_until(_holds(c, node, msg_id), 30, f"{node} inbox")
            for node in names:
                wait_until(_hears(c, node, set(names)), 30, "peers")
                engine = c.status(node)["engine"]
                assert engine["counters"].get("statuses_rejected", 0) == 0


def test_regional_broker_bridged_to_a_national_one(tmp_path: Path) -> None:
    """Test that two regional kit brokers bridged to a national kit broker carry a decision
    between regions, and that with the national broker stopped one region still works."""
    with kit_root() as root, ExitStack() as stack:
        national = write_kit(
            root / "national",
            ca_name="national test CA",
            nodes=[],
            port=free_port(),
            bind="127.0.0.1",
            bridge_from=["bridge-vr07", "bridge-vr05"],
        )
        up = ("127.0.0.1", national.port)
        vr07 = write_kit(
            root / "vr07", ca_name="x", name="vr07", ca=national.directory,
            nodes=["vr07-a", "vr07-b"], port=free_port(), bind="127.0.0.1", bridge_to=[up],
        )  # fmt: skip
        vr05 = write_kit(
            root / "vr05", ca_name="x", name="vr05", ca=national.directory,
            nodes=["vr05-a"], port=free_port(), bind="127.0.0.1", bridge_to=[up],
        )  # fmt: skip
        nat = stack.enter_context(Mosquitto.from_kit(national.conf, port=national.port))
        for kit in (vr07, vr05):
            stack.enter_context(Mosquitto.from_kit(kit.conf, port=kit.port))
        nat.wait_for_log("as bridge-vr07", timeout=20)
        nat.wait_for_log("as bridge-vr05", timeout=20)
        specs = [
            _spec("vr07-a", ("VR07",), vr07),
            _spec("vr07-b", ("VR07",), vr07),
            _spec("vr05-a", ("VR05",), vr05),
        ]
        c = stack.enter_context(_running(tmp_path, specs))
        across = c.submit("vr07-a", c.sign("national", "Besluit: landelijk.", to="all"))
        for node in ("vr07-b", "vr05-a"):
            wait_until(_holds(c, node, across), 30, f"{node} inbox")
        wait_until(lambda: {"vr07-a", "vr07-b"} <= _online_peers(c, "vr05-a"), 30, "peers")

        nat.stop()
        local = c.submit("vr07-b", c.sign("vr07-rbt", "Besluit: regionaal.", to="region:VR07"))
        wait_until(lambda: local in inbox_ids(c, "vr07-a"), 30, "vr07-a inbox, national down")
        receipt = c.message("vr07-b", local)
        assert "vr07-a" in str(receipt["delivery"])


def _publish_many(port: int, items: list[tuple[str, bytes]]) -> None:
    done = threading.Event()
    acked: set[int] = set()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="flood", protocol=paho.MQTTv5)

    def on_publish(c: object, u: object, mid: int, rc: object, p: object) -> None:
        acked.add(mid)
        if len(acked) == len(items):
            done.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    for topic, payload in items:
        client.publish(topic, payload, qos=1, retain=True)
    assert done.wait(60), f"{len(acked)} of {len(items)} acknowledged"
    client.disconnect()
    client.loop_stop()


def test_retained_status_flood_on_an_open_broker_makes_no_peers(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Test that 800 fake retained statuses and a forged one give no peers or gateways, are
    counted as rejected, and stay out after a restart."""
    url = (mosquitto.url,)
    specs = [NodeSpec("hq", (), url), NodeSpec("vr07-utrecht", ("VR07",), url)]
    c = Cluster(tmp_path / "cluster")
    c.create(specs, ISSUERS)
    other_key = load_private(c.keys / "vr07-utrecht.key")
    fakes = [
        (f"crisis/ghost{i}/status", b'{"state":"online","gateway":true}') for i in range(FLOOD)
    ]
    fakes.append(("crisis/vr07-rbt/status", seal_status({"gateway": True}, other_key, time.time())))
    _publish_many(mosquitto.port, fakes)
    try:
        c.start("hq")
        c.wait_ready("hq")

        def rejected() -> int:
            return int(c.status("hq")["engine"]["counters"].get("statuses_rejected", 0))

        wait_until(lambda: rejected() >= FLOOD + 1, 60, "every fake status rejected")
        c.start("vr07-utrecht")
        c.wait_ready("vr07-utrecht")
        wait_until(lambda: "vr07-utrecht" in _online_peers(c, "hq"), 30, "genuine peer")
        status = c.status("hq")
        assert set(status["peers"]) <= {"hq", "vr07-utrecht"}
        assert set(status["engine_peers"]) <= {"hq", "vr07-utrecht"}
        assert not status["gateway_peers"]
        assert status["rejections"].get("unsigned", 0) >= FLOOD
        assert status["rejections"].get("wrong-signer", 0) >= 1
        c.stop("hq")
        c.start("hq")
        c.wait_ready("hq")
        # hq resumes its persistent session, so the broker does not hand it the retained statuses
        # again (only a new subscription gets them); the genuine peer is heard by its heartbeat.
        wait_until(lambda: "vr07-utrecht" in _online_peers(c, "hq"), 30, "genuine peer again")
        status = c.status("hq")
        assert set(status["peers"]) <= {"hq", "vr07-utrecht"}
        assert set(status["engine_peers"]) <= {"hq", "vr07-utrecht"}
        assert not status["gateway_peers"]
        assert rejected() == 0  # none of the fakes came back
    finally:
        c.stop_all()
