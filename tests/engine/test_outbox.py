"""The outbox on its own (relay.engine.outbox): states, the due index, in-flight counts."""

from relay.engine.outbox import ANY_LINK, EntryState, Outbox

A, B = b"a" * 16, b"b" * 16


def test_entries_come_due_in_time_order_and_only_once() -> None:
    """Test that waiting entries are popped earliest first (ties by id, link), and only once."""
    box = Outbox(dropped_bound=8)
    box.add(B, "mqtt", attempts=0, at=5.0, awaiting=False)
    box.add(A, "mesh", attempts=0, at=5.0, awaiting=False)
    box.add(A, ANY_LINK, attempts=0, at=1.0, awaiting=False)
    box.add(A, "mqtt", attempts=0, at=9.0, awaiting=False)
    assert box.next_at() == 1.0
    assert [e.key for e in box.pop_due(5.0)] == [(A, ANY_LINK), (A, "mesh"), (B, "mqtt")]
    assert list(box.pop_due(5.0)) == []
    assert box.next_at() == 9.0
    assert all(box.get(k).state == EntryState.PARKED for k in [(A, "mesh"), (B, "mqtt")])  # type: ignore[union-attr]


def test_rescheduling_moves_an_entry_instead_of_leaving_a_stale_copy() -> None:
    """Test that waiting again at another time leaves exactly one place in the due index."""
    box = Outbox(dropped_bound=8)
    e = box.add(A, "mqtt", attempts=0, at=10.0, awaiting=True)
    box.wait(e, 3.0)
    box.wait(e, 7.0)
    assert box.next_at() == 7.0
    assert [x.key for x in box.pop_due(100.0)] == [(A, "mqtt")]
    assert box.next_at() is None
    box.park(e)
    assert e.state == EntryState.PARKED and box.next_at() is None
    box.wait(e, 1.0)
    assert box.get((A, "mqtt")) is e
    assert str(e.state) == "waiting" and box.next_at() == 1.0


def test_in_flight_counts_follow_send_outcome_and_drop() -> None:
    """Test that in-flight sends are counted per link until their outcome or a drop, and that
    the outcome of a dropped send is recognised exactly once."""
    box = Outbox(dropped_bound=8)
    e = box.add(A, ANY_LINK, attempts=0, at=0.0, awaiting=False)
    f = box.add(B, "mesh", attempts=0, at=0.0, awaiting=False)
    for entry in list(box.pop_due(0.0)):
        box.send(entry, "mesh")
    assert box.inflight["mesh"] == 2 and e.inflight and e.via == "mesh"
    assert box.next_at() is None  # in flight: not due
    box.sent_back(f, "mesh")
    assert box.inflight["mesh"] == 1 and f.attempts == 1 and not f.inflight
    box.drop((A, ANY_LINK))
    assert box.inflight["mesh"] == 0 and (A, ANY_LINK) not in box
    assert box.take_dropped(A, "mesh") is True
    assert box.take_dropped(A, "mesh") is False


def test_removing_a_waiting_entry_takes_it_out_of_the_due_index() -> None:
    """Test that a removed entry never comes due, and that depths and keys follow."""
    box = Outbox(dropped_bound=8)
    box.add(A, "mqtt", attempts=0, at=1.0, awaiting=False)
    box.add(A, ANY_LINK, attempts=0, at=2.0, awaiting=False)
    assert box.keys_of(A, ["mqtt", "mesh"]) == [(A, "mqtt"), (A, ANY_LINK)]
    assert dict(box.depths()) == {"mqtt": 1, ANY_LINK: 1}
    assert box.waiting_for_any_link() == 1
    box.remove((A, "mqtt"))
    assert [e.key for e in box.pop_due(10.0)] == [(A, ANY_LINK)]
    assert len(box) == 1


def test_dropped_outcomes_are_bounded() -> None:
    """Test that dropped in-flight sends never reported are forgotten beyond the bound."""
    box = Outbox(dropped_bound=2)
    for i in range(4):
        msg = bytes([i]) * 16
        box.send(box.add(msg, "mqtt", attempts=0, at=0.0, awaiting=False), "mqtt")
        box.drop((msg, "mqtt"))
    assert box.inflight["mqtt"] == 0
    assert [box.take_dropped(bytes([i]) * 16, "mqtt") for i in range(4)] == [
        False,
        False,
        True,
        True,
    ]
