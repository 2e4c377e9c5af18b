"""Meshtastic's addressing and routing vocabulary (mesh.proto), as plain values.

One table for the mesh core, the thread bridge and the tests: the core must not import
meshtastic's protobufs (it is pure), so the numbers live here once.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

BROADCAST: Final = 0xFFFFFFFF  # NodeNum of "everyone"
PRIVATE_APP: Final = 256  # portnums.proto: the first private portnum, ours


class RoutingError(IntEnum):
    """``Routing.Error`` codes the link reacts to or names; others stay numbers ("error N")."""

    NONE = 0  # an ACK
    TIMEOUT = 3
    NO_INTERFACE = 4
    MAX_RETRANSMIT = 5
    NO_CHANNEL = 6
    TOO_LARGE = 7
    NO_RESPONSE = 8
    DUTY_CYCLE_LIMIT = 9
    BAD_REQUEST = 32
    NOT_AUTHORIZED = 33
    RATE_LIMIT_EXCEEDED = 38


# NAKs that refuse this packet as it is (a retry soon gets the same answer): the transmission
# ends as refused, not broken. Timeouts, duty cycle and rate limits are broken: retry soon.
REFUSING_NAKS: Final = frozenset(
    {
        RoutingError.NO_CHANNEL,
        RoutingError.TOO_LARGE,
        RoutingError.BAD_REQUEST,
        RoutingError.NOT_AUTHORIZED,
    }
)


def routing_name(code: int) -> str:
    """The code's name in mesh.proto (``TOO_LARGE``), or ``error N`` for one we do not name."""
    try:
        return RoutingError(code).name
    except ValueError:
        return f"error {code}"
