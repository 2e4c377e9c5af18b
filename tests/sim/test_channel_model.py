"""The channel model on virtual time: flooding, loss, duty cycle, reliability, unplugging."""

from __future__ import annotations

import dataclasses

from meshtastic.protobuf import mesh_pb2, portnums_pb2

from relay.airtime import PRESETS, time_on_air
from relay.sim.mesh import Mesh
from relay.sim.spec import uniform_mesh
from tests.sim.hosts import Host, line_mesh

Error = mesh_pb2.Routing.Error


def hosts_for(mesh: Mesh) -> dict[str, Host]:
    return {name: Host(mesh, name) for name in mesh.radios}


def test_flood_over_a_line_spends_one_hop_per_relay() -> None:
    """Test that a broadcast crosses a 5-radio line, losing one hop per relay."""
    mesh = line_mesh(5)
    hosts = hosts_for(mesh)
    hosts["n1"].send(0.0, hop_limit=3)
    mesh.run_until(120.0)
    assert [p.hop_limit for h in list(hosts.values())[1:] for p in h.packets()] == [3, 2, 1, 0]
    assert hosts["n1"].packets() == []
    assert mesh.radios["n5"].stats.drops["hop_limit"] == 1
    assert mesh.radios["n5"].stats.frames_sent == 0


def test_hop_limit_stops_the_flood() -> None:
    """Test that with hop_limit 2 the fifth radio of a line never hears the packet."""
    mesh = line_mesh(5)
    hosts = hosts_for(mesh)
    hosts["n1"].send(0.0, hop_limit=2)
    mesh.run_until(120.0)
    assert len(hosts["n4"].packets()) == 1
    assert hosts["n5"].packets() == []


def test_duplicates_are_delivered_once_and_relays_cancelled() -> None:
    """Test that in an all-hear-all mesh each host gets a broadcast once and one relay suffices."""
    mesh = Mesh(uniform_mesh(4, seed=3))
    hosts = hosts_for(mesh)
    hosts["r1"].send(0.0)
    mesh.run_until(120.0)
    for name in ("r2", "r3", "r4"):
        assert len(hosts[name].packets()) == 1
    relays = sum(mesh.radios[n].stats.relayed for n in mesh.radios)
    assert relays == 1  # the others heard it rebroadcast and cancelled theirs
    assert sum(mesh.radios[n].stats.drops["relay_cancelled"] for n in mesh.radios) == 2


def test_total_loss_link_delivers_nothing_and_counts_it() -> None:
    """Test that a link with loss 1.0 drops every frame and counts the drops."""
    mesh = line_mesh(2, loss=1.0)
    hosts = hosts_for(mesh)
    for i in range(5):
        hosts["n1"].send(i * 30.0)
    mesh.run_until(300.0)
    assert hosts["n2"].packets() == []
    assert mesh.radios["n2"].stats.drops["loss"] == 5


def test_partial_loss_is_reproducible_with_a_seed() -> None:
    """Test that the same seed gives the same losses, and about the configured fraction."""

    def run(seed: int) -> int:
        mesh = line_mesh(2, loss=0.3, seed=seed)
        hosts = hosts_for(mesh)
        for i in range(200):
            hosts["n1"].send(i * 10.0, payload=bytes([i]))
            mesh.run_until(i * 10.0 + 9.0)
            hosts["n2"].read()
        return len(hosts["n2"].packets())

    assert run(5) == run(5)
    assert 110 <= run(5) <= 170


def test_too_large_payload_is_nakked() -> None:
    """Test that 231 B fits a private portnum, 232 B gets TOO_LARGE, and 232 B fits text."""
    mesh = line_mesh(2)
    hosts = hosts_for(mesh)
    ok = hosts["n1"].send(0.0, payload=b"x" * 231)
    big = hosts["n1"].send(10.0, payload=b"x" * 232)
    text = hosts["n1"].send(20.0, payload=b"x" * 232, portnum=portnums_pb2.PortNum.TEXT_MESSAGE_APP)
    mesh.run_until(60.0)
    assert (big, Error.TOO_LARGE, 0x101) in hosts["n1"].routing()
    assert [p.id for p in hosts["n2"].packets()] == [ok]
    assert [p.id for p in hosts["n2"].packets(portnums_pb2.PortNum.TEXT_MESSAGE_APP)] == [text]
    statuses = {q.mesh_packet_id: q.res for q in hosts["n1"].queue_status()}
    assert statuses[big] == Error.TOO_LARGE
    assert statuses[ok] == 0


def test_duty_cycle_naks_own_packets_and_drops_relays() -> None:
    """Test that past 10 % of an hour own packets get DUTY_CYCLE_LIMIT and relays vanish."""
    mesh = line_mesh(3)
    hosts = hosts_for(mesh)
    frame_s = time_on_air(255, PRESETS["LONG_FAST"])
    # n2's host sends full frames until n2 has used its budget; then n2 must relay for n1.
    t = 0.0
    for i in range(200):
        hosts["n2"].send(t, payload=bytes([i]) * 231, hop_limit=0)
        t += frame_s * 1.5
        mesh.run_until(t)
    assert mesh.radios["n2"].ledger.last_hour_s(t) >= 360.0
    naks = [r for r in hosts["n2"].routing() if r[1] == Error.DUTY_CYCLE_LIMIT]
    assert naks and all(src == 0x102 for _, _, src in naks)
    relayed_before = mesh.radios["n2"].stats.relayed
    hosts["n1"].send(t, payload=b"relay me")
    mesh.run_until(t + 60.0)
    assert mesh.radios["n2"].stats.relayed == relayed_before
    assert mesh.radios["n2"].stats.drops["duty_cycle_relay"] == 1
    assert b"relay me" not in [p.decoded.payload for p in hosts["n3"].packets()]
    # An hour later the budget is back.
    hosts["n2"].send(t + 3700.0, payload=b"again")
    mesh.run_until(t + 3800.0)
    assert hosts["n3"].packets()[-1].decoded.payload == b"again"


