"""Routing by precedence over MQTT and mesh: failover, failback, gateways, link health."""

from relay.engine.core import LinkInfo
from relay.engine.health import LinkHealth
from relay.engine.ops import Persist
from relay.envelope import Envelope, Precedence, message_id, open_envelope
from relay.trust import Role
from tests.engine.harness import Node, make_node
from tests.world import NOW, World, standard_world

BOTH = (LinkInfo("mqtt", "mqtt"), LinkInfo("mesh", "mesh"))


def msgs_on(node: Node, link: str) -> list[bytes]:
    return [t.id for t in node.sent if t.link == link and t.channel == "msg"]


def gateway(w: World, name: str = "gw-b") -> Node:
    return make_node(w, name, {"VR05"}, links=BOTH, seed=7)


def share_mesh(g1: Node, g2: Node, raw: bytes, *, seconds: float, delay_s: float) -> None:
    """Step two gateways' timers through time in 50 ms steps; whatever one puts on the mesh, the
    other hears ``delay_s`` later (before its own timer runs in that step)."""
    heard_at: dict[str, float] = {}
    t: float = NOW
    while t < NOW + seconds:
        t += 0.05
        for me, other in ((g1, g2), (g2, g1)):
            if heard_at.get(me.name, float("inf")) <= t:
                del heard_at[me.name]
                me.run(me.engine.received("mesh", raw, t), t)
            before = len(me.sent)
            me.run(me.engine.timer(t), t)
            if any(tx.link == "mesh" for tx in me.sent[before:]):
                heard_at[other.name] = t + delay_s


def test_priority_goes_by_mqtt_only_when_healthy() -> None:
    """Test that a PRIORITY decision uses MQTT alone while MQTT is up: no mesh airtime."""
    w = standard_world()
    hq = make_node(w, "hq", set(), links=BOTH)
    hq.engine.peer_heard("mqtt", "vr07-utrecht", NOW)  # the one VR07 node is healthy on MQTT
    hq.run(hq.engine.submit(w.sign("national", to="region:VR07"), NOW, ticket=1), NOW)
    hq.run(hq.engine.timer(NOW + 10), NOW + 10)
    assert len(msgs_on(hq, "mqtt")) == 1 and msgs_on(hq, "mesh") == []


def test_flash_goes_on_every_link_at_once() -> None:
    """Test that a FLASH decision is transmitted on MQTT and on the mesh immediately."""
    w = standard_world()
    hq = make_node(w, "hq", set(), links=BOTH)
    raw = w.sign("national", to="region:VR07", precedence=Precedence.FLASH)
    hq.run(hq.engine.submit(raw, NOW, ticket=1), NOW)
    assert len(msgs_on(hq, "mqtt")) == 1 and len(msgs_on(hq, "mesh")) == 1


def test_waiting_message_fails_over_to_mesh_and_back() -> None:
    """Test that a waiting PRIORITY message moves to the mesh when MQTT dies, then back."""
    w = standard_world()
    hq = make_node(w, "hq", set(), links=BOTH)
    hq.run(hq.engine.link_state("mqtt", "down", NOW), NOW)
    hq.run(hq.engine.submit(w.sign("national", to="region:VR07"), NOW + 1, ticket=1), NOW + 1)
    assert msgs_on(hq, "mqtt") == [] and len(msgs_on(hq, "mesh")) == 1
    # MQTT returns: after its hold-down the next message goes by MQTT again.
    hq.run(hq.engine.link_state("mqtt", "up", NOW + 10), NOW + 10)
    hq.run(hq.engine.timer(NOW + 12.1), NOW + 12.1)
    second = w.sign("national", "second", to="region:VR07")
    hq.run(hq.engine.submit(second, NOW + 13, ticket=2), NOW + 13)
    assert message_id(second) in msgs_on(hq, "mqtt")


def test_failed_mqtt_publish_fails_over_at_once() -> None:
    """Test that a publish that failed on MQTT is retried on the mesh without backoff."""
    w = standard_world()
    hq = make_node(w, "hq", set(), links=BOTH)
    hq.run(hq.engine.submit(w.sign("national", to="region:VR07"), NOW, ticket=1), NOW)
    msg_id = msgs_on(hq, "mqtt")[0]
    hq.run(hq.engine.link_state("mqtt", "down", NOW + 3), NOW + 3)
    hq.run(hq.engine.transmitted("mqtt", msg_id, False, NOW + 3), NOW + 3)
    assert msgs_on(hq, "mesh") == [msg_id]


