"""Time on air and payload limits (relay.airtime) against the figures in FACTS.md."""

import pytest

from relay import airtime
from relay.airtime import PRESETS, max_payload, preset, time_on_air


@pytest.mark.parametrize(("length", "seconds"), [(66, 0.72), (136, 1.26), (255, 2.16)])
def test_long_fast_matches_facts(length: int, seconds: float) -> None:
    """Test that LONG_FAST airtime matches the FACTS.md examples to 10 ms."""
    assert time_on_air(length, PRESETS["LONG_FAST"]) == pytest.approx(seconds, abs=0.01)


@pytest.mark.parametrize(
    ("name", "millis"),
    [("SHORT_FAST", 204), ("MEDIUM_FAST", 641), ("LONG_FAST", 2156), ("LONG_SLOW", 14295)],
)
def test_full_frame_per_preset(name: str, millis: int) -> None:
    """Test that a full 255 B frame takes the firmware's airtime for each preset."""
    assert time_on_air(255, PRESETS[name]) * 1000 == pytest.approx(millis, abs=1.0)


def test_presets_match_firmware_table() -> None:
    """Test that the preset table carries the firmware's SF/BW/CR values."""
    table = {p.name: (p.sf, int(p.bw_hz) // 1000, p.cr) for p in PRESETS.values()}
    assert table["SHORT_SLOW"] == (8, 250, 5)
    assert table["MEDIUM_SLOW"] == (10, 250, 5)
    assert table["LONG_MODERATE"] == (11, 125, 8)
    assert table["LONG_SLOW"] == (12, 125, 8)


def test_airtime_grows_with_length_and_slower_presets() -> None:
    """Test that airtime never shrinks with more bytes and grows from fast to slow presets."""
    for p in PRESETS.values():
        times = [time_on_air(n, p) for n in range(256)]
        assert times == sorted(times)
    order = ["SHORT_FAST", "SHORT_SLOW", "MEDIUM_FAST", "MEDIUM_SLOW", "LONG_FAST", "LONG_SLOW"]
    full = [time_on_air(255, PRESETS[n]) for n in order]
    assert full == sorted(full)


def test_rejects_oversized_frame() -> None:
    """Test that a PHY payload over 255 B is refused."""
    with pytest.raises(ValueError, match="255"):
        time_on_air(256, PRESETS["LONG_FAST"])


def test_payload_limits_and_budget() -> None:
    """Test that payload limits are 232/231 B and the EU868 budget is 360 s per hour."""
    assert max_payload(1) == 232
    assert max_payload(256) == 231
    assert airtime.MESH_HEADER_LEN + 239 == airtime.MAX_LORA_FRAME
    assert airtime.duty_cycle_budget_s() == pytest.approx(360.0)


def test_preset_lookup_accepts_app_names() -> None:
    """Test that presets are found by CamelCase and upper-case names."""
    assert preset("LongFast") is PRESETS["LONG_FAST"]
    assert preset("long_slow") is PRESETS["LONG_SLOW"]
    with pytest.raises(KeyError):
        preset("VERY_FAST")
