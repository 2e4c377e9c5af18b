"""Frames our mesh link puts in one Meshtastic packet payload, fragmentation and selective repair.

One frame is the whole application payload of one packet on our private portnum, at most
``MAX_FRAME`` = 231 bytes (FACTS.md: the firmware refuses more on portnums >= 256). Airtime is the
scarcest resource, so the common case, one signed message that fits a packet, costs one header
byte. The byte layout, a worked example and the reasoning are in docs/mesh-frames.md.

First byte of every frame::

    bit  7 6 | 5 4 3 | 2 1 0
         ver | type  | type-specific (reserved bits must be zero)

``ver`` is 1 (0b01): 0x00 and 0xFF, the likeliest garbage, are rejected as a wrong version. The
one exception is 0xD2, the first byte of a tagged COSE_Sign1: a signed message that fits a packet
goes bare, with no header (a "bare SINGLE"), saving a byte of airtime on almost every message.

Decoding never raises: ``decode_frame`` returns a frame or ``Malformed(reason, detail)``. Encoders
raise ``ValueError`` because a bad argument there is our own bug, not a peer's fault.

SINGLE and FRAGMENT data run to the end of the payload: the Meshtastic packet delimits it (the
LoRa PHY has a CRC and the Data protobuf carries the length), so a length byte would be paid on
every message for nothing. A shortened or lengthened SINGLE is caught by the COSE decoder and the
signature check; a shortened or lengthened FRAGMENT by the fragment-length rules and the digest
check on reassembly. The self-delimiting frames (NACK, RECEIPT_BUNDLE, SUMMARY) reject truncation
and trailing bytes themselves.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Final

from relay.mesh import Precedence

MAX_FRAME: Final = 231
VERSION: Final = 1
KEY_LEN: Final = 4
MAX_FRAGMENTS: Final = 32

SINGLE_HEADER: Final = 1
# A tagged COSE_Sign1 starts with 0xD2 (CBOR tag 18, one-byte head). Its top bits are 0b11, which no
# version-1 header has, so a signed message that fits a packet goes bare: no header byte at all.
COSE_SIGN1_TAG: Final = 0xD2
FRAGMENT_HEADER: Final = 2 + KEY_LEN
MAX_SINGLE: Final = MAX_FRAME - SINGLE_HEADER  # 230
MAX_FRAGMENT_DATA: Final = MAX_FRAME - FRAGMENT_HEADER  # 225
MAX_MESSAGE: Final = MAX_FRAGMENTS * MAX_FRAGMENT_DATA  # 7200
MAX_NACK_BITMAP: Final = MAX_FRAGMENTS // 8  # 4 bytes: one bit per fragment index
MAX_BUNDLE_ITEMS: Final = 8  # item count - 1 lives in the three low bits of the first byte
MAX_BUNDLE_ITEM: Final = MAX_FRAME - 2  # one type byte, one length byte
MAX_SUMMARY: Final = MAX_FRAME - 2

# A domain prefix so the fragment key never equals a prefix of some other hash of the same bytes
# (for example the message id), which would make the two easy to confuse in logs and code.
_KEY_DOMAIN: Final = b"crisis-relay/mesh/fragment-key/v1\x00"


class FrameType(IntEnum):
    """Bits 5..3 of the first byte; 5, 6 and 7 are reserved for later versions."""

    SINGLE = 0
    FRAGMENT = 1
    NACK = 2
    RECEIPT_BUNDLE = 3
    SUMMARY = 4


class MalformedReason(StrEnum):
    """Why a frame was rejected: a stable key for counters, with free text in ``detail``."""

    EMPTY = "empty"
    OVERSIZED = "oversized"
    BAD_VERSION = "bad_version"
    UNKNOWN_TYPE = "unknown_type"
    RESERVED_BITS = "reserved_bits"
    TRUNCATED = "truncated"
    TRAILING_BYTES = "trailing_bytes"
    EMPTY_DATA = "empty_data"
    BAD_COUNT = "bad_count"
    BAD_INDEX = "bad_index"
    NON_CANONICAL = "non_canonical"


@dataclass(frozen=True, slots=True)
class Single:
    """A whole message in one frame."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Fragment:
    """Fragment ``index`` of ``count`` of the message whose fragment key is ``key``."""

    key: bytes
    index: int
    count: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Nack:
    """A selective repair request: the fragment indexes still missing for ``key``, ascending."""

    key: bytes
    missing: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ReceiptBundle:
    """Several small signed receipts in one frame, in the order they were packed."""

    receipts: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Summary:
    """Opaque anti-entropy summary bytes; their meaning belongs to the engine."""

    data: bytes


