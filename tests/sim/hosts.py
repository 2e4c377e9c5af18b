"""A fake host that speaks the device API to a Mesh in virtual time (no sockets)."""

from __future__ import annotations

import itertools

from meshtastic.protobuf import mesh_pb2, portnums_pb2

from relay.sim.framing import FrameDecoder, encode_frame
from relay.sim.mesh import Mesh
from relay.sim.spec import LinkSpec, MeshSpec, RadioSpec

BROADCAST = 0xFFFFFFFF
_ids = itertools.count(0x1000)


def line_mesh(count: int, *, loss: float = 0.0, seed: int = 1, preset: str = "LONG_FAST") -> Mesh:
    """``count`` radios n1 - n2 - ... where each hears only its neighbours."""
    radios = tuple(
        RadioSpec(f"n{i}", 0x100 + i, f"Node {i}", f"N{i}", preset) for i in range(1, count + 1)
    )
    links = tuple(LinkSpec(f"n{i}", f"n{i + 1}", loss) for i in range(1, count))
    return Mesh(MeshSpec(radios, links, seed=seed))


class Host:
    """Connects to one radio, sends ToRadio frames and collects every FromRadio."""

    def __init__(self, mesh: Mesh, name: str, *, now: float = 0.0) -> None:
        self.mesh = mesh
        self.name = name
        self.decoder = FrameDecoder()
        self.received: list[mesh_pb2.FromRadio] = []
        mesh.connect(name, now)
        self.write(mesh_pb2.ToRadio(want_config_id=42), now)

    def write(self, msg: mesh_pb2.ToRadio, now: float) -> None:
        self.mesh.receive_data(self.name, encode_frame(msg.SerializeToString()), now)
        self.read()

    def read(self) -> list[mesh_pb2.FromRadio]:
        new = []
        for payload in self.decoder.receive_data(self.mesh.data_to_send(self.name)):
            msg = mesh_pb2.FromRadio()
            msg.ParseFromString(payload)
            new.append(msg)
        self.received += new
        return new

    def send(
        self,
        now: float,
        *,
        to: int = BROADCAST,
        payload: bytes = b"decision",
        portnum: int = 256,
        want_ack: bool = False,
        hop_limit: int = 3,
    ) -> int:
        packet = mesh_pb2.MeshPacket(to=to, id=next(_ids), hop_limit=hop_limit, want_ack=want_ack)
        packet.decoded.portnum = portnum
        packet.decoded.payload = payload
        self.write(mesh_pb2.ToRadio(packet=packet), now)
        return int(packet.id)

    def packets(self, portnum: int = 256) -> list[mesh_pb2.MeshPacket]:
        self.read()
        return [
            m.packet
            for m in self.received
            if m.HasField("packet") and m.packet.decoded.portnum == portnum
        ]

    def routing(self) -> list[tuple[int, int, int]]:
        """(request_id, error_reason, from) of every ACK/NAK the host got."""
        out = []
        for p in self.packets(portnums_pb2.PortNum.ROUTING_APP):
            r = mesh_pb2.Routing()
            r.ParseFromString(p.decoded.payload)
            out.append((p.decoded.request_id, int(r.error_reason), getattr(p, "from")))
        return out

    def queue_status(self) -> list[mesh_pb2.QueueStatus]:
        self.read()
        return [m.queueStatus for m in self.received if m.HasField("queueStatus")]
