"""The pure (sans-I/O) core of the mesh link: frames, airtime ledger and send queue.

Nothing in this package reads a clock, touches a radio or imports asyncio or meshtastic: time is
passed in as ``now`` (seconds, any monotonic origin) and bytes come in and go out as values, so
loss, duty-cycle limits and timeouts are tested without sleeping.

Modules:
    frames     the frame format in one Meshtastic payload, fragmentation and selective repair
    ledger     the EU868 rolling-hour airtime budget with a reserve that only FLASH may use
    sendqueue  a bounded priority queue of outgoing frames that works with the ledger
"""

from __future__ import annotations

from enum import IntEnum


class Precedence(IntEnum):
    """Message precedence (ACP 121/127); a lower value is more urgent.

    Local to the mesh core for now: the values match the envelope's precedence so the two can be
    unified without changing any number.
    """

    FLASH = 0
    IMMEDIATE = 1
    PRIORITY = 2
    ROUTINE = 3


__all__ = ["Precedence"]
