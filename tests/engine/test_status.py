"""Signed status heartbeats: who may say what about whom, and the bounded peer table."""

from __future__ import annotations

import json
from collections.abc import Sequence

from relay.engine.ops import Rejected
from relay.engine.status import seal_status
from relay.envelope import Kind, Reason
from relay.trust import Role
from tests.engine.harness import make_node
from tests.world import NOW, World, standard_world


def _world() -> World:
    w = standard_world()
    w.add("hq", Role.NODE)
    return w


def _reasons(actions: Sequence[object]) -> list[Reason]:
    return [a.reason for a in actions if isinstance(a, Rejected)]


def test_signed_status_of_a_roster_node_makes_it_a_peer_and_gateway() -> None:
    """Test that a status signed by the node of its topic is accepted, with its gateway flag."""
    w = _world()
    hq = make_node(w, "hq", set())
    raw = seal_status({"gateway": True, "time": NOW + 0.5}, w.keys["vr07-utrecht"], NOW)
    assert hq.engine.status_received("mqtt", "vr07-utrecht", raw, NOW) == []
    assert "vr07-utrecht" in hq.engine.mqtt_peers
    assert "vr07-utrecht" in hq.engine.gateway_peers
    heard = hq.engine.peer_statuses["vr07-utrecht"]
    assert heard["state"] == "online" and heard["time"] == NOW + 0.5


def test_unsigned_forged_and_foreign_statuses_are_rejected_and_counted() -> None:
    """Test that JSON, another node's signature, an issuer's signature and garbage are refused."""
    w = _world()
    hq = make_node(w, "hq", set())
    e = hq.engine
    cases = [
        ("vr07-utrecht", json.dumps({"state": "offline"}).encode(), Reason.UNSIGNED),
        ("vr07-utrecht", seal_status({}, w.keys["vr05-twente"], NOW), Reason.WRONG_SIGNER),
        ("vr07-utrecht", seal_status({}, w.keys["national"], NOW), Reason.WRONG_SIGNER),
        ("ghost", seal_status({"gateway": True}, w.keys["vr05-twente"], NOW), Reason.WRONG_SIGNER),
        ("vr07-utrecht", b"\xd2\x84garbage", Reason.MALFORMED),
        ("vr07-utrecht", w.sign("vr07-utrecht", kind=Kind.ACK), Reason.WRONG_TOPIC),
    ]
    for node, raw, reason in cases:
        assert _reasons(e.status_received("mqtt", node, raw, NOW)) == [reason], node
    assert e.counters["statuses_rejected"] == len(cases)
    assert e.rejections[str(Reason.WRONG_SIGNER)] == 3
    assert not e.mqtt_peers and not e.gateway_peers and not e.peer_statuses


def test_status_with_a_key_off_the_roster_is_rejected() -> None:
    """Test that a status signed by an unknown key is refused as unknown-signer."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    w = _world()
    hq = make_node(w, "hq", set())
    raw = seal_status({}, Ed25519PrivateKey.generate(), NOW)
    assert _reasons(hq.engine.status_received("mqtt", "vr07-utrecht", raw, NOW)) == [
        Reason.UNKNOWN_SIGNER
    ]


def test_older_status_is_a_replay_but_the_will_signed_at_connect_counts() -> None:
    """Test that an older online status is refused, while the earlier-signed Will is taken."""
    w = _world()
    hq = make_node(w, "hq", set())
    key = w.keys["vr07-utrecht"]
    will = seal_status({"state": "offline"}, key, NOW)
    beats = [seal_status({}, key, NOW + i * 5) for i in range(3)]
    for i, raw in enumerate(beats):
        assert hq.engine.status_received("mqtt", "vr07-utrecht", raw, NOW + i * 5) == []
    old = hq.engine.status_received("mqtt", "vr07-utrecht", beats[0], NOW + 20)
    assert _reasons(old) == [Reason.REPLAY]
    assert hq.engine.status_received("mqtt", "vr07-utrecht", will, NOW + 25) == []
    assert hq.engine.peer_statuses["vr07-utrecht"]["state"] == "offline"


def test_node_status_replayed_as_a_message_is_refused() -> None:
    """Test that a node's signed heartbeat published on a msg topic is not stored as a message."""
    w = _world()
    hq = make_node(w, "hq", set())
    raw = seal_status({}, w.keys["vr07-utrecht"], NOW)
    actions = hq.engine.received("mqtt", raw, NOW, channel="msg", peer="vr07-utrecht")
    assert _reasons(actions) == [Reason.WRONG_TOPIC]
    assert not hq.delivered


def test_only_roster_nodes_become_peers_and_the_table_is_bounded() -> None:
    """Test that topic names off the roster never become peers and the table evicts the oldest."""
    w = _world()
    for i in range(6):
        w.add(f"n{i}", Role.NODE)
    hq = make_node(w, "hq", set(), max_peers=4)
    e = hq.engine
    for i in range(2000):  # a flood on made-up topics
        e.peer_heard("mqtt", f"fake{i}", NOW, gateway=True)
    assert not e.peers and not e.gateway_peers
    assert e.counters["peers_not_on_roster"] == 2000
    for i in range(6):
        raw = seal_status({"gateway": True}, w.keys[f"n{i}"], NOW + i)
        assert e.status_received("mqtt", f"n{i}", raw, NOW + i) == []
    assert set(e.peers) == {"n2", "n3", "n4", "n5"}
    assert set(e.gateway_peers) == set(e.peer_statuses) == {"n2", "n3", "n4", "n5"}
    assert e.counters["peers_evicted"] == 2


def test_the_audit_checkpoint_in_a_status_is_kept_once_per_chain_head() -> None:
    """Test that a status's audit checkpoint becomes one store op per new head, and that a
    malformed audit field is rejected."""
    from relay.engine.ops import Persist, PutPeerCheckpoint

    w = _world()
    hq = make_node(w, "hq", set())
    key = w.keys["vr07-utrecht"]
    head = {"n": 12, "head": "ab" * 32}
    raws = [seal_status({"audit": head}, key, NOW + i) for i in range(2)]
    first = hq.engine.status_received("mqtt", "vr07-utrecht", raws[0], NOW)
    ops = [op for a in first if isinstance(a, Persist) for op in a.ops]
    assert ops == [PutPeerCheckpoint("vr07-utrecht", 12, b"\xab" * 32, NOW, NOW, raws[0])]
    assert hq.engine.status_received("mqtt", "vr07-utrecht", raws[1], NOW + 1) == []
    moved = seal_status({"audit": {**head, "n": 13}}, key, NOW + 2)
    assert len(hq.engine.status_received("mqtt", "vr07-utrecht", moved, NOW + 2)) == 1
    for bad in ({"n": -1, "head": "ab" * 32}, {"n": 1, "head": "AB" * 32}, {"n": 1}, [1, 2]):
        raw = seal_status({"audit": bad}, key, NOW + 3)
        assert _reasons(hq.engine.status_received("mqtt", "vr07-utrecht", raw, NOW + 3)) == [
            Reason.MALFORMED
        ], bad
