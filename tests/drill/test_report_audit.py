"""The engine's audit rows the drill report is built from: sent, receipt, link."""

from relay.engine.ops import Action, AuditEvent, Persist
from relay.envelope import Precedence
from tests.engine.harness import make_node
from tests.world import NOW, standard_world


def audits(actions: list[Action]) -> list[AuditEvent]:
    return [
        op for a in actions if isinstance(a, Persist) for op in a.ops if isinstance(op, AuditEvent)
    ]


def test_link_changes_are_audited_once_per_change() -> None:
    """Test that a link's measured state is audited when it changes and not when it repeats."""
    node = make_node(standard_world(), "hq", set())  # the harness brings mqtt up at NOW
    seen = audits(node.engine.link_state("mqtt", "down", NOW + 1))
    seen += audits(node.engine.link_state("mqtt", "down", NOW + 2))
    seen += audits(node.engine.link_state("mqtt", "degraded", NOW + 3))
    seen += audits(node.engine.link_state("mqtt", True, NOW + 4))
    assert [(a.event, a.link, a.detail, a.at) for a in seen] == [
        ("link", "mqtt", "down", NOW + 1),
        ("link", "mqtt", "degraded", NOW + 3),
        ("link", "mqtt", "up", NOW + 4),
    ]


def test_confirmed_transmission_and_receipt_are_audited() -> None:
    """Test that a confirmed send is audited with its airtime and a receipt names the recipient."""
    w = standard_world()
    sender = make_node(w, "hq", set())
    a = make_node(w, "vr07-utrecht", {"VR07"})
    raw = w.sign("vr07-issuer", to="region:VR07")
    sender.run(sender.engine.submit(raw, NOW, ticket=1), NOW)
    send = sender.sent[0]
    failed = audits(sender.engine.transmitted("mqtt", send.id, False, NOW))
    assert [x.event for x in failed] == []  # a failed transmission is not "sent"
    sender.run(sender.engine.timer(NOW + 100), NOW + 100)
    sent = audits(sender.engine.transmitted("mqtt", send.id, True, NOW + 101, airtime_s=1.25))
    assert [(x.event, x.msg_id, x.link, x.detail) for x in sent] == [
        ("sent", send.id, "mqtt", "airtime_s=1.250")
    ]
    late = audits(sender.engine.transmitted("mqtt", send.id, True, NOW + 102))
    assert late == []  # a repeated report of the same transmission is not a second send
    a.run(a.engine.received("mqtt", raw, NOW + 103, channel="msg"), NOW + 103)
    receipt = next(t for t in a.sent if t.channel == "rcpt")
    got = audits(sender.engine.received("mqtt", receipt.raw, NOW + 104, channel="rcpt"))
    rows = [(x.event, x.msg_id, x.link, x.node) for x in got if x.event == "receipt"]
    assert rows == [("receipt", send.id, "mqtt", "vr07-utrecht")]
    again = audits(sender.engine.received("mqtt", receipt.raw, NOW + 105, channel="rcpt"))
    assert [x for x in again if x.event == "receipt"] == []  # a duplicate receipt is not news


def test_delivery_is_audited_with_precedence_and_exercise_marker() -> None:
    """Test that a delivered row names the precedence and marks exercise traffic."""
    w = standard_world()
    node = make_node(w, "vr07-utrecht", {"VR07"})
    drill = w.sign("national", exercise=True, precedence=Precedence.FLASH)
    real = w.sign("national", "Besluit: scholen dicht.")
    got = audits(node.run(node.engine.received("mqtt", drill, NOW, channel="msg"), NOW))
    got += audits(node.run(node.engine.received("mqtt", real, NOW + 1, channel="msg"), NOW + 1))
    rows = [(x.event, x.link, x.node, x.detail) for x in got if x.event == "delivered"]
    assert rows == [
        ("delivered", "mqtt", "vr07-utrecht", "flash exercise"),
        ("delivered", "mqtt", "vr07-utrecht", "priority"),
    ]
