"""The words the engine, the links and the daemon share, as types (one module, no imports).

They are ``StrEnum``s: a member equals its string (``LinkState.UP == "up"``), so status output,
the store's rows and relay.toml keep their spelling.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class LinkKind(StrEnum):
    """What carries a link's traffic."""

    MQTT = "mqtt"
    MESH = "mesh"


class LinkState(StrEnum):
    """A link's own measurement of itself (relay.engine.health adds the hysteresis)."""

    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


class Channel(StrEnum):
    """What a frame on a link is: a message, a receipt, a healing summary, a node's status."""

    MSG = "msg"
    RCPT = "rcpt"
    SYNC = "sync"
    STATUS = "status"


OUTBOUND_CHANNELS = frozenset({Channel.MSG, Channel.RCPT, Channel.SYNC})  # what the engine sends

# The same words spelt out, accepted where callers write them literally (tests, scenarios): a
# typo is still a type error. Converted to the enum at the boundary (``LinkState(name)``).
LinkKindName = Literal["mqtt", "mesh"]
LinkStateName = Literal["up", "degraded", "down"]
ChannelName = Literal["msg", "rcpt", "sync", "status"]
OutboundChannelName = Literal["msg", "rcpt", "sync"]
