"""Frames our mesh link puts in one Meshtastic packet payload: the codec.

Fragmentation and selective repair build on it: ``relay.mesh.fragmenter`` (sender side) and
``relay.mesh.reassembly`` (receiver side).

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Final

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
