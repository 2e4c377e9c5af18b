"""A roster file newer than anything stored is sent on at start (issue #10 item 2)."""

from relay.engine import sync
from relay.engine.core import Engine, EngineConfig, LinkInfo
from relay.envelope import Envelope, open_envelope
from relay.rosterfile import trust_from_bytes
from relay.trust import Role
from tests.engine.harness import MemStore, Node
from tests.world import NOW, World, standard_world

BOTH = (LinkInfo("mqtt", "mqtt"), LinkInfo("mesh", "mesh"))


def start(w: World, name: str, store: MemStore, roster_file: bytes) -> Node:
    """A node started with ``roster_file`` (read as the daemon does) and ``store``."""
    trust = trust_from_bytes(roster_file, w.root.public_key(), now=NOW)
    engine = Engine(
        EngineConfig(node=name, regions=frozenset({"VR07"}), seed=5),
        trust,
        w.keys[name],
        list(BOTH),
        store.snapshot(name),
    )
    node = Node(name, engine, store)
    for link in BOTH:
        node.run(engine.link_state(link.name, "up", NOW), NOW)
    node.run(engine.roster_file(roster_file, NOW), NOW)
    return node


def roster_id(raw: bytes) -> bytes:
    env = open_envelope(raw)
    assert isinstance(env, Envelope)
    return env.id


def test_newer_roster_file_is_stored_and_published_on_mqtt_at_once() -> None:
    """Test that a roster file newer than the store is stored and published on MQTT at once,
    and that the mesh gets it from a healing summary, not from every node's start."""
    w = standard_world()
    w.add("vr07-gw", Role.NODE, "region:VR07")
    raw = w.roster_bytes()
    gw = start(w, "vr07-gw", MemStore(), raw)
    rid = roster_id(raw)
    assert rid in gw.store.messages
    assert [(t.link, t.id) for t in gw.sent] == [("mqtt", rid)]
    gw.run(gw.engine.transmitted("mqtt", rid, True, NOW), NOW)
    gw.engine.peer_heard("mqtt", "vr07-utrecht", NOW + 1)
    for t in (NOW + 10, NOW + 20, NOW + 60):  # utrecht goes quiet: the file is not bridged
        gw.run(gw.engine.timer(t), t)
    assert [t.link for t in gw.sent if t.channel == "msg"] == ["mqtt"]
    # A mesh node that lacks it says so in its summary; the roster is the answer.
    ask, _ = sync.encode("vr07-post", "", [], max_bytes=229)
    gw.run(gw.engine.received("mesh", ask, NOW + 200, channel="sync"), NOW + 200)
    gw.run(gw.engine.timer(NOW + 240), NOW + 240)
    assert [(t.link, t.id) for t in gw.sent if t.channel == "msg"][1:] == [("mesh", rid)]


def test_stored_or_older_roster_file_is_not_sent_again() -> None:
    """Test that a restart with the same file, or with a file older than a stored roster that
    came from the network, sends nothing."""
    w = standard_world()
    w.add("vr07-gw", Role.NODE, "region:VR07")
    old = w.roster_bytes()
    store = MemStore()
    gw = start(w, "vr07-gw", store, old)
    gw.run(gw.engine.timer(NOW + 60), NOW + 60)
    for t in gw.sent:
        gw.run(gw.engine.transmitted(t.link, t.id, True, NOW + 60), NOW + 60)
    assert len(gw.sent) == 1 and store.outbox == {}  # published once, then done
    again = start(w, "vr07-gw", store, old)
    again.run(again.engine.timer(NOW + 60), NOW + 60)
    assert again.sent == []
    w.add("vr07-zeist", Role.NODE, "region:VR07")
    newer = w.roster_bytes()
    again.run(again.engine.received("mqtt", newer, NOW + 61, channel="msg"), NOW + 61)
    restarted = start(w, "vr07-gw", store, old)
    assert restarted.engine.trust.roster is not None
    assert restarted.engine.trust.roster.serial == w.roster.serial  # the stored one wins
    restarted.run(restarted.engine.timer(NOW + 120), NOW + 120)
    assert roster_id(old) not in {t.id for t in restarted.sent}
    assert restarted.engine.counters["roster_file_sent"] == 0