Frame = Single | Fragment | Nack | ReceiptBundle | Summary


@dataclass(frozen=True, slots=True)
class Malformed:
    """A frame we refuse: a peer fault, returned as data and counted by the caller."""

    reason: MalformedReason
    detail: str


# --------------------------------------------------------------------------------------------
# Encoding


def _first_byte(frame_type: FrameType, low: int = 0) -> int:
    return (VERSION << 6) | (frame_type << 3) | low


def fragment_key(message: bytes) -> bytes:
    """Return the 4-byte key naming ``message``'s fragments: a truncated, domain-separated SHA-256.

    Four bytes keep the per-fragment header small. Keys are scoped per sender node, so a clash
    needs two concurrent partial messages from one sender; reassembly re-hashes the joined bytes
    and compares the key, so a clash cannot splice two messages into one undetected (and the
    signature of the reassembled message is verified later anyway).
    """
    return hashlib.sha256(_KEY_DOMAIN + message).digest()[:KEY_LEN]


def encode_single(message: bytes) -> bytes:
    """Return the SINGLE frame carrying ``message`` (1..MAX_SINGLE bytes, or a bare COSE_Sign1)."""
    if is_bare(message):
        return bytes(message)
    if not 1 <= len(message) <= MAX_SINGLE:
        raise ValueError(f"single frame carries 1..{MAX_SINGLE} bytes, got {len(message)}")
    return bytes((_first_byte(FrameType.SINGLE),)) + message


def encode_fragment(key: bytes, index: int, count: int, data: bytes) -> bytes:
    """Return one FRAGMENT frame; ``count`` is 2..MAX_FRAGMENTS and ``index`` below it."""
    if len(key) != KEY_LEN:
        raise ValueError(f"fragment key is {KEY_LEN} bytes, got {len(key)}")
    if not 2 <= count <= MAX_FRAGMENTS:
        raise ValueError(f"fragment count is 2..{MAX_FRAGMENTS}, got {count}")
    if not 0 <= index < count:
        raise ValueError(f"fragment index {index} outside 0..{count - 1}")
    if not 1 <= len(data) <= MAX_FRAGMENT_DATA:
        raise ValueError(f"fragment carries 1..{MAX_FRAGMENT_DATA} bytes, got {len(data)}")
    # An 11-bit field across bytes 0 and 1: reserved(1) | count-1 (5) | index (5).
    word = ((count - 1) << 5) | index
    return bytes((_first_byte(FrameType.FRAGMENT, word >> 8), word & 0xFF)) + key + data


def encode_nack(key: bytes, missing: Iterable[int]) -> bytes:
    """Return a NACK frame asking the sender of ``key`` for the fragment indexes in ``missing``."""
    if len(key) != KEY_LEN:
        raise ValueError(f"fragment key is {KEY_LEN} bytes, got {len(key)}")
    bitmap = 0
    for index in missing:
        if not 0 <= index < MAX_FRAGMENTS:
            raise ValueError(f"fragment index {index} outside 0..{MAX_FRAGMENTS - 1}")
        bitmap |= 1 << index
    if bitmap == 0:
        raise ValueError("a NACK names at least one missing fragment")
    # Little-endian, shortest form: bit i of the bitmap is fragment i; no trailing zero byte.
    size = (bitmap.bit_length() + 7) // 8
    return bytes((_first_byte(FrameType.NACK, size - 1),)) + key + bitmap.to_bytes(size, "little")


def encode_receipt_bundle(receipts: Sequence[bytes]) -> bytes:
    """Return one RECEIPT_BUNDLE frame holding all of ``receipts`` (raise if they do not fit)."""
    if not 1 <= len(receipts) <= MAX_BUNDLE_ITEMS:
        raise ValueError(f"a bundle holds 1..{MAX_BUNDLE_ITEMS} receipts, got {len(receipts)}")
    out = bytearray((_first_byte(FrameType.RECEIPT_BUNDLE, len(receipts) - 1),))
    for receipt in receipts:
        if not 1 <= len(receipt) <= MAX_BUNDLE_ITEM:
            raise ValueError(f"a receipt is 1..{MAX_BUNDLE_ITEM} bytes, got {len(receipt)}")
        out.append(len(receipt))
        out += receipt
    if len(out) > MAX_FRAME:
        raise ValueError(f"receipts need {len(out)} bytes, a frame holds {MAX_FRAME}")
    return bytes(out)


