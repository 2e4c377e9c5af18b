"""Exponential backoff, the one helper every reconnect and retry loop of the node uses.

Pure: no clock, no sleeping; the caller passes the attempt number (0 for the first wait after a
failure) and, where jitter is wanted, its own random generator, so tests can seed it.

* ``exponential``: ``base`` doubling per attempt up to ``cap``, no jitter (pauses that a single
  node takes on its own, such as a refused status).
* ``equal_jitter``: half of ``exponential`` fixed, half random ("equal jitter"): waits never
  collapse to zero, and many nodes that lost the same broker at the same moment do not come
  back in lockstep (reconnects and restarts).
"""

from __future__ import annotations

import random
from typing import Final

__all__ = ["equal_jitter", "exponential"]

_MAX_DOUBLINGS: Final = 64  # 2**64 times any sane base is past every cap; keeps floats finite


def exponential(attempt: int, *, base: float, cap: float) -> float:
    """``base * 2**attempt``, at most ``cap``; ``attempt`` 0 gives ``base`` (or ``cap``)."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if not 0 < base <= cap:
        raise ValueError(f"need 0 < base <= cap, got base={base} cap={cap}")
    return min(cap, base * 2.0 ** min(attempt, _MAX_DOUBLINGS))


def equal_jitter(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """A wait between half and all of ``exponential(attempt, base=base, cap=cap)``, uniformly.

    ``rng`` defaults to the ``random`` module's shared generator."""
    delay = exponential(attempt, base=base, cap=cap)
    return delay / 2 + (rng or random).uniform(0.0, delay / 2)