def test_gateway_bridges_into_mesh_when_a_recipient_is_cut_off() -> None:
    """Test that a gateway forwards an MQTT decision into the mesh when a VR05 node went quiet."""
    w = standard_world()
    gw = gateway(w)
    gw.engine.peer_heard("mqtt", "vr05-twente", NOW - 60)  # heard once, a minute ago
    raw = w.sign("national", to="region:VR05")
    gw.run(gw.engine.received("mqtt", raw, NOW, channel="msg"), NOW)
    assert msgs_on(gw, "mesh") == []  # not at once: a random Trickle-style delay first
    gw.run(gw.engine.timer(NOW + 4.01), NOW + 4.01)
    assert len(msgs_on(gw, "mesh")) == 1


def test_gateway_does_not_bridge_while_everyone_is_on_mqtt() -> None:
    """Test that nothing goes into the mesh when every recipient was heard on MQTT lately."""
    w = standard_world()
    gw = gateway(w)
    gw.engine.peer_heard("mqtt", "vr05-twente", NOW - 1)
    gw.run(gw.engine.received("mqtt", w.sign("national", to="region:VR05"), NOW, channel="msg"),
           NOW)  # fmt: skip
    gw.run(gw.engine.timer(NOW + 30), NOW + 30)
    assert msgs_on(gw, "mesh") == []


def test_second_gateway_suppresses_when_it_hears_the_first() -> None:
    """Test that a gateway cancels its bridged copy when it hears the message on the mesh."""
    w = standard_world()
    w.add("gw-b2", Role.NODE, "region:VR05")
    g1, g2 = gateway(w, "gw-b"), make_node(w, "gw-b2", {"VR05"}, links=BOTH, seed=99)
    raw = w.sign("national", to="region:VR05")
    for g in (g1, g2):
        g.run(g.engine.received("mqtt", raw, NOW, channel="msg"), NOW)
    share_mesh(g1, g2, raw, seconds=6, delay_s=0.0)  # the other gateway hears a copy at once
    assert len(msgs_on(g1, "mesh")) + len(msgs_on(g2, "mesh")) == 1
    assert g1.engine.counters["bridge_suppressed"] + g2.engine.counters["bridge_suppressed"] == 1


def test_mesh_arrivals_are_bridged_to_mqtt() -> None:
    """Test that a gateway publishes on MQTT what it receives from the mesh."""
    w = standard_world()
    gw = gateway(w)
    raw = w.sign("vr07-issuer", to="region:VR07")
    gw.run(gw.engine.received("mesh", raw, NOW), NOW)
    assert len(msgs_on(gw, "mqtt")) == 1


def test_health_believes_down_at_once_and_up_after_hold() -> None:
    """Test the hysteresis: down is immediate, recovery is held, flapping doubles the hold."""
    h = LinkHealth(hold_s=2.0, current_hold_s=2.0)
    h.report("up", 0.0)
    assert h.usable(0.0)  # first connection: no hold
    h.report("down", 10.0)
    assert not h.usable(10.0)
    h.report("up", 11.0)
    assert not h.usable(12.9) and h.usable(13.0)
    h.report("down", 20.0)  # a second outage within the flap window doubles the hold
    h.report("up", 21.0)
    assert not h.usable(24.9) and h.usable(25.0)
    h.report("down", 200.0)  # after a long stable period the hold is forgiven
    h.report("up", 201.0)
    assert h.usable(203.0)


def test_gateways_take_turns_so_a_slow_mesh_still_carries_one_copy() -> None:
    """Test that two gateways bridge in an agreed order, so 2 s of airtime still suppresses one."""
    w = standard_world()
    w.add("gw-b2", Role.NODE, "region:VR05")
    g1, g2 = gateway(w, "gw-b"), make_node(w, "gw-b2", {"VR05"}, links=BOTH, seed=99)
    for me, other in ((g1, g2), (g2, g1)):
        me.engine.peer_heard("mqtt", other.name, NOW - 1, gateway=True)
        me.engine.peer_heard("mqtt", "vr05-twente", NOW - 60)
    raw = w.sign("national", to="region:VR05")
    for g in (g1, g2):
        g.run(g.engine.received("mqtt", raw, NOW, channel="msg"), NOW)
    share_mesh(g1, g2, raw, seconds=12, delay_s=2.0)  # each copy is heard 2 s after it is sent
    assert len(msgs_on(g1, "mesh")) + len(msgs_on(g2, "mesh")) == 1
    assert g1.engine.counters["bridge_suppressed"] + g2.engine.counters["bridge_suppressed"] == 1


def test_hearing_a_message_on_one_mesh_keeps_the_copy_for_another() -> None:
    """Test that a gateway with radios in two meshes still bridges into the mesh that lacks it."""
    w = standard_world()
    links = (LinkInfo("mqtt", "mqtt"), LinkInfo("mesh-a", "mesh"), LinkInfo("mesh-b", "mesh"))
    gw = make_node(w, "gw-b", {"VR05"}, links=links, seed=7)
    gw.engine.peer_heard("mqtt", "vr05-twente", NOW - 60)
    raw = w.sign("national", to="region:VR05")
    gw.run(gw.engine.received("mqtt", raw, NOW, channel="msg"), NOW)
    gw.run(gw.engine.received("mesh-a", raw, NOW + 0.1), NOW + 0.1)  # mesh A has it already
    gw.run(gw.engine.timer(NOW + 10), NOW + 10)
    assert msgs_on(gw, "mesh-a") == [] and len(msgs_on(gw, "mesh-b")) == 1


