"""The status mailbox: the newest raw status per sender, bounded, counted (pure)."""

from __future__ import annotations

import pytest

from relay.links.status_mailbox import StatusMailbox


def test_newer_status_supersedes_waiting_one_in_its_place() -> None:
    """Test that a second status from a waiting sender replaces the first in the sender's place
    and is counted as coalesced, and that only the first put of an empty mailbox asks for a take."""
    box = StatusMailbox(10)
    assert box.put("a", b"a1") is True
    assert box.put("b", b"b1") is False
    assert box.put("a", b"a2") is False
    assert box.take(10) == [("a", b"a2"), ("b", b"b1")]
    assert box.statistics() == {
        "statuses_in": 3,
        "statuses_coalesced": 1,
        "statuses_dropped_full": 0,
        "statuses_taken": 2,
        "statuses_pending": 0,
        "status_backlog": 10,
    }
    assert box.put("a", b"a3") is True  # empty again: the consumer must be told


def test_full_mailbox_drops_new_senders_but_still_coalesces_waiting_ones() -> None:
    """Test that a full mailbox drops and counts a status from a new sender while a waiting
    sender's newer status still replaces its older one."""
    box = StatusMailbox(2)
    box.put("a", b"a1")
    box.put("b", b"b1")
    box.put("c", b"c1")
    box.put("b", b"b2")
    assert len(box) == 2
    assert box.counters == {"in": 4, "coalesced": 1, "dropped_full": 1, "taken": 0}
    assert box.take(1) == [("a", b"a1")]
    assert box.take(5) == [("b", b"b2")]  # fewer than asked: now empty
    assert box.take(5) == []


def test_take_hands_over_the_longest_waiting_first_in_batches() -> None:
    """Test that take(n) returns at most n statuses, oldest senders first, until none is left."""
    box = StatusMailbox(100)
    for i in range(25):
        box.put(f"n{i:02d}", bytes([i]))
    batches = []
    while got := box.take(8):
        batches.append([s for s, _ in got])
    assert [len(b) for b in batches] == [8, 8, 8, 1]
    assert [s for b in batches for s in b] == [f"n{i:02d}" for i in range(25)]


def test_mailbox_refuses_no_room() -> None:
    """Test that a mailbox without room for one sender is refused."""
    with pytest.raises(ValueError, match="at least one"):
        StatusMailbox(0)
