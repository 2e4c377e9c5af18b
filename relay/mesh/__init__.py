"""The pure (sans-I/O) core of the mesh link: frames, airtime ledger and send queue.

Nothing in this package reads a clock, touches a radio or imports asyncio or meshtastic: time is
passed in as ``now`` (seconds, any monotonic origin) and bytes come in and go out as values, so
loss, duty-cycle limits and timeouts are tested without sleeping.

Modules:
    core       MeshCore: Transmits in, radio frames out (queueing, airtime, bundles, repair)
    routing    Meshtastic's broadcast address, portnum and Routing.Error codes, one table
    frames     the frame format in one Meshtastic payload, fragmentation and selective repair
    ledger     the EU868 rolling-hour airtime budget with a reserve that only FLASH may use
    sendqueue  a bounded priority queue of outgoing frames that works with the ledger
"""

from __future__ import annotations

# One precedence for the whole project: the signed envelope's (FLASH=0 ... ROUTINE=3).
from relay.envelope import Precedence

__all__ = ["Precedence"]
