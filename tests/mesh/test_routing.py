"""The mesh's one table of routing codes agrees with meshtastic's own protobufs."""

from __future__ import annotations

from meshtastic.protobuf import mesh_pb2, portnums_pb2

from relay.mesh.routing import BROADCAST, PRIVATE_APP, REFUSING_NAKS, RoutingError, routing_name


def test_routing_codes_match_the_meshtastic_protobufs() -> None:
    """Test that every code in relay.mesh.routing has the number and name mesh.proto gives it."""
    for code in RoutingError:
        assert mesh_pb2.Routing.Error.Name(code.value) == code.name
    assert PRIVATE_APP == portnums_pb2.PortNum.PRIVATE_APP
    assert BROADCAST == 0xFFFFFFFF


def test_names_and_refusals() -> None:
    """Test that known codes are named, unknown ones numbered, and only the refusing NAKs
    (the packet as it is will never go) end a transmission as refused."""
    assert routing_name(7) == "TOO_LARGE" and routing_name(1) == "error 1"
    assert {c.name for c in REFUSING_NAKS} == {
        "NO_CHANNEL",
        "TOO_LARGE",
        "BAD_REQUEST",
        "NOT_AUTHORIZED",
    }
    assert RoutingError.DUTY_CYCLE_LIMIT not in REFUSING_NAKS
