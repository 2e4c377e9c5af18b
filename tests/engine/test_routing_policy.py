"""The routing policy's pure functions (relay.engine.routing), each with its table of cases."""

from __future__ import annotations

import dataclasses

import pytest

from relay.engine import routing
from relay.engine.health import LinkHealth
from relay.engine.model import LinkInfo
from relay.engine.outbox import ANY_LINK
from relay.envelope import Kind, Precedence
from relay.vocab import LinkKind, LinkState
from tests.world import NOW, standard_world

ME = "vr07-utrecht"
PEER = "vr05-twente"
T = float(NOW)


def health(state: LinkState | None) -> LinkHealth:
    """A link that reported ``state`` long ago (no hold-down left); None: never reported."""
    h = LinkHealth(hold_s=2.0, current_hold_s=2.0)
    if state is not None:
        h.report(state, T - 100)
    return h


def net(
    links: dict[str, tuple[LinkKind, LinkState | None]],
    *,
    mqtt_peers: dict[str, float] | None = None,
    gateways: dict[str, float] | None = None,
    mesh_peers: dict[str, float] | None = None,
) -> routing.Net:
    return routing.Net(
        node=ME,
        links={n: LinkInfo(n, kind) for n, (kind, _) in links.items()},
        health={n: health(state) for n, (_, state) in links.items()},
        mqtt_peers=mqtt_peers or {},
        gateway_peers=gateways or {},
        mesh_peers=mesh_peers or {},
        peer_timeout_s=15.0,
    )


UP, DEG, DOWN = LinkState.UP, LinkState.DEGRADED, LinkState.DOWN
MQTT, MESH = LinkKind.MQTT, LinkKind.MESH


@pytest.mark.parametrize(
    ("links", "skip", "best"),
    [
        ({"mqtt": (MQTT, UP), "mesh": (MESH, UP)}, (), "mqtt"),
        ({"mesh": (MESH, UP), "mqtt": (MQTT, UP)}, (), "mqtt"),  # kind before order
        ({"mqtt": (MQTT, DOWN), "mesh": (MESH, UP)}, (), "mesh"),
        ({"mqtt": (MQTT, DEG), "mesh": (MESH, UP)}, (), "mqtt"),  # degraded MQTT still first
        ({"a": (MQTT, DEG), "b": (MQTT, UP)}, (), "b"),  # up before degraded, same kind
        ({"a": (MQTT, UP), "b": (MQTT, UP)}, (), "a"),  # then configured order
        ({"mqtt": (MQTT, UP), "mesh": (MESH, UP)}, ("mqtt",), "mesh"),
        ({"mqtt": (MQTT, DOWN), "mesh": (MESH, None)}, (), None),
        ({}, (), None),
    ],
)
def test_best_link(
    links: dict[str, tuple[LinkKind, LinkState | None]], skip: tuple[str, ...], best: str | None
) -> None:
    """Test that the best link is MQTT before mesh, up before degraded, then config order."""
    assert routing.best_link(net(links), T, frozenset(skip)) == best


@pytest.mark.parametrize(
    ("mqtt_at", "mesh_at", "only"),
    [
        (None, None, True),  # never heard on MQTT: a radio-only post
        (T - 5, None, False),  # heard on MQTT lately
        (T - 20, None, True),  # silent on MQTT for longer than peer_timeout_s
        (T - 5, T - 1, True),  # heard signing on the mesh since it was last on MQTT
        (T - 5, T - 10, False),  # heard on the mesh before its last MQTT word
    ],
)
def test_mesh_only(mqtt_at: float | None, mesh_at: float | None, only: bool) -> None:
    """Test when a node counts as reachable only by mesh."""
    n = net(
        {"mqtt": (MQTT, UP)},
        mqtt_peers={} if mqtt_at is None else {PEER: mqtt_at},
        mesh_peers={} if mesh_at is None else {PEER: mesh_at},
    )
    assert routing.mesh_only(n, PEER, T) is only
    assert routing.mesh_pending(n, [PEER], T) == ({PEER} if only else set())


@pytest.mark.parametrize(
    ("gateways", "turns"),
    [
        ({}, {0}),  # alone: our turn is first
        ({"vr05-twente": T - 1}, {0, 1}),  # two gateways: one of the two places
        ({"vr05-twente": T - 60}, {0}),  # not heard lately: not counted
    ],
)
def test_bridge_turn(gateways: dict[str, float], turns: set[int]) -> None:
    """Test that a gateway's turn counts only gateways heard lately, and is the same order for
    every gateway (its peer computes the other place)."""
    w = standard_world()
    d = w.decision("national")
    mine = routing.bridge_turn(net({"mqtt": (MQTT, UP)}, gateways=gateways), d, T)
    assert mine in turns
    if len(turns) == 2:  # the other gateway computes the other place
        them = net({"mqtt": (MQTT, UP)}, gateways={ME: T - 1})
        them = dataclasses.replace(them, node=PEER)
        assert {mine, routing.bridge_turn(them, d, T)} == {0, 1}


