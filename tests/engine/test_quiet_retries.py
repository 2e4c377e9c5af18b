"""Scale fixes in the engine: retries that reach nobody, askers for a node back, mesh answers."""

import cbor2

from relay.engine import sync
from relay.engine.model import LinkInfo
from relay.engine.ops import SendSummary
from relay.envelope import Precedence, message_id
from relay.trust import Role
from tests.engine.harness import Node, make_node
from tests.world import NOW, World, standard_world

HOUR = 3600.0


def world() -> World:
    w = standard_world()
    w.add("hq", Role.NODE)
    return w


def publishes(node: Node, msg_id: bytes) -> int:
    return sum(1 for t in node.sent if t.id == msg_id and t.link == "mqtt")


def carry(origin: Node, until: float, *, heard: dict[str, float]) -> None:
    """Step the origin's timer every 5 s, acknowledge its publishes at once (PUBACK), and let it
    hear the nodes in ``heard`` (name -> heard until) every 5 s, as their status heartbeats."""
    t = float(NOW)
    while t < until:
        t += 5.0
        for name, last in heard.items():
            if t <= last:
                origin.engine.peer_heard("mqtt", name, t)
        before = len(origin.sent)
        origin.run(origin.engine.timer(t), t)
        for tx in origin.sent[before:]:
            origin.run(origin.engine.transmitted(tx.link, tx.id, True, t), t)


def submit_to_vr07(w: World, hq: Node, utrecht: Node) -> bytes:
    """hq sends a PRIORITY decision to VR07 (utrecht and amersfoort); utrecht signs for it."""
    raw = w.sign("national", to="region:VR07", precedence=Precedence.PRIORITY, lifetime=6 * 3600)
    hq.run(hq.engine.submit(raw, NOW, ticket=1), NOW)
    sent = hq.sent[-1]
    hq.run(hq.engine.transmitted("mqtt", sent.id, True, NOW), NOW)
    utrecht.run(utrecht.engine.received("mqtt", sent.raw, NOW, peer="hq"), NOW)
    receipt = next(t for t in utrecht.sent if t.channel == "rcpt")
    hq.run(hq.engine.received("mqtt", receipt.raw, NOW + 0.1, peer="vr07-utrecht"), NOW + 0.1)
    return sent.id


def test_no_republish_while_the_unsigned_are_cut_off() -> None:
    """Test that an origin whose only unsigned recipient went quiet on MQTT skips its retries
    there (no re-publish for the hours of the cut), and retries once that node is heard again."""
    w = world()
    w.add("vr07-amersfoort", Role.NODE, "region:VR07")
    hq = make_node(w, "hq", set())
    utrecht = make_node(w, "vr07-utrecht", {"VR07"})
    for name in ("vr07-utrecht", "vr07-amersfoort"):
        hq.engine.peer_heard("mqtt", name, NOW)
    msg_id = submit_to_vr07(w, hq, utrecht)
    # amersfoort is cut off from NOW on; utrecht (who signed) stays heard.
    carry(hq, NOW + 3 * HOUR, heard={"vr07-utrecht": NOW + 4 * HOUR})
    assert publishes(hq, msg_id) == 1
    assert hq.engine.counters["retries_skipped_quiet"] >= 5
    # amersfoort is back: the next try goes out.
    back = NOW + 3 * HOUR
    hq.engine.peer_heard("mqtt", "vr07-amersfoort", back)
    hq.run(hq.engine.timer(back), back)
    carry_from = len(hq.sent)
    t = back
    while t < back + 700 and publishes(hq, msg_id) == 1:
        t += 5.0
        hq.engine.peer_heard("mqtt", "vr07-amersfoort", t)
        hq.run(hq.engine.timer(t), t)
    assert publishes(hq, msg_id) == 2, hq.sent[carry_from:]


def test_retries_go_on_while_an_unsigned_recipient_is_heard() -> None:
    """Test that the origin keeps retrying on MQTT while a recipient that has not signed is
    heard there (its receipt may have been lost), as before."""
    w = world()
    w.add("vr07-amersfoort", Role.NODE, "region:VR07")
    hq = make_node(w, "hq", set())
    utrecht = make_node(w, "vr07-utrecht", {"VR07"})
    msg_id = submit_to_vr07(w, hq, utrecht)
    carry(hq, NOW + HOUR, heard={"vr07-utrecht": NOW + 2 * HOUR, "vr07-amersfoort": NOW + 2 * HOUR})
    assert publishes(hq, msg_id) > 3
    assert hq.engine.counters["retries_skipped_quiet"] == 0


