"""LoRa time on air for the Meshtastic modem presets, and the limits that go with it.

Pure functions and constants, no I/O. The numbers follow the Meshtastic firmware (modem presets as
set up in ``RadioInterface::applyModemConfig``, preamble of 16 symbols, explicit header, CRC on) and
the Semtech SX126x time-on-air formula (see docs/emulator.md and FACTS.md):

    Tsym = 2^SF / BW
    T    = Tsym * (Npre + 4.25 + 8 + ceil(max(8*PL - 4*SF + 28 + 16*CRC - 20*IH, 0)
                                          / (4*(SF - 2*LDRO))) * (CR + 4))

where ``CR + 4`` is the coding-rate denominator (5 for 4/5, 8 for 4/8) and LDRO (low data rate
optimisation) is on when a symbol lasts 16 ms or more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DUTY_CYCLE_WINDOW_S",
    "EU868_DUTY_CYCLE",
    "MAX_LORA_FRAME",
    "MAX_PAYLOAD",
    "MAX_PRIVATE_PAYLOAD",
    "MESH_HEADER_LEN",
    "PREAMBLE_SYMBOLS",
    "PRESETS",
    "Preset",
    "bridge_slot_s",
    "duty_cycle_budget_s",
    "frame_time_scale",
    "max_payload",
    "preset",
    "symbol_time",
    "time_on_air",
]

MESH_HEADER_LEN: Final = 16
"""Meshtastic's clear radio header: to, from, id, flags, channel hash, next hop, relay node."""

MAX_LORA_FRAME: Final = 255
"""Largest LoRa PHY payload, header included."""

MAX_PAYLOAD: Final = 232
"""Largest application payload on a channel for a portnum below 128 (one-byte portnum varint)."""

MAX_PRIVATE_PAYLOAD: Final = 231
"""Largest application payload on a channel for a private portnum (256-511, two-byte varint)."""

PREAMBLE_SYMBOLS: Final = 16
"""Meshtastic uses a 16-symbol preamble instead of LoRa's usual 8."""

EU868_DUTY_CYCLE: Final = 0.10
"""EU868 (ERC Rec 70-03 band g3): at most 10 % transmit time..."""

DUTY_CYCLE_WINDOW_S: Final = 3600.0
"""... over a rolling hour."""


@dataclass(frozen=True, slots=True)
class Preset:
    """A LoRa modem preset: spreading factor, bandwidth in Hz and coding rate denominator (4/cr)."""

    name: str
    sf: int
    bw_hz: float
    cr: int


# Firmware v2.7 presets for the narrow (sub-GHz) regions.
PRESETS: Final[dict[str, Preset]] = {
    p.name: p
    for p in (
        Preset("SHORT_TURBO", 7, 500_000.0, 5),
        Preset("SHORT_FAST", 7, 250_000.0, 5),
        Preset("SHORT_SLOW", 8, 250_000.0, 5),
        Preset("MEDIUM_FAST", 9, 250_000.0, 5),
        Preset("MEDIUM_SLOW", 10, 250_000.0, 5),
        Preset("LONG_FAST", 11, 250_000.0, 5),
        Preset("LONG_MODERATE", 11, 125_000.0, 8),
        Preset("LONG_SLOW", 12, 125_000.0, 8),
    )
}


def preset(name: str) -> Preset:
    """Return the preset called ``name`` (case-insensitive, ``LongFast`` or ``LONG_FAST``).

    Raises ``KeyError`` for an unknown name.
    """
    key = name.strip().upper()
    if key not in PRESETS:
        # Accept the CamelCase names the apps show ("LongFast" -> "LONG_FAST").
        camel = "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(name.strip()))
        key = camel.upper()
    return PRESETS[key]


def symbol_time(p: Preset) -> float:
    """Duration of one LoRa symbol in seconds."""
    return float(2**p.sf) / p.bw_hz


def time_on_air(phy_payload_len: int, p: Preset) -> float:
    """Seconds on air of one LoRa frame of ``phy_payload_len`` bytes, Meshtastic header included.

    Raises ``ValueError`` for a length outside 0..255.
    """
    if not 0 <= phy_payload_len <= MAX_LORA_FRAME:
        raise ValueError(f"PHY payload must be 0..{MAX_LORA_FRAME} bytes, got {phy_payload_len}")
    t_sym = symbol_time(p)
    ldro = 1 if t_sym >= 0.016 else 0
    crc, implicit_header = 1, 0
    numerator = 8 * phy_payload_len - 4 * p.sf + 28 + 16 * crc - 20 * implicit_header
    payload_symbols = 8 + math.ceil(max(numerator, 0) / (4 * (p.sf - 2 * ldro))) * p.cr
    return t_sym * (PREAMBLE_SYMBOLS + 4.25 + payload_symbols)


def max_payload(portnum: int) -> int:
    """Largest application payload that fits one frame on a channel for ``portnum``."""
    return MAX_PAYLOAD if portnum < 128 else MAX_PRIVATE_PAYLOAD


def duty_cycle_budget_s(duty_cycle: float = EU868_DUTY_CYCLE) -> float:
    """Seconds of transmit time allowed per rolling hour (360 s in EU868)."""
    return duty_cycle * DUTY_CYCLE_WINDOW_S


def frame_time_scale(p: Preset) -> float:
    """How much longer (> 1) or shorter (< 1) a full frame is on air at ``p`` than at LONG_FAST.

    The mesh link's timers were measured at LONG_FAST (the default and the firmware_configs
    preset); timers that wait for frames on the air scale with this factor.
    """
    return time_on_air(MAX_LORA_FRAME, p) / time_on_air(MAX_LORA_FRAME, PRESETS["LONG_FAST"])


BRIDGE_SLOT_LONG_FAST_S: Final = 6.0
"""A gateway's bridging turn at LONG_FAST (relay.engine.core.EngineConfig.bridge_slot_s)."""


def bridge_slot_s(p: Preset) -> float:
    """A gateway's bridging turn for a mesh at preset ``p``: the LONG_FAST slot with the full
    frame's time on air at LONG_FAST (2.16 s) replaced by the time at ``p``. The rest of the slot
    (random delay, the radio's latency, both hosts' processing) does not depend on the preset."""
    full = time_on_air(MAX_LORA_FRAME, p)
    return BRIDGE_SLOT_LONG_FAST_S - time_on_air(MAX_LORA_FRAME, PRESETS["LONG_FAST"]) + full