def test_want_ack_gets_real_ack_after_implicit_ack() -> None:
    """Test that a DM over a relay gets an implicit ACK (from us) and then the real ACK."""
    mesh = line_mesh(3)
    hosts = hosts_for(mesh)
    pid = hosts["n1"].send(0.0, to=0x103, want_ack=True)
    mesh.run_until(120.0)
    assert hosts["n1"].routing() == [(pid, Error.NONE, 0x101), (pid, Error.NONE, 0x103)]
    assert len(hosts["n3"].packets()) == 1
    assert mesh.radios["n1"].stats.retransmissions == 0


def test_want_ack_retries_three_times_then_max_retransmit() -> None:
    """Test that an unanswered want_ack packet is sent three times, then NAKed MAX_RETRANSMIT."""
    mesh = line_mesh(2, loss=1.0)
    hosts = hosts_for(mesh)
    pid = hosts["n1"].send(0.0, to=0x102, want_ack=True)
    mesh.run_until(200.0)
    assert mesh.radios["n1"].stats.frames_sent == 3
    assert hosts["n1"].routing() == [(pid, Error.MAX_RETRANSMIT, 0x101)]
    nak_time = hosts["n1"].packets(portnums_pb2.PortNum.ROUTING_APP)[0].rx_time - mesh.epoch0
    assert 20 <= nak_time <= 60  # FACTS.md: about 31-52 s at LONG_FAST


def test_retry_recovers_a_lost_first_try() -> None:
    """Test that when the link comes back a retry delivers the packet and the ACK returns."""
    mesh = line_mesh(2, loss=1.0)
    hosts = hosts_for(mesh)
    pid = hosts["n1"].send(0.0, to=0x102, want_ack=True)
    mesh.run_until(3.0)
    mesh.set_link("n1", "n2", 0.0)
    mesh.run_until(100.0)
    assert (pid, Error.NONE, 0x102) in hosts["n1"].routing()
    assert mesh.radios["n1"].stats.retransmissions >= 1
    assert len(hosts["n2"].packets()) == 1


def test_unplugged_radio_buffers_a_bounded_number_of_packets() -> None:
    """Test that an unplugged radio keeps 32 packets for its host, dropping non-text past that."""
    mesh = line_mesh(2)
    hosts = hosts_for(mesh)
    mesh.unplug("n2", 0.0)
    assert not mesh.connect("n2", 1.0)
    for i in range(40):
        hosts["n1"].send(i * 5.0, payload=bytes([i]))
    mesh.run_until(300.0)
    assert mesh.radios["n2"].stats.drops["host_queue_full"] == 8
    mesh.replug("n2", 300.0)
    again = Host(mesh, "n2", now=300.0)
    assert [p.decoded.payload for p in again.packets()] == [bytes([i]) for i in range(32)]


def test_text_replaces_oldest_when_host_buffer_full() -> None:
    """Test that text messages for an absent host push out the oldest queued packet."""
    mesh = line_mesh(2)
    hosts = hosts_for(mesh)
    mesh.unplug("n2", 0.0)
    text = portnums_pb2.PortNum.TEXT_MESSAGE_APP
    for i in range(34):
        hosts["n1"].send(i * 5.0, payload=str(i).encode(), portnum=text)
    mesh.run_until(300.0)
    mesh.replug("n2", 300.0)
    got = [p.decoded.payload for p in Host(mesh, "n2", now=300.0).packets(text)]
    assert got == [str(i).encode() for i in range(2, 34)]


def test_airtime_statistics_match_the_airtime_formula() -> None:
    """Test that airtime used equals the frames' time on air and the budget is 360 s."""
    mesh = line_mesh(2)
    hosts = hosts_for(mesh)
    hosts["n1"].send(0.0, payload=b"x" * 100)
    mesh.run_until(60.0)
    stats = mesh.statistics("n1")
    data = mesh_pb2.Data(portnum=256, payload=b"x" * 100, bitfield=0).SerializeToString()
    expected = time_on_air(16 + len(data), PRESETS["LONG_FAST"])
    assert stats["airtime_total_s"] == round(expected, 4)
    assert stats["airtime_last_hour_s"] == round(expected, 4)
    assert stats["duty_cycle_budget_s"] == 360.0
    mesh.run_until(3700.0)
    assert mesh.statistics("n1")["airtime_last_hour_s"] == 0


def test_transmissions_are_serialised_per_radio() -> None:
    """Test that a radio's frames never overlap on air: 5 frames take at least 5 airtimes."""
    mesh = Mesh(dataclasses.replace(uniform_mesh(2, seed=2)))
    hosts = hosts_for(mesh)
    ids = [hosts["r1"].send(0.0, payload=bytes([i]) * 200) for i in range(5)]
    frame_s = time_on_air(16 + 206, PRESETS["LONG_FAST"])
    mesh.run_until(5 * frame_s - 0.01)
    assert len(hosts["r2"].packets()) < 5
    mesh.run_until(60.0)
    assert [p.id for p in hosts["r2"].packets()] == ids
