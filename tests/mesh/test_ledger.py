"""The airtime ledger: rolling-hour budget, FLASH reserve, timers and bounded memory."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.mesh import Precedence
from relay.mesh.ledger import (
    LONG_FAST,
    LONG_SLOW,
    MEDIUM_FAST,
    SHORT_FAST,
    AirtimeLedger,
    packet_airtime,
    time_on_air,
)

FLASH, ROUTINE = Precedence.FLASH, Precedence.ROUTINE


def test_time_on_air_matches_the_facts_sheet() -> None:
    """Test that time on air matches the FACTS.md figures for each preset and size."""
    assert time_on_air(66, LONG_FAST) == pytest.approx(0.72, abs=0.01)
    assert time_on_air(136, LONG_FAST) == pytest.approx(1.26, abs=0.01)
    assert time_on_air(255, LONG_FAST) == pytest.approx(2.156, abs=0.001)
    assert time_on_air(255, SHORT_FAST) == pytest.approx(0.204, abs=0.001)
    assert time_on_air(255, MEDIUM_FAST) == pytest.approx(0.641, abs=0.001)
    assert time_on_air(255, LONG_SLOW) == pytest.approx(14.295, abs=0.001)


def test_a_full_private_portnum_payload_is_a_full_lora_frame() -> None:
    """Test that a 231-byte payload on a private portnum costs a full 255-byte LoRa frame."""
    assert packet_airtime(231) == time_on_air(255)
    assert packet_airtime(10) < packet_airtime(128) < packet_airtime(231)


def test_budget_and_caps_follow_the_fractions() -> None:
    """Test that 10 % of an hour is 360 s, FLASH may use all of it and the rest 80 %."""
    ledger = AirtimeLedger()
    assert ledger.budget_s == pytest.approx(360.0)
    assert ledger.cap(FLASH) == pytest.approx(360.0)
    for precedence in (Precedence.IMMEDIATE, Precedence.PRIORITY, ROUTINE):
        assert ledger.cap(precedence) == pytest.approx(288.0)
    with pytest.raises(ValueError):
        ledger.cap(4)


def test_flash_reserve_survives_a_routine_backlog() -> None:
    """Test that ROUTINE stops at 80 % of the budget while FLASH still gets the remaining 20 %."""
    ledger = AirtimeLedger()
    now, frame = 0.0, packet_airtime(231)
    while ledger.allowed(frame, ROUTINE, now):
        ledger.record(frame, now)
        now += frame
    assert ledger.used(now) <= 288.0 < ledger.used(now) + frame
    assert ledger.remaining(now, ROUTINE) < frame
    sent_flash = 0
    while ledger.allowed(frame, FLASH, now):
        ledger.record(frame, now)
        now += frame
        sent_flash += 1
    assert sent_flash == math.floor((360.0 - ledger.used(0.0) + sent_flash * frame) / frame)
    assert sent_flash >= 33  # 72 s of reserve is 33 full LONG_FAST frames
    assert ledger.used(now) <= 360.0


def test_airtime_comes_back_when_it_leaves_the_rolling_window() -> None:
    """Test that airtime used is counted for one window after it ends, then released."""
    ledger = AirtimeLedger(coalesce_s=1.0)
    ledger.record(100.0, now=0.0)
    assert ledger.used(3000.0) == 100.0
    assert ledger.used(3700.0) == 100.0  # ended at 100 s, counts until 3700 s
    assert ledger.used(3701.0) == 0.0


def test_next_allowed_at_is_the_first_moment_allowed_holds() -> None:
    """Test that next_allowed_at names a time when allowed is true and just before it false."""
    ledger = AirtimeLedger()
    for t in range(0, 288, 2):
        ledger.record(2.0, now=float(t) * 10)
    now = 3000.0
    assert not ledger.allowed(2.0, ROUTINE, now)
    wake = ledger.next_allowed_at(2.0, ROUTINE, now)
    assert now < wake < math.inf
    # Time only moves forward (the ledger forgets what has left the window), so ask in order.
    assert not ledger.allowed(2.0, ROUTINE, wake - 1e-3)
    assert ledger.allowed(2.0, ROUTINE, wake)
    assert ledger.next_allowed_at(2.0, FLASH, now) == now


def test_a_transmission_larger_than_the_cap_is_never_allowed() -> None:
    """Test that next_allowed_at is infinite for airtime above the precedence's cap."""
    ledger = AirtimeLedger()
    assert ledger.next_allowed_at(300.0, ROUTINE, 0.0) == math.inf
    assert ledger.next_allowed_at(300.0, FLASH, 0.0) == 0.0


def test_bad_arguments_raise() -> None:
    """Test that impossible configuration or airtime raises ValueError (our own bug)."""
    for kwargs in ({"budget_fraction": 0.0}, {"window_s": 0.0}, {"flash_reserve_fraction": 1.0}):
        with pytest.raises(ValueError):
            AirtimeLedger(**kwargs)
    with pytest.raises(ValueError):
        AirtimeLedger().record(-1.0, 0.0)


operations = st.lists(
    st.tuples(
        st.floats(0.0, 120.0),  # time since the previous attempt
        st.floats(0.05, 15.0),  # airtime of the attempt
        st.sampled_from(list(Precedence)),
    ),
    max_size=400,
)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_the_ledger_never_lets_a_rolling_window_exceed_the_budget(
    ops: list[tuple[float, float, Precedence]],
) -> None:
    """Test that sending only when allowed keeps every window within the sender's cap."""
    ledger = AirtimeLedger(window_s=600.0, budget_fraction=0.1)
    sent: list[tuple[float, float]] = []
    now = 0.0
    for dt, airtime, precedence in ops:
        now += dt
        # Exact accounting: a transmission counts until window_s after it ends.
        exact = sum(a for t, a in sent if t + a + 600.0 > now)
        assert ledger.used(now) >= exact - 1e-9  # never under-counts
        if ledger.allowed(airtime, precedence, now):
            assert exact + airtime <= ledger.cap(precedence) + 1e-9
            ledger.record(airtime, now)
            sent.append((now, airtime))
        assert ledger.buckets() <= 600.0 / ledger.coalesce_s + 2


def test_memory_stays_bounded_under_continuous_traffic() -> None:
    """Test that a day of frequent small transmissions keeps the record count bounded."""
    ledger = AirtimeLedger()
    now = 0.0
    for _ in range(20_000):
        if ledger.allowed(0.2, ROUTINE, now):
            ledger.record(0.2, now)
        assert ledger.buckets() <= 3600.0 / ledger.coalesce_s + 2
        now += 4.3
    assert ledger.recorded_s > 0.0
