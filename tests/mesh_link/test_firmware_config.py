"""firmware_configs/: the example profile is accepted by the real CLI and holds no keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sim.conftest import RunningMesh, loopback_spec
from tests.sim.test_servers import meshtastic_cli

PROFILE = Path(__file__).resolve().parents[2] / "firmware_configs" / "relay-radio.yaml"


def test_profile_holds_no_keys() -> None:
    """Test that the committed profile has no private key, PSK or channel URL in it."""
    text = PROFILE.read_text().lower()
    active = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for secret in ("privatekey", "private_key", "psk", "channel_url", "channelurl", "adminkey"):
        assert secret not in active


@pytest.mark.radio
@pytest.mark.subprocess
def test_emulator_accepts_the_profile_through_the_cli() -> None:
    """Test that `meshtastic --configure` applies the profile and --export-config reads it back."""
    running = RunningMesh(loopback_spec(1))
    try:
        port = running.port("r1")
        configured = meshtastic_cli(port, "--configure", str(PROFILE))
        assert configured.returncode == 0, configured.stderr
        exported = meshtastic_cli(port, "--export-config", "-")
        assert exported.returncode == 0, exported.stderr
        for expected in (
            "owner: Crisis relay Zwolle",
            "role: CLIENT_BASE",
            "region: EU_868",
            "hopLimit: 3",
        ):
            assert expected in exported.stdout, expected
        settings = running.server.mesh.radios["r1"].settings
        assert settings.preset.name == "LONG_FAST"  # the enum default: export omits it
        assert not settings.config.bluetooth.enabled
    finally:
        running.stop()
