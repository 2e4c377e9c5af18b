"""A bounded priority queue of outgoing frames that spends airtime through the ledger.

Order: precedence (FLASH first), then first in, first out. The queue sits between the durable
outbox and the radio, so it is small and every item that leaves it other than by being sent is
reported to the caller (``Evicted``) or refused up front (``PushRefused``): the outbox keeps the
message and queues it again later. Nothing is dropped silently.

Eviction rules, when a push does not fit (and an item needing more airtime than its cap ever
allows is handed back by pop_ready as UNSENDABLE rather than wedging its level):
  * expired items go first, whatever their precedence;
  * then items of strictly lower precedence than the newcomer, least urgent level first and,
    within a level, newest first (the oldest have waited longest and may be part-sent);
  * an item is never evicted by one of equal precedence: the newcomer is refused instead. So an
    unexpired FLASH item is never evicted at all (only FLASH could, and it does not).
  * a push that would need more than that is refused, and nothing is evicted for it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

from relay.mesh import Precedence
from relay.mesh.frames import MAX_FRAME
from relay.mesh.ledger import AirtimeLedger

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class QueueItem(Generic[T]):
    """One frame to send; ``tag`` is the caller's own reference (e.g. outbox row and node)."""

    frame: bytes
    precedence: Precedence
    tag: T
    expires_at: float = math.inf


class EvictReason(StrEnum):
    EXPIRED = "expired"
    DISPLACED = "displaced"  # made room for a more urgent item
    UNSENDABLE = "unsendable"  # needs more airtime than its precedence may ever have in use


class RefuseReason(StrEnum):
    EMPTY = "empty_frame"
    OVERSIZED = "oversized_frame"  # longer than one mesh frame
    EXPIRED = "already_expired"
    FULL = "full"  # no room, and nothing less urgent to evict


@dataclass(frozen=True, slots=True)
class Evicted(Generic[T]):
    """An item that left the queue unsent; the caller re-queues it from the outbox if it wants."""

    item: QueueItem[T]
    reason: EvictReason


@dataclass(frozen=True, slots=True)
class Pushed(Generic[T]):
    """The item is queued; ``evicted`` lists what left to make room for it."""

    evicted: tuple[Evicted[T], ...] = ()


@dataclass(frozen=True, slots=True)
class PushRefused(Generic[T]):
    """The item was not queued; ``evicted`` lists expired items cleared on the way."""

    reason: RefuseReason
    detail: str
    evicted: tuple[Evicted[T], ...] = ()


@dataclass(frozen=True, slots=True)
class Ready(Generic[T]):
    """Send ``item`` now; its ``airtime_s`` is already charged to the ledger."""

    item: QueueItem[T]
    airtime_s: float
    evicted: tuple[Evicted[T], ...] = ()


@dataclass(frozen=True, slots=True)
class Wait(Generic[T]):
    """Nothing may be sent now; call again at ``wake_at`` (None: the queue is empty)."""

    wake_at: float | None
    evicted: tuple[Evicted[T], ...] = ()


@dataclass(slots=True)
class _Stats:
    pushed: int = 0
    sent: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    evicted: dict[str, int] = field(default_factory=dict)


