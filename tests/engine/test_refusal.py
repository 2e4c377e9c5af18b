"""Refusals by a broker or peer (relay.links.LinkRefused) in the engine: audited, counted, long
backoff. Time is a number."""

from collections.abc import Sequence

from relay.engine.ops import AuditEvent, Persist
from tests.engine.harness import make_node
from tests.world import NOW, standard_world

TOPIC = "crisis/hq/msg"


def audits(actions: Sequence[object]) -> list[AuditEvent]:
    return [op for a in actions if isinstance(a, Persist) for op in a.ops
            if isinstance(op, AuditEvent)]  # fmt: skip


def test_refused_transmission_is_audited_counted_and_retried_after_a_long_backoff() -> None:
    """Test that a refused publish is audited with topic and reason, counted, and tried again
    only after refused_retry_base_s (doubling), not after the short failure backoff."""
    w = standard_world()
    hq = make_node(w, "hq", set())
    hq.run(hq.engine.submit(w.sign("national"), NOW, ticket=1), NOW)
    t = next(x for x in hq.sent if x.channel == "msg")
    done = hq.run(hq.engine.refused("mqtt", t.id, TOPIC, "135 Not authorized", NOW), NOW)
    [row] = audits(done)
    assert (row.event, row.msg_id, row.link) == ("refused", t.id, "mqtt")
    assert row.detail == f"{TOPIC}: 135 Not authorized"
    assert hq.engine.refusals == {f"mqtt {TOPIC}: 135 Not authorized": 1}
    assert hq.engine.statistics()["counters"]["transmit_refused"] == 1  # type: ignore[index]
    for at in (NOW + 2.5, NOW + 30, NOW + 59):
        hq.run(hq.engine.timer(at), at)
    assert [x.id for x in hq.sent].count(t.id) == 1
    hq.run(hq.engine.timer(NOW + 60), NOW + 60)
    assert [x.id for x in hq.sent].count(t.id) == 2
    hq.run(hq.engine.refused("mqtt", t.id, TOPIC, "135 Not authorized", NOW + 60), NOW + 60)
    hq.run(hq.engine.timer(NOW + 179), NOW + 179)
    assert [x.id for x in hq.sent].count(t.id) == 2  # 120 s the second time
    hq.run(hq.engine.timer(NOW + 180), NOW + 180)
    assert [x.id for x in hq.sent].count(t.id) == 3
    hq.run(hq.engine.transmitted("mqtt", t.id, True, NOW + 181), NOW + 181)  # ACL fixed
    assert hq.engine.refusals[f"mqtt {TOPIC}: 135 Not authorized"] == 2


def test_refusal_of_something_without_an_outbox_entry_is_only_audited_and_counted() -> None:
    """Test that a refused status or summary (no message id) is audited and counted, and that
    the distinct refusal counters are bounded."""
    w = standard_world()
    hq = make_node(w, "hq", set())
    actions = hq.engine.refused("mqtt", b"", "crisis/hq/status", "135 Not authorized", NOW)
    [row] = audits(actions)
    assert (row.event, row.msg_id) == ("refused", None)
    assert row.detail == "crisis/hq/status: 135 Not authorized"
    for i in range(200):
        hq.engine.refused("mqtt", b"", f"crisis/hq/t{i}", "135 Not authorized", NOW)
    assert len(hq.engine.refusals) <= 65
    assert sum(hq.engine.refusals.values()) == 201
