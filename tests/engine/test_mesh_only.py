"""Own decisions reach members that only the mesh reaches (issue #10 item 1), on virtual time.

The world of the field trial: region VR07 has one gateway (``vr07-gw``: MQTT and a radio) and a
radio-only post (``vr07-post``), plus ``vr07-utrecht`` on MQTT. The gateway is the origin.
"""

import pytest

from relay.engine.core import LinkInfo
from relay.engine.ops import Action, AuditEvent, Persist
from relay.envelope import Envelope, Precedence, open_envelope
from relay.trust import Role
from tests.engine.harness import Node, make_node
from tests.world import NOW, World, standard_world

BOTH = (LinkInfo("mqtt", "mqtt"), LinkInfo("mesh", "mesh"))
MESH = (LinkInfo("mesh", "mesh"),)
NON_FLASH = [p for p in Precedence if p != Precedence.FLASH]
GRACE = 6.0  # EngineConfig.peer_grace_s


def field_region() -> tuple[World, Node, Node]:
    w = standard_world()
    w.add("vr07-gw", Role.NODE, "region:VR07")
    w.add("vr07-post", Role.NODE, "region:VR07")
    gw = make_node(w, "vr07-gw", {"VR07"}, links=BOTH, seed=3)
    post = make_node(w, "vr07-post", {"VR07"}, links=MESH, seed=4)
    return w, gw, post


def mesh_msgs(node: Node, msg_id: bytes | None = None) -> list[bytes]:
    return [
        t.id
        for t in node.sent
        if t.link == "mesh" and t.channel == "msg" and msg_id in (None, t.id)
    ]


def ident(raw: bytes) -> bytes:
    env = open_envelope(raw)
    assert isinstance(env, Envelope)
    return env.id


def ack_all(node: Node, now: float) -> None:
    """Every transmission so far succeeded (the links report it)."""
    for t in list(node.sent):
        node.run(node.engine.transmitted(t.link, t.id, True, now), now)


def carry_mesh(src: Node, dst: Node, start: int, now: float) -> int:
    """Hand what ``src`` put on the mesh since index ``start`` to ``dst``; returns the new index."""
    sent = src.sent[start:]
    for t in sent:
        if t.link == "mesh":
            dst.run(dst.engine.received("mesh", t.raw, now), now)
    return start + len(sent)


@pytest.mark.parametrize("precedence", list(Precedence), ids=lambda p: p.name)
def test_own_decision_reaches_radio_only_post_by_mesh_and_its_receipt_returns(
    precedence: Precedence,
) -> None:
    """Test that a gateway's own decision of each precedence goes into the mesh for a post never
    heard on MQTT, once, and the post's receipt comes back to the gateway by mesh."""
    w, gw, post = field_region()
    t = NOW + GRACE + 1  # the gateway's MQTT link has been up longer than the grace
    gw.engine.peer_heard("mqtt", "vr07-utrecht", t - 1)
    raw = w.sign("vr07-issuer", to="region:VR07", precedence=precedence, now=int(t))
    gw.run(gw.engine.submit(raw, t, ticket=1), t)
    msg_id = ident(raw)
    assert mesh_msgs(gw, msg_id) == [msg_id]  # at once, not after a gateway's turn
    assert [x.link for x in gw.sent if x.id == msg_id].count("mqtt") == 1  # utrecht by MQTT
    ack_all(gw, t)
    carry_mesh(gw, post, 0, t + 2)
    assert [d.id for d in post.delivered] == [msg_id]
    receipts = [x for x in post.sent if x.channel == "rcpt"]
    assert [x.link for x in receipts] == ["mesh"]
    before = len(gw.other)
    gw.run(gw.engine.received("mesh", receipts[0].raw, t + 4), t + 4)
    assert any(getattr(a, "node", None) == "vr07-post" for a in gw.other[before:])
    known = gw.engine.recipients_of(msg_id)
    assert known is not None and "vr07-post" in known[1]
    for step in range(1, 40):  # utrecht never signs: MQTT retries, the mesh does not
        now = t + 4 + step * 30
        gw.engine.peer_heard("mqtt", "vr07-utrecht", now)  # healthy on MQTT throughout
        gw.run(gw.engine.timer(now), now)
        ack_all(gw, now)
    assert mesh_msgs(gw, msg_id) == [msg_id]


