"""One emulated radio's router: what it sends, relays, acknowledges and retries.

Managed flooding as in firmware FloodingRouter/ReliableRouter (v2.7): every new frame not addressed
to us is rebroadcast once with ``hop_limit - 1`` after an SNR-weighted random delay, unless we hear
someone else rebroadcast it first; duplicates are suppressed by (sender, packet id); ``want_ack``
packets get three tries, hearing a rebroadcast of our own packet is an implicit ACK, and after the
last try the host gets MAX_RETRANSMIT. The EU868 duty cycle is checked whenever a frame is queued:
past it our own packets are NAKed DUTY_CYCLE_LIMIT and relayed ones silently dropped.

Sans-I/O: the mesh passes ``now`` in and the radio asks the mesh to schedule its timers.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Final

from meshtastic.protobuf import config_pb2, mesh_pb2, portnums_pb2

from relay.airtime import MAX_LORA_FRAME, MESH_HEADER_LEN, symbol_time, time_on_air
from relay.sim.frames import BROADCAST, AirFrame, AirtimeLedger, RadioStats
from relay.sim.phone import PhoneApi
from relay.sim.ports import MAX_TX_QUEUE, MeshPort, RetxDue, TxReady
from relay.sim.settings import DeviceSettings

NUM_RELIABLE_TRIES: Final = 3
SEEN_MEMORY: Final = 1024  # (sender, id) pairs remembered for duplicate suppression
SEEN_EXPIRY_S: Final = 600.0
PROCESSING_TIME_S: Final = 4.5  # firmware PROCESSING_TIME_MSEC
CW_MIN, CW_MAX = 3, 8

Error = mesh_pb2.Routing.Error
Priority = mesh_pb2.MeshPacket.Priority
Role = config_pb2.Config.DeviceConfig.Role
RELIABLE: Final = int(Priority.RELIABLE)
DEFAULT: Final = int(Priority.DEFAULT)
QUEUE_FULL: Final = 32  # firmware ERRNO_UNKNOWN in QueueStatus.res: the library resends later


@dataclass(slots=True)
class _Queued:
    frame: AirFrame
    not_before: float
    seq: int
    relay: bool


@dataclass(slots=True)
class _Pending:
    frame: AirFrame
    tries_left: int
    next_tx: float


class Radio:
    """A radio in the mesh: settings, host connection, TX queue, router state and statistics."""

    def __init__(self, name: str, settings: DeviceSettings, mesh: MeshPort) -> None:
        self.name = name
        self.settings = settings
        self.mesh = mesh
        self.phone = PhoneApi(self)
        self.stats = RadioStats()
        self.ledger = AirtimeLedger()
        self.tx_queue: list[_Queued] = []
        self.transmitting: AirFrame | None = None
        self._seen: OrderedDict[tuple[int, int], float] = OrderedDict()
        self._pending: dict[tuple[int, int], _Pending] = {}
        self._next_id = (settings.node_num * 7919) & 0x3FF

    @property
    def node_num(self) -> int:
        return self.settings.node_num

    # --- timing (firmware RadioInterface) --------------------------------------------------------

    def slot_time(self) -> float:
        return 2.5 * symbol_time(self.settings.preset) + 0.0076

    def airtime(self, frame: AirFrame) -> float:
        return time_on_air(frame.phy_len, self.settings.preset)

    def tx_delay(self) -> float:
        """Random contention delay before our own packets (CW at low channel utilisation)."""
        return self.mesh.rng.randrange(1 << CW_MIN) * self.slot_time()

    def relay_delay(self, snr: float) -> float:
        """SNR-weighted rebroadcast delay of a CLIENT: far (low SNR) nodes go first."""
        cw = round(CW_MIN + (min(max(snr, -20.0), 10.0) + 20.0) * (CW_MAX - CW_MIN) / 30.0)
        return (2 * CW_MAX + self.mesh.rng.randrange(1 << cw)) * self.slot_time()

    def retransmission_delay(self, frame: AirFrame) -> float:
        slots = (1 << CW_MIN) + 2 * CW_MAX + (1 << ((CW_MAX + CW_MIN) // 2))
        return 2 * self.airtime(frame) + slots * self.slot_time() + PROCESSING_TIME_S

    # --- from our host -------------------------------------------------------------------------

    def send_from_host(self, packet: mesh_pb2.MeshPacket, now: float) -> int:
        """Take a packet the host wants sent; return the QueueStatus ``res`` (0 = queued)."""
        self.stats.from_host += 1
        if packet.to == self.node_num:
            self.phone.handle_local(packet, now)
            return 0
        packet_id = packet.id or self._new_id()
        channel = self.settings.channel_hash(packet.channel)
        if channel is None:
            return self._nak_host(Error.NO_CHANNEL, packet_id, now)
        data = packet.decoded
        data.bitfield = 0  # firmware always sets the bitfield, which costs two bytes
        encoded = data.SerializeToString()
        if len(encoded) + MESH_HEADER_LEN > MAX_LORA_FRAME:
            return self._nak_host(Error.TOO_LARGE, packet_id, now)
        hop_limit = min(packet.hop_limit, 7)
        if packet.want_ack and hop_limit == 0:
            hop_limit = self.settings.hop_limit  # ReliableRouter: 0 means "the default" here
        frame = AirFrame(
            src=self.node_num,
            dest=packet.to,
            packet_id=packet_id,
            hop_limit=hop_limit,
            hop_start=hop_limit,
            want_ack=packet.want_ack and packet.to != BROADCAST,
            channel_hash=channel,
            relay_node=self.node_num & 0xFF,
            priority=packet.priority
            or (Priority.RELIABLE if packet.want_ack else Priority.DEFAULT),
            data=encoded,
        )
        err = self._queue(frame, now, now + self.tx_delay(), relay=False)
        if err == Error.DUTY_CYCLE_LIMIT:
            return self._nak_host(err, packet_id, now)
        if err != Error.NONE:
            return QUEUE_FULL
        if packet.want_ack:
            self._start_retransmission(frame, now)
        return 0

    def _nak_host(self, error: int, packet_id: int, now: float) -> int:
        self.stats.drops[Error.Name(error).lower()] += 1
        self.phone.deliver_routing(self.node_num, packet_id, error, now)
        return error

    def _new_id(self) -> int:
        self._next_id = (self._next_id + 1) & 0x3FF
        return (self.mesh.rng.getrandbits(22) << 10) | self._next_id or 1

    # --- queueing and sending --------------------------------------------------------------------

    def _queue(self, frame: AirFrame, now: float, not_before: float, *, relay: bool) -> int:
        """Router::send: duty cycle, then the TX queue. Returns a Routing.Error."""
        self._mark_seen(frame.key, now)
        if self.ledger.utilization(now) > self.settings.duty_cycle:
            if relay:
                self.stats.drops["duty_cycle_relay"] += 1
            return int(Error.DUTY_CYCLE_LIMIT)
        if len(self.tx_queue) >= MAX_TX_QUEUE:
            self.stats.drops["tx_queue_full"] += 1
            return int(Error.NO_INTERFACE)
        self.tx_queue.append(_Queued(frame, not_before, self.mesh.next_seq(), relay))
        # Timers of other pending packets are pushed back by this packet's airtime.
        for key, p in self._pending.items():
            if key != frame.key:
                p.next_tx += self.airtime(frame)
        self.mesh.schedule(not_before, TxReady(self.name))
        return int(Error.NONE)

    def next_frame(self, now: float) -> AirFrame | None:
        """Pop the best frame ready to go at ``now`` (highest priority, then oldest)."""
        ready = [q for q in self.tx_queue if q.not_before <= now]
        if not ready:
            if self.tx_queue:
                self.mesh.schedule(min(q.not_before for q in self.tx_queue), TxReady(self.name))
            return None
        best = max(ready, key=lambda q: (q.frame.priority, -q.seq))
        self.tx_queue.remove(best)
        if best.relay:
            self.stats.relayed += 1
        elif best.frame.src == self.node_num:
            self.stats.own_sent += 1
        return best.frame

    def _cancel_queued(self, key: tuple[int, int]) -> bool:
        before = len(self.tx_queue)
        self.tx_queue = [q for q in self.tx_queue if q.frame.key != key]
        return len(self.tx_queue) != before

    # --- reliability -----------------------------------------------------------------------------

    def _start_retransmission(self, frame: AirFrame, now: float) -> None:
        p = _Pending(frame, NUM_RELIABLE_TRIES - 1, now + self.retransmission_delay(frame))
        self._pending[frame.key] = p
        self.mesh.schedule(p.next_tx, RetxDue(self.name, frame.key))

    def on_retransmit_due(self, key: tuple[int, int], now: float) -> None:
        p = self._pending.get(key)
        if p is None:
            return
        if p.next_tx > now:  # pushed back by traffic since the timer was set
            self.mesh.schedule(p.next_tx, RetxDue(self.name, key))
            return
        if p.tries_left == 0:
            del self._pending[key]
            if p.frame.src == self.node_num:
                self._nak_host(Error.MAX_RETRANSMIT, p.frame.packet_id, now)
            return
        p.tries_left -= 1
        p.next_tx = now + self.retransmission_delay(p.frame)
        self.stats.retransmissions += 1
        if not any(q.frame.key == key for q in self.tx_queue):
            err = self._queue(p.frame, now, now + self.tx_delay(), relay=False)
            if err == Error.DUTY_CYCLE_LIMIT:
                del self._pending[key]
                self._nak_host(err, p.frame.packet_id, now)
                return
        self.mesh.schedule(p.next_tx, RetxDue(self.name, key))

    def _stop_retransmission(self, key: tuple[int, int]) -> bool:
        return self._pending.pop(key, None) is not None

    # --- from the air ----------------------------------------------------------------------------

    def _mark_seen(self, key: tuple[int, int], now: float) -> bool:
        """Remember ``key``; return True if it was already seen recently."""
        seen_at = self._seen.get(key)
        self._seen[key] = now
        self._seen.move_to_end(key)
        while len(self._seen) > SEEN_MEMORY:
            self._seen.popitem(last=False)
        return seen_at is not None and now - seen_at < SEEN_EXPIRY_S

    def receive(self, frame: AirFrame, now: float, snr: float, rssi: int) -> None:
        """A frame arrived intact over the air."""
        self.stats.frames_heard += 1
        for p in self._pending.values():
            p.next_tx += self.airtime(frame)
        if frame.src == self.node_num:
            # Someone rebroadcast one of ours: an implicit ACK for the host.
            if self._stop_retransmission(frame.key):
                self.phone.deliver_routing(self.node_num, frame.packet_id, Error.NONE, now)
            self._mark_seen(frame.key, now)
            return
        if self._mark_seen(frame.key, now):
            self._on_duplicate(frame, now, snr)
            return
        channel = self.settings.channel_for_hash(frame.channel_hash)
        data = mesh_pb2.Data()
        if channel is not None:
            data.ParseFromString(frame.data)
        for_us = frame.dest == self.node_num
        if channel is not None and (for_us or frame.dest == BROADCAST):
            self._deliver(frame, data, channel, now, snr, rssi)
        if channel is not None and data.request_id and not for_us and frame.dest != BROADCAST:
            # An ACK or reply travelling back: stop relaying the DM it answers.
            self._cancel_queued((frame.dest, data.request_id))
        if for_us and frame.want_ack:
            if channel is None:
                self._send_routing(frame.src, frame.packet_id, Error.NO_CHANNEL, 0, now, frame)
            elif not data.request_id or frame.hop_start == frame.hop_limit:
                self._send_ack(frame, now)
        if not for_us:
            self._relay(frame, now, snr)

    def _on_duplicate(self, frame: AirFrame, now: float, snr: float) -> None:
        self.stats.drops["duplicate"] += 1
        repeated = frame.hop_start > 0 and frame.hop_start == frame.hop_limit
        if repeated:
            # The originator is retrying: help it get an (implicit) ACK again.
            if any(q.frame.key == frame.key for q in self.tx_queue):
                return
            if frame.dest == self.node_num and frame.want_ack:
                self._send_ack(frame, now, hop_limit=0)
            elif frame.dest != self.node_num:
                self._relay(frame, now, snr)
        elif self._cancel_queued(frame.key):
            self.stats.drops["relay_cancelled"] += 1

    def _relay(self, frame: AirFrame, now: float, snr: float) -> None:
        role = self.settings.config.device.role
        if frame.hop_limit <= 0:
            self.stats.drops["hop_limit"] += 1
            return
        if role == Role.CLIENT_MUTE:
            return
        copy = replace(frame, hop_limit=frame.hop_limit - 1, relay_node=self.node_num & 0xFF)
        self._queue(copy, now, now + self.relay_delay(snr), relay=True)

    def _send_ack(self, frame: AirFrame, now: float, hop_limit: int | None = None) -> None:
        if hop_limit is None:
            hop_limit = self._response_hop_limit(frame)
        self._send_routing(frame.src, frame.packet_id, Error.NONE, hop_limit, now, frame)

    def _response_hop_limit(self, frame: AirFrame) -> int:
        limit = self.settings.hop_limit
        if frame.hop_start:
            used = limit if frame.hop_start < frame.hop_limit else frame.hop_start - frame.hop_limit
            if used > limit:
                return used
            if used + 2 < limit:
                return used + 2
        return limit

    def _send_routing(
        self, dest: int, request_id: int, error: int, hop_limit: int, now: float, frame: AirFrame
    ) -> None:
        routing = mesh_pb2.Routing(error_reason=error)
        data = mesh_pb2.Data(
            portnum=portnums_pb2.PortNum.ROUTING_APP,
            payload=routing.SerializeToString(),
            request_id=request_id,
            bitfield=0,
        )
        ack = AirFrame(
            src=self.node_num,
            dest=dest,
            packet_id=self._new_id(),
            hop_limit=hop_limit,
            hop_start=hop_limit,
            want_ack=False,
            channel_hash=frame.channel_hash,
            relay_node=self.node_num & 0xFF,
            priority=Priority.ACK,
            data=data.SerializeToString(),
        )
        if self._queue(ack, now, now + self.tx_delay(), relay=False) == Error.NONE:
            self.stats.acks_sent += 1

    def _deliver(
        self, frame: AirFrame, data: mesh_pb2.Data, channel: int, now: float, snr: float, rssi: int
    ) -> None:
        if data.portnum == portnums_pb2.PortNum.ROUTING_APP and data.request_id:
            self._stop_retransmission((self.node_num, data.request_id))
        packet = mesh_pb2.MeshPacket(
            to=frame.dest,
            channel=channel,
            id=frame.packet_id,
            rx_time=self.mesh.epoch(now),
            rx_snr=snr,
            rx_rssi=rssi,
            hop_limit=frame.hop_limit,
            hop_start=frame.hop_start,
            want_ack=frame.want_ack,
            priority=frame.priority,
            relay_node=frame.relay_node,
            transport_mechanism=mesh_pb2.MeshPacket.TransportMechanism.TRANSPORT_LORA,
        )
        setattr(packet, "from", frame.src)
        packet.decoded.CopyFrom(data)
        self.phone.deliver(packet)