def pack_receipts(receipts: Sequence[bytes]) -> list[bytes]:
    """Pack ``receipts`` in order into as few RECEIPT_BUNDLE frames as a greedy fill gives.

    Order is kept (the caller may have sorted by urgency); a frame is closed when the next
    receipt does not fit or it holds MAX_BUNDLE_ITEMS.
    """
    frames: list[bytes] = []
    batch: list[bytes] = []
    used = 1
    for receipt in receipts:
        if not 1 <= len(receipt) <= MAX_BUNDLE_ITEM:
            raise ValueError(f"a receipt is 1..{MAX_BUNDLE_ITEM} bytes, got {len(receipt)}")
        if batch and (used + 1 + len(receipt) > MAX_FRAME or len(batch) == MAX_BUNDLE_ITEMS):
            frames.append(encode_receipt_bundle(batch))
            batch, used = [], 1
        batch.append(receipt)
        used += 1 + len(receipt)
    if batch:
        frames.append(encode_receipt_bundle(batch))
    return frames


def encode_summary(data: bytes) -> bytes:
    """Return a SUMMARY frame carrying ``data`` (0..MAX_SUMMARY opaque bytes)."""
    if len(data) > MAX_SUMMARY:
        raise ValueError(f"summary carries 0..{MAX_SUMMARY} bytes, got {len(data)}")
    return bytes((_first_byte(FrameType.SUMMARY), len(data))) + data


def is_bare(message: bytes) -> bool:
    """True when ``message`` goes on air as a bare SINGLE: a tagged COSE_Sign1 that fits."""
    return 1 <= len(message) <= MAX_FRAME and message[0] == COSE_SIGN1_TAG


def frame_type(payload: bytes) -> FrameType:
    """The type of a frame from its first byte (a bare SINGLE counts as SINGLE); not validated."""
    if is_bare(payload):
        return FrameType.SINGLE
    return FrameType(payload[0] >> 3 & 0x07)


def fragment_count(size: int, *, bare: bool = False) -> int:
    """Return how many frames a message of ``size`` bytes needs (1 means a SINGLE frame).

    ``bare``: the message is a tagged COSE_Sign1 (see ``is_bare``), so one frame holds MAX_FRAME.
    """
    if not 1 <= size <= MAX_MESSAGE:
        raise ValueError(f"message size is 1..{MAX_MESSAGE}, got {size}")
    limit = MAX_FRAME if bare else MAX_SINGLE
    return 1 if size <= limit else math.ceil(size / MAX_FRAGMENT_DATA)


def encode_message(message: bytes) -> tuple[bytes, ...]:
    """Return the frames carrying ``message``: one SINGLE, or 2..32 FRAGMENTs in index order.

    Fragments are balanced (all but the last the same size, the last no larger) rather than
    filled: the frame count is the same, but smaller frames spend less time on air each, so
    each is less likely to be lost to a collision and cheaper to repair.
    """
    count = fragment_count(len(message), bare=is_bare(message))
    if count == 1:
        return (encode_single(message),)
    key = fragment_key(message)
    size = math.ceil(len(message) / count)
    return tuple(
        encode_fragment(key, i, count, message[i * size : (i + 1) * size]) for i in range(count)
    )


# --------------------------------------------------------------------------------------------
# Decoding


def decode_frame(data: bytes) -> Frame | Malformed:
    """Decode one payload; never raises, whatever the input."""
    if not data:
        return Malformed(MalformedReason.EMPTY, "no bytes")
    if len(data) > MAX_FRAME:
        return Malformed(MalformedReason.OVERSIZED, f"{len(data)} bytes > {MAX_FRAME}")
    first = data[0]
    if first == COSE_SIGN1_TAG:
        return Single(bytes(data))
    if first >> 6 != VERSION:
        return Malformed(MalformedReason.BAD_VERSION, f"version {first >> 6}")
    low = first & 0x07
    match (first >> 3) & 0x07:
        case FrameType.SINGLE:
            return _decode_single(data, low)
        case FrameType.FRAGMENT:
            return _decode_fragment(data, low)
        case FrameType.NACK:
            return _decode_nack(data, low)
        case FrameType.RECEIPT_BUNDLE:
            return _decode_bundle(data, low)
        case FrameType.SUMMARY:
            return _decode_summary(data, low)
        case other:
            return Malformed(MalformedReason.UNKNOWN_TYPE, f"type {other}")


