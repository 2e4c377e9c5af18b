"""What goes in and out of ``MeshCore`` (relay.mesh.core): its settings, the frames it hands to
the radio and the events it hands to the host, and the airtime of one of our packets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from relay.airtime import MESH_HEADER_LEN, PRESETS, Preset, frame_time_scale, time_on_air
from relay.engine.ops import Rejected
from relay.mesh import Precedence

# Data protobuf around our payload: portnum field (tag + 2-byte varint for 256..511), payload
# tag, payload length varint, and the 2-byte bitfield the firmware sets. 231 B -> 255 B on air.
_DATA_FIXED: Final = 3 + 1 + 2


def phy_bytes(payload_len: int) -> int:
    """LoRa PHY payload for one packet carrying ``payload_len`` bytes on a private portnum."""
    return MESH_HEADER_LEN + _DATA_FIXED + payload_len + (1 if payload_len < 128 else 2)


def frame_airtime(payload_len: int, preset: Preset) -> float:
    """Seconds on air of one packet carrying ``payload_len`` bytes on a private portnum."""
    return time_on_air(phy_bytes(payload_len), preset)


# ------------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class OutFrame:
    """Hand this to the radio now, then report ``frame_sent`` or ``frame_failed`` with ``ref``."""

    ref: int
    payload: bytes
    to: int
    want_ack: bool
    precedence: Precedence
    airtime_s: float


@dataclass(frozen=True, slots=True)
class Received:
    """A complete signed message (or receipt) heard from node ``sender``, for the engine."""

    raw: bytes
    channel: str  # "msg" | "rcpt" | "sync" (a healing summary, relay.engine.sync)
    sender: int


@dataclass(frozen=True, slots=True)
class Done:
    """Transmission ``ticket`` finished: ``ok`` when every frame of it was ACKed. ``refused``
    names why the radio or mesh will never carry this transmission as it is (TOO_LARGE, a
    missing channel, a size past what frames hold); empty for a failure worth retrying soon."""

    ticket: int
    ok: bool
    detail: str = ""
    refused: str = ""


CoreEvent = Received | Rejected | Done


@dataclass(frozen=True, slots=True)
class CoreSettings:
    preset: str = "LONG_FAST"
    # Our own packets' share of the hour. The radio's 10 % also pays for relaying others'
    # packets and for routing ACKs, which the host never sees: leave them a fifth.
    budget_fraction: float = 0.08
    flash_reserve_fraction: float = 0.20
    receipt_hold_s: float = 3.0
    max_queue_s: float = 600.0
    ack_timeout_s: float = 150.0  # want_ack: 3 tries take 31-52 s at LONG_FAST, plus queueing
    max_inflight: int = 4  # frames in the radio awaiting ACK (its TX queue holds 16)
    max_tickets: int = 64
    max_held_receipts: int = 32
    queue_items: int = 128
    queue_bytes: int = 24 * 1024
    repeat_interval_s: float = 60.0
    cache_messages: int = 16
    cache_bytes: int = 32 * 1024
    nack_precedence: Precedence = Precedence.IMMEDIATE
    nack_delay_s: float = 60.0  # a receiver asks for missing fragments after this (at LONG_FAST)
    partial_timeout_s: float = 900.0  # an incomplete message idle this long is dropped

    @classmethod
    def for_preset(cls, preset: str) -> CoreSettings:
        """The defaults for a mesh at ``preset``: the timers that wait for frames on the air
        (ACK timeout, fragment NACK delay and partial timeout) scale with the time a full frame
        takes at that preset against LONG_FAST, where they were measured. Floors keep room for
        the hosts and the radio's queue at the fast presets."""
        k = frame_time_scale(PRESETS[preset])
        base = cls()
        return cls(
            preset=preset,
            ack_timeout_s=max(60.0, base.ack_timeout_s * k),
            nack_delay_s=max(10.0, base.nack_delay_s * k),
            partial_timeout_s=max(base.partial_timeout_s, base.partial_timeout_s * k),
        )