def test_receipt_goes_back_on_mqtt_even_while_mqtt_is_held_down() -> None:
    """Test that a decision arriving by MQTT during its hold-down is receipted on MQTT, not mesh."""
    w = standard_world()
    node = make_node(w, "vr05-twente", {"VR05"}, links=BOTH)
    node.run(node.engine.link_state("mqtt", "down", NOW + 1), NOW + 1)
    node.run(node.engine.link_state("mqtt", "up", NOW + 5), NOW + 5)  # held until NOW + 7
    raw = w.sign("national", to="region:VR05", precedence=Precedence.FLASH)
    node.run(node.engine.received("mqtt", raw, NOW + 5.5, channel="msg"), NOW + 5.5)
    assert [t.link for t in node.sent] == []
    node.run(node.engine.timer(NOW + 7.1), NOW + 7.1)
    assert [(t.link, t.channel) for t in node.sent] == [("mqtt", "rcpt")]


def test_gateway_bridges_what_a_node_missed_just_before_it_went_quiet() -> None:
    """Test that a decision sent just before a node fell silent is bridged once it counts as cut."""
    w = standard_world()
    w.add("vr05-enschede", Role.NODE, "region:VR05")
    gw = gateway(w)
    gw.engine.peer_heard("mqtt", "vr05-twente", NOW - 1)
    gw.engine.peer_heard("mqtt", "vr05-enschede", NOW + 2)
    raw = w.sign("national", to="region:VR05")
    gw.run(gw.engine.received("mqtt", raw, NOW, channel="msg"), NOW)
    gw.run(gw.engine.timer(NOW + 10), NOW + 10)
    assert msgs_on(gw, "mesh") == []  # both heard lately: MQTT carries it
    for t in (NOW + 15, NOW + 16.1, NOW + 18, NOW + 30):  # twente quiet at +14, enschede at +17
        gw.run(gw.engine.timer(t), t)
        for tx in gw.sent:
            if tx.link == "mesh":
                gw.run(gw.engine.transmitted("mesh", tx.id, True, t), t)
    assert len(msgs_on(gw, "mesh")) == 1
    assert gw.engine.counters["bridged_missed"] == 1


def test_receipt_that_overtakes_its_decisions_persistence_still_counts() -> None:
    """Test that a receipt arriving while its decision is being stored is not forgotten."""
    w = standard_world()
    gw = gateway(w)
    raw = w.sign("national", to="region:VR05")
    held = gw.run(gw.engine.received("mqtt", raw, NOW, channel="msg"), NOW, persist=False)
    twente = make_node(w, "vr05-twente", {"VR05"})
    twente.run(twente.engine.received("mqtt", raw, NOW, channel="msg"), NOW)
    receipt = next(t.raw for t in twente.sent if t.channel == "rcpt")
    gw.run(gw.engine.received("mqtt", receipt, NOW + 0.01, channel="rcpt"), NOW + 0.01)
    gw.run([a for a in held if isinstance(a, Persist)], NOW + 0.02)  # the decision is durable
    env = open_envelope(raw)
    assert isinstance(env, Envelope)
    known = gw.engine.recipients_of(env.id)
    assert known is not None and "vr05-twente" in known[1]


def test_flash_retry_heard_on_mqtt_resends_the_receipt_on_mqtt_only() -> None:
    """Test that a repeated FLASH heard on MQTT re-sends our receipt there, not into the mesh."""
    w = standard_world()
    node = make_node(w, "vr07-utrecht", {"VR07"}, links=BOTH)
    raw = w.sign("national", to="region:VR07", precedence=Precedence.FLASH)
    node.run(node.engine.received("mqtt", raw, NOW, channel="msg"), NOW)
    first = [t for t in node.sent if t.channel == "rcpt"]
    assert [t.link for t in first] == ["mqtt"]  # back the way the decision came
    for t in first:
        node.run(node.engine.transmitted(t.link, t.id, True, NOW), NOW)
    node.run(node.engine.received("mqtt", raw, NOW + 10, channel="msg"), NOW + 10)
    again = [t.link for t in node.sent if t.channel == "rcpt"][len(first) :]
    assert again == ["mqtt"]
    node.run(node.engine.received("mesh", raw, NOW + 20), NOW + 20)
    assert [t.link for t in node.sent if t.channel == "rcpt"][len(first) + 1 :] == ["mesh"]
