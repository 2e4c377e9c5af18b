"""Reassembly, selective repair and the memory bounds of both ends."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.mesh import Precedence
from relay.mesh.fragmenter import Fragmenter, Repair, RepairRefusal, RepairRefused
from relay.mesh.frames import (
    MAX_FRAGMENT_DATA,
    MAX_FRAME,
    MAX_MESSAGE,
    MAX_SINGLE,
    Fragment,
    Nack,
    decode_frame,
    encode_fragment,
    encode_message,
    fragment_key,
)
from relay.mesh.reassembly import (
    Completed,
    Eviction,
    Progress,
    Reassembler,
    Refusal,
    Refused,
    Repeated,
)

SENDER = 0x1234ABCD
multi_frame_messages = st.binary(min_size=MAX_SINGLE + 1, max_size=MAX_MESSAGE)


def fragments_of(message: bytes) -> list[Fragment]:
    out = [decode_frame(f) for f in encode_message(message)]
    assert all(isinstance(f, Fragment) for f in out)
    return [f for f in out if isinstance(f, Fragment)]


def as_fragment(frame: bytes) -> Fragment:
    decoded = decode_frame(frame)
    assert isinstance(decoded, Fragment), decoded
    return decoded


# -- delivery in any order, duplicates, loss and repair -------------------------------------


@settings(max_examples=100, deadline=None)
@given(multi_frame_messages, st.randoms(use_true_random=False))
def test_fragments_in_any_order_with_duplicates_give_the_message_once(
    message: bytes, rnd: random.Random
) -> None:
    """Test that shuffled, duplicated fragments reassemble to exactly the original, once."""
    frags = fragments_of(message)
    delivery = frags + rnd.choices(frags, k=rnd.randint(0, len(frags)))
    rnd.shuffle(delivery)
    reassembler = Reassembler()
    results = [reassembler.feed(f, SENDER, now=float(i)) for i, f in enumerate(delivery)]
    completed = [r for r in results if isinstance(r, Completed)]
    assert completed == [Completed(SENDER, fragment_key(message), message)]
    after = results[results.index(completed[0]) + 1 :]
    assert all(isinstance(r, Refused | Repeated) for r in after)
    assert len(reassembler) == 0 and reassembler.buffered_bytes == 0


@settings(max_examples=100, deadline=None)
@given(multi_frame_messages, st.randoms(use_true_random=False))
def test_lost_fragments_are_repaired_selectively_via_nack(
    message: bytes, rnd: random.Random
) -> None:
    """Test that fragments lost on the way are asked for by NACK, resent alone, and complete it."""
    sender_side = Fragmenter()
    frames = sender_side.fragment(message, now=0.0, precedence=Precedence.IMMEDIATE)
    lost = set(rnd.sample(range(len(frames)), rnd.randint(1, len(frames) - 1)))
    receiver = Reassembler(nack_delay_s=30.0)
    now = 0.0
    for i, frame in enumerate(frames):
        if i not in lost:
            assert isinstance(receiver.feed(as_fragment(frame), SENDER, now), Progress)
    assert receiver.missing(now + 29.0) == []  # not idle long enough yet
    (request,) = receiver.missing(now + 30.0)
    assert request.to == SENDER and set(request.missing) == lost
    nack = decode_frame(request.frame)
    assert isinstance(nack, Nack)
    repair = sender_side.repair(nack, now=31.0)
    assert isinstance(repair, Repair)
    assert repair.precedence is Precedence.IMMEDIATE
    assert len(repair.frames) == len(lost)  # only the missing ones go on air again
    results = [receiver.feed(as_fragment(f), SENDER, 40.0) for f in repair.frames]
    assert results[-1] == Completed(SENDER, fragment_key(message), message)
    assert receiver.missing(10_000.0) == []


def test_lost_repair_is_asked_again_with_backoff_then_given_up() -> None:
    """Test that NACKs repeat at delay, 2x and 4x the delay, then stop; the partial expires."""
    frags = fragments_of(bytes(1000))
    receiver = Reassembler(nack_delay_s=10.0, max_nacks=3, timeout_s=500.0)
    receiver.feed(frags[0], SENDER, 0.0)
    assert receiver.next_timer() == 10.0
    times = []
    for t in range(0, 500):
        if receiver.missing(float(t)):
            times.append(t)
    assert times == [10, 30, 70]
    assert receiver.next_timer() == 500.0
    assert receiver.missing(500.0) == []
    assert len(receiver) == 0 and receiver.counters[Eviction.EXPIRED] == 1
    assert receiver.next_timer() is None


def test_arriving_fragments_postpone_the_nack() -> None:
    """Test that a partial still receiving fragments is not NACKed until it goes quiet."""
    frags = fragments_of(bytes(2000))
    receiver = Reassembler(nack_delay_s=30.0)
    for i, frag in enumerate(frags[:-1]):
        receiver.feed(frag, SENDER, now=20.0 * i)
        assert receiver.missing(20.0 * i + 19.0) == []
    last_rx = 20.0 * (len(frags) - 2)
    (request,) = receiver.missing(last_rx + 30.0)
    assert request.missing == (len(frags) - 1,)


# -- integrity: no splice, no conflict ------------------------------------------------------


def test_two_messages_under_one_key_never_splice() -> None:
    """Test that fragments of two messages sharing a key are refused, never joined into one.

    The key check stands in for a full hash; the signature is verified on the result anyway.
    """
    a, b = bytes(300), b"\xff" * 300
    key = fragment_key(a)
    forged = as_fragment(encode_fragment(key, 1, 2, b[150:]))
    receiver = Reassembler()
    receiver.feed(fragments_of(a)[0], SENDER, 0.0)
    result = receiver.feed(forged, SENDER, 1.0)
    assert result == Refused(SENDER, key, Refusal.DIGEST_MISMATCH)
    assert len(receiver) == 0
    # The sender's end-to-end retry then gets the real message through.
    for frag in fragments_of(a):
        result = receiver.feed(frag, SENDER, 2.0)
    assert result == Completed(SENDER, key, a)


def test_inconsistent_fragments_are_refused_with_reasons() -> None:
    """Test that count, content and length conflicts under one key are refused, not stored."""
    key = b"KKKK"
    receiver = Reassembler()
    assert isinstance(
        receiver.feed(as_fragment(encode_fragment(key, 0, 3, b"x" * 100)), 1, 0), Progress
    )
    cases = [
        (encode_fragment(key, 1, 4, b"y" * 100), Refusal.COUNT_MISMATCH),
        (encode_fragment(key, 0, 3, b"z" * 100), Refusal.CONFLICT),
        (encode_fragment(key, 0, 3, b"x" * 100), Refusal.DUPLICATE),
        (encode_fragment(key, 1, 3, b"y" * 99), Refusal.LENGTH_MISMATCH),
        (encode_fragment(key, 2, 3, b"y" * 101), Refusal.LENGTH_MISMATCH),
    ]
    for frame, why in cases:
        assert receiver.feed(as_fragment(frame), 1, 1.0) == Refused(1, key, why)
        assert receiver.counters[why] >= 1
    assert receiver.buffered_bytes == 100


def test_last_fragment_first_bounds_the_others() -> None:
    """Test that when the last fragment comes first, a shorter middle fragment is refused."""
    key = b"KKKK"
    receiver = Reassembler()
    receiver.feed(as_fragment(encode_fragment(key, 2, 3, b"t" * 50)), 1, 0)
    bad = as_fragment(encode_fragment(key, 0, 3, b"x" * 49))
    assert receiver.feed(bad, 1, 0) == Refused(1, key, Refusal.LENGTH_MISMATCH)


@settings(max_examples=100, deadline=None)
@given(multi_frame_messages, st.data())
def test_truncated_or_extended_fragments_never_yield_a_wrong_message(
    message: bytes, data: st.DataObject
) -> None:
    """Test that a fragment cut short or with bytes appended never reassembles into a message.

    FRAGMENT data runs to the end of the packet, so a cut or extended frame still decodes; the
    length rules and the key check on the joined bytes catch it.
    """
    frames = list(encode_message(message))
    i = data.draw(st.integers(0, len(frames) - 1))
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(7, len(frames[i]) - 1)) if len(frames[i]) > 7 else None
        if cut is None:
            return
        frames[i] = frames[i][:cut]
    else:
        frames[i] += data.draw(st.binary(min_size=1, max_size=MAX_FRAME - len(frames[i]) or 1))
    receiver = Reassembler()
    for frame in frames:
        decoded = decode_frame(frame)
        if isinstance(decoded, Fragment):
            result = receiver.feed(decoded, SENDER, 0.0)
            assert not isinstance(result, Completed), "a damaged message was completed"


def test_late_duplicate_of_a_completed_message_is_ignored() -> None:
    """Test that a fragment of a recently completed message is reported as a repeat only."""
    frags = fragments_of(bytes(700))
    receiver = Reassembler(nack_delay_s=5.0)
    for frag in frags:
        receiver.feed(frag, SENDER, 0.0)
    result = receiver.feed(frags[1], SENDER, 100.0)
    # The engine gets the message's SHA-256 so it can acknowledge the retry again.
    assert result == Repeated(SENDER, fragment_key(bytes(700)), hashlib.sha256(bytes(700)).digest())
    assert receiver.counters[Refusal.ALREADY_COMPLETE] == 1
    assert len(receiver) == 0 and receiver.missing(200.0) == []


# -- memory bounds ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_fragment_flood_stays_within_bounds(seed: int) -> None:
    """Test that thousands of fake partials from many senders never exceed any memory bound."""
    rnd = random.Random(seed)
    receiver = Reassembler(
        max_partials_per_sender=3, max_partials=20, max_buffered_bytes=MAX_MESSAGE
    )
    for n in range(3000):
        sender = rnd.randrange(50)
        count = rnd.randint(2, 32)
        frag = Fragment(
            rnd.randbytes(4), rnd.randrange(count), count, rnd.randbytes(MAX_FRAGMENT_DATA)
        )
        receiver.feed(frag, sender, now=n * 0.01)
        assert len(receiver) <= 20
        assert receiver.buffered_bytes <= MAX_MESSAGE
        assert receiver.senders() <= 20
    evicted = sum(receiver.counters[e] for e in Eviction)
    assert evicted >= 3000 - 20


def test_one_sender_cannot_hold_more_than_its_share() -> None:
    """Test that a single sender's partials are capped and its oldest is evicted first."""
    receiver = Reassembler(max_partials_per_sender=2, max_partials=10)
    keys = [bytes((k,)) * 4 for k in range(5)]
    for t, key in enumerate(keys):
        receiver.feed(as_fragment(encode_fragment(key, 0, 2, b"x")), 7, float(t))
    assert len(receiver) == 2
    assert receiver.counters[Eviction.SENDER_LIMIT] == 3
    # The survivors are the two most recent, so only their NACKs are due.
    assert {r.key for r in receiver.missing(100.0)} == set(keys[-2:])