def _truncated(what: str, need: int, have: int) -> Malformed:
    return Malformed(MalformedReason.TRUNCATED, f"{what}: need {need} bytes, have {have}")


def _decode_single(data: bytes, low: int) -> Single | Malformed:
    if low:
        return Malformed(MalformedReason.RESERVED_BITS, f"single low bits {low:03b}")
    if len(data) == SINGLE_HEADER:
        return Malformed(MalformedReason.EMPTY_DATA, "single frame without data")
    if data[SINGLE_HEADER] == COSE_SIGN1_TAG:
        # One canonical encoding: a COSE_Sign1 that fits goes bare, never behind a header.
        return Malformed(MalformedReason.NON_CANONICAL, "COSE_Sign1 behind a SINGLE header")
    return Single(bytes(data[SINGLE_HEADER:]))


def _decode_fragment(data: bytes, low: int) -> Fragment | Malformed:
    if low & 0x04:
        return Malformed(MalformedReason.RESERVED_BITS, "fragment reserved bit set")
    if len(data) < FRAGMENT_HEADER:
        return _truncated("fragment header", FRAGMENT_HEADER, len(data))
    word = (low << 8) | data[1]
    count = (word >> 5) + 1
    index = word & 0x1F
    if count < 2:
        # One canonical encoding per message: a message that fits one frame goes as SINGLE.
        return Malformed(MalformedReason.BAD_COUNT, "fragment count 1 (use SINGLE)")
    if index >= count:
        return Malformed(MalformedReason.BAD_INDEX, f"index {index} of count {count}")
    if len(data) == FRAGMENT_HEADER:
        return Malformed(MalformedReason.EMPTY_DATA, "fragment without data")
    return Fragment(bytes(data[2:FRAGMENT_HEADER]), index, count, bytes(data[FRAGMENT_HEADER:]))


def _decode_nack(data: bytes, low: int) -> Nack | Malformed:
    if low & 0x04:
        return Malformed(MalformedReason.RESERVED_BITS, "nack reserved bit set")
    size = (low & 0x03) + 1
    need = 1 + KEY_LEN + size
    if len(data) < need:
        return _truncated("nack", need, len(data))
    if len(data) > need:
        return Malformed(MalformedReason.TRAILING_BYTES, f"nack: {len(data) - need} extra bytes")
    bitmap = data[1 + KEY_LEN :]
    if bitmap[-1] == 0:
        # Zero last byte: either nothing is missing or the bitmap is longer than it needs to be.
        return Malformed(MalformedReason.NON_CANONICAL, "nack bitmap ends in a zero byte")
    value = int.from_bytes(bitmap, "little")
    missing = tuple(i for i in range(8 * size) if value >> i & 1)
    return Nack(bytes(data[1 : 1 + KEY_LEN]), missing)


def _decode_bundle(data: bytes, low: int) -> ReceiptBundle | Malformed:
    count = low + 1
    receipts: list[bytes] = []
    pos = 1
    for n in range(count):
        if pos >= len(data):
            return _truncated(f"receipt {n} length", pos + 1, len(data))
        size = data[pos]
        if size == 0:
            return Malformed(MalformedReason.EMPTY_DATA, f"receipt {n} is empty")
        end = pos + 1 + size
        if end > len(data):
            return _truncated(f"receipt {n}", end, len(data))
        receipts.append(bytes(data[pos + 1 : end]))
        pos = end
    if pos != len(data):
        return Malformed(MalformedReason.TRAILING_BYTES, f"bundle: {len(data) - pos} extra bytes")
    return ReceiptBundle(tuple(receipts))


def _decode_summary(data: bytes, low: int) -> Summary | Malformed:
    if low:
        return Malformed(MalformedReason.RESERVED_BITS, f"summary low bits {low:03b}")
    if len(data) < 2:
        return _truncated("summary length", 2, len(data))
    end = 2 + data[1]
    if len(data) < end:
        return _truncated("summary", end, len(data))
    if len(data) > end:
        return Malformed(MalformedReason.TRAILING_BYTES, f"summary: {len(data) - end} extra bytes")
    return Summary(bytes(data[2:end]))


# --------------------------------------------------------------------------------------------
# Reassembly (receiver side)


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


# --------------------------------------------------------------------------------------------
# Fragmentation (sender side)


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
