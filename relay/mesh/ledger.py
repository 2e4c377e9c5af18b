"""The airtime ledger: stay inside the EU868 duty cycle and keep a reserve for FLASH.

EU868 (869.4-869.65 MHz, ERC Rec 70-03) allows 10 % duty cycle over a rolling hour: 360 s of
transmission per hour. Past it the firmware refuses our packets (DUTY_CYCLE_LIMIT) and silently
drops the ones it relays, so the node must budget itself. Non-FLASH traffic may use only part of
the budget, so a FLASH decision always finds airtime, even after an hour of ROUTINE backlog.

Pure and clock-free: the caller passes ``now`` (seconds, monotonic) and the airtime of each
transmission; ``time_on_air`` and ``packet_airtime`` below compute the latter for a preset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from relay import airtime
from relay.mesh import Precedence

# Per-packet Meshtastic overhead around our payload, in bytes on air (FACTS.md): a 16-byte
# packet header, then the Data protobuf: portnum field (tag + 2-byte varint for 256..511),
# payload field (tag + 1-2 byte length), and the 2-byte bitfield the firmware adds. With our
# 231-byte maximum that is exactly the 255-byte LoRa limit.
MESH_HEADER: Final = airtime.MESH_HEADER_LEN
_DATA_FIXED: Final = 3 + 1 + 2  # portnum field, payload tag, bitfield field

# Presets and the time-on-air formula live in relay.airtime (one implementation for the whole
# project); these names stay for the mesh core's callers.
LoRaPreset = airtime.Preset
SHORT_FAST: Final = airtime.PRESETS["SHORT_FAST"]
MEDIUM_FAST: Final = airtime.PRESETS["MEDIUM_FAST"]
LONG_FAST: Final = airtime.PRESETS["LONG_FAST"]
LONG_SLOW: Final = airtime.PRESETS["LONG_SLOW"]


def time_on_air(phy_bytes: int, preset: LoRaPreset = LONG_FAST) -> float:
    """Return seconds on air for a LoRa PHY payload of ``phy_bytes`` (see relay.airtime)."""
    return airtime.time_on_air(phy_bytes, preset)


def packet_airtime(payload_len: int, preset: LoRaPreset = LONG_FAST) -> float:
    """Return seconds on air for one packet carrying ``payload_len`` bytes on a private portnum."""
    data = _DATA_FIXED + payload_len + (1 if payload_len < 128 else 2)
    return time_on_air(MESH_HEADER + data, preset)


@dataclass(slots=True)
class _Bucket:
    expires_at: float  # the airtime stops counting at this time
    airtime_s: float


class AirtimeLedger:
    """A rolling-window airtime budget with a FLASH-only reserve and bounded memory.

    ``budget_s = budget_fraction * window_s`` (360 s for 10 % of an hour). FLASH may use all of
    it; every other precedence at most ``(1 - flash_reserve_fraction) * budget_s``.

    A transmission counts from when it starts until ``window_s`` after it ends (conservative:
    the whole of it is inside the window for that long). Records are coalesced into buckets of
    ``coalesce_s`` by expiry time, each expiring at its bucket's end, so memory is at most
    ``window_s / coalesce_s + 2`` buckets and airtime is never under-counted; it is held at most
    ``coalesce_s`` longer than exact accounting would.

    ``now`` must not go backwards between calls (use a monotonic clock): the ledger forgets
    airtime as soon as a call shows it has left the window.

    The ledger knows only what ``record`` is told. Firmware-level retries (want_ack sends up to
    three times), routing ACKs and packets this node relays for others also use its duty cycle:
    record them when they are known, or choose ``budget_fraction`` below 0.10 to leave room.
    """

    def __init__(
        self,
        budget_fraction: float = 0.10,
        window_s: float = 3600.0,
        flash_reserve_fraction: float = 0.20,
        *,
        coalesce_s: float | None = None,
    ) -> None:
        if not 0.0 < budget_fraction <= 1.0:
            raise ValueError("budget_fraction must be in (0, 1]")
        if window_s <= 0.0:
            raise ValueError("window_s must be positive")
        if not 0.0 <= flash_reserve_fraction < 1.0:
            raise ValueError("flash_reserve_fraction must be in [0, 1)")
        self.window_s = window_s
        self.budget_s = budget_fraction * window_s
        self.flash_reserve_fraction = flash_reserve_fraction
        self.coalesce_s = window_s / 120 if coalesce_s is None else coalesce_s
        if self.coalesce_s <= 0.0:
            raise ValueError("coalesce_s must be positive")
        self._buckets: list[_Bucket] = []  # ascending expires_at
        self.recorded_s = 0.0  # lifetime total, for statistics

    def cap(self, precedence: int) -> float:
        """Return the most airtime traffic of ``precedence`` may have in use in one window."""
        if Precedence(precedence) is Precedence.FLASH:
            return self.budget_s
        return self.budget_s * (1.0 - self.flash_reserve_fraction)

    def record(self, airtime_s: float, now: float) -> None:
        """Charge a transmission of ``airtime_s`` seconds that starts at ``now``."""
        if airtime_s < 0.0 or not math.isfinite(airtime_s):
            raise ValueError(f"airtime must be finite and >= 0, got {airtime_s}")
        self._prune(now)
        expires = now + airtime_s + self.window_s
        bucket_end = (math.floor(expires / self.coalesce_s) + 1) * self.coalesce_s
        last = self._buckets[-1] if self._buckets else None
        # Same bucket, or a clock that went back: add to the latest bucket, which expires no
        # earlier than this record should, so nothing is under-counted.
        if last is not None and last.expires_at >= bucket_end:
            last.airtime_s += airtime_s
        else:
            self._buckets.append(_Bucket(bucket_end, airtime_s))
        self.recorded_s += airtime_s

    def used(self, now: float) -> float:
        """Return the airtime counted in the window at ``now``."""
        self._prune(now)
        return sum(b.airtime_s for b in self._buckets)

    def remaining(self, now: float, precedence: int = Precedence.FLASH) -> float:
        """Return the airtime ``precedence`` may still use at ``now`` (FLASH: the whole budget)."""
        return max(self.cap(precedence) - self.used(now), 0.0)

    def allowed(self, airtime_s: float, precedence: int, now: float) -> bool:
        """Return whether a transmission of ``airtime_s`` at ``precedence`` may start at ``now``."""
        # A nanosecond of slack so that rounding never blocks a transmission that fits exactly.
        return self.used(now) + airtime_s <= self.cap(precedence) + 1e-9

    def next_allowed_at(self, airtime_s: float, precedence: int, now: float) -> float:
        """Return the earliest time ``allowed`` holds (``now`` if it does; inf if it never can)."""
        cap = self.cap(precedence)
        if airtime_s > cap + 1e-9:
            return math.inf
        excess = self.used(now) + airtime_s - cap
        if excess <= 1e-9:
            return now
        for bucket in self._buckets:
            excess -= bucket.airtime_s
            if excess <= 1e-9:
                return bucket.expires_at
        return math.inf  # unreachable: once every bucket expires, used is 0 and airtime <= cap

    def buckets(self) -> int:
        """Return how many coalesced records the ledger holds (memory use)."""
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        drop = 0
        while drop < len(self._buckets) and self._buckets[drop].expires_at <= now:
            drop += 1
        if drop:
            del self._buckets[:drop]