def test_an_active_partial_survives_a_flood_of_newer_ones_longer_than_idle_ones() -> None:
    """Test that eviction takes the least recently active partial, not the one being filled."""
    receiver = Reassembler(max_partials_per_sender=1, max_partials=3)
    real = fragments_of(bytes(600))
    receiver.feed(real[0], 1, 0.0)
    receiver.feed(as_fragment(encode_fragment(b"AAAA", 0, 2, b"x")), 2, 1.0)
    receiver.feed(as_fragment(encode_fragment(b"BBBB", 0, 2, b"x")), 3, 2.0)
    receiver.feed(real[1], 1, 3.0)  # sender 1 is active again
    receiver.feed(as_fragment(encode_fragment(b"CCCC", 0, 2, b"x")), 4, 4.0)
    assert receiver.counters[Eviction.TOTAL_LIMIT] == 1
    assert isinstance(receiver.feed(real[2], 1, 5.0), Completed)


def test_completed_keys_remembered_are_bounded() -> None:
    """Test that the set of recently completed keys never exceeds max_completed."""
    receiver = Reassembler(max_completed=10)
    for n in range(100):
        for frag in fragments_of(n.to_bytes(2, "big") * 200):
            receiver.feed(frag, SENDER, float(n))
        assert receiver.remembered() <= 10
    assert receiver.counters["completed"] == 100


