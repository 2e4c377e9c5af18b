"""MeshDriver (bridge + core) against the device emulator through the unmodified library."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from pathlib import Path

import pytest

from relay.config import RadioEntry
from relay.engine.ops import Transmit
from relay.envelope import message_id
from relay.links import LinkUnavailable
from relay.links.mesh_driver import MeshDriver
from relay.links.meshtastic_bridge import BridgeSettings
from relay.mesh.frames import fragment_count
from relay.vocab import OutboundChannelName
from tests.mesh_link.support import WAIT_S, RecordingHost
from tests.sim.conftest import RunningMesh, loopback_spec
from tests.world import standard_world

FAST_RECONNECT = BridgeSettings(backoff_initial_s=0.2, backoff_max_s=1.0)


def transmit(raw: bytes, *, channel: OutboundChannelName = "msg", precedence: int = 2) -> Transmit:
    return Transmit("mesh", channel, message_id(raw), raw, precedence)


def long_text(seed: int = 1) -> str:
    r = random.Random(seed)
    words = ("Sector", "Wijk", "Straat", "Haven")
    return " ".join(f"{r.choice(words)} {r.randrange(10**6)}" for _ in range(90))


class Pair:
    """Two drivers on two emulated radios, each with a recording host."""

    def __init__(self, a: RadioEntry, b: RadioEntry) -> None:
        self.host_a, self.host_b = RecordingHost(), RecordingHost()
        self.a = MeshDriver(self.host_a, a, bridge_settings=FAST_RECONNECT)
        self.b = MeshDriver(self.host_b, b, bridge_settings=FAST_RECONNECT)

    async def up(self) -> None:
        await self.host_a.wait_for(lambda: self.host_a.state == "up")
        await self.host_b.wait_for(lambda: self.host_b.state == "up")

    def got(self, raw: bytes, channel: str = "msg") -> bool:
        return any(r == raw and c == channel for _, r, c in self.host_b.received)


async def with_pair(pair: Pair, body: object) -> None:
    async def scenario() -> None:
        try:
            await pair.up()
            await body  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()

    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(pair.a.run(), name="mesh-a"),
            tg.create_task(pair.b.run(), name="mesh-b"),
        ]
        tg.create_task(scenario(), name="scenario")


@pytest.mark.radio
def test_driver_sends_single_multi_frame_and_receipt_over_tcp() -> None:
    """Test that a decision, a 3-frame decision and a receipt sent by one driver reach the other."""
    running = RunningMesh(loopback_spec(2))
    w = standard_world()
    small = w.sign("national")
    large = w.sign("national", long_text())
    receipt = w.sign("vr07-utrecht", "ontvangen")
    assert fragment_count(len(large)) == 3
    try:
        pair = Pair(
            RadioEntry("mesh", tcp=("127.0.0.1", running.port("r1"))),
            RadioEntry("mesh", tcp=("127.0.0.1", running.port("r2"))),
        )

        async def body() -> None:
            async with asyncio.timeout(WAIT_S):
                await asyncio.gather(
                    pair.a.send(transmit(small)),
                    pair.a.send(transmit(large)),
                    pair.a.send(transmit(receipt, channel="rcpt")),
                )
            await pair.host_b.wait_for(
                lambda: pair.got(small) and pair.got(large) and pair.got(receipt, "rcpt")
            )
            stats = pair.a.describe()["mesh"]
            assert stats["counters"]["frames_sent"] == 5  # 1 + 3 + one receipt bundle
            assert stats["counters"]["done_ok"] == 3
            assert stats["airtime_used_s"] > 0
            assert pair.b.describe()["mesh"]["counters"]["frames_received"] == 5

        asyncio.run(with_pair(pair, body()))
        assert pair.host_b.rejected == []
    finally:
        running.stop()


@pytest.mark.radio
def test_driver_over_a_pty_serial_port() -> None:
    """Test that a driver on a serial (pty) radio sends a decision to a driver on a TCP radio."""
    running = RunningMesh(loopback_spec(2, pty=True))
    raw = standard_world().sign("national")
    try:
        path = running.server.pty_path("r1")
        assert path is not None
        pair = Pair(
            RadioEntry("mesh", serial=path),
            RadioEntry("mesh", tcp=("127.0.0.1", running.port("r2"))),
        )

        async def body() -> None:
            async with asyncio.timeout(WAIT_S):
                await pair.a.send(transmit(raw))
            await pair.host_b.wait_for(lambda: pair.got(raw))

        asyncio.run(with_pair(pair, body()))
    finally:
        running.stop()


@pytest.mark.radio
def test_unplugged_radio_recovers_and_multi_frame_message_completes() -> None:
    """Test that unplugging the sender's radio mid-message fails the send, then it recovers and
    the message completes after the radio is plugged back in."""
    running = RunningMesh(loopback_spec(2, time_scale=10.0))
    raw = standard_world().sign("national", long_text(2))
    try:
        pair = Pair(
            RadioEntry("mesh", tcp=("127.0.0.1", running.port("r1"))),
            RadioEntry("mesh", tcp=("127.0.0.1", running.port("r2"))),
        )
        seen_down = asyncio.Event()

        async def unplug_after_first_frame() -> None:
            await pair.host_a.wait_for(
                lambda: pair.a.core.counters["frames_sent"] >= 1, pair.a.activity
            )
            await asyncio.to_thread(running.call, lambda: running.server.unplug("r1"))
            await pair.host_a.wait_for(lambda: pair.host_a.state == "down")
            seen_down.set()
            await asyncio.to_thread(running.call, lambda: running.server.replug("r1"))

        async def body() -> None:
            async with asyncio.timeout(2 * WAIT_S):
                unplugging = asyncio.create_task(unplug_after_first_frame())
                failures = 0
                while True:  # what the engine does: retry once the link is back
                    try:
                        await pair.a.send(transmit(raw))
                        break
                    except LinkUnavailable:
                        failures += 1
                        await seen_down.wait()
                        await pair.host_a.wait_for(lambda: pair.host_a.state == "up")
                await unplugging
                assert failures >= 1
            await pair.host_b.wait_for(lambda: pair.got(raw))

        asyncio.run(with_pair(pair, body()))
        states = [s for _, s, _ in pair.host_a.states]
        assert states[-3:] == ["up", "down", "up"] or "down" in states
        assert pair.a.bridge.statistics()["connects"] >= 2
    finally:
        running.stop()


@pytest.mark.radio
def test_packets_buffered_while_the_receiver_was_unplugged_arrive_after_replug() -> None:
    """Test that what the receiving radio heard while unplugged reaches its driver after replug."""
    running = RunningMesh(loopback_spec(2, time_scale=10.0))
    raw = standard_world().sign("national", "Besluit: gemaal Kampen blijft draaien.")
    try:
        pair = Pair(
            RadioEntry("mesh", tcp=("127.0.0.1", running.port("r1"))),
            RadioEntry("mesh", tcp=("127.0.0.1", running.port("r2"))),
        )

        async def body() -> None:
            await asyncio.to_thread(running.call, lambda: running.server.unplug("r2"))
            await pair.host_b.wait_for(lambda: pair.host_b.state == "down")
            async with asyncio.timeout(WAIT_S):
                await pair.a.send(transmit(raw))  # r2 still meshes: it rebroadcasts, r1 hears it
            assert not pair.got(raw)
            await asyncio.to_thread(running.call, lambda: running.server.replug("r2"))
            await pair.host_b.wait_for(lambda: pair.got(raw))
            assert pair.host_b.state == "up"

        asyncio.run(with_pair(pair, body()))
    finally:
        running.stop()


@pytest.mark.radio
def test_serial_radio_unplugged_and_replugged_resumes_without_restart(tmp_path: Path) -> None:
    """Test that a serial (pty) radio unplugged and replugged at its stable path works again."""
    spec = loopback_spec(2, time_scale=10.0)
    link = str(tmp_path / "ttyUSB-by-id")  # what udev's /dev/serial/by-id link gives a real radio
    spec = dataclasses.replace(
        spec, radios=(dataclasses.replace(spec.radios[0], pty=link), *spec.radios[1:])
    )
    running = RunningMesh(spec)
    w = standard_world()
    before = w.sign("national", "Besluit: zandzakken naar Kampen.")
    after = w.sign("national", "Besluit: evacuatie Zwolle-Zuid.")
    try:
        pair = Pair(
            RadioEntry("mesh", serial=link),
            RadioEntry("mesh", tcp=("127.0.0.1", running.port("r2"))),
        )

        async def body() -> None:
            async with asyncio.timeout(2 * WAIT_S):
                await pair.a.send(transmit(before))
                await pair.host_b.wait_for(lambda: pair.got(before))
                await asyncio.to_thread(running.call, lambda: running.server.unplug("r1"))
                await pair.host_a.wait_for(lambda: pair.host_a.state == "down")
                await asyncio.to_thread(running.call, lambda: running.server.replug("r1"))
                await pair.host_a.wait_for(lambda: pair.host_a.state == "up")
                await pair.a.send(transmit(after))
            await pair.host_b.wait_for(lambda: pair.got(after))

        asyncio.run(with_pair(pair, body()))
        assert pair.a.bridge.statistics()["connects"] >= 2
    finally:
        running.stop()
