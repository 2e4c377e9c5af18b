"""The send queue: precedence order, bounds, eviction, refusal, and pacing by the ledger."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.mesh import Precedence
from relay.mesh.ledger import AirtimeLedger, packet_airtime
from relay.mesh.sendqueue import (
    EvictReason,
    Pushed,
    PushRefused,
    QueueItem,
    Ready,
    RefuseReason,
    SendQueue,
    Wait,
)

FLASH, IMMEDIATE, PRIORITY, ROUTINE = list(Precedence)


def item(
    tag: int, precedence: Precedence, size: int = 100, expires_at: float = math.inf
) -> QueueItem[int]:
    return QueueItem(bytes(size), precedence, tag, expires_at)


def unlimited() -> AirtimeLedger:
    return AirtimeLedger(budget_fraction=1.0, flash_reserve_fraction=0.0)


def pop_all(queue: SendQueue[int], now: float = 0.0) -> list[int]:
    ledger, out = unlimited(), []
    while isinstance(result := queue.pop_ready(ledger, lambda _: 0.0, now), Ready):
        out.append(result.item.tag)
    return out


def test_items_leave_by_precedence_then_in_arrival_order() -> None:
    """Test that pops come FLASH first, then IMMEDIATE, PRIORITY, ROUTINE, FIFO within each."""
    queue: SendQueue[int] = SendQueue()
    order = [ROUTINE, FLASH, PRIORITY, ROUTINE, IMMEDIATE, FLASH, PRIORITY]
    for tag, precedence in enumerate(order):
        assert isinstance(queue.push(item(tag, precedence), 0.0), Pushed)
    assert pop_all(queue) == [1, 5, 4, 2, 6, 0, 3]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(list(Precedence)), max_size=60))
def test_order_is_precedence_then_fifo_for_any_sequence(precedences: list[Precedence]) -> None:
    """Test that any sequence of pushes pops in (precedence, arrival) order."""
    queue: SendQueue[int] = SendQueue(max_items=100)
    for tag, precedence in enumerate(precedences):
        queue.push(item(tag, precedence), 0.0)
    assert pop_all(queue) == sorted(range(len(precedences)), key=lambda t: (precedences[t], t))


def test_full_queue_evicts_the_newest_least_urgent_item_and_reports_it() -> None:
    """Test that a more urgent push displaces the newest item of the least urgent level."""
    queue: SendQueue[int] = SendQueue(max_items=3)
    queue.push(item(0, PRIORITY), 0.0)
    queue.push(item(1, ROUTINE), 0.0)
    queue.push(item(2, ROUTINE), 0.0)
    result = queue.push(item(3, IMMEDIATE), 0.0)
    assert isinstance(result, Pushed)
    assert [(e.item.tag, e.reason) for e in result.evicted] == [(2, EvictReason.DISPLACED)]
    assert pop_all(queue) == [3, 0, 1]


def test_byte_bound_evicts_as_many_as_needed_or_refuses_without_evicting() -> None:
    """Test that the byte bound evicts several small items for a big one, atomically."""
    queue: SendQueue[int] = SendQueue(max_items=10, max_bytes=300)
    for tag in range(3):
        queue.push(item(tag, ROUTINE, size=100), 0.0)
    result = queue.push(item(9, FLASH, size=231), 0.0)
    assert isinstance(result, Pushed)
    assert [e.item.tag for e in result.evicted] == [2, 1, 0]
    assert queue.bytes_queued == 231
    # Now only FLASH is left: a PRIORITY item that does not fit is refused, FLASH untouched.
    refused = queue.push(item(10, PRIORITY, size=100), 0.0)
    assert isinstance(refused, PushRefused) and refused.reason is RefuseReason.FULL
    assert refused.evicted == () and pop_all(queue) == [9]


def test_equal_precedence_is_refused_not_evicted() -> None:
    """Test that a full queue refuses an item rather than evict one of equal precedence."""
    queue: SendQueue[int] = SendQueue(max_items=2)
    queue.push(item(0, FLASH), 0.0)
    queue.push(item(1, FLASH), 0.0)
    for precedence in Precedence:
        result = queue.push(item(2, precedence), 0.0)
        assert isinstance(result, PushRefused) and result.reason is RefuseReason.FULL
        assert precedence.name in result.detail or "FLASH" in result.detail
    assert pop_all(queue) == [0, 1]
    assert queue.statistics()["refused"] == {RefuseReason.FULL: 4}


def test_unfit_items_are_refused_with_reasons() -> None:
    """Test that empty, oversized and already expired frames are refused with their reason."""
    queue: SendQueue[int] = SendQueue()
    cases = [
        (item(0, FLASH, size=0), RefuseReason.EMPTY),
        (item(0, FLASH, size=232), RefuseReason.OVERSIZED),
        (item(0, FLASH, expires_at=5.0), RefuseReason.EXPIRED),
    ]
    for it, why in cases:
        result = queue.push(it, now=5.0)
        assert isinstance(result, PushRefused) and result.reason is why
    assert len(queue) == 0


def test_expired_items_are_reported_when_they_leave() -> None:
    """Test that items past their expiry are dropped on the next call and reported, not lost."""
    queue: SendQueue[int] = SendQueue()
    queue.push(item(0, FLASH, expires_at=10.0), 0.0)
    queue.push(item(1, ROUTINE, expires_at=20.0), 0.0)
    queue.push(item(2, ROUTINE), 0.0)
    result = queue.pop_ready(unlimited(), lambda _: 1.0, now=15.0)
    assert isinstance(result, Ready) and result.item.tag == 1
    assert [(e.item.tag, e.reason) for e in result.evicted] == [(0, EvictReason.EXPIRED)]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(Precedence)),
            st.integers(1, 231),
            st.one_of(st.just(math.inf), st.floats(1.0, 50.0)),
            st.booleans(),  # pop after this push?
        ),
        max_size=80,
    )
)
def test_nothing_is_ever_dropped_silently_and_flash_survives(
    ops: list[tuple[Precedence, int, float, bool]],
) -> None:
    """Test that every accepted item is sent, reported evicted or still queued; FLASH stays."""
    queue: SendQueue[int] = SendQueue(max_items=8, max_bytes=1000)
    ledger = unlimited()
    accepted: set[int] = set()
    accounted: set[int] = set()
    now = 0.0
    for tag, (precedence, size, expires_at, pop) in enumerate(ops):
        now += 1.0
        result = queue.push(item(tag, precedence, size, expires_at), now)
        if isinstance(result, Pushed):
            accepted.add(tag)
        for evicted in result.evicted:
            if evicted.reason is EvictReason.DISPLACED:
                assert evicted.item.precedence > precedence
                assert evicted.item.precedence is not FLASH
            accounted.add(evicted.item.tag)
        assert len(queue) <= 8 and queue.bytes_queued <= 1000
        if pop:
            popped = queue.pop_ready(ledger, lambda _: 0.0, now)
            accounted.update(e.item.tag for e in popped.evicted)
            if isinstance(popped, Ready):
                accounted.add(popped.item.tag)
    accounted.update(i.tag for i in queue.drain())
    assert accounted == accepted
    assert queue.bytes_queued == 0


# -- pacing by the airtime ledger ------------------------------------------------------------


def test_flash_is_not_held_behind_a_routine_backlog_waiting_for_airtime() -> None:
    """Test that when ROUTINE has used its share, a new FLASH item still goes at once."""
    ledger = AirtimeLedger()
    queue: SendQueue[int] = SendQueue(max_items=400, max_bytes=400 * 231)
    for tag in range(200):
        queue.push(item(tag, ROUTINE, size=231), 0.0)
    now = 0.0
    while isinstance(result := queue.pop_ready(ledger, packet_airtime_of, now), Ready):
        now += result.airtime_s
    assert isinstance(result, Wait) and result.wake_at is not None and result.wake_at > now
    assert ledger.used(now) <= ledger.cap(ROUTINE)
    queue.push(item(999, FLASH, size=231), now)
    flash = queue.pop_ready(ledger, packet_airtime_of, now)
    assert isinstance(flash, Ready) and flash.item.tag == 999


def test_wait_names_the_time_the_head_becomes_sendable() -> None:
    """Test that Wait.wake_at is when the ledger allows the head, and popping then succeeds."""
    ledger = AirtimeLedger(window_s=100.0, budget_fraction=0.1, coalesce_s=1.0)  # 10 s budget
    queue: SendQueue[int] = SendQueue()
    for tag in range(3):
        queue.push(item(tag, ROUTINE, size=231), 0.0)
    first = queue.pop_ready(ledger, lambda _: 4.0, 0.0)
    second = queue.pop_ready(ledger, lambda _: 4.0, 4.0)
    assert isinstance(first, Ready) and isinstance(second, Ready)
    wait = queue.pop_ready(ledger, lambda _: 4.0, 8.0)  # 8 s used, ROUTINE cap 8 s
    assert isinstance(wait, Wait)
    assert wait.wake_at == ledger.next_allowed_at(4.0, ROUTINE, 8.0)
    assert wait.wake_at is not None
    third = queue.pop_ready(ledger, lambda _: 4.0, wait.wake_at)
    assert isinstance(third, Ready) and third.item.tag == 2


def test_a_blocked_urgent_item_is_not_overtaken_by_a_less_urgent_one() -> None:
    """Test that a small ROUTINE frame does not spend airtime an IMMEDIATE head waits for."""
    ledger = AirtimeLedger(window_s=100.0, budget_fraction=0.1, coalesce_s=1.0)
    ledger.record(7.0, 0.0)  # 1 s left for non-FLASH
    queue: SendQueue[int] = SendQueue()
    queue.push(item(0, IMMEDIATE, size=200), 0.0)
    queue.push(item(1, ROUTINE, size=10), 0.0)
    result = queue.pop_ready(ledger, lambda f: len(f) / 100, 7.0)
    assert isinstance(result, Wait) and len(queue) == 2


def test_an_item_the_budget_can_never_carry_is_handed_back_not_wedged() -> None:
    """Test that a head needing more airtime than its cap is evicted as unsendable."""
    ledger = AirtimeLedger(window_s=10.0, budget_fraction=0.1)  # 1 s budget, 0.8 s non-FLASH
    queue: SendQueue[int] = SendQueue()
    queue.push(item(0, ROUTINE, size=231), 0.0)
    queue.push(item(1, ROUTINE, size=10), 0.0)
    result = queue.pop_ready(ledger, lambda f: len(f) / 100, 0.0)
    assert isinstance(result, Ready) and result.item.tag == 1
    assert [(e.item.tag, e.reason) for e in result.evicted] == [(0, EvictReason.UNSENDABLE)]


def test_empty_queue_waits_for_nothing() -> None:
    """Test that an empty queue returns Wait(None)."""
    queue: SendQueue[int] = SendQueue()
    assert queue.pop_ready(unlimited(), lambda _: 1.0, 0.0) == Wait(None)


def packet_airtime_of(frame: bytes) -> float:
    return packet_airtime(len(frame))