class SendQueue(Generic[T]):
    """Outgoing frames by precedence then FIFO, bounded in items and bytes."""

    def __init__(self, *, max_items: int = 128, max_bytes: int = 16 * 1024) -> None:
        if max_items < 1 or max_bytes < MAX_FRAME:
            raise ValueError(f"need max_items >= 1 and max_bytes >= {MAX_FRAME}")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._levels: tuple[deque[QueueItem[T]], ...] = tuple(deque() for _ in Precedence)
        self._bytes = 0
        self._stats = _Stats()

    def __len__(self) -> int:
        return sum(len(level) for level in self._levels)

    @property
    def bytes_queued(self) -> int:
        return self._bytes

    def statistics(self) -> dict[str, object]:
        """Counters and levels, for metrics."""
        return {
            "items": len(self),
            "bytes": self._bytes,
            "per_precedence": {p.name: len(self._levels[p]) for p in Precedence},
            "pushed": self._stats.pushed,
            "sent": self._stats.sent,
            "refused": dict(self._stats.refused),
            "evicted": dict(self._stats.evicted),
        }

    def push(self, item: QueueItem[T], now: float) -> Pushed[T] | PushRefused[T]:
        """Queue ``item``, evicting less urgent items if needed; or refuse it, with a reason."""
        size = len(item.frame)
        if size == 0:
            return self._refuse(RefuseReason.EMPTY, "frame has no bytes", ())
        if size > MAX_FRAME:
            return self._refuse(RefuseReason.OVERSIZED, f"{size} bytes > {MAX_FRAME}", ())
        if item.expires_at <= now:
            return self._refuse(RefuseReason.EXPIRED, f"expired at {item.expires_at}", ())
        prec = Precedence(item.precedence)
        expired = self._drop_expired(now)
        victims = self._victims(prec, size)
        if victims is None:
            detail = f"{len(self)} items, {self._bytes} bytes; nothing less urgent than {prec.name}"
            return self._refuse(RefuseReason.FULL, detail, expired)
        displaced = []
        for level, victim in victims:
            self._levels[level].remove(victim)
            self._bytes -= len(victim.frame)
            displaced.append(self._evicted(victim, EvictReason.DISPLACED))
        self._levels[prec].append(item)
        self._bytes += size
        self._stats.pushed += 1
        return Pushed(expired + tuple(displaced))

    def pop_ready(
        self, ledger: AirtimeLedger, airtime_of: Callable[[bytes], float], now: float
    ) -> Ready[T] | Wait[T]:
        """Pop the most urgent item the ledger lets go out now, charging its airtime.

        Levels are tried most urgent first and each level's head only (FIFO within a level).
        When the most urgent waiting item is held back by the ledger, less urgent items wait too:
        they must not spend the airtime it is waiting for. FLASH draws on a reserve the others
        cannot touch, so a ROUTINE backlog never holds FLASH back.
        """
        evicted = list(self._drop_expired(now))
        for level in self._levels:
            while level:
                head = level[0]
                airtime = airtime_of(head.frame)
                if ledger.allowed(airtime, head.precedence, now):
                    level.popleft()
                    self._bytes -= len(head.frame)
                    ledger.record(airtime, now)
                    self._stats.sent += 1
                    return Ready(head, airtime, tuple(evicted))
                wake = ledger.next_allowed_at(airtime, head.precedence, now)
                if wake == math.inf:
                    # It would block its level for ever (a budget configured below one frame):
                    # hand it back rather than wedge the queue.
                    level.popleft()
                    self._bytes -= len(head.frame)
                    evicted.append(self._evicted(head, EvictReason.UNSENDABLE))
                    continue
                return Wait(min(wake, self._earliest_expiry()), tuple(evicted))
        return Wait(None, tuple(evicted))

    def drain(self) -> tuple[QueueItem[T], ...]:
        """Remove and return everything queued, most urgent first (for shutdown or link loss)."""
        items = tuple(item for level in self._levels for item in level)
        for level in self._levels:
            level.clear()
        self._bytes = 0
        return items

    # -- internals ---------------------------------------------------------------------------

    def _victims(self, prec: Precedence, size: int) -> list[tuple[Precedence, QueueItem[T]]] | None:
        """Items to evict so ``size`` more bytes fit (empty: it fits), or None if it cannot."""
        items, free_bytes = len(self), self.max_bytes - self._bytes
        victims: list[tuple[Precedence, QueueItem[T]]] = []
        for level in reversed(Precedence):
            if items < self.max_items and size <= free_bytes:
                break
            if level <= prec:
                return None
            for victim in reversed(self._levels[level]):
                if items < self.max_items and size <= free_bytes:
                    break
                victims.append((level, victim))
                items -= 1
                free_bytes += len(victim.frame)
        if items < self.max_items and size <= free_bytes:
            return victims
        return None

    def _drop_expired(self, now: float) -> tuple[Evicted[T], ...]:
        out: list[Evicted[T]] = []
        for level in self._levels:
            if any(item.expires_at <= now for item in level):
                keep = [item for item in level if item.expires_at > now]
                for item in level:
                    if item.expires_at <= now:
                        self._bytes -= len(item.frame)
                        out.append(self._evicted(item, EvictReason.EXPIRED))
                level.clear()
                level.extend(keep)
        return tuple(out)

    def _earliest_expiry(self) -> float:
        return min((item.expires_at for level in self._levels for item in level), default=math.inf)

    def _evicted(self, item: QueueItem[T], reason: EvictReason) -> Evicted[T]:
        self._stats.evicted[reason] = self._stats.evicted.get(reason, 0) + 1
        return Evicted(item, reason)

    def _refuse(
        self, reason: RefuseReason, detail: str, evicted: tuple[Evicted[T], ...]
    ) -> PushRefused[T]:
        self._stats.refused[reason] = self._stats.refused.get(reason, 0) + 1
        return PushRefused(reason, detail, evicted)