def test_a_node_hearing_nobody_retries_as_before() -> None:
    """Test that an origin that hears no status heartbeats on MQTT at all (none yet) does not
    take its recipients for cut off: it retries as before."""
    w = world()
    w.add("vr07-amersfoort", Role.NODE, "region:VR07")
    hq = make_node(w, "hq", set())
    utrecht = make_node(w, "vr07-utrecht", {"VR07"})
    msg_id = submit_to_vr07(w, hq, utrecht)
    carry(hq, NOW + HOUR, heard={})
    assert publishes(hq, msg_id) > 3
    assert hq.engine.counters["retries_skipped_quiet"] == 0


def test_few_nodes_summarise_to_a_node_back_on_mqtt() -> None:
    """Test that when a node comes back on MQTT after a cut, only a few of the many nodes that
    hear it send it their summary (their answers reach every subscriber), not all of them."""
    w = world()
    names = [f"vr05-n{i:02d}" for i in range(40)]
    for name in names:
        w.add(name, Role.NODE, "region:VR05")
    nodes = [make_node(w, name, {"VR05"}) for name in names]
    back = NOW + 100.0
    asked = 0
    for node in nodes:
        for name in names:
            node.engine.peer_heard("mqtt", name, NOW)
        node.engine.peer_heard("mqtt", "vr07-utrecht", NOW)
        for t in (NOW + 60, NOW + 70, NOW + 80, NOW + 90):  # link-up summary, follow-ups
            for name in names:  # their heartbeats; vr07-utrecht has gone silent
                node.engine.peer_heard("mqtt", name, t)
            node.run(node.engine.timer(t), t)
        for name in names:
            node.engine.peer_heard("mqtt", name, back)
        before = len(node.other)
        node.engine.peer_heard("mqtt", "vr07-utrecht", back)  # silent for 100 s: back
        node.run(node.engine.timer(back + 2), back + 2)
        asked += any(
            isinstance(a, SendSummary) and cbor2.loads(a.raw)[2] == "vr07-utrecht"
            for a in node.other[before:]
        )
    assert 1 <= asked <= 8  # about return_askers (3) of 40


def test_mesh_answers_leave_out_other_nodes_receipts() -> None:
    """Test that a gateway answering a radio post's summary sends the decision that is for the
    post, but not the receipts other nodes signed for it on MQTT (a national decision has
    thousands of them, and the post waits for none)."""
    w = world()
    w.add("vr07-post", Role.NODE, "region:VR07")
    gw = make_node(
        w, "vr07-gw", {"VR07"}, links=(LinkInfo("mqtt", "mqtt"), LinkInfo("mesh", "mesh"))
    )
    utrecht = make_node(w, "vr07-utrecht", {"VR07"})
    raw = w.sign("national", to="region:VR07", lifetime=6 * 3600)
    for node in (gw, utrecht):
        node.run(node.engine.received("mqtt", raw, NOW, peer="hq"), NOW)
    receipt = next(t for t in utrecht.sent if t.channel == "rcpt")
    gw.run(gw.engine.received("mqtt", receipt.raw, NOW + 0.1, peer="vr07-utrecht"), NOW + 0.1)
    assert message_id(receipt.raw) in gw.store.messages  # the gateway holds utrecht's receipt
    # The gateway's bridging into the mesh (after a random delay, possibly already under way)
    # and its own receipt went out and were acknowledged: nothing is still in flight.
    gw.run(gw.engine.timer(NOW + 5), NOW + 5)
    for tx in list(gw.sent):
        gw.run(gw.engine.transmitted(tx.link, tx.id, True, NOW + 5), NOW + 5)
    later = NOW + 1000  # nothing fresh any more: everything missing is answered
    gw.sent.clear()
    ask, _ = sync.encode("vr07-post", "", [], max_bytes=229)
    gw.run(gw.engine.received("mesh", ask, later, channel="sync"), later)
    gw.run(gw.engine.timer(later + 60), later + 60)
    on_mesh = {t.id for t in gw.sent if t.link == "mesh"}
    assert message_id(raw) in on_mesh
    assert message_id(receipt.raw) not in on_mesh
