"""The unmodified meshtastic library against the emulator over TCP."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from meshtastic.tcp_interface import TCPInterface
from pubsub import pub

from tests.sim.conftest import RunningMesh

WAIT_S = 10.0


class Inbox:
    """Collects packets the library publishes for one interface (pubsub holds it weakly)."""

    def __init__(self, iface: TCPInterface) -> None:
        self.iface = iface
        self.packets: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        pub.subscribe(self.on_receive, "meshtastic.receive")

    def on_receive(self, packet: dict[str, Any], interface: Any) -> None:
        if interface is self.iface:
            with self.arrived:
                self.packets.append(packet)
                self.arrived.notify_all()

    def wait_for(self, portnum: str, timeout: float = WAIT_S) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for p in self.packets:
                if p.get("decoded", {}).get("portnum") == portnum:
                    return p
            return None

        with self.arrived:
            assert self.arrived.wait_for(lambda: found() is not None, timeout), portnum
            result = found()
        assert result is not None
        return result


@pytest.mark.radio
def test_tcp_interface_connects_and_reads_config(mesh_of_two: RunningMesh) -> None:
    """Test that TCPInterface connects, waitForConfig succeeds and the node DB lists both radios."""
    iface = TCPInterface("127.0.0.1", portNumber=mesh_of_two.port("r1"))
    try:
        iface.waitForConfig()
        assert iface.myInfo is not None
        assert iface.myInfo.my_node_num == 0x5E1A0001
        assert set(iface.nodesByNum) == {0x5E1A0001, 0x5E1A0002}
        assert iface.localNode.channels[0].role == 1  # PRIMARY
        assert iface.localNode.localConfig.lora.hop_limit == 3
        assert iface.getLongName() == "Emulated radio 1"
    finally:
        iface.close()


@pytest.mark.radio
def test_text_and_private_data_cross_the_mesh(mesh_of_two: RunningMesh) -> None:
    """Test that sendText and sendData on portnum 256 from one radio reach the other's client."""
    a = TCPInterface("127.0.0.1", portNumber=mesh_of_two.port("r1"))
    b = TCPInterface("127.0.0.1", portNumber=mesh_of_two.port("r2"))
    try:
        inbox = Inbox(b)
        a.sendText("hallo")
        a.sendData(b"\x00signed\xff" * 20, portNum=256)
        text = inbox.wait_for("TEXT_MESSAGE_APP")
        data = inbox.wait_for("PRIVATE_APP")
        assert text["decoded"]["text"] == "hallo"
        assert text["fromId"] == "!5e1a0001"
        assert data["decoded"]["payload"] == b"\x00signed\xff" * 20
    finally:
        a.close()
        b.close()
