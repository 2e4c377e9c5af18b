"""firmware_configs/: one profile per role, accepted by the real CLI, holding no keys."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from meshtastic.protobuf.config_pb2 import Config

from relay.sim.settings import DEFAULT_PSK
from tests.sim.conftest import RunningMesh, loopback_spec
from tests.sim.test_servers import CLI_TIMEOUT, MESHTASTIC

PROFILES = Path(__file__).resolve().parents[2] / "firmware_configs"
Role = Config.DeviceConfig.Role
ROLES = {"gateway-site.yaml": "CLIENT", "field-post.yaml": "CLIENT", "mast-repeater.yaml": "ROUTER"}


def active_lines(path: Path) -> str:
    return "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#"))


def test_there_is_one_profile_per_role_and_no_other() -> None:
    """Test that firmware_configs/ holds exactly the gateway, field post and mast profiles."""
    assert sorted(p.name for p in PROFILES.glob("*.yaml")) == sorted(ROLES)


@pytest.mark.parametrize("name", sorted(ROLES))
def test_profile_holds_no_keys_and_says_loudly_that_the_key_is_public(name: str) -> None:
    """Test that a profile has no key or channel URL, and warns that the default key is public."""
    path = PROFILES / name
    active = active_lines(path).lower()
    for secret in ("privatekey", "private_key", "psk", "channel_url", "channelurl", "adminkey"):
        assert secret not in active
    text = path.read_text()
    assert "!!! STOP - THIS PROFILE DOES NOT SET THE CHANNEL KEY !!!" in text
    assert "--ch-set psk random" in text and "--seturl" in text
    assert f"role: {ROLES[name]}" in active_lines(path)
    assert "CORE_PORTNUMS_ONLY" not in active_lines(path)  # it would drop our portnum 256


def test_readme_puts_the_channel_key_warning_first() -> None:
    """Test that firmware_configs/README.md opens with the channel-key warning."""
    head = (PROFILES / "README.md").read_text().split("\n## ")[0]
    assert "STOP: no profile here sets the channel key" in head
    assert "public default key" in head


@pytest.mark.radio
@pytest.mark.subprocess
def test_each_profile_applies_through_the_cli_and_exports_back() -> None:
    """Test that `meshtastic --configure` applies every profile to an emulated radio, that
    --export-config reads back role, region and settings, and the channel key stays default."""
    names = sorted(ROLES)
    running = RunningMesh(loopback_spec(len(names)))
    radios = {name: f"r{i + 1}" for i, name in enumerate(names)}

    def cli_all(*args: str, per: dict[str, list[str]] | None = None) -> dict[str, str]:
        # The radios are independent: run the CLI for all of them at once.
        procs = {
            name: subprocess.Popen(
                [
                    MESHTASTIC,
                    "--host",
                    f"127.0.0.1:{running.port(radios[name])}",
                    *args,
                    *(per or {}).get(name, []),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in names
        }
        out = {}
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=CLI_TIMEOUT)
            assert proc.returncode == 0, f"{name}: {stderr}"
            out[name] = stdout
        return out

    try:
        cli_all("--configure", per={n: [str(PROFILES / n)] for n in names})
        exported = cli_all("--export-config", "-")
        for name in names:
            text = exported[name]
            for expected in ("region: EU_868", "hopLimit: 3", "rebroadcastMode: LOCAL_ONLY",
                             "nodeInfoBroadcastSecs: 21600"):  # fmt: skip
                assert expected in text, (name, expected)
            settings = running.server.mesh.radios[radios[name]].settings
            role = Role.Name(settings.config.device.role)
            assert role == ROLES[name]
            assert role == "CLIENT" or f"role: {role}" in text  # CLIENT: the enum default, omitted
            lora = settings.config.lora
            assert settings.preset.name == "LONG_FAST"  # the enum default: export omits it
            assert lora.use_preset and lora.tx_enabled
            assert not lora.override_duty_cycle and not lora.config_ok_to_mqtt
            assert settings.duty_cycle == pytest.approx(0.10)
            assert not settings.module_config.mqtt.enabled
            assert not settings.config.bluetooth.enabled
            assert settings.owner.long_name.startswith("Crisis relay VR07")
            # Applying a profile leaves the public default key: the README's step is needed.
            assert settings.channels[0].settings.psk == DEFAULT_PSK
    finally:
        running.stop()
