"""The channel model: radios, who hears whom, frames on the air, virtual time. Sans-I/O.

Drive it with ``handle_timer(now)`` whenever ``get_timer()`` comes due, feed host bytes with
``receive_data(radio, data, now)`` and collect what each host should read with ``data_to_send``.
Time is seconds on any monotonic scale you choose: tests pass virtual time, the servers pass
(scaled) wall-clock time. Nothing here sleeps, reads a clock or touches a socket.

Radio physics kept: airtime per frame for the radio's preset; a radio does not start sending while
it hears a frame (carrier sense) nor receive while it sends (half duplex); two overlapping frames at
one receiver destroy each other (no capture effect); each link loses frames with its own probability
drawn from one seeded RNG, so a run is reproducible.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field
from typing import TypeAlias

from relay.sim.frames import AirFrame
from relay.sim.ports import RetxDue, TxReady
from relay.sim.radio import Radio
from relay.sim.settings import DeviceSettings
from relay.sim.spec import MeshSpec


@dataclass(frozen=True, slots=True)
class TxEnd:
    """Timer: a frame finished its time on air."""

    tx: _OnAir


@dataclass(eq=False, slots=True)
class _OnAir:
    sender: str
    frame: AirFrame
    start: float
    end: float
    receivers: dict[str, bool] = field(default_factory=dict)  # name -> destroyed?


Event: TypeAlias = TxReady | RetxDue | TxEnd


class Mesh:
    """Several radios joined by lossy links, on one shared clock."""

    def __init__(self, spec: MeshSpec, *, epoch0: float = 1_767_225_600.0) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)  # noqa: S311 - a simulation, not cryptography
        self.now = 0.0
        self.epoch0 = epoch0
        self.radios: dict[str, Radio] = {}
        self.links: dict[tuple[str, str], float] = {}
        self.unplugged: set[str] = set()
        self._events: list[tuple[float, int, Event]] = []
        self._seq = itertools.count()
        self._on_air: list[_OnAir] = []
        for r in spec.radios:
            settings = DeviceSettings(r.node_num, r.long_name, r.short_name, r.preset)
            self.radios[r.name] = Radio(r.name, settings, self)
        names = list(self.radios)
        if spec.all_hear_all:
            for a, b in itertools.permutations(names, 2):
                self.links[(a, b)] = spec.default_loss
        for link in spec.links:
            self.set_link(link.a, link.b, link.loss, symmetric=link.symmetric)

    # --- clock ---------------------------------------------------------------------------------

    def epoch(self, now: float) -> int:
        """Unix time the radios report for virtual time ``now``."""
        return int(self.epoch0 + now)

    def next_seq(self) -> int:
        return next(self._seq)

    def schedule(self, when: float, event: Event) -> None:
        heapq.heappush(self._events, (max(when, self.now), next(self._seq), event))

    def get_timer(self) -> float | None:
        """When ``handle_timer`` next has work, or ``None`` when the mesh is idle."""
        return self._events[0][0] if self._events else None

    def handle_timer(self, now: float) -> None:
        """Run every event due at or before ``now``."""
        while self._events and self._events[0][0] <= now:
            when, _, event = heapq.heappop(self._events)
            self.now = max(self.now, when)
            self._dispatch(event)
        self.now = max(self.now, now)

    def run_until(self, until: float) -> None:
        """Virtual time: process every event up to ``until`` in order (tests, drills)."""
        self.handle_timer(until)

    def _dispatch(self, event: Event) -> None:
        match event:
            case TxReady(radio=name):
                self._try_transmit(self.radios[name])
            case RetxDue(radio=name, key=key):
                self.radios[name].on_retransmit_due(key, self.now)
            case TxEnd(tx=tx):
                self._finish(tx)

    # --- host side -------------------------------------------------------------------------------

    def connect(self, name: str, now: float) -> bool:
        """A host attaches to ``name``; False while the radio is unplugged."""
        self.handle_timer(now)
        if name in self.unplugged:
            return False
        self.radios[name].phone.connect()
        return True

    def disconnect(self, name: str, now: float) -> None:
        self.handle_timer(now)
        self.radios[name].phone.disconnect()

    def receive_data(self, name: str, data: bytes, now: float) -> None:
        """Bytes from the host of radio ``name``."""
        self.handle_timer(now)
        if name not in self.unplugged:
            self.radios[name].phone.receive_data(data, self.now)

    def data_to_send(self, name: str) -> bytes:
        """Bytes waiting for the host of radio ``name``."""
        if name in self.unplugged:
            return b""
        return self.radios[name].phone.data_to_send()

    def unplug(self, name: str, now: float) -> None:
        """The host cable is pulled: the host loses its connection, the radio keeps meshing."""
        self.disconnect(name, now)
        self.unplugged.add(name)

    def replug(self, name: str, now: float) -> None:
        self.handle_timer(now)
        self.unplugged.discard(name)

    # --- links ----------------------------------------------------------------------------------

    def set_link(self, a: str, b: str, loss: float, *, symmetric: bool = True) -> None:
        """Let ``b`` hear ``a`` (and ``a`` hear ``b`` if symmetric) losing ``loss`` of frames."""
        for name in (a, b):
            if name not in self.radios:
                raise KeyError(f"no radio named {name!r}")
        if not 0.0 <= loss <= 1.0:
            raise ValueError(f"loss must be within 0..1, got {loss}")
        self.links[(a, b)] = loss
        if symmetric:
            self.links[(b, a)] = loss

    def cut_link(self, a: str, b: str, *, symmetric: bool = True) -> None:
        self.links.pop((a, b), None)
        if symmetric:
            self.links.pop((b, a), None)

    def hears(self, receiver: str, sender: str) -> bool:
        return (sender, receiver) in self.links

    # --- the air ----------------------------------------------------------------------------------

    def _busy(self, radio: Radio) -> bool:
        return radio.transmitting is not None or any(
            radio.name in tx.receivers for tx in self._on_air
        )

    def _try_transmit(self, radio: Radio) -> None:
        if self._busy(radio):
            return  # retried when the frame we hear (or send) ends
        frame = radio.next_frame(self.now)
        if frame is None:
            return
        duration = radio.airtime(frame)
        radio.transmitting = frame
        radio.ledger.add(self.now, duration)
        radio.stats.frames_sent += 1
        tx = _OnAir(radio.name, frame, self.now, self.now + duration)
        for other in self.radios:
            if other == radio.name or not self.hears(other, radio.name):
                continue
            destroyed = self.radios[other].transmitting is not None
            for prior in self._on_air:
                if other in prior.receivers:
                    prior.receivers[other] = True  # collision: both frames lost here
                    destroyed = True
            tx.receivers[other] = destroyed
        # A radio that starts sending loses whatever it was receiving (same-instant starts).
        for prior in self._on_air:
            if radio.name in prior.receivers:
                prior.receivers[radio.name] = True
        self._on_air.append(tx)
        self.schedule(tx.end, TxEnd(tx))

    def _finish(self, tx: _OnAir) -> None:
        self._on_air.remove(tx)
        sender = self.radios[tx.sender]
        sender.transmitting = None
        for name in sorted(tx.receivers):
            radio = self.radios[name]
            loss = self.links.get((tx.sender, name))
            if tx.receivers[name]:
                radio.stats.drops["collision"] += 1
            elif loss is None:
                radio.stats.drops["link_cut"] += 1
            elif loss > 0 and self.rng.random() < loss:
                radio.stats.drops["loss"] += 1
            else:
                snr = 10.0 - 25.0 * loss
                radio.receive(tx.frame, self.now, snr=snr, rssi=int(-60 - 60 * loss))
            if radio.tx_queue:
                self.schedule(self.now + radio.tx_delay(), TxReady(name))
        if sender.tx_queue:
            self.schedule(self.now + sender.tx_delay(), TxReady(sender.name))

    # --- statistics ----------------------------------------------------------------------------

    def statistics(self, name: str) -> dict[str, object]:
        """Counters of radio ``name`` as plain data (what the control port returns)."""
        radio = self.radios[name]
        s = radio.stats
        budget = radio.settings.duty_cycle * 3600.0
        return {
            "node_num": radio.node_num,
            "preset": radio.settings.preset.name,
            "connected": radio.phone.connected,
            "unplugged": name in self.unplugged,
            "frames_sent": s.frames_sent,
            "own_sent": s.own_sent,
            "relayed": s.relayed,
            "retransmissions": s.retransmissions,
            "acks_sent": s.acks_sent,
            "frames_heard": s.frames_heard,
            "from_host": s.from_host,
            "to_host": s.to_host,
            "queued_for_host": radio.phone.queued_for_host,
            "tx_queue": len(radio.tx_queue),
            "airtime_total_s": round(radio.ledger.total_s, 4),
            "airtime_last_hour_s": round(radio.ledger.last_hour_s(self.now), 4),
            "duty_cycle_budget_s": budget,
            "duty_cycle_used": round(radio.ledger.last_hour_s(self.now) / budget, 4),
            "drops": dict(s.drops),
        }
