"""Engines + MeshCores on the emulator's channel model in virtual time: no library, no sockets.

``SimRadioHost`` speaks the device API bytes to one radio of a ``relay.sim.mesh.Mesh`` and does for
a ``MeshCore`` what ``RadioBridge`` does with the library: packets out, packets on our portnum and
ACK/NAKs back in. ``SimNetwork`` steps every engine, core and radio on one virtual clock.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from meshtastic.protobuf import mesh_pb2, portnums_pb2

from relay.engine.core import LinkInfo
from relay.engine.ops import DeliveredAt, Rejected, Transmit
from relay.envelope import Reason
from relay.mesh.core import MeshCore
from relay.mesh.events import CoreSettings, Done, OutFrame, Received
from relay.mesh.routing import PRIVATE_APP
from relay.sim.framing import FrameDecoder, encode_frame
from relay.sim.mesh import Mesh
from relay.trust import Role
from tests.engine.harness import Node, make_node
from tests.world import NOW, World

ROUTING_APP = int(portnums_pb2.PortNum.ROUTING_APP)
LINK = "mesh"


class SimRadioHost:
    """One host connected to one emulated radio, in virtual time."""

    def __init__(self, mesh: Mesh, name: str, core: MeshCore, now: float) -> None:
        self.mesh, self.name, self.core = mesh, name, core
        self.decoder = FrameDecoder()
        self.node_num = mesh.radios[name].node_num
        self.refs: dict[int, int] = {}  # packet id -> core ref
        self._ids = itertools.count(1)
        self.sent: list[OutFrame] = []
        mesh.connect(name, now)
        self._write(mesh_pb2.ToRadio(want_config_id=7), now)
        self.pump(now)

    def _write(self, msg: mesh_pb2.ToRadio, now: float) -> None:
        self.mesh.receive_data(self.name, encode_frame(msg.SerializeToString()), now)

    def send(self, out: OutFrame, now: float) -> None:
        packet = mesh_pb2.MeshPacket(
            to=out.to, id=next(self._ids), hop_limit=3, want_ack=out.want_ack
        )
        packet.decoded.portnum = PRIVATE_APP
        packet.decoded.payload = out.payload
        self.refs[packet.id] = out.ref
        self.sent.append(out)
        self._write(mesh_pb2.ToRadio(packet=packet), now)
        self.core.frame_sent(out.ref, now)

    def pump(self, now: float) -> None:
        """Feed everything the radio has for us into the core."""
        for payload in self.decoder.receive_data(self.mesh.data_to_send(self.name)):
            msg = mesh_pb2.FromRadio()
            msg.ParseFromString(payload)
            if msg.HasField("queueStatus"):
                status = msg.queueStatus
                ref = self.refs.get(status.mesh_packet_id)
                if status.res not in (0, 9) and ref is not None:  # 9: a Routing NAK follows
                    self.core.frame_failed(ref, f"radio queue refused ({status.res})", now)
            if not msg.HasField("packet"):
                continue
            p = msg.packet
            sender = getattr(p, "from")
            if p.decoded.portnum == PRIVATE_APP:
                self.core.frame_received(p.decoded.payload, sender, now)
            elif p.decoded.portnum == ROUTING_APP and p.decoded.request_id in self.refs:
                routing = mesh_pb2.Routing()
                routing.ParseFromString(p.decoded.payload)
                ref = self.refs.pop(p.decoded.request_id)
                implicit = sender == self.node_num and routing.error_reason == 0
                self.core.frame_routed(ref, routing.error_reason, implicit=implicit, now=now)


@dataclass
class SimNode:
    node: Node
    core: MeshCore
    radio: SimRadioHost
    tickets: dict[int, bytes] = field(default_factory=dict)  # core ticket -> message id
    handled: int = 0  # Transmits of node.sent already given to the core
    rejected: list[Rejected] = field(default_factory=list)


class SimNetwork:
    """Every radio of ``mesh`` with an engine (node name = radio name) and a MeshCore."""

    def __init__(
        self,
        world: World,
        mesh: Mesh,
        *,
        settings: CoreSettings | None = None,
        regions: tuple[str, ...] = ("VR07",),
    ) -> None:
        self.world, self.mesh = world, mesh
        self.now = 0.0
        for name in mesh.radios:  # everyone on the roster before any engine reads it
            if world.roster.by_name(name) is None:
                world.add(name, Role.NODE, *[f"region:{r}" for r in regions])
        self.nodes: dict[str, SimNode] = {}
        for name in mesh.radios:
            node = make_node(world, name, set(regions), links=(LinkInfo(LINK, "mesh"),))
            core = MeshCore(settings)
            self.nodes[name] = SimNode(node, core, SimRadioHost(mesh, name, core, 0.0))
        self.max_airtime_last_hour = {name: 0.0 for name in mesh.radios}

    # -- driving ----------------------------------------------------------------------------

    def submit(self, name: str, raw: bytes) -> None:
        n = self.nodes[name]
        n.node.run(n.node.engine.submit(raw, NOW + self.now, ticket=1), NOW + self.now)
        self._settle(self.now)

    def run_until(self, until: float, *, stop: object = None) -> None:
        """Step every clock to ``until`` (or until ``stop()`` holds)."""
        while self.now < until:
            if callable(stop) and stop():
                return
            self._settle(self.now)
            nxt = self._next_time()
            self.now = min(max(nxt, self.now + 1e-6), until)
            self.mesh.handle_timer(self.now)
            self._sample_airtime()
        self._settle(self.now)

    def _next_time(self) -> float:
        times = [t for t in [self.mesh.get_timer()] if t is not None]
        for n in self.nodes.values():
            timer = n.core.get_timer()
            if timer is not None:
                times.append(timer)
            times.append(n.node.engine.next_deadline() - NOW)
        return min(times, default=math.inf)

    def _settle(self, now: float) -> None:
        """Run every node until nothing more happens at ``now``."""
        busy = True
        while busy:
            busy = False
            for n in self.nodes.values():
                busy |= self._step(n, now)

    def _step(self, n: SimNode, now: float) -> bool:
        engine, t = n.node.engine, NOW + now
        n.radio.pump(now)
        n.core.handle_timer(now)
        progressed = False
        if engine.next_deadline() <= t:
            n.node.run(engine.timer(t), t)
        for event in n.core.events():
            progressed = True
            match event:
                case Received(raw=raw, channel=channel):
                    n.node.run(engine.received(LINK, raw, t, channel=channel), t)
                case Rejected():
                    n.rejected.append(event)
                    n.node.run(engine.rejected_by_link(LINK, event.reason, event.detail, t), t)
                case Done(ticket=ticket, ok=ok):
                    msg_id = n.tickets.pop(ticket)
                    n.node.run(engine.transmitted(LINK, msg_id, ok, t), t)
        while n.handled < len(n.node.sent):
            tx: Transmit = n.node.sent[n.handled]
            n.handled += 1
            n.tickets[n.core.submit(tx, now)] = tx.id
            progressed = True
        while (out := n.core.poll_transmit(now)) is not None:
            n.radio.send(out, now)
            progressed = True
        return progressed

    def _sample_airtime(self) -> None:
        for name in self.nodes:
            used = self.mesh.radios[name].ledger.last_hour_s(self.now)
            if used > self.max_airtime_last_hour[name]:
                self.max_airtime_last_hour[name] = used

    # -- observation ------------------------------------------------------------------------

    def deliveries(self, name: str, msg_id: bytes) -> int:
        return sum(1 for d in self.nodes[name].node.delivered if d.id == msg_id)

    def receipts(self, name: str, msg_id: bytes) -> set[str]:
        return {
            a.node
            for a in self.nodes[name].node.other
            if isinstance(a, DeliveredAt) and a.id == msg_id
        }

    def rejections(self) -> list[Reason]:
        return [r.reason for n in self.nodes.values() for r in n.rejected]
