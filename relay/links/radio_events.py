"""What the thread bridge (relay.links.meshtastic_bridge) reports to the asyncio side: plain
values, so the driver and the tests need no meshtastic import to read them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the radio is: ``tcp=(host, port)`` (meshtasticd, emulator) or ``serial="/dev/…"``."""

    tcp: tuple[str, int] | None = None
    serial: str | None = None

    def __post_init__(self) -> None:
        if (self.tcp is None) == (self.serial is None):
            raise ValueError("give exactly one of tcp or serial")

    def __str__(self) -> str:
        return f"tcp:{self.tcp[0]}:{self.tcp[1]}" if self.tcp else f"serial:{self.serial}"


@dataclass(frozen=True, slots=True)
class RadioLora:
    """The radio's own LoRa settings as it reported them in its config download.

    ``preset`` is the modem preset's name (``LONG_FAST`` …), or ``CUSTOM`` when the radio uses
    its own bandwidth and spreading factor (``use_preset`` off); ``region`` the region code's name
    (``EU_868``, ``UNSET`` …)."""

    preset: str
    region: str
    override_duty_cycle: bool = False
    channel_key: str = "unknown"  # primary channel: "private", "default" (public), "none"


@dataclass(frozen=True, slots=True)
class Connected:
    """A new interface finished its config download; ``node_num`` is our radio's node number,
    ``lora`` its LoRa settings (None when it sent no lora config)."""

    node_num: int
    generation: int
    lora: RadioLora | None = None


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The interface is gone (or never came up); the supervisor is already working on it."""

    detail: str
    generation: int


@dataclass(frozen=True, slots=True)
class PacketIn:
    """A packet on our private portnum: ``sender`` is the originating node number."""

    payload: bytes
    sender: int
    to: int
    packet_id: int
    hops: int | None  # hops travelled, when the radio reports hop_start


@dataclass(frozen=True, slots=True)
class Routed:
    """An ACK or NAK for one of our packets. ``error`` 0 is an ACK; ``implicit`` means the ACK
    came from our own radio: it heard a neighbour rebroadcast the packet, nothing more."""

    ref: int
    packet_id: int
    error: int
    sender: int
    implicit: bool


BridgeEvent = Connected | Disconnected | PacketIn | Routed
