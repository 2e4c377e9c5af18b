"""The device side of the Meshtastic client API (firmware PhoneAPI), sans-I/O.

Bytes from the host go in with ``receive_data``; bytes for the host come out of ``data_to_send``.
On ``want_config_id`` the device answers in firmware order: my_info, deviceuiConfig, own node_info,
metadata, 8 channels, config (device … security, sessionkey), moduleConfig, other node_infos,
config_complete_id. Every packet from the host is answered with a QueueStatus (TX queue of 16):
the library counts its free slots down and spins while none are left, so one missing QueueStatus
deadlocks it. Packets for the host wait in a bounded queue (32, as on nRF52/ESP32-S3) that also
keeps them while no host is connected; past that, text replaces the oldest and the rest is dropped.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Final

import structlog
from meshtastic.protobuf import admin_pb2, device_ui_pb2, mesh_pb2, portnums_pb2

from relay.sim.framing import FrameDecoder, encode_frame
from relay.sim.ports import MAX_TX_QUEUE, RadioPort
from relay.sim.settings import CONFIG_FIELDS_ALL, MODULE_FIELDS, NUM_CHANNELS

TO_HOST_QUEUE: Final = 32
SEEN_FROM_HOST: Final = 64
_TEXT_PORTS: Final = (portnums_pb2.PortNum.TEXT_MESSAGE_APP, portnums_pb2.PortNum.RANGE_TEST_APP)

log = structlog.get_logger("relay.sim.phone")


class PhoneApi:
    """One radio's host-facing API: framing, config handshake, queue status, local admin."""

    def __init__(self, radio: RadioPort) -> None:
        self.radio = radio
        self.connected = False
        self.configured = False
        self._decoder = FrameDecoder()
        self._out = bytearray()  # framed responses that are not mesh packets
        self._to_host: deque[mesh_pb2.MeshPacket] = deque()
        self._seen_ids: OrderedDict[int, None] = OrderedDict()

    # --- connection ------------------------------------------------------------------------------

    def connect(self) -> None:
        """A host attached (a new TCP client, or the serial port was opened)."""
        self.connected = True
        self.configured = False
        self._decoder = FrameDecoder()
        self._out.clear()

    def disconnect(self) -> None:
        """The host went away; packets for it wait in the bounded queue."""
        self.connected = False
        self.configured = False
        self._out.clear()

    # --- bytes in, bytes out ---------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        for payload in self._decoder.receive_data(data):
            msg = mesh_pb2.ToRadio()
            try:
                msg.ParseFromString(payload)
            except Exception:  # noqa: BLE001 - a peer fault: protobuf raises DecodeError, counted
                self.radio.stats.drops["bad_frame_from_host"] += 1
                continue
            self.handle(msg, now)

    def data_to_send(self) -> bytes:
        """Everything ready for the host: responses first, then queued packets once configured."""
        if not self.connected:
            return b""
        out = bytes(self._out)
        self._out.clear()
        if self.configured:
            while self._to_host:
                out += self._frame(mesh_pb2.FromRadio(packet=self._to_host.popleft()))
                self.radio.stats.to_host += 1
        return out

    @property
    def queued_for_host(self) -> int:
        return len(self._to_host)

    # --- ToRadio ---------------------------------------------------------------------------------

    def handle(self, msg: mesh_pb2.ToRadio, now: float) -> None:
        if not self.connected:
            self.connect()
        match msg.WhichOneof("payload_variant"):
            case "want_config_id":
                self._send_config(msg.want_config_id)
            case "packet":
                self._handle_packet(msg.packet, now)
            case "heartbeat":
                if msg.heartbeat.nonce != 1:
                    self._queue_status(0, 0)
            case "disconnect":
                self.configured = False
            case _:
                pass  # xmodem, MQTT proxy: not emulated

    def _handle_packet(self, packet: mesh_pb2.MeshPacket, now: float) -> None:
        if packet.id and packet.id in self._seen_ids:
            # Firmware ignores a packet id it saw recently from the host, without a QueueStatus.
            return
        if packet.id:
            self._seen_ids[packet.id] = None
            while len(self._seen_ids) > SEEN_FROM_HOST:
                self._seen_ids.popitem(last=False)
        res = self.radio.send_from_host(packet, now)
        self._queue_status(res, packet.id)

    def _queue_status(self, res: int, packet_id: int) -> None:
        free = max(MAX_TX_QUEUE - len(self.radio.tx_queue), 0)
        status = mesh_pb2.QueueStatus(res=res, free=free, maxlen=MAX_TX_QUEUE)
        status.mesh_packet_id = packet_id
        self._out += self._frame(mesh_pb2.FromRadio(queueStatus=status))

    def _frame(self, msg: mesh_pb2.FromRadio) -> bytes:
        return encode_frame(msg.SerializeToString())

    # --- config handshake ------------------------------------------------------------------------

    def _send_config(self, nonce: int) -> None:
        s = self.radio.settings
        mesh = self.radio.mesh
        msgs: list[mesh_pb2.FromRadio] = [
            mesh_pb2.FromRadio(
                my_info=mesh_pb2.MyNodeInfo(
                    my_node_num=s.node_num,
                    min_app_version=30200,
                    pio_env="native",
                    nodedb_count=len(mesh.radios),
                )
            ),
            mesh_pb2.FromRadio(deviceuiConfig=device_ui_pb2.DeviceUIConfig()),
            mesh_pb2.FromRadio(node_info=self._node_info(self.radio, own=True)),
            mesh_pb2.FromRadio(metadata=s.metadata()),
        ]
        msgs += [mesh_pb2.FromRadio(channel=s.channels[i]) for i in range(NUM_CHANNELS)]
        msgs += [mesh_pb2.FromRadio(config=s.config_message(n)) for n in CONFIG_FIELDS_ALL]
        msgs += [mesh_pb2.FromRadio(moduleConfig=s.module_message(n)) for n in MODULE_FIELDS]
        msgs += [
            mesh_pb2.FromRadio(node_info=self._node_info(other, own=False))
            for other in mesh.radios.values()
            if other is not self.radio
        ]
        msgs.append(mesh_pb2.FromRadio(config_complete_id=nonce))
        for m in msgs:
            self._out += self._frame(m)
        self.configured = True
        log.debug("config sent", radio=self.radio.name, nonce=nonce, messages=len(msgs))

    def _node_info(self, radio: RadioPort, *, own: bool) -> mesh_pb2.NodeInfo:
        info = mesh_pb2.NodeInfo(num=radio.node_num, is_favorite=own)
        info.user.CopyFrom(radio.settings.owner)
        if not own:
            info.hops_away = 0
            info.last_heard = self.radio.mesh.epoch(self.radio.mesh.now)
        return info

    # --- packets for the host --------------------------------------------------------------------

    def deliver(self, packet: mesh_pb2.MeshPacket) -> None:
        """Queue a packet for the host (firmware MeshService::sendToPhone drop policy)."""
        if len(self._to_host) >= TO_HOST_QUEUE:
            if packet.decoded.portnum in _TEXT_PORTS:
                self._to_host.popleft()
                self.radio.stats.drops["host_queue_oldest"] += 1
            else:
                self.radio.stats.drops["host_queue_full"] += 1
                return
        self._to_host.append(packet)

    def deliver_routing(self, src: int, request_id: int, error: int, now: float) -> None:
        """An ACK (error 0) or NAK for the host about packet ``request_id``."""
        routing = mesh_pb2.Routing(error_reason=error)
        self._deliver_local(
            portnums_pb2.PortNum.ROUTING_APP, routing.SerializeToString(), request_id, src, now
        )

    def handle_local(self, packet: mesh_pb2.MeshPacket, now: float) -> None:
        """A packet the host addressed to this radio itself (ADMIN_APP from the CLI)."""
        if packet.decoded.portnum != portnums_pb2.PortNum.ADMIN_APP:
            return
        req = admin_pb2.AdminMessage()
        try:
            req.ParseFromString(packet.decoded.payload)
        except Exception:  # noqa: BLE001 - a peer fault: protobuf raises DecodeError
            self.radio.stats.drops["bad_admin"] += 1
            return
        log.debug("admin", radio=self.radio.name, request=req.WhichOneof("payload_variant"))
        reply = self.radio.settings.apply_admin(req)
        if reply is not None:
            self._deliver_local(
                portnums_pb2.PortNum.ADMIN_APP,
                reply.SerializeToString(),
                packet.id,
                self.radio.node_num,
                now,
            )
        elif packet.decoded.want_response or packet.want_ack:
            self.deliver_routing(self.radio.node_num, packet.id, 0, now)

    def _deliver_local(
        self, portnum: int, payload: bytes, request_id: int, src: int, now: float
    ) -> None:
        packet = mesh_pb2.MeshPacket(to=self.radio.node_num, rx_time=self.radio.mesh.epoch(now))
        setattr(packet, "from", src)
        packet.id = self.radio.mesh.rng.getrandbits(32) or 1
        packet.decoded.portnum = portnum
        packet.decoded.payload = payload
        packet.decoded.request_id = request_id
        self.deliver(packet)
