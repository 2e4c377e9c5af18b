"""What travels over the simulated air, and the per-radio bookkeeping of airtime and drops."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from relay.airtime import DUTY_CYCLE_WINDOW_S, MESH_HEADER_LEN
from relay.mesh.routing import BROADCAST

__all__ = ["BROADCAST", "AirFrame", "AirtimeLedger", "RadioStats"]


@dataclass(frozen=True, slots=True)
class AirFrame:
    """One LoRa frame: the 16-byte Meshtastic header fields plus the (unencrypted) Data bytes.

    The emulator does not encrypt; AES-CTR keeps the length, so airtime is the same.
    """

    src: int
    dest: int
    packet_id: int
    hop_limit: int
    hop_start: int
    want_ack: bool
    channel_hash: int
    relay_node: int
    priority: int
    data: bytes

    @property
    def key(self) -> tuple[int, int]:
        """Duplicate-suppression key: (original sender, packet id)."""
        return (self.src, self.packet_id)

    @property
    def phy_len(self) -> int:
        return MESH_HEADER_LEN + len(self.data)


class AirtimeLedger:
    """Transmit airtime in one-minute buckets over a rolling hour, as firmware AirTime does."""

    def __init__(self) -> None:
        self._minutes: dict[int, float] = {}
        self.total_s = 0.0

    def add(self, now: float, seconds: float) -> None:
        minute = int(now // 60)
        self._minutes[minute] = self._minutes.get(minute, 0.0) + seconds
        self.total_s += seconds
        for old in [m for m in self._minutes if m <= minute - 60]:
            del self._minutes[old]

    def last_hour_s(self, now: float) -> float:
        minute = int(now // 60)
        return sum(v for m, v in self._minutes.items() if m > minute - 60)

    def utilization(self, now: float) -> float:
        """Fraction of the rolling hour spent transmitting."""
        return self.last_hour_s(now) / DUTY_CYCLE_WINDOW_S


@dataclass
class RadioStats:
    """Counters of one radio. ``drops`` is keyed by reason (see docs/emulator.md)."""

    frames_sent: int = 0
    own_sent: int = 0
    relayed: int = 0
    retransmissions: int = 0
    acks_sent: int = 0
    frames_heard: int = 0
    to_host: int = 0
    from_host: int = 0
    drops: Counter[str] = field(default_factory=Counter)
