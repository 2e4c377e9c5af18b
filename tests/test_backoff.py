"""relay.backoff: exponential backoff with and without jitter."""

from __future__ import annotations

import random

import pytest

from relay.backoff import equal_jitter, exponential


def test_exponential_doubles_from_base_up_to_cap() -> None:
    """Test that the wait doubles per attempt from the base and stays at the cap."""
    assert [exponential(n, base=0.5, cap=5.0) for n in range(6)] == [0.5, 1, 2, 4, 5, 5]
    assert exponential(10_000, base=1.0, cap=900.0) == 900.0  # no overflow for huge attempts


@pytest.mark.parametrize(
    ("attempt", "base", "cap"), [(-1, 1.0, 2.0), (0, 0.0, 2.0), (0, 3.0, 2.0), (0, -1.0, 1.0)]
)
def test_exponential_rejects_nonsense(attempt: int, base: float, cap: float) -> None:
    """Test that a negative attempt or a base outside (0, cap] raises ValueError."""
    with pytest.raises(ValueError):
        exponential(attempt, base=base, cap=cap)


def test_equal_jitter_stays_between_half_and_all_of_the_exponential_wait() -> None:
    """Test that jittered waits fall in [d/2, d] for d = exponential(attempt) and do spread."""
    rng = random.Random(7)
    for attempt in range(8):
        ceiling = exponential(attempt, base=1.0, cap=60.0)
        waits = [equal_jitter(attempt, base=1.0, cap=60.0, rng=rng) for _ in range(300)]
        assert ceiling / 2 <= min(waits) and max(waits) <= ceiling
        assert max(waits) - min(waits) > ceiling / 4  # actually random, not a constant


def test_equal_jitter_is_reproducible_with_a_seeded_generator() -> None:
    """Test that the same seed gives the same waits (tests and drills can replay them)."""
    first = [equal_jitter(n, base=0.5, cap=2.0, rng=random.Random(3)) for n in range(5)]
    again = [equal_jitter(n, base=0.5, cap=2.0, rng=random.Random(3)) for n in range(5)]
    assert first == again
