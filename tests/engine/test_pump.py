"""Delivery's pump behind a full in-flight window (relay.engine.delivery)."""

from collections import Counter
from collections.abc import Iterator

from relay.engine.outbox import Entry, EntryState
from tests.engine.harness import make_node
from tests.world import NOW, standard_world


def test_a_full_window_leaves_the_backlog_due_and_each_outcome_sends_one_more() -> None:
    """Test that behind a full window pump takes nothing out, and each outcome frees one slot."""
    w = standard_world()
    node = make_node(w, "hq", set(), max_inflight_per_link=8)
    for i in range(100):
        node.run(node.engine.submit(w.sign("national", f"besluit {i}"), NOW, ticket=i), NOW)
    outbox = node.engine._outbox
    total = len(outbox)
    assert len(node.sent) == 8 and outbox.inflight["mqtt"] == 8
    taken: list[bytes] = []
    pop_due = outbox.pop_due

    def counting(now: float) -> Iterator[Entry]:
        for entry in pop_due(now):
            taken.append(entry.key[0])
            yield entry

    outbox.pop_due = counting  # type: ignore[method-assign]
    node.run(node.engine.timer(NOW), NOW)
    assert taken == []  # not one due entry taken out just to be put back
    states = Counter(e.state for e in outbox.entries())
    assert states[EntryState.WAITING] == total - 8 and states[EntryState.PARKED] == 0
    done = 0
    while done < len(node.sent):
        t = node.sent[done]
        before = len(node.sent)
        node.run(node.engine.transmitted("mqtt", t.id, True, NOW), NOW)
        done += 1
        assert len(node.sent) == min(before + 1, total)  # one slot freed, one more sent
        assert outbox.inflight["mqtt"] <= 8
    assert len(node.sent) == total and len({(t.id, t.link) for t in node.sent}) == total