def test_fragmenter_memory_and_repairs_are_bounded() -> None:
    """Test that the sender remembers a bounded number of messages and repairs each boundedly."""
    sender_side = Fragmenter(max_messages=4, max_bytes=3000, max_repairs=2, keep_s=100.0)
    messages = [bytes((n,)) * 900 for n in range(10)]
    for n, message in enumerate(messages):
        sender_side.fragment(message, now=float(n))
        assert len(sender_side) <= 4 and sender_side.remembered_bytes <= 3000
    old, recent = fragment_key(messages[0]), fragment_key(messages[-1])
    assert sender_side.repair(Nack(old, (0,)), 10.0) == RepairRefused(
        old, RepairRefusal.UNKNOWN_KEY
    )
    assert sender_side.repair(Nack(recent, (31,)), 10.0) == RepairRefused(
        recent, RepairRefusal.BAD_INDEX
    )
    assert isinstance(sender_side.repair(Nack(recent, (0, 31)), 10.0), Repair)
    assert isinstance(sender_side.repair(Nack(recent, (1,)), 10.0), Repair)
    assert sender_side.repair(Nack(recent, (1,)), 10.0) == RepairRefused(
        recent, RepairRefusal.REPAIR_LIMIT
    )
    # Age: after keep_s nothing is remembered.
    assert sender_side.repair(Nack(recent, (1,)), 200.0) == RepairRefused(
        recent, RepairRefusal.UNKNOWN_KEY
    )
    assert len(sender_side) == 0


def test_fragmenter_does_not_remember_single_frame_messages() -> None:
    """Test that a message sent as one SINGLE frame takes no repair memory."""
    sender_side = Fragmenter()
    assert len(sender_side.fragment(bytes(MAX_SINGLE), now=0.0)) == 1
    assert len(sender_side) == 0
