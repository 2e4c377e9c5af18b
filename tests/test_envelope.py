"""The signed decision's wire format: round trips, tampering, hostile bytes, size budget."""

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import cose
from relay.envelope import (
    MAX_TEXT_BYTES,
    Audience,
    Decision,
    Envelope,
    Kind,
    Precedence,
    Reason,
    Rejection,
    encode_payload,
    open_envelope,
    seal,
)
from relay.trust import Accepted
from tests.world import NOW, standard_world

KEY = Ed25519PrivateKey.generate()
CORPUS = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "decisions.jsonl").read_text().splitlines()
]

names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-"), min_size=1, max_size=12)
audiences = st.one_of(
    st.just(Audience.all()),
    st.builds(
        lambda r, n: Audience(frozenset(r), frozenset(n)),
        st.sets(names.map(lambda s: "VR" + s), max_size=3),
        st.sets(names, max_size=3),
    ).filter(lambda a: bool(a.regions or a.nodes)),
)
decisions = st.builds(
    lambda issued, minutes, prec, aud, seq, text, kind, ex, refs: Decision(
        issued_at=issued,
        expires_at=issued + 60 * minutes,
        precedence=prec,
        audience=aud,
        seq=seq,
        text=text,
        kind=kind,
        exercise=ex,
        refs=tuple(refs),
    ),
    st.integers(0, 2**36),
    st.integers(1, 2**31),
    st.sampled_from(Precedence),
    audiences,
    st.integers(0, 2**62),
    st.text(max_size=300).filter(lambda t: len(t.encode()) <= MAX_TEXT_BYTES),
    st.sampled_from([k for k in Kind if k not in (Kind.ROSTER, Kind.REVOCATION)]),
    st.booleans(),
    st.lists(st.binary(min_size=32, max_size=32), max_size=3),
)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(decisions)
def test_seal_then_open_round_trips(d: Decision) -> None:
    """Test that any decision survives sealing and opening unchanged, with a stable id."""
    raw = seal(d, KEY)
    env = open_envelope(raw)
    assert isinstance(env, Envelope)
    assert env.decision == d
    assert env.raw == raw


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_single_bit_flip_is_rejected(data: st.DataObject) -> None:
    """Test that flipping any one bit of a signed decision makes verification fail."""
    w = standard_world()
    trust = w.trust()
    raw = bytearray(w.sign("national", "Stroomuitval: noodsteunpunten openen om 18:00."))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    env = open_envelope(bytes(raw))
    verdict = env if isinstance(env, Rejection) else trust.check(env, NOW)
    assert not isinstance(verdict, Accepted)


@settings(max_examples=3000)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    """Test that opening arbitrary bytes returns an envelope or a rejection, never raises."""
    result = open_envelope(data)
    assert isinstance(result, Envelope | Rejection)


@settings(max_examples=1000)
@given(st.binary(min_size=0, max_size=64), st.integers(0, 230))
def test_mutated_real_messages_never_raise(junk: bytes, at: int) -> None:
    """Test that splicing junk into a real message never raises and never verifies."""
    w = standard_world()
    raw = w.sign("national")
    at = min(at, len(raw))
    mutated = raw[:at] + junk + raw[at + len(junk) :]
    result = open_envelope(mutated)
    assert isinstance(result, Envelope | Rejection)
    if isinstance(result, Envelope) and mutated != raw:
        assert not isinstance(w.trust().check(result, NOW), Accepted)


def test_every_truncation_and_trailing_garbage_is_malformed() -> None:
    """Test that every proper prefix, and the message plus trailing bytes, are rejected."""
    raw = seal(Decision(NOW, NOW + 600, Precedence.FLASH, Audience.all(), 7, "Dijk houdt."), KEY)
    for cut in range(len(raw)):
        result = open_envelope(raw[:cut])
        assert isinstance(result, Rejection) and result.reason == Reason.MALFORMED, cut
    for tail in (b"\x00", b"\xff" * 5, raw):
        result = open_envelope(raw + tail)
        assert isinstance(result, Rejection) and result.reason == Reason.MALFORMED


def test_oversized_input_is_refused_before_decoding() -> None:
    """Test that input above the size limit is rejected as oversized without being parsed."""
    result = open_envelope(b"\xd2" + b"\x00" * 5000)
    assert isinstance(result, Rejection) and result.reason == Reason.OVERSIZED


def test_message_id_is_a_hash_of_the_exact_bytes() -> None:
    """Test that the id depends on the signed bytes only, so every path agrees on it."""
    d = Decision(NOW, NOW + 600, Precedence.FLASH, Audience.all(), 7, "Dijk houdt.")
    a, b = open_envelope(seal(d, KEY)), open_envelope(seal(d, KEY))
    assert isinstance(a, Envelope) and isinstance(b, Envelope)
    assert a.id == b.id  # Ed25519 is deterministic: the same decision is the same message
    other = open_envelope(
        seal(Decision(NOW, NOW + 600, Precedence.FLASH, Audience.all(), 8, "Dijk houdt."), KEY)
    )
    assert isinstance(other, Envelope) and other.id != a.id


def test_corpus_fits_the_lora_budget() -> None:
    """Test that at least 95 % of the shared corpus signs into at most 227 bytes."""
    sizes = []
    for i, row in enumerate(CORPUS):
        d = Decision(
            issued_at=NOW,
            expires_at=NOW + 86400,
            precedence=Precedence[row["precedence"]],
            audience=Audience.parse(row["audience"]),
            seq=1000 + i,
            text=row["text"],
        )
        sizes.append(len(seal(d, KEY)))
    within = sum(s <= 227 for s in sizes) / len(sizes)
    assert within >= 0.95, sorted(sizes)


def test_exercise_flag_is_signed() -> None:
    """Test that stripping the exercise flag from a signed exercise message breaks the signature."""
    w = standard_world()
    raw = w.sign("coordinator", "Oefening: dijkdoorbraak", exercise=True)
    env = open_envelope(raw)
    assert isinstance(env, Envelope) and env.decision.exercise
    # The flag is encoded as key 4 -> true (0x04 0xf5); turning true into false must fail.
    idx = raw.index(b"\x04\xf5")
    forged = raw[:idx] + b"\x04\xf4" + raw[idx + 2 :]
    result = open_envelope(forged)
    assert isinstance(result, Rejection) or not isinstance(w.trust().check(result, NOW), Accepted)


def test_signed_payload_with_trailing_bytes_is_malformed() -> None:
    """Test that a correctly signed payload followed by extra bytes is rejected as malformed."""
    d = Decision(NOW, NOW + 600, Precedence.FLASH, Audience.all(), 7, "Dijk houdt.")
    raw = cose.sign1(encode_payload(d) + b"\x00", KEY, kid=b"\x01\x02\x03\x04")
    result = open_envelope(raw)
    assert isinstance(result, Rejection) and result.reason == Reason.MALFORMED
    assert "trailing" in result.detail


def test_rewrapped_copy_is_rejected_so_ids_are_unique() -> None:
    """Test that an untagged or re-headed copy of a valid message is refused, not a new id."""
    import cbor2

    raw = seal(Decision(NOW, NOW + 600, Precedence.FLASH, Audience.all(), 7, "Dijk."), KEY)
    item = cbor2.loads(raw).value
    untagged = cbor2.dumps(list(item))
    reheaded = cbor2.dumps(cbor2.CBORTag(18, [item[0], {99: 1}, item[2], item[3]]))
    for copy in (untagged, reheaded):
        result = open_envelope(copy)
        assert isinstance(result, Rejection) and result.reason == Reason.MALFORMED
