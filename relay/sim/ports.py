"""What the emulator's parts need of each other, as protocols, so its imports go one way.

``Mesh`` (relay.sim.mesh) builds ``Radio``s (relay.sim.radio), and each radio builds its
``PhoneApi`` (relay.sim.phone). Going back up, a radio only needs a clock, randomness and a
scheduler from its mesh (``MeshPort``), and the phone API only needs what the firmware would
tell a host about its radio and the mesh (``RadioPort``). Both sides import this module; no
module imports one that imports it back.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sized
from dataclasses import dataclass
from typing import Final, Protocol

from meshtastic.protobuf import mesh_pb2

from relay.sim.frames import RadioStats
from relay.sim.settings import DeviceSettings

MAX_TX_QUEUE: Final = 16  # the firmware's TX queue (QueueStatus.maxlen)


@dataclass(frozen=True, slots=True)
class TxReady:
    """Timer: the radio may be able to start transmitting."""

    radio: str


@dataclass(frozen=True, slots=True)
class RetxDue:
    """Timer: a want_ack packet's retransmission (or final NAK) is due."""

    radio: str
    key: tuple[int, int]


RadioTimer = TxReady | RetxDue


class MeshPort(Protocol):
    """The mesh as its radios (and their phone APIs) see it."""

    @property
    def rng(self) -> random.Random: ...

    @property
    def now(self) -> float: ...

    @property
    def radios(self) -> Mapping[str, RadioPort]: ...

    def epoch(self, now: float) -> int: ...

    def next_seq(self) -> int: ...

    def schedule(self, when: float, event: RadioTimer) -> None: ...


class RadioPort(Protocol):
    """A radio as its phone API sees it."""

    @property
    def name(self) -> str: ...

    @property
    def node_num(self) -> int: ...

    @property
    def settings(self) -> DeviceSettings: ...

    @property
    def stats(self) -> RadioStats: ...

    @property
    def tx_queue(self) -> Sized: ...

    @property
    def mesh(self) -> MeshPort: ...

    def send_from_host(self, packet: mesh_pb2.MeshPacket, now: float) -> int: ...
