"""The device API: framing, handshake order, QueueStatus, heartbeat, local admin."""

from __future__ import annotations

import pytest
from meshtastic.protobuf import admin_pb2, mesh_pb2, portnums_pb2

from relay.sim.framing import FrameDecoder, encode_frame
from relay.sim.mesh import Mesh
from relay.sim.spec import uniform_mesh
from tests.sim.hosts import Host

FRAMES = [b"", b"\x01", bytes(range(256)) * 2]
STREAM = b"".join(encode_frame(f) for f in FRAMES)


def test_decoder_reads_frames_whole() -> None:
    """Test that a stream of frames decodes whole in one call."""
    assert FrameDecoder().receive_data(STREAM) == FRAMES


def test_decoder_reads_frames_byte_by_byte() -> None:
    """Test that the same stream decodes fed one byte at a time."""
    decoder = FrameDecoder()
    out: list[bytes] = []
    for i in range(len(STREAM)):
        out += decoder.receive_data(STREAM[i : i + 1])
    assert out == FRAMES


def test_decoder_skips_wake_bytes_log_text_and_keeps_trailing_data() -> None:
    """Test that wake bytes and log text are skipped and a trailing partial frame waits."""
    decoder = FrameDecoder()
    noise = b"\xc3" * 32 + b"INFO boot\r\n\x94x"
    assert decoder.receive_data(noise + STREAM + encode_frame(b"tail")[:5]) == FRAMES
    assert decoder.pending == 5
    assert decoder.receive_data(encode_frame(b"tail")[5:]) == [b"tail"]


def test_decoder_drops_oversized_headers() -> None:
    """Test that a header announcing more than 512 bytes is dropped and the decoder resyncs."""
    decoder = FrameDecoder()
    assert decoder.receive_data(b"\x94\xc3\x02\x01" + encode_frame(b"ok")) == [b"ok"]
    assert decoder.dropped_frames == 1
    with pytest.raises(ValueError, match="512"):
        encode_frame(bytes(513))


def test_handshake_follows_firmware_order() -> None:
    """Test that want_config_id is answered in the firmware's order, ending with the nonce."""
    mesh = Mesh(uniform_mesh(3))
    host = Host(mesh, "r1")
    kinds = [m.WhichOneof("payload_variant") for m in host.received]
    head = ["my_info", "deviceuiConfig", "node_info", "metadata"] + ["channel"] * 8
    assert kinds[: len(head)] == head
    configs = [
        m.config.WhichOneof("payload_variant") for m in host.received if m.HasField("config")
    ]
    assert configs == [
        "device", "position", "power", "network", "display", "lora", "bluetooth", "security",
        "sessionkey",
    ]  # fmt: skip
    assert kinds[-3:] == ["node_info", "node_info", "config_complete_id"]
    assert host.received[-1].config_complete_id == 42
    assert host.received[4].channel.role == 1  # channel 0 is PRIMARY
    assert kinds.index("moduleConfig") > kinds.index("config")


def test_every_packet_and_heartbeat_gets_a_queue_status() -> None:
    """Test that each packet from the host and each heartbeat is answered with a QueueStatus."""
    mesh = Mesh(uniform_mesh(2))
    host = Host(mesh, "r1")
    ids = [host.send(0.0, payload=bytes([i])) for i in range(3)]
    host.write(mesh_pb2.ToRadio(heartbeat=mesh_pb2.Heartbeat()), 0.0)
    statuses = host.queue_status()
    assert [q.mesh_packet_id for q in statuses] == [*ids, 0]
    assert all(q.maxlen == 16 and q.res == 0 for q in statuses)
    assert statuses[0].free == 15


def test_local_admin_get_and_set() -> None:
    """Test that local ADMIN_APP requests are answered and settings stick."""
    mesh = Mesh(uniform_mesh(1))
    host = Host(mesh, "r1")
    own = mesh.radios["r1"].node_num

    def admin(msg: admin_pb2.AdminMessage) -> admin_pb2.AdminMessage | None:
        before = len(host.packets(portnums_pb2.PortNum.ADMIN_APP))
        host.send(
            0.0, to=own, payload=msg.SerializeToString(), portnum=portnums_pb2.PortNum.ADMIN_APP
        )
        replies = host.packets(portnums_pb2.PortNum.ADMIN_APP)[before:]
        if not replies:
            return None
        out = admin_pb2.AdminMessage()
        out.ParseFromString(replies[0].decoded.payload)
        return out

    set_owner = admin_pb2.AdminMessage()
    set_owner.set_owner.long_name = "Veiligheidsregio"
    assert admin(set_owner) is None
    reply = admin(admin_pb2.AdminMessage(get_owner_request=True))
    assert reply is not None and reply.get_owner_response.long_name == "Veiligheidsregio"
    assert len(reply.session_passkey) == 8
    for request in (
        admin_pb2.AdminMessage(get_canned_message_module_messages_request=True),
        admin_pb2.AdminMessage(get_ringtone_request=True),
        admin_pb2.AdminMessage(get_channel_request=1),
        admin_pb2.AdminMessage(get_device_metadata_request=True),
    ):
        assert admin(request) is not None
