"""The outbox: what is owed to which link, when it is due, and what is in flight. Pure.

Each entry is keyed by (message id, link), where the link may be ``ANY_LINK`` ("the best usable
link at the time of sending", chosen by relay.engine.routing). An entry is in one of three states:

* ``WAITING``: due at ``next_at`` (it is in the due index, and only then);
* ``PARKED``: it came due while no link could carry it; a link state change makes it waiting
  again (``Delivery.revive``);
* ``IN_FLIGHT``: handed to a link (``via``), whose outcome is still to come. In-flight sends are
  counted per link, bounded by ``max_inflight_per_link``.

The due index is a sorted set of (at, message id, link): an entry is in it exactly while it is
waiting, so nothing stale is ever popped (no lazy deletion), and the order among entries due at
the same time is fixed (by id, then link).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

from sortedcontainers import SortedSet

from relay.engine.ops import PutOutbox

ANY_LINK = "*"  # outbox entry for "the best usable link at the time of sending"

Key = tuple[bytes, str]  # (message id, link or ANY_LINK)


def backoff(base_s: float, attempts: int, max_s: float) -> float:
    """Delay before the next try after ``attempts`` tries: doubling from ``base_s``, capped."""
    return min(base_s * 2.0 ** min(attempts - 1, 16), max_s)


def new_row(msg_id: bytes, link: str, *, at: float, awaiting: bool) -> PutOutbox:
    """The store row of a new entry (no attempts yet)."""
    return PutOutbox(msg_id, link, attempts=0, next_at=at, awaiting_receipts=awaiting)


class EntryState(StrEnum):
    WAITING = "waiting"
    PARKED = "parked"
    IN_FLIGHT = "in flight"


@dataclass(slots=True)
class Entry:
    msg_id: bytes
    link: str  # a link's name or ANY_LINK
    attempts: int
    next_at: float
    awaiting_receipts: bool
    state: EntryState = EntryState.WAITING
    via: str | None = None  # the link actually used (for ANY_LINK entries)
    suppressible: bool = False  # a gateway's bridged copy: cancelled when heard on the mesh
    answer: int = 0  # the healing round this entry answers (0: none)
    durable: bool = True  # has a store row; False: our receipt on MQTT (Delivery.transmitted)

    @property
    def key(self) -> Key:
        return (self.msg_id, self.link)

    @property
    def inflight(self) -> bool:
        return self.state == EntryState.IN_FLIGHT


class Outbox:
    """Entries by key, the due index and the in-flight counts per link."""

    def __init__(self, *, dropped_bound: int) -> None:
        self._entries: dict[Key, Entry] = {}
        self._due = SortedSet()  # (at, msg id, link) of every waiting entry
        self.inflight: Counter[str] = Counter()  # per link
        # (message, link) -> sends dropped while in flight (every recipient signed meanwhile):
        # their link still reports the outcome, and it is audited then.
        self._dropped: Counter[Key] = Counter()
        self._dropped_bound = dropped_bound

    # -- reading

    def get(self, key: Key) -> Entry | None:
        return self._entries.get(key)

    def __contains__(self, key: Key) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> Iterable[Entry]:
        return self._entries.values()

    def keys_of(self, msg_id: bytes, links: Iterable[str]) -> list[Key]:
        """The keys of one message, found directly (no scan of the whole outbox)."""
        return [k for k in ((msg_id, n) for n in (*links, ANY_LINK)) if k in self._entries]

    def of(self, msg_id: bytes, links: Iterable[str]) -> list[Entry]:
        return [self._entries[k] for k in self.keys_of(msg_id, links)]

    def depths(self) -> Mapping[str, int]:
        return Counter(link for (_, link) in self._entries)

    def waiting_for_any_link(self) -> int:
        return sum(1 for e in self._entries.values() if e.link == ANY_LINK and not e.inflight)

    def next_at(self) -> float | None:
        """When the earliest waiting entry is due (None: nothing waits)."""
        if not self._due:
            return None
        at: float = self._due[0][0]
        return at

    # -- changing

    def add(self, msg_id: bytes, link: str, *, attempts: int, at: float, awaiting: bool) -> Entry:
        """A new entry, waiting until ``at`` (it replaces one with the same key)."""
        old = self._entries.get((msg_id, link))
        if old is not None and old.state == EntryState.WAITING:
            self._due.discard((old.next_at, msg_id, link))
        entry = self._entries[(msg_id, link)] = Entry(msg_id, link, attempts, at, awaiting)
        self._due.add((at, msg_id, link))
        return entry

    def wait(self, entry: Entry, at: float) -> None:
        """Make a waiting or parked entry (or one just back from its link) due at ``at``."""
        if entry.state == EntryState.WAITING:
            self._due.discard((entry.next_at, entry.msg_id, entry.link))
        entry.state, entry.next_at = EntryState.WAITING, at
        self._due.add((at, entry.msg_id, entry.link))

    def park(self, entry: Entry) -> None:
        """No link can carry it now: out of the due index until a link state change."""
        self._due.discard((entry.next_at, entry.msg_id, entry.link))
        entry.state = EntryState.PARKED

    def send(self, entry: Entry, via: str) -> None:
        """Handed to link ``via``: in flight until ``sent_back``."""
        self._due.discard((entry.next_at, entry.msg_id, entry.link))
        entry.state, entry.via = EntryState.IN_FLIGHT, via
        self.inflight[via] += 1

    def sent_back(self, entry: Entry, link: str) -> None:
        """The link reported the outcome: one attempt more; the caller waits or removes it."""
        entry.state = EntryState.PARKED
        self.inflight[link] -= 1
        entry.attempts += 1

    def remove(self, key: Key) -> Entry | None:
        """Remove an entry that is not in flight (``drop`` handles one that may be)."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            assert not entry.inflight, f"in-flight entry {key!r} removed without drop()"
            self._due.discard((entry.next_at, entry.msg_id, entry.link))
        return entry

    def drop(self, key: Key) -> None:
        """Remove an entry, in flight or not; an in-flight send's outcome is still to come."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._due.discard((entry.next_at, entry.msg_id, entry.link))
        if entry.inflight and entry.via is not None:
            self.inflight[entry.via] -= 1
            self._dropped[(key[0], entry.via)] += 1
            if len(self._dropped) > self._dropped_bound:
                del self._dropped[next(iter(self._dropped))]  # never reported

    def take_dropped(self, msg_id: bytes, link: str) -> bool:
        """Was a send of this message on this link dropped while in flight? (Counts it off.)"""
        key = (msg_id, link)
        if not self._dropped[key]:
            self._dropped.pop(key, None)
            return False
        self._dropped[key] -= 1
        if not self._dropped[key]:
            del self._dropped[key]
        return True

    def pop_due(self, now: float) -> Iterator[Entry]:
        """Waiting entries due at ``now``, earliest first, each taken out of the due index
        (the caller sends, parks, removes or ``wait``s it again)."""
        while self._due and self._due[0][0] <= now:
            _, msg_id, link = self._due.pop(0)
            entry = self._entries[(msg_id, link)]
            entry.state = EntryState.PARKED  # until the caller decides
            yield entry
