"""How far off is our clock? An estimate from what others say the time is. Pure code.

A Pi has no real-time clock: after weeks without power or NTP its clock can be days off, and then
every fresh decision looks expired (clock fast) or not yet valid (clock slow), and collecting
expired messages would purge the store. Other clocks are evidence (docs/config.md, "Clock"):

* A peer's status heartbeat says what its clock reads now: a *point* (offset = their time minus
  ours).
* A message whose signature verifies says its signer's clock read ``issued_at`` when it signed,
  some time before it reached us: a *lower bound* on the offset (it is noted before the time
  checks, so evidence comes even from what those checks reject). A message can arrive late
  (healing, retries), never early: a bound far in the past says nothing, so bounds can show
  that our clock is slow, never that it is fast.
* One source is one roster name: a node's status and its receipts are the same witness. Per
  source its latest point counts, else its freshest bound.
* An offset ``E`` is *supported* by a point within ``AGREE_S`` of it, and by a bound within
  ``AGREE_S`` of it when ``E`` is not negative; a source *contradicts* ``E`` when it is a point
  farther than ``AGREE_S`` or a bound above ``E + AGREE_S``. The estimate is the best supported
  candidate with at least ``MIN_SOURCES`` supporters and at most a third of the sources
  contradicting it: a single liar (or a single wrong clock) among three cannot make one, and
  old messages arriving late cannot make one either.
* The estimate corrects our time only when it is beyond ``WARN_S`` (a few minutes of drift are
  the skew window's business) and within ``MAX_CORRECTION_S``. The last estimate is kept while
  the evidence is too thin or too old to give a new one (a clock without RTC stays off by the
  same amount until someone sets it).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeVar

from relay.envelope import Reason, Rejection

MIN_SOURCES: Final = 3
AGREE_S: Final = 300.0
WARN_S: Final = 300.0  # beyond this the clock counts as wrong (status warning, correction)
MAX_CORRECTION_S: Final = 400 * 86400.0  # a Pi that slept a year; farther: warn, do not correct
KEEP_PER_SOURCE: Final = 8  # bounds kept per source (the freshest of them counts)
MAX_SOURCES: Final = 64  # sources kept; the one heard longest ago makes room
FRESH_S: Final = 3600.0  # observations older than this (by our clock) no longer count
RECOMPUTE_S: Final = 10.0  # the estimate is recomputed at most this often without news
# Rejections a wrong clock causes: checked again when the evidence has just corrected it.
TIME_REASONS: Final = frozenset({Reason.EXPIRED, Reason.NOT_YET_VALID, Reason.SIGNER_NOT_VALID})

T = TypeVar("T")


@dataclass(slots=True)
class _Source:
    point: tuple[float, float] | None = None  # (our time, offset) of the latest status
    bounds: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=KEEP_PER_SOURCE)
    )

    def value(self, now: float) -> tuple[float, bool] | None:
        """(offset, is_point) of this source now, or None when nothing recent."""
        if self.point is not None and abs(now - self.point[0]) <= FRESH_S:
            return self.point[1], True
        recent = [off for at, off in self.bounds if abs(now - at) <= FRESH_S]
        return (max(recent), False) if recent else None


@dataclass(slots=True)
class ClockEvidence:
    """Observations of other clocks, and the estimate of our offset from them."""

    _sources: dict[str, _Source] = field(default_factory=dict)
    _kept: float | None = None  # the last agreed offset
    _computed_at: float | None = None  # our time of the last computation (None: news since)

    def _source(self, name: str) -> _Source:
        src = self._sources.pop(name, None)  # re-inserted last: dict order is "heard last"
        if src is None:
            src = _Source()
            if len(self._sources) >= MAX_SOURCES:
                del self._sources[next(iter(self._sources))]
        self._sources[name] = src
        self._computed_at = None
        return src

    def observe_point(self, source: str, their_time: float, now: float) -> None:
        """``source`` said its clock read ``their_time`` when ours read ``now``."""
        if source and math.isfinite(their_time) and math.isfinite(now):
            self._source(source).point = (now, their_time - now)

    def observe_bound(self, source: str, issued_at: float, now: float) -> None:
        """``source`` signed something at ``issued_at`` (its clock) that reached us at ``now``."""
        if source and math.isfinite(issued_at) and math.isfinite(now):
            self._source(source).bounds.append((now, issued_at - now))

    def sources(self, now: float) -> dict[str, tuple[float, bool]]:
        """Per source with recent evidence: (offset, is_point)."""
        out = {}
        for name, src in self._sources.items():
            value = src.value(now)
            if value is not None:
                out[name] = value
        return out

    def offset(self, now: float) -> float | None:
        """Our clock's offset by the evidence (add it to our time): agreed by recent evidence,
        else the last agreed one, else None."""
        if self._computed_at is not None and abs(now - self._computed_at) < RECOMPUTE_S:
            return self._kept
        self._computed_at = now
        values = list(self.sources(now).values())
        if len(values) < MIN_SOURCES:
            return self._kept
        # Support and contradiction of each candidate by counting in sorted lists (bisect):
        # this runs after every verified message, and a quadratic loop over 64 sources cost
        # a millisecond each time (docs/scale.md). The rules are those of the module docstring:
        # support = points within AGREE_S (+ bounds within AGREE_S when the candidate is not
        # negative); contra = anything above candidate + AGREE_S, and points below it - AGREE_S.
        points = sorted(v for v, is_point in values if is_point)
        bounds = sorted(v for v, is_point in values if not is_point)
        best: tuple[int, float] | None = None
        for candidate, _ in values:
            lo, hi = candidate - AGREE_S, candidate + AGREE_S
            p_lo, p_hi = bisect_left(points, lo), bisect_right(points, hi)
            b_hi = bisect_right(bounds, hi)
            support = p_hi - p_lo
            if candidate >= -AGREE_S:
                support += b_hi - bisect_left(bounds, lo)
            contra = (len(points) - p_hi) + (len(bounds) - b_hi) + p_lo
            enough = support >= MIN_SOURCES and 3 * contra <= len(values)
            if enough and (best is None or support > best[0]):
                best = (support, candidate)
        if best is not None:
            agreeing = sorted(
                v for v, is_point in values if abs(v - best[1]) <= AGREE_S
            )  # the median of the supporters, not one arbitrary one of them
            self._kept = agreeing[len(agreeing) // 2]
        return self._kept

    def correction(self, now: float) -> float:
        """What to add to our clock before time checks: the offset when it says we are wrong."""
        off = self.offset(now)
        if off is None or abs(off) <= WARN_S or abs(off) > MAX_CORRECTION_S:
            return 0.0
        return off

    def confirmed(self, now: float) -> bool:
        """Whether the evidence has agreed on an offset (our corrected clock can be relied on)."""
        return self.offset(now) is not None


class TrustedTime:
    """Our clock as the engine uses it: the evidence of other clocks, and the first and the
    latest time the engine was given (for the grace before the first purge, for statistics)."""

    def __init__(self) -> None:
        self.evidence = ClockEvidence()
        self.first: float | None = None
        self.last = 0.0

    def saw(self, now: float) -> None:
        self.last = now
        if self.first is None:
            self.first = now

    def trusted(self, now: float) -> float:
        """Our clock, corrected when the evidence agrees that it is wrong (time checks, expiry,
        our receipts' issued-at); retries and timers stay on our own clock."""
        return now + self.evidence.correction(now)

    def offset(self, now: float | None = None) -> float | None:
        """Our clock's offset by the evidence, in seconds: None until enough independent
        sources agree."""
        return self.evidence.offset(self.last if now is None else now)

    def unconfirmed(self, now: float, grace_s: float) -> bool:
        """Nobody has confirmed our clock yet, and we started less than ``grace_s`` ago."""
        first = now if self.first is None else self.first
        return not self.evidence.confirmed(now) and now - first < grace_s

    def check(self, now: float, check: Callable[[float, bool], T | Rejection]) -> T | Rejection:
        """``check(at, first)`` on the trusted time. The first call may note the signer's clock as
        evidence; when that changed the trusted time and the check failed on time, it is run
        again on the corrected time (``first`` False)."""
        before = self.trusted(now)
        verdict = check(before, True)
        if isinstance(verdict, Rejection) and verdict.reason in TIME_REASONS:
            after = self.trusted(now)
            if after != before:
                verdict = check(after, False)
        return verdict
