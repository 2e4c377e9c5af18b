"""Fragmentation, the sender side: messages into frames, and selective repair of what a
receiver's NACK says is missing (``relay.mesh.reassembly`` is the other end).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from enum import StrEnum

from relay.mesh import Precedence
from relay.mesh.frames import Nack, encode_message, fragment_key


class RepairRefusal(StrEnum):
    """Why a NACK got no fragments back; counter keys."""

    UNKNOWN_KEY = "unknown_key"  # never sent, or forgotten (bounds or age)
    BAD_INDEX = "bad_index"  # asks only for indexes the message does not have
    REPAIR_LIMIT = "repair_limit"  # this message was repaired max_repairs times already


@dataclass(frozen=True, slots=True)
class Repair:
    """Frames answering a NACK, to queue at the message's precedence."""

    key: bytes
    frames: tuple[bytes, ...]
    precedence: Precedence


@dataclass(frozen=True, slots=True)
class RepairRefused:
    """A NACK we do not answer, and why."""

    key: bytes
    reason: RepairRefusal


@dataclass(slots=True)
class _Sent:
    frames: tuple[bytes, ...]
    precedence: Precedence
    forget_at: float
    repairs: int
    size: int


class Fragmenter:
    """Encodes messages into frames and remembers multi-frame ones to answer NACKs selectively.

    Memory is bounded by ``max_messages`` and ``max_bytes`` (oldest forgotten first) and by age
    (``keep_s``). Each message is repaired at most ``max_repairs`` times, so forged or repeated
    NACKs cannot turn this node into an airtime amplifier beyond that.
    """

    def __init__(
        self,
        *,
        max_messages: int = 16,
        max_bytes: int = 64 * 1024,
        keep_s: float = 1800.0,
        max_repairs: int = 4,
    ) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.keep_s = keep_s
        self.max_repairs = max_repairs
        self._sent: OrderedDict[bytes, _Sent] = OrderedDict()
        self._bytes = 0
        self.counters: Counter[str] = Counter()

    def __len__(self) -> int:
        """Number of multi-frame messages remembered."""
        return len(self._sent)

    @property
    def remembered_bytes(self) -> int:
        """Frame bytes held for answering NACKs."""
        return self._bytes

    def fragment(
        self, message: bytes, now: float, precedence: int = Precedence.ROUTINE
    ) -> tuple[bytes, ...]:
        """Return the frames for ``message``; remember them if there is more than one."""
        frames = encode_message(message)
        if len(frames) == 1:
            return frames
        key = fragment_key(message)
        self._forget(now)
        if key in self._sent:
            self._remove(key)
        size = sum(map(len, frames))
        self._sent[key] = _Sent(frames, Precedence(precedence), now + self.keep_s, 0, size)
        self._bytes += size
        while len(self._sent) > self.max_messages or self._bytes > self.max_bytes:
            self._remove(next(iter(self._sent)))
            self.counters["forgotten_bounds"] += 1
        return frames

    def repair(self, nack: Nack, now: float) -> Repair | RepairRefused:
        """Return the frames a NACK asks for, or why there are none."""
        self._forget(now)
        sent = self._sent.get(nack.key)
        if sent is None:
            return self._refuse(nack.key, RepairRefusal.UNKNOWN_KEY)
        wanted = tuple(sent.frames[i] for i in nack.missing if i < len(sent.frames))
        if not wanted:
            return self._refuse(nack.key, RepairRefusal.BAD_INDEX)
        if sent.repairs >= self.max_repairs:
            return self._refuse(nack.key, RepairRefusal.REPAIR_LIMIT)
        sent.repairs += 1
        self.counters["repairs"] += 1
        return Repair(nack.key, wanted, sent.precedence)

    def _refuse(self, key: bytes, reason: RepairRefusal) -> RepairRefused:
        self.counters[reason] += 1
        return RepairRefused(key, reason)

    def _remove(self, key: bytes) -> None:
        self._bytes -= self._sent.pop(key).size

    def _forget(self, now: float) -> None:
        for key in [k for k, s in self._sent.items() if s.forget_at <= now]:
            self._remove(key)
            self.counters["forgotten_age"] += 1
