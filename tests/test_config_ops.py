"""relay.toml: state paths against the state directory, and the mesh radio's preset key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from relay import airtime
from relay.config import ConfigError, parse
from relay.mesh.core import MeshCore
from relay.mesh.events import CoreSettings

CONFIG = Path("/etc/crisis-relay/relay.toml")


def _doc(node: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    return {
        "node": {"name": "vr07-post", "key": "keys/vr07-post.key", **(node or {})},
        "trust": {"root": "keys/root.pub", "roster": "roster.cbor"},
        "mesh": {"radio": [{"tcp": "127.0.0.1:4403"}]},
        **more,
    }


def test_state_paths_resolve_against_state_directory() -> None:
    """Test that relative store and socket paths go to $STATE_DIRECTORY, read-only ones do not."""
    cfg = parse(_doc({"store": "var/relay.db"}), CONFIG,
                environ={"STATE_DIRECTORY": "/var/lib/crisis-relay"})  # fmt: skip
    assert cfg.state_dir == Path("/var/lib/crisis-relay")
    assert cfg.store == Path("/var/lib/crisis-relay/var/relay.db")
    assert cfg.api_socket == Path("/var/lib/crisis-relay/var/relay.sock")
    # Files the node only reads stay next to the config.
    assert cfg.key == Path("/etc/crisis-relay/keys/vr07-post.key")
    assert cfg.roster == Path("/etc/crisis-relay/roster.cbor")


def test_state_directory_list_takes_its_first_entry() -> None:
    """Test that a colon-separated $STATE_DIRECTORY (several StateDirectory=) uses the first."""
    cfg = parse(_doc(), CONFIG, environ={"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"})
    assert cfg.store == Path("/var/lib/a/var/relay.db")


def test_state_dir_key_wins_and_absolute_paths_stay() -> None:
    """Test that node.state_dir beats $STATE_DIRECTORY and an absolute store is kept as given."""
    doc = _doc({"state_dir": "/srv/relay", "store": "/data/relay.db"})
    cfg = parse(doc, CONFIG, environ={"STATE_DIRECTORY": "/var/lib/crisis-relay"})
    assert (cfg.state_dir, cfg.store) == (Path("/srv/relay"), Path("/data/relay.db"))
    assert cfg.api_socket == Path("/srv/relay/var/relay.sock")


def test_without_state_directory_paths_follow_the_config_file() -> None:
    """Test that without $STATE_DIRECTORY or state_dir the config file's directory is the base."""
    cfg = parse(_doc(), CONFIG, environ={})
    assert cfg.store == Path("/etc/crisis-relay/var/relay.db")


def test_relative_state_directory_is_refused() -> None:
    """Test that a relative $STATE_DIRECTORY is a clear error naming the variable."""
    with pytest.raises(ConfigError, match=r"\$STATE_DIRECTORY: must be an absolute path"):
        parse(_doc(), CONFIG, environ={"STATE_DIRECTORY": "var/lib"})


def test_preset_key_is_validated_and_normalised() -> None:
    """Test that mesh.radio[].preset accepts the firmware's names and refuses unknown ones."""
    radio = {"tcp": "127.0.0.1:4403", "preset": "MEDIUM_FAST"}
    assert parse(_doc(mesh={"radio": [radio]}), CONFIG, environ={}).radios[0].preset == (
        "MEDIUM_FAST"
    )
    camel = {"serial": "/dev/ttyACM0", "preset": "ShortFast"}
    assert parse(_doc(mesh={"radio": [camel]}), CONFIG, environ={}).radios[0].preset == (
        "SHORT_FAST"
    )
    assert parse(_doc(), CONFIG, environ={}).radios[0].preset == "LONG_FAST"
    bad = {"tcp": "127.0.0.1:4403", "preset": "VERY_FAST"}
    with pytest.raises(ConfigError, match=r"mesh\.radio\[0\]\.preset: unknown modem preset "
                       r"'VERY_FAST'; one of .*LONG_FAST"):  # fmt: skip
        parse(_doc(mesh={"radio": [bad]}), CONFIG, environ={})


def test_preset_sets_airtime_timers_and_gateway_slot() -> None:
    """Test that the preset drives the ledger's frame cost, fragment timers and bridge slot."""
    long_fast = MeshCore(CoreSettings.for_preset("LONG_FAST"))
    medium = MeshCore(CoreSettings.for_preset("MEDIUM_FAST"))
    slow = MeshCore(CoreSettings.for_preset("LONG_SLOW"))
    frame = bytes(200)
    assert long_fast.airtime_of(frame) / medium.airtime_of(frame) == pytest.approx(3.4, rel=0.1)
    # LONG_FAST keeps the measured defaults; the others scale with a full frame's airtime.
    assert long_fast.settings == CoreSettings()
    assert medium.reassembler.nack_delay_s < long_fast.reassembler.nack_delay_s
    assert slow.reassembler.nack_delay_s > 6 * long_fast.reassembler.nack_delay_s
    assert slow.settings.ack_timeout_s > long_fast.settings.ack_timeout_s
    assert slow.reassembler.timeout_s > long_fast.reassembler.timeout_s
    assert airtime.bridge_slot_s(airtime.PRESETS["LONG_FAST"]) == pytest.approx(6.0)
    short = airtime.bridge_slot_s(airtime.PRESETS["SHORT_FAST"])
    assert short == pytest.approx(6.0 - 2.156 + 0.204, abs=0.01)
    assert airtime.bridge_slot_s(airtime.PRESETS["LONG_SLOW"]) > 18.0
