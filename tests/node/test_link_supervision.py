"""A link that crashes is restarted with backoff; the node keeps running (and says so)."""

from __future__ import annotations

import asyncio
import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest

from relay import daemon
from relay.config import load
from relay.engine.ops import Transmit
from relay.envelope import Reason
from relay.links import LinkHost, LinkUnavailable
from relay.links import mqtt as mqtt_link
from relay.links.mqtt_driver import MqttDriver
from relay.sim.cluster import Cluster, IssuerSpec, NodeSpec


class CrashingLink:
    """A link with a bug: its run() fails ``crashes`` times, then it runs until cancelled."""

    kind = "mqtt"

    def __init__(self, crashes: int) -> None:
        self.name = "flaky"
        self.crashes = crashes
        self.runs = 0
        self.survived = asyncio.Event()

    async def run(self) -> None:
        self.runs += 1
        if self.runs <= self.crashes:
            raise RuntimeError(f"bug number {self.runs}")
        self.survived.set()
        await asyncio.Event().wait()

    async def send(self, t: Transmit) -> None:
        raise LinkUnavailable("never up")

    async def publish_status(self, status: dict[str, Any]) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {}


def test_crashed_link_is_restarted_with_backoff_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test that a link whose run() raises is logged, counted, reported down and restarted."""
    monkeypatch.setattr(daemon, "LINK_RESTART_MIN_S", 0.05)
    cluster = Cluster(tmp_path)
    # A real MQTT link towards a closed loopback port keeps the config valid; it just retries.
    cluster.create([NodeSpec("solo", ("VR07",), ("mqtt://127.0.0.1:1",))], [IssuerSpec("national")])
    node = daemon.Node(load(cluster.config_path("solo")))
    link = CrashingLink(crashes=3)
    node.add_link(link)

    async def scenario() -> dict[str, Any]:
        running = asyncio.create_task(node.run())
        try:
            async with asyncio.timeout(20):
                await link.survived.wait()
                status = await node._api({"op": "status"})
        finally:
            node.stop()
            await running
        return status

    status = asyncio.run(scenario())
    assert status["link_crashes"] == {"flaky": 3}
    (view,) = [v for v in status["links"] if v["name"] == "flaky"]
    assert view["state"] == "down"  # it never came up: the restarted run() did not say "up"


class RecordingHost:
    def __init__(self) -> None:
        self.rejected: list[tuple[str, Reason, str]] = []

    def link_rejected(self, link: str, reason: Reason, detail: str) -> None:
        self.rejected.append((link, reason, detail))

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected host call {name}")


def test_every_inbound_rejection_of_the_mqtt_link_maps_to_a_reason(tmp_path: Path) -> None:
    """Test that each reason the MQTT link rejects inbound with becomes a counted Reason."""
    cluster = Cluster(tmp_path)
    cluster.create([NodeSpec("solo", ("VR07",), ("mqtt://127.0.0.1:1",))], [IssuerSpec("national")])
    host = RecordingHost()
    driver = MqttDriver(typing.cast(LinkHost, host), load(cluster.config_path("solo")))
    reasons = typing.get_args(mqtt_link.RejectReason)
    assert "queue-full" in reasons
    for reason in reasons:
        driver._on_event(mqtt_link.InboundRejected(reason, "crisis/x/msg", 7, "mqtt://b"))
    assert [r for _, r, _ in host.rejected] == [Reason(r) for r in reasons]


def test_the_input_queue_holds_the_whole_mqtt_window(tmp_path: Path) -> None:
    """Test that the daemon's input queue is larger than the MQTT window the config sets."""
    cluster = Cluster(tmp_path)
    cluster.create([NodeSpec("solo", ("VR07",), ("mqtt://127.0.0.1:1",))], [IssuerSpec("national")])
    cfg = load(cluster.config_path("solo"))
    assert cfg.mqtt is not None
    for window in (1000, 65535):
        wide = dataclasses.replace(cfg, mqtt=dataclasses.replace(cfg.mqtt, inbound_queue=window))
        assert daemon.Node(wide)._inputs.maxsize > window
