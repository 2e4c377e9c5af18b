"""At connect the mesh driver reads the radio's own preset, region and channel key, and warns."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from relay.config import RadioEntry
from relay.links.mesh_driver import MeshDriver
from tests.mesh_link.support import RecordingHost
from tests.mesh_link.test_driver_emulator import FAST_RECONNECT
from tests.sim.conftest import RunningMesh, loopback_spec
from tests.sim.test_servers import meshtastic_cli

pytestmark = [pytest.mark.radio, pytest.mark.subprocess]


async def connect_and_describe(drivers: list[MeshDriver], hosts: list[RecordingHost]) -> None:
    async def scenario() -> None:
        try:
            for driver, host in zip(drivers, hosts, strict=True):
                await host.wait_for(lambda h=host: h.state == "up")  # type: ignore[misc]
                assert driver.radio_config is not None
        finally:
            for task in tasks:
                task.cancel()

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(d.run(), name=f"mesh-{i}") for i, d in enumerate(drivers)]
        tg.create_task(scenario(), name="scenario")


def test_driver_reports_radio_preset_and_region_that_differ_from_config() -> None:
    """Test that a MEDIUM_FAST emulator with a LONG_FAST config, one set to region US by the real
    CLI and the public default channel key are reported (describe()), and a matching radio with
    a private key is not."""
    spec = loopback_spec(3)
    spec = dataclasses.replace(
        spec, radios=tuple(dataclasses.replace(r, preset="MEDIUM_FAST") for r in spec.radios)
    )
    running = RunningMesh(spec)
    try:
        # The radio's region is changed through the device API, as an operator would.
        done = meshtastic_cli(running.port("r2"), "--set", "lora.region", "US")
        assert done.returncode == 0, done.stderr
        assert running.server.mesh.radios["r2"].settings.config.lora.region != 3  # not EU_868
        # Only r3 gets a private channel key, as firmware_configs/README.md tells operators.
        keyed = meshtastic_cli(running.port("r3"), "--ch-index", "0", "--ch-set", "psk", "random")
        assert keyed.returncode == 0, keyed.stderr
        hosts = [RecordingHost() for _ in range(3)]
        entries = [
            RadioEntry("mesh", tcp=("127.0.0.1", running.port("r1"))),  # LONG_FAST by default
            RadioEntry("mesh", tcp=("127.0.0.1", running.port("r2")), preset="MEDIUM_FAST"),
            RadioEntry("mesh", tcp=("127.0.0.1", running.port("r3")), preset="MEDIUM_FAST"),
        ]
        drivers = [
            MeshDriver(h, e, bridge_settings=FAST_RECONNECT)
            for h, e in zip(hosts, entries, strict=True)
        ]
        asyncio.run(connect_and_describe(drivers, hosts))
        seen = [d.describe()["mesh"] for d in drivers]
        assert seen[0]["radio_config"] == {
            "preset": "MEDIUM_FAST",
            "region": "EU_868",
            "channel_key": "default",
            "configured_preset": "LONG_FAST",
            "warnings": ["preset-mismatch", "public-channel-key"],
        }
        assert seen[0]["preset"] == "LONG_FAST"  # the ledger keeps the configured preset
        assert seen[1]["radio_config"]["region"] == "US"
        assert seen[1]["radio_config"]["warnings"] == ["region-not-eu868", "public-channel-key"]
        assert seen[2]["radio_config"]["channel_key"] == "private"
        assert seen[2]["radio_config"]["warnings"] == []
        assert seen[2]["preset"] == "MEDIUM_FAST"
        assert seen[2]["nack_delay_s"] < seen[0]["nack_delay_s"]
    finally:
        running.stop()
