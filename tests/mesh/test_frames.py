"""The frame codec: layout, round trips, and rejection of every kind of bad input."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.mesh.frames import (
    FRAGMENT_HEADER,
    KEY_LEN,
    MAX_BUNDLE_ITEM,
    MAX_FRAGMENT_DATA,
    MAX_FRAME,
    MAX_MESSAGE,
    MAX_SINGLE,
    MAX_SUMMARY,
    Fragment,
    FrameType,
    Malformed,
    MalformedReason,
    Nack,
    ReceiptBundle,
    Single,
    Summary,
    decode_frame,
    encode_fragment,
    encode_message,
    encode_nack,
    encode_receipt_bundle,
    encode_single,
    encode_summary,
    fragment_count,
    fragment_key,
    frame_type,
    is_bare,
    pack_receipts,
)

KEY = b"\x01\x02\x03\x04"
messages = st.binary(min_size=1, max_size=MAX_MESSAGE)
garbage = st.binary(min_size=1, max_size=16)


def reason(result: object) -> MalformedReason:
    assert isinstance(result, Malformed), result
    return result.reason


# -- layout and overhead ---------------------------------------------------------------------


def test_single_frame_costs_one_header_byte() -> None:
    """Test that a message that fits one frame is sent as SINGLE with a one-byte header."""
    for size in (1, 120, 227, MAX_SINGLE):
        (frame,) = encode_message(b"m" * size)
        assert len(frame) == size + 1
        assert frame[0] == 0x40
    assert MAX_SINGLE == MAX_FRAME - 1 == 230


def test_signed_message_goes_bare_without_a_header_byte() -> None:
    """Test that a COSE_Sign1 of up to 231 B is its own frame and a headered one is refused."""
    for size in (2, 120, MAX_SINGLE, MAX_FRAME):
        message = b"\xd2\x84" + bytes(size - 2)
        assert encode_message(message) == (message,)
        assert decode_frame(message) == Single(message)
    assert len(encode_message(b"\xd2\x84" + bytes(MAX_FRAME - 1))) == 2
    assert reason(decode_frame(b"\x40\xd2\x84")) is MalformedReason.NON_CANONICAL
    assert reason(decode_frame(b"\xd3\x84")) is MalformedReason.BAD_VERSION


def test_frame_counts_for_larger_messages() -> None:
    """Test that 231, 300, 500, 1000 and 7200-byte messages need 2, 2, 3, 5 and 32 frames."""
    expected = {231: 2, 300: 2, 450: 2, 451: 3, 500: 3, 1000: 5, MAX_MESSAGE: 32}
    for size, count in expected.items():
        assert fragment_count(size) == count
        frames = encode_message(bytes(size))
        assert len(frames) == count
        assert sum(len(f) for f in frames) == size + FRAGMENT_HEADER * count


def test_fragment_layout_matches_the_documented_bits() -> None:
    """Test that a FRAGMENT puts count-1 and index in the documented bit positions."""
    frame = encode_fragment(KEY, 5, 32, b"xy")
    # 01 001 0 11 | 111 00101: version 1, type 1, reserved 0, count-1 = 31, index = 5.
    assert frame[:2] == bytes((0b0100_1011, 0b1110_0101))
    assert frame[2:6] == KEY
    assert decode_frame(frame) == Fragment(KEY, 5, 32, b"xy")


def test_worked_example_from_the_docs() -> None:
    """Test that the worked hex examples in docs/mesh-frames.md are what the encoder produces."""
    assert encode_single(b"\x84\xd2").hex(" ") == "40 84 d2"
    assert encode_single(b"\xd2\x84").hex(" ") == "d2 84"
    assert encode_nack(KEY, [1, 9]).hex(" ") == "51 01 02 03 04 02 02"
    assert encode_summary(b"\xaa").hex(" ") == "60 01 aa"
    assert encode_receipt_bundle([b"\xaa", b"\xbb\xcc"]).hex(" ") == "59 01 aa 02 bb cc"
    assert encode_single(bytes.fromhex("d28443a10127a058")).hex(" ") == "d2 84 43 a1 01 27 a0 58"
    message = bytes.fromhex("d28443a10127") + bytes(i % 256 for i in range(294))
    first, second = encode_message(message)
    assert first[:10].hex(" ") == "48 20 c6 cc 5a cc d2 84 43 a1"
    assert second[:10].hex(" ") == "48 21 c6 cc 5a cc 90 91 92 93"
    assert len(first) == len(second) == 156
    assert encode_nack(fragment_key(message), [1]).hex(" ") == "50 c6 cc 5a cc 02"


def test_fragment_key_is_four_bytes_of_a_domain_separated_hash() -> None:
    """Test that the fragment key is 4 bytes, deterministic, and differs between messages."""
    assert len(fragment_key(b"a")) == KEY_LEN
    assert fragment_key(b"a") == fragment_key(b"a") != fragment_key(b"b")


# -- round trips -----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(messages)
def test_message_round_trips_through_frames(message: bytes) -> None:
    """Test that any message of 1..MAX_MESSAGE bytes encodes to valid frames and back."""
    frames = encode_message(message)
    assert all(len(f) <= MAX_FRAME for f in frames)
    decoded = [decode_frame(f) for f in frames]
    if fragment_count(len(message), bare=is_bare(message)) == 1:
        assert decoded == [Single(message)]
        return
    assert all(isinstance(d, Fragment) for d in decoded)
    fragments = [d for d in decoded if isinstance(d, Fragment)]
    assert [f.index for f in fragments] == list(range(len(frames)))
    assert {f.count for f in fragments} == {len(frames)}
    assert {f.key for f in fragments} == {fragment_key(message)}
    # Balanced: every fragment but the last the same size, the last no larger and not empty.
    sizes = [len(f.data) for f in fragments]
    assert len(set(sizes[:-1])) == 1 and 0 < sizes[-1] <= sizes[0] <= MAX_FRAGMENT_DATA
    assert b"".join(f.data for f in fragments) == message


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 31), min_size=1, max_size=32), st.binary(min_size=4, max_size=4))
def test_nack_round_trips(missing: list[int], key: bytes) -> None:
    """Test that a NACK for any set of indexes decodes to the same sorted set, shortest form."""
    frame = encode_nack(key, missing)
    assert len(frame) == 1 + KEY_LEN + (max(missing) // 8 + 1)
    assert decode_frame(frame) == Nack(key, tuple(sorted(set(missing))))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=120), min_size=1, max_size=40))
def test_receipts_pack_into_bundles_and_round_trip(receipts: list[bytes]) -> None:
    """Test that pack_receipts keeps every receipt, in order, in frames within the limit."""
    frames = pack_receipts(receipts)
    assert all(len(f) <= MAX_FRAME for f in frames)
    out: list[bytes] = []
    for frame in frames:
        decoded = decode_frame(frame)
        assert isinstance(decoded, ReceiptBundle)
        out += decoded.receipts
    assert out == receipts


def test_two_typical_receipts_share_one_frame() -> None:
    """Test that signed receipts of 90-110 bytes go two to a frame."""
    assert len(pack_receipts([b"r" * 110] * 6)) == 3
    assert len(pack_receipts([b"r" * 90] * 4)) == 2


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=MAX_SUMMARY))
def test_summary_round_trips(data: bytes) -> None:
    """Test that a SUMMARY of 0..MAX_SUMMARY bytes round trips."""
    assert decode_frame(encode_summary(data)) == Summary(data)


# -- decoding never raises -------------------------------------------------------------------


@settings(max_examples=800, deadline=None)
@given(st.binary(max_size=300))
def test_decode_of_arbitrary_bytes_never_raises(data: bytes) -> None:
    """Test that decode_frame returns a frame or Malformed for any bytes, never raising."""
    result = decode_frame(data)
    assert isinstance(result, Single | Fragment | Nack | ReceiptBundle | Summary | Malformed)


@settings(max_examples=800, deadline=None)
@given(st.integers(0x40, 0x7F), st.binary(max_size=240))
def test_decode_of_version_one_garbage_never_raises(first: int, rest: bytes) -> None:
    """Test that bytes with a valid version and any type and tail decode without raising."""
    result = decode_frame(bytes((first,)) + rest)
    if not isinstance(result, Malformed):
        # Whatever decodes must re-encode to the same bytes: one canonical form per frame.
        assert reencode(result) == bytes((first,)) + rest


def reencode(frame: Single | Fragment | Nack | ReceiptBundle | Summary) -> bytes:
    match frame:
        case Single(data):
            return encode_single(data)
        case Fragment(key, index, count, data):
            return encode_fragment(key, index, count, data)
        case Nack(key, missing):
            return encode_nack(key, missing)
        case ReceiptBundle(receipts):
            return encode_receipt_bundle(receipts)
        case Summary(data):
            return encode_summary(data)


# -- whole, every prefix, trailing garbage ---------------------------------------------------

SELF_DELIMITING = [
    encode_nack(KEY, [0]),
    encode_nack(KEY, [3, 17, 31]),
    encode_receipt_bundle([b"a" * 100, b"b" * 110]),
    encode_receipt_bundle([b"x"] * 8),
    encode_summary(b""),
    encode_summary(b"s" * MAX_SUMMARY),
]


@pytest.mark.parametrize("frame", SELF_DELIMITING, ids=lambda f: f[:1].hex())
def test_self_delimiting_frames_reject_every_truncation(frame: bytes) -> None:
    """Test that every proper prefix of a NACK, bundle or summary is rejected as truncated."""
    assert not isinstance(decode_frame(frame), Malformed)
    assert reason(decode_frame(b"")) is MalformedReason.EMPTY
    for cut in range(1, len(frame)):
        assert reason(decode_frame(frame[:cut])) in {
            MalformedReason.TRUNCATED,
            MalformedReason.NON_CANONICAL,  # a NACK bitmap cut to a zero byte
        }


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(SELF_DELIMITING), garbage)
def test_self_delimiting_frames_reject_trailing_garbage(frame: bytes, tail: bytes) -> None:
    """Test that a NACK, bundle or summary with bytes appended is rejected."""
    expected = MalformedReason.TRAILING_BYTES
    if len(frame) + len(tail) > MAX_FRAME:
        expected = MalformedReason.OVERSIZED
    assert reason(decode_frame(frame + tail)) is expected


def test_single_prefixes_are_rejected_or_shorter_messages() -> None:
    """Test that a cut SINGLE is rejected when no data is left, else decodes to the shorter data.

    SINGLE has no length field on purpose (the packet delimits it); the COSE decoder and the
    signature check reject a shortened message.
    """
    frame = encode_single(b"signed")
    assert reason(decode_frame(frame[:1])) is MalformedReason.EMPTY_DATA
    for cut in range(2, len(frame) + 1):
        assert decode_frame(frame[:cut]) == Single(b"signed"[: cut - 1])


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=MAX_SINGLE), garbage)
def test_single_with_trailing_garbage_is_a_different_message(data: bytes, tail: bytes) -> None:
    """Test that bytes appended to a SINGLE end up in its data or make it oversized, never lost."""
    result = decode_frame(encode_single(data) + tail)
    header = 0 if is_bare(data) else 1
    if header + len(data) + len(tail) > MAX_FRAME:
        assert reason(result) is MalformedReason.OVERSIZED
    else:
        assert result == Single(data + tail)


def test_fragment_header_prefixes_are_rejected() -> None:
    """Test that a FRAGMENT cut inside its header, or right after it, is rejected."""
    frame = encode_fragment(KEY, 1, 3, b"data")
    for cut in range(1, FRAGMENT_HEADER):
        assert reason(decode_frame(frame[:cut])) is MalformedReason.TRUNCATED
    assert reason(decode_frame(frame[:FRAGMENT_HEADER])) is MalformedReason.EMPTY_DATA


# -- specific rejections ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", MalformedReason.EMPTY),
        (b"\x40" + bytes(MAX_FRAME), MalformedReason.OVERSIZED),
        (b"\x00abc", MalformedReason.BAD_VERSION),
        (b"\xffabc", MalformedReason.BAD_VERSION),
        (b"\x80abc", MalformedReason.BAD_VERSION),
        (b"\x68abc", MalformedReason.UNKNOWN_TYPE),
        (b"\x70abc", MalformedReason.UNKNOWN_TYPE),
        (b"\x78abc", MalformedReason.UNKNOWN_TYPE),
        (b"\x41abc", MalformedReason.RESERVED_BITS),
        (b"\x40", MalformedReason.EMPTY_DATA),
        (b"\x4c\x00" + KEY + b"d", MalformedReason.RESERVED_BITS),
        (b"\x48\x00" + KEY + b"d", MalformedReason.BAD_COUNT),
        (b"\x48\x22" + KEY + b"d", MalformedReason.BAD_INDEX),
        (b"\x48\x20" + KEY, MalformedReason.EMPTY_DATA),
        (b"\x54" + KEY + b"\x01", MalformedReason.RESERVED_BITS),
        (b"\x50" + KEY + b"\x00", MalformedReason.NON_CANONICAL),
        (b"\x51" + KEY + b"\x01\x00", MalformedReason.NON_CANONICAL),
        (b"\x50" + KEY, MalformedReason.TRUNCATED),
        (b"\x59\x01a\x00", MalformedReason.EMPTY_DATA),
        (b"\x58\x05abc", MalformedReason.TRUNCATED),
        (b"\x61\x00", MalformedReason.RESERVED_BITS),
        (b"\x60", MalformedReason.TRUNCATED),
        (b"\x60\x03ab", MalformedReason.TRUNCATED),
    ],
)
def test_specific_rejection_reasons(data: bytes, expected: MalformedReason) -> None:
    """Test that each kind of bad frame is rejected with its own specific reason."""
    assert reason(decode_frame(data)) is expected


def test_encoders_refuse_our_own_mistakes() -> None:
    """Test that encoders raise ValueError for arguments no valid frame can carry."""
    bad_calls: list[Callable[[], object]] = [
        lambda: encode_single(b""),
        lambda: encode_single(bytes(MAX_SINGLE + 1)),
        lambda: encode_message(b""),
        lambda: encode_message(bytes(MAX_MESSAGE + 1)),
        lambda: encode_fragment(b"abc", 0, 2, b"x"),
        lambda: encode_fragment(KEY, 0, 1, b"x"),
        lambda: encode_fragment(KEY, 0, 33, b"x"),
        lambda: encode_fragment(KEY, 2, 2, b"x"),
        lambda: encode_fragment(KEY, 0, 2, b""),
        lambda: encode_fragment(KEY, 0, 2, bytes(MAX_FRAGMENT_DATA + 1)),
        lambda: encode_nack(KEY, []),
        lambda: encode_nack(KEY, [32]),
        lambda: encode_receipt_bundle([]),
        lambda: encode_receipt_bundle([b"x"] * 9),
        lambda: encode_receipt_bundle([b""]),
        lambda: encode_receipt_bundle([b"x" * 120, b"y" * 120]),
        lambda: pack_receipts([bytes(MAX_BUNDLE_ITEM + 1)]),
        lambda: encode_summary(bytes(MAX_SUMMARY + 1)),
    ]
    for call in bad_calls:
        with pytest.raises(ValueError):
            call()


def test_frame_type_counts_a_bare_signed_message_as_single() -> None:
    """Test that frame_type reads the first byte and calls a bare COSE_Sign1 a SINGLE."""
    assert frame_type(b"\xd2\x84rest") is FrameType.SINGLE
    assert frame_type(encode_single(b"\x84x")) is FrameType.SINGLE
    assert frame_type(encode_summary(b"\xaa")) is FrameType.SUMMARY
    assert frame_type(encode_nack(KEY, [1])) is FrameType.NACK
