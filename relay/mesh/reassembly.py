"""Reassembly, the receiver side of fragmentation: FRAGMENT frames back into messages.

Within fixed memory bounds, every eviction counted; a partial message that stalls asks its
sender for the missing fragments by NACK (selective repair). The frame format is in
``relay.mesh.frames``; the byte layout and the reasoning in docs/mesh-frames.md.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from dataclasses import dataclass
from enum import StrEnum

from relay.mesh.frames import MAX_FRAGMENT_DATA, MAX_MESSAGE, Fragment, encode_nack, fragment_key


class Refusal(StrEnum):
    """Why the reassembler set a fragment aside or gave up a partial message; counter keys."""

    DUPLICATE = "duplicate"  # a fragment we already hold, byte for byte
    ALREADY_COMPLETE = "already_complete"  # counter for Repeated results
    COUNT_MISMATCH = "count_mismatch"  # same key, different fragment count
    CONFLICT = "conflict"  # same key and index, different bytes
    LENGTH_MISMATCH = "length_mismatch"  # fragment sizes that no sender produces
    DIGEST_MISMATCH = "digest_mismatch"  # joined bytes do not hash to the key: partial dropped


class Eviction(StrEnum):
    """Why the reassembler dropped a partial message before it completed; counter keys."""

    SENDER_LIMIT = "evicted_sender_limit"
    TOTAL_LIMIT = "evicted_total_limit"
    BYTES_LIMIT = "evicted_bytes_limit"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Completed:
    """A message reassembled whole and checked against its key."""

    sender: int
    key: bytes
    message: bytes


@dataclass(frozen=True, slots=True)
class Progress:
    """A fragment stored; the message is not complete yet."""

    sender: int
    key: bytes
    have: int
    count: int


@dataclass(frozen=True, slots=True)
class Repeated:
    """A fragment of a message completed recently: a retry, probably because our receipt was lost.

    ``sha256`` is the SHA-256 of the whole message, so the engine can find it by id and send
    its receipt again instead of the sender retrying until the message expires.
    """

    sender: int
    key: bytes
    sha256: bytes


@dataclass(frozen=True, slots=True)
class Refused:
    """A fragment not stored (or a partial given up); a peer fault or harmless repeat, counted."""

    sender: int
    key: bytes
    reason: Refusal


FeedResult = Completed | Progress | Repeated | Refused


@dataclass(frozen=True, slots=True)
class NackToSend:
    """A repair request to send to node ``to``: ``frame`` is the encoded NACK."""

    to: int
    key: bytes
    missing: tuple[int, ...]
    frame: bytes


@dataclass(slots=True)
class _Partial:
    count: int
    pieces: dict[int, bytes]
    size: int  # bytes buffered in pieces
    frag_len: int | None  # length of every fragment but the last, once one has been seen
    last_rx: float
    nacks_sent: int
    next_nack_at: float


_PartialId = tuple[int, bytes]  # (sender node number, fragment key)


class Reassembler:
    """Joins FRAGMENT frames back into messages, within fixed memory bounds.

    Bounds (all enforced, all evictions counted in ``counters``):
      * ``max_partials_per_sender`` and ``max_partials`` incomplete messages;
      * ``max_buffered_bytes`` of fragment data in total;
      * a partial idle for ``timeout_s`` is dropped;
      * ``max_completed`` recently finished keys are remembered (for ``remember_s``) so late
        duplicates do not start a new partial that would then ask for repairs.
    The victim of an eviction is the least recently active partial (of that sender, for the
    per-sender bound), so a message still receiving fragments outlives stale ones.

    Selective repair: ``missing(now)`` returns NACKs for partials that have heard nothing for
    ``nack_delay_s``, then again after ``nack_delay_s * 2**k``, at most ``max_nacks`` times each.
    """

    def __init__(
        self,
        *,
        max_partials_per_sender: int = 4,
        max_partials: int = 32,
        max_buffered_bytes: int = 128 * 1024,
        timeout_s: float = 900.0,
        nack_delay_s: float = 60.0,
        max_nacks: int = 3,
        max_completed: int = 256,
        remember_s: float = 1800.0,
    ) -> None:
        if max_buffered_bytes < MAX_MESSAGE:
            raise ValueError(f"max_buffered_bytes must hold one whole message ({MAX_MESSAGE})")
        if not 1 <= max_partials_per_sender <= max_partials:
            raise ValueError("need 1 <= max_partials_per_sender <= max_partials")
        self.max_partials_per_sender = max_partials_per_sender
        self.max_partials = max_partials
        self.max_buffered_bytes = max_buffered_bytes
        self.timeout_s = timeout_s
        self.nack_delay_s = nack_delay_s
        self.max_nacks = max_nacks
        self.max_completed = max_completed
        self.remember_s = remember_s
        # Insertion order is activity order: move_to_end on every stored fragment, so the first
        # entry is always the least recently active partial.
        self._partials: OrderedDict[_PartialId, _Partial] = OrderedDict()
        self._per_sender: Counter[int] = Counter()
        # id -> (forget at, SHA-256 of the message): 40-odd bytes each, bounded by max_completed.
        self._completed: OrderedDict[_PartialId, tuple[float, bytes]] = OrderedDict()
        self._buffered = 0
        self.counters: Counter[str] = Counter()

    # -- observation -------------------------------------------------------------------------

    @property
    def buffered_bytes(self) -> int:
        """Fragment data held for incomplete messages."""
        return self._buffered

    def __len__(self) -> int:
        """Number of incomplete messages held."""
        return len(self._partials)

    def senders(self) -> int:
        """Number of senders with at least one incomplete message."""
        return len(self._per_sender)

    def remembered(self) -> int:
        """Number of recently completed message keys remembered for duplicate suppression."""
        return len(self._completed)

    def statistics(self) -> dict[str, int]:
        """Occupancy and counters (completions, refusals and evictions by reason), for metrics."""
        return {
            "partials": len(self._partials),
            "senders": len(self._per_sender),
            "buffered_bytes": self._buffered,
            "remembered": len(self._completed),
            **{str(k): v for k, v in self.counters.items()},
        }

    def next_timer(self) -> float | None:
        """The earliest time ``missing`` has work to do (a NACK or an expiry), or None."""
        times = [p.last_rx + self.timeout_s for p in self._partials.values()]
        nacks = [p.next_nack_at for p in self._partials.values() if p.nacks_sent < self.max_nacks]
        times += nacks
        return min(times, default=None)

    # -- input -------------------------------------------------------------------------------

    def feed(self, fragment: Fragment, sender: int, now: float) -> FeedResult:
        """Store one fragment heard from node ``sender``; return what became of it."""
        if len(fragment.data) > MAX_FRAGMENT_DATA:
            raise ValueError("fragment larger than any frame carries; decode_frame it first")
        pid = (sender, fragment.key)
        self._forget_completed(now)
        done = self._completed.get(pid)
        if done is not None:
            self.counters[Refusal.ALREADY_COMPLETE] += 1
            return Repeated(sender, fragment.key, done[1])
        partial = self._partials.get(pid)
        if partial is None:
            self._make_room_for_partial(sender)
            partial = _Partial(
                count=fragment.count,
                pieces={},
                size=0,
                frag_len=None,
                last_rx=now,
                nacks_sent=0,
                next_nack_at=now + self.nack_delay_s,
            )
            self._partials[pid] = partial
            self._per_sender[sender] += 1
        if fragment.count != partial.count:
            return self._refuse(pid, Refusal.COUNT_MISMATCH)
        held = partial.pieces.get(fragment.index)
        if held is not None:
            reason = Refusal.DUPLICATE if held == fragment.data else Refusal.CONFLICT
            return self._refuse(pid, reason)
        if not self._length_fits(partial, fragment):
            return self._refuse(pid, Refusal.LENGTH_MISMATCH)

        self._make_room_for_bytes(pid, len(fragment.data))
        partial.pieces[fragment.index] = fragment.data
        partial.size += len(fragment.data)
        self._buffered += len(fragment.data)
        if fragment.index < partial.count - 1:
            partial.frag_len = len(fragment.data)
        partial.last_rx = now
        # Fragments are still flowing: hold the next NACK back (with the backoff already earned).
        partial.next_nack_at = now + self.nack_delay_s * 2**partial.nacks_sent
        self._partials.move_to_end(pid)

        if len(partial.pieces) < partial.count:
            return Progress(sender, fragment.key, len(partial.pieces), partial.count)
        message = b"".join(partial.pieces[i] for i in range(partial.count))
        self._drop(pid)
        if fragment_key(message) != fragment.key:
            # Two messages under one key, or forged fragments: never hand out a splice. The
            # sender's end-to-end retry sends the message again.
            return self._refuse(pid, Refusal.DIGEST_MISMATCH)
        self._completed[pid] = (now + self.remember_s, hashlib.sha256(message).digest())
        self._completed.move_to_end(pid)
        while len(self._completed) > self.max_completed:
            self._completed.popitem(last=False)
        self.counters["completed"] += 1
        return Completed(sender, fragment.key, message)

    # -- timers ------------------------------------------------------------------------------

    def missing(self, now: float) -> list[NackToSend]:
        """Expire idle partials and return the NACKs that are due now."""
        self._forget_completed(now)
        out: list[NackToSend] = []
        for pid, partial in list(self._partials.items()):
            if now >= partial.last_rx + self.timeout_s:
                self._drop(pid)
                self.counters[Eviction.EXPIRED] += 1
                continue
            if partial.nacks_sent >= self.max_nacks or now < partial.next_nack_at:
                continue
            gaps = tuple(i for i in range(partial.count) if i not in partial.pieces)
            partial.nacks_sent += 1
            partial.next_nack_at = now + self.nack_delay_s * 2**partial.nacks_sent
            self.counters["nacks"] += 1
            out.append(NackToSend(pid[0], pid[1], gaps, encode_nack(pid[1], gaps)))
        return out

    # -- internals ---------------------------------------------------------------------------

    def _refuse(self, pid: _PartialId, reason: Refusal) -> Refused:
        self.counters[reason] += 1
        return Refused(pid[0], pid[1], reason)

    @staticmethod
    def _length_fits(partial: _Partial, fragment: Fragment) -> bool:
        # Senders cut a message into equal fragments and a last one no larger. Anything else is
        # a damaged or foreign fragment; refusing it here keeps a splice out early.
        last = partial.count - 1
        size = len(fragment.data)
        if fragment.index < last:
            if partial.frag_len is not None:
                return size == partial.frag_len
            tail = partial.pieces.get(last)
            return tail is None or len(tail) <= size
        return partial.frag_len is None or size <= partial.frag_len

    def _drop(self, pid: _PartialId) -> None:
        partial = self._partials.pop(pid)
        self._buffered -= partial.size
        self._per_sender[pid[0]] -= 1
        if self._per_sender[pid[0]] <= 0:
            del self._per_sender[pid[0]]

    def _evict(self, pid: _PartialId, why: Eviction) -> None:
        self._drop(pid)
        self.counters[why] += 1

    def _make_room_for_partial(self, sender: int) -> None:
        if self._per_sender[sender] >= self.max_partials_per_sender:
            oldest = next(pid for pid in self._partials if pid[0] == sender)
            self._evict(oldest, Eviction.SENDER_LIMIT)
        if len(self._partials) >= self.max_partials:
            self._evict(next(iter(self._partials)), Eviction.TOTAL_LIMIT)

    def _make_room_for_bytes(self, keep: _PartialId, size: int) -> None:
        while self._buffered + size > self.max_buffered_bytes:
            # The constructor guarantees one whole message fits, so another partial exists.
            victim = next(pid for pid in self._partials if pid != keep)
            self._evict(victim, Eviction.BYTES_LIMIT)

    def _forget_completed(self, now: float) -> None:
        while self._completed:
            pid, (forget_at, _) = next(iter(self._completed.items()))
            if forget_at > now:
                break
            del self._completed[pid]