@pytest.mark.parametrize("precedence", NON_FLASH, ids=lambda p: p.name)
def test_no_mesh_airtime_while_every_member_is_healthy_on_mqtt(precedence: Precedence) -> None:
    """Test that an own non-FLASH decision stays off the mesh when every member is on MQTT."""
    w, gw, _ = field_region()
    t = NOW + GRACE + 1
    for n in ("vr07-utrecht", "vr07-post"):
        gw.engine.peer_heard("mqtt", n, t - 1)
    gw.run(gw.engine.submit(w.sign("vr07-issuer", to="region:VR07", precedence=precedence,
                                   now=int(t)), t, ticket=1), t)  # fmt: skip
    for step in range(1, 120):  # both stay healthy on MQTT, neither signs: MQTT retries only
        now = t + step * 5
        for n in ("vr07-utrecht", "vr07-post"):
            gw.engine.peer_heard("mqtt", n, now)
        gw.run(gw.engine.timer(now), now)
        ack_all(gw, now)
    assert mesh_msgs(gw) == []
    assert len([x for x in gw.sent if x.link == "mqtt" and x.channel == "msg"]) > 1


def test_decision_right_after_mqtt_comes_up_waits_for_statuses_before_using_the_mesh() -> None:
    """Test that just after start the mesh copy waits out the grace and is dropped when the
    member's status arrives meanwhile, and goes out when none arrives."""
    w, gw, _ = field_region()
    quiet = w.sign("vr07-issuer", "voor iedereen", to="region:VR07", now=NOW)
    heard = w.sign("vr07-issuer", "alleen utrecht", to="node:vr07-utrecht", now=NOW)
    gw.run(gw.engine.submit(quiet, NOW + 0.5, ticket=1), NOW + 0.5)
    gw.run(gw.engine.submit(heard, NOW + 0.5, ticket=2), NOW + 0.5)
    assert mesh_msgs(gw) == []
    gw.engine.peer_heard("mqtt", "vr07-utrecht", NOW + 1)  # its retained status comes in
    gw.run(gw.engine.timer(NOW + GRACE - 0.1), NOW + GRACE - 0.1)
    assert mesh_msgs(gw) == []
    gw.run(gw.engine.timer(NOW + GRACE + 0.1), NOW + GRACE + 0.1)
    assert mesh_msgs(gw) == [ident(quiet)]  # the post was never heard on MQTT; utrecht was


def test_member_heard_on_the_mesh_since_its_last_mqtt_status_is_served_by_mesh() -> None:
    """Test that a node whose signed receipt came by mesh after its last MQTT status counts as
    reachable only by mesh, though that status is recent."""
    w, gw, _ = field_region()
    utrecht = make_node(w, "vr07-utrecht", {"VR07"}, links=BOTH)
    t = NOW + GRACE + 1
    gw.engine.peer_heard("mqtt", "vr07-utrecht", t - 2)
    gw.engine.peer_heard("mqtt", "vr07-post", t - 2)
    first = w.sign("vr07-issuer", to="node:vr07-utrecht", now=int(t))
    utrecht.run(utrecht.engine.link_state("mqtt", "down", t), t)
    utrecht.run(utrecht.engine.received("mesh", first, t), t)
    receipt = next(x.raw for x in utrecht.sent if x.channel == "rcpt")
    gw.run(gw.engine.received("mesh", receipt, t + 1), t + 1)  # utrecht's receipt by mesh
    second = w.sign("vr07-issuer", to="node:vr07-utrecht", now=int(t))
    gw.run(gw.engine.submit(second, t + 2, ticket=1), t + 2)
    assert mesh_msgs(gw) == [ident(second)]


def test_gateway_without_mqtt_puts_its_decision_on_the_mesh_once() -> None:
    """Test that with MQTT down the best-link entry does not send a second mesh copy."""
    w, gw, _ = field_region()
    gw.run(gw.engine.link_state("mqtt", "down", NOW + 1), NOW + 1)
    t = NOW + 30  # everyone quiet on MQTT by now
    raw = w.sign("vr07-issuer", to="region:VR07", now=int(t))
    gw.run(gw.engine.submit(raw, t, ticket=1), t)
    gw.run(gw.engine.timer(t + 1), t + 1)
    assert mesh_msgs(gw) == [ident(raw)]
    assert [x for x in gw.sent if x.link == "mqtt"] == []