@pytest.mark.parametrize(
    ("to", "kind", "peer_at", "needed"),
    [
        ("all", Kind.DECISION, T - 5, False),  # every recipient heard on MQTT lately
        ("all", Kind.DECISION, T - 20, True),  # one is cut off from MQTT
        ("region:VR07", Kind.DECISION, T - 20, False),  # the cut-off one is not a recipient
        ("region:VR07", Kind.ROSTER, T - 20, True),  # trust is for everyone
        ("all", Kind.DECISION, None, True),  # never heard on MQTT
    ],
)
def test_mesh_needed(to: str, kind: Kind, peer_at: float | None, needed: bool) -> None:
    """Test that a message needs the mesh when a recipient (not us) is not heard on MQTT."""
    w = standard_world()
    d = w.decision("national", to=to, kind=kind)
    n = net({"mqtt": (MQTT, UP)}, mqtt_peers={} if peer_at is None else {PEER: peer_at})
    assert routing.mesh_needed(n, d, w.roster, T, arrived_by=lambda _: None) is needed


@pytest.mark.parametrize(
    ("arrived", "needed"), [(LinkKind.MESH, True), (LinkKind.MQTT, False), (None, False)]
)
def test_mesh_needed_for_a_receipt(arrived: LinkKind | None, needed: bool) -> None:
    """Test that a receipt needs the mesh when what it acknowledges came from there."""
    w = standard_world()
    d = w.decision(PEER, kind=Kind.ACK, refs=(b"x" * 32,))
    n = net({"mqtt": (MQTT, UP)})
    assert routing.mesh_needed(n, d, w.roster, T, arrived_by=lambda _: arrived) is needed


@pytest.mark.parametrize(
    ("to", "signed", "newly", "missed"),
    [
        ("all", set(), {PEER}, {PEER}),
        ("all", {PEER}, {PEER}, set()),  # it signed already
        ("region:VR07", set(), {PEER}, set()),  # not a recipient
        ("all", set(), {ME}, set()),  # never ourselves
        ("all", set(), set(), set()),
    ],
)
def test_missed_by(to: str, signed: set[str], newly: set[str], missed: set[str]) -> None:
    """Test who has missed a message: newly quiet recipients that have not signed."""
    w = standard_world()
    d = w.decision("national", to=to)
    assert routing.missed_by(net({}), d, w.roster, signed, newly) == missed


@pytest.mark.parametrize(
    ("case", "precedence", "origin", "arrived", "needed", "expected"),
    [
        ("own flash", Precedence.FLASH, True, None, False, [("mqtt", 0.0), ("mesh", 0.0)]),
        ("own priority", Precedence.PRIORITY, True, None, False, [(ANY_LINK, 0.0), ("m", 1.0)]),
        ("from mesh", Precedence.PRIORITY, False, "mesh", False, [("mqtt", 0.0)]),
        ("from mqtt, needed", Precedence.PRIORITY, False, "mqtt", True, [("mesh", 7.0)]),
        ("from mqtt, not needed", Precedence.PRIORITY, False, "mqtt", False, []),
        ("from elsewhere", Precedence.PRIORITY, False, None, True, []),
    ],
)
def test_targets(
    case: str,
    precedence: Precedence,
    origin: bool,
    arrived: str | None,
    needed: bool,
    expected: list[tuple[str, float]],
) -> None:
    """Test where a new message goes first, by where it came from and its precedence."""
    w = standard_world()
    d = w.decision("national", precedence=precedence)
    n = net({"mqtt": (MQTT, UP), "mesh": (MESH, UP)})
    got = routing.targets(
        n, precedence, d, origin=origin, arrived=arrived, now=T,
        mesh_first=lambda: [("m", 1.0)], mesh_is_needed=lambda: needed,
        bridge_delay=lambda: 7.0,
    )  # fmt: skip
    assert got == expected, case


def test_targets_from_mesh_skip_an_unusable_mqtt_link() -> None:
    """Test that fresh mesh traffic is bridged only to MQTT links that are usable, and that a
    node without links sends nothing."""
    n = net({"mqtt": (MQTT, DOWN), "mesh": (MESH, UP)})
    d = standard_world().decision("national")
    for node, origin, arrived in ((n, False, "mesh"), (net({}), True, None)):
        got = routing.targets(
            node, d.precedence, d, origin=origin, arrived=arrived, now=T,
            mesh_first=list, mesh_is_needed=lambda: True, bridge_delay=lambda: 0.0,
        )  # fmt: skip
        assert got == []


@pytest.mark.parametrize(
    ("links", "peer_at", "expected"),
    [
        ({"mqtt": (MQTT, UP), "mesh": (MESH, UP)}, T - 5, []),  # everyone on MQTT
        ({"mqtt": (MQTT, UP), "mesh": (MESH, UP)}, None, [("mesh", 0.0)]),  # a radio-only post
        ({"mesh": (MESH, UP)}, None, []),  # no MQTT: the best link is the mesh already
        ({"mqtt": (MQTT, UP)}, None, []),  # no mesh
    ],
)
def test_mesh_targets(
    links: dict[str, tuple[LinkKind, LinkState | None]],
    peer_at: float | None,
    expected: list[tuple[str, float]],
) -> None:
    """Test that our own decision gets a mesh entry when a recipient only the mesh reaches."""
    w = standard_world()
    d = w.decision("national")
    n = net(links, mqtt_peers={} if peer_at is None else {PEER: peer_at})
    assert routing.mesh_targets(n, d, w.roster, T, peer_grace_s=6.0) == expected