def test_mesh_copy_is_not_retried_once_the_only_mesh_member_signed() -> None:
    """Test that mesh retries stop when the post has signed while an MQTT member has not."""
    w, gw, post = field_region()
    t = NOW + GRACE + 1
    gw.engine.peer_heard("mqtt", "vr07-utrecht", t)
    raw = w.sign("vr07-issuer", to="region:VR07", now=int(t))
    gw.run(gw.engine.submit(raw, t, ticket=1), t)
    ack_all(gw, t)
    # The post missed the first copy: the gateway retries on the mesh until it signs.
    for step in range(1, 4):
        now = t + step * 40
        gw.engine.peer_heard("mqtt", "vr07-utrecht", now)
        gw.run(gw.engine.timer(now), now)
        ack_all(gw, now)
    retried = len(mesh_msgs(gw))
    assert retried >= 2
    post.run(post.engine.received("mesh", raw, t + 200), t + 200)  # a later copy arrives
    receipt = next(x.raw for x in post.sent if x.channel == "rcpt")
    gw.run(gw.engine.received("mesh", receipt, t + 201), t + 201)
    for step in range(1, 30):
        now = t + 201 + step * 60
        gw.engine.peer_heard("mqtt", "vr07-utrecht", now)
        gw.run(gw.engine.timer(now), now)
        ack_all(gw, now)
    assert len(mesh_msgs(gw)) == retried
    assert gw.engine.outbox_depths().get("mesh", 0) == 0


def sent_rows(actions: list[Action], msg_id: bytes) -> list[str | None]:
    """The links of the 'sent' audit rows for ``msg_id`` among ``actions``."""
    return [
        op.link
        for a in actions
        if isinstance(a, Persist)
        for op in a.ops
        if isinstance(op, AuditEvent) and op.event == "sent" and op.msg_id == msg_id
    ]


def test_mesh_send_reported_done_after_the_receipt_came_back_is_still_audited() -> None:
    """Test that a mesh send whose radio reports it done only after the post's receipt has come
    back (the frame is done when a neighbour relays it) still gets its 'sent' audit row, once."""
    w, gw, post = field_region()
    t = NOW + GRACE + 1
    raw = w.sign("vr07-issuer", to="node:vr07-post", now=int(t))
    msg_id = ident(raw)
    gw.run(gw.engine.submit(raw, t, ticket=1), t)
    assert mesh_msgs(gw, msg_id) == [msg_id]
    carry_mesh(gw, post, 0, t + 2)  # on the air; the gateway's radio has not reported yet
    receipt = next(x.raw for x in post.sent if x.channel == "rcpt")
    gw.run(gw.engine.received("mesh", receipt, t + 4), t + 4)
    assert gw.engine.outbox_depths().get("mesh", 0) == 0  # every recipient has signed
    done = gw.run(gw.engine.transmitted("mesh", msg_id, True, t + 7, airtime_s=1.5), t + 7)
    assert sent_rows(done, msg_id) == ["mesh"]
    again = gw.run(gw.engine.transmitted("mesh", msg_id, True, t + 8), t + 8)
    assert sent_rows(again, msg_id) == []  # a repeated report is not a second send
    assert mesh_msgs(gw, msg_id) == [msg_id]


def test_mesh_send_failing_after_the_receipt_came_back_is_not_retried() -> None:
    """Test that a mesh send reported failed after every recipient signed is neither audited as
    sent nor sent again."""
    w, gw, post = field_region()
    t = NOW + GRACE + 1
    raw = w.sign("vr07-issuer", to="node:vr07-post", now=int(t))
    msg_id = ident(raw)
    gw.run(gw.engine.submit(raw, t, ticket=1), t)
    carry_mesh(gw, post, 0, t + 2)
    receipt = next(x.raw for x in post.sent if x.channel == "rcpt")
    gw.run(gw.engine.received("mesh", receipt, t + 4), t + 4)
    failed = gw.run(gw.engine.transmitted("mesh", msg_id, False, t + 60), t + 60)
    assert sent_rows(failed, msg_id) == []
    for step in range(1, 10):
        gw.run(gw.engine.timer(t + 60 + step * 30), t + 60 + step * 30)
    assert mesh_msgs(gw, msg_id) == [msg_id]
