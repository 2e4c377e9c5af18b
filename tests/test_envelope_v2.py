"""Payload version 2: the compact array with model-coded text (docs/wire-format.md, section 2a)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import cose
from relay.envelope import (
    EPOCH_V2,
    MAX_TEXT_BYTES,
    PAYLOAD_V2,
    Audience,
    Decision,
    Envelope,
    Kind,
    Precedence,
    Reason,
    Rejection,
    encode_payload,
    key_id,
    open_envelope,
    seal,
    v2_time,
)
from relay.keys import raw_public
from relay.trust import Accepted, Roster
from tests.test_envelope import audiences
from tests.world import NOW, standard_world

KEY = Ed25519PrivateKey.generate()
KID = key_id(raw_public(KEY.public_key()))
DATA = Path(__file__).parent / "data"

decisions_v2 = st.builds(
    lambda minute, minutes, prec, aud, seq, text, kind, ex, refs: Decision(
        issued_at=EPOCH_V2 + 60 * minute,
        expires_at=EPOCH_V2 + 60 * minute + 60 * minutes,
        precedence=prec,
        audience=aud,
        seq=seq,
        text=text,
        kind=kind,
        exercise=ex,
        refs=tuple(refs),
    ),
    st.integers(0, 2**26 - 1),
    st.one_of(st.integers(1, 2**31), st.integers(1, 2**20).map(lambda h: 60 * h)),
    st.sampled_from(Precedence),
    audiences,
    st.integers(0, 2**62),
    st.text(max_size=300).filter(lambda t: len(t.encode()) <= MAX_TEXT_BYTES),
    st.sampled_from(Kind),
    st.booleans(),
    st.lists(st.binary(min_size=32, max_size=32), max_size=3),
)


def _sign_items(items: list[object]) -> bytes:
    return cose.sign1(cbor2.dumps(items), KEY, kid=KID)


def _v2(text: str = "Dijk houdt.", **kw: object) -> Decision:
    fields: dict[str, object] = {
        "issued_at": NOW,
        "expires_at": NOW + 2 * 3600,
        "precedence": Precedence.IMMEDIATE,
        "audience": Audience.parse("region:VR07"),
        "seq": 5,
        "text": text,
    }
    fields.update(kw)
    return Decision(**fields)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(decisions_v2)
def test_seal_then_open_round_trips(d: Decision) -> None:
    """Test that any decision of a whole minute survives version 2 sealing and opening unchanged."""
    raw = seal(d, KEY, version=PAYLOAD_V2)
    env = open_envelope(raw)
    assert isinstance(env, Envelope)
    assert env.decision == d
    assert isinstance(cbor2.loads(env.sign1.payload), list)


def test_times_are_signed_to_the_minute() -> None:
    """Test that seconds are rounded down on both times, keeping the lifetime exact."""
    d = _v2(issued_at=NOW + 59, expires_at=NOW + 59 + 3600)
    env = open_envelope(seal(d, KEY, version=PAYLOAD_V2))
    assert isinstance(env, Envelope)
    assert env.decision.issued_at == v2_time(NOW + 59) == NOW
    assert env.decision.expires_at == NOW + 3600


def test_a_clock_before_the_epoch_signs_version_1() -> None:
    """Test that a signer whose clock reads 1970 (a Pi without RTC) still signs, in version 1."""
    d = _v2(issued_at=3600, expires_at=7200)
    env = open_envelope(seal(d, KEY, version=PAYLOAD_V2))
    assert isinstance(env, Envelope)
    assert isinstance(cbor2.loads(env.sign1.payload), dict)
    with pytest.raises(ValueError, match="after 2026-01-01"):
        encode_payload(d, version=PAYLOAD_V2)


def test_version_1_stays_readable() -> None:
    """Test that version 1 messages still open, next to version 2 ones of the same decision."""
    d = _v2()
    one, two = (open_envelope(seal(d, KEY, version=v)) for v in (1, PAYLOAD_V2))
    assert isinstance(one, Envelope) and isinstance(two, Envelope)
    assert one.decision == two.decision == d
    assert one.id != two.id


def test_every_cut_and_trailing_garbage_is_malformed() -> None:
    """Test that every proper prefix of a version 2 message, and any trailing bytes, are refused."""
    raw = seal(_v2("Evacuatie Kanaleneiland-Zuid, opvang Jaarbeurs."), KEY, version=PAYLOAD_V2)
    for cut in range(len(raw)):
        result = open_envelope(raw[:cut])
        assert isinstance(result, Rejection) and result.reason == Reason.MALFORMED, cut
    for tail in (b"\x00", b"\xff" * 5, raw):
        result = open_envelope(raw + tail)
        assert isinstance(result, Rejection) and result.reason == Reason.MALFORMED


@settings(max_examples=1000, deadline=None)
@given(st.binary(min_size=0, max_size=40), st.integers(0, 200))
def test_mutated_payloads_never_raise(junk: bytes, at: int) -> None:
    """Test that junk spliced into a version 2 payload is a rejection or a valid decision."""
    payload = encode_payload(_v2("Stroomuitval: noodsteunpunten open."), version=PAYLOAD_V2)
    at = min(at, len(payload))
    result = open_envelope(_sign_items_raw(payload[:at] + junk + payload[at + len(junk) :]))
    assert isinstance(result, Envelope | Rejection)


def _sign_items_raw(payload: bytes) -> bytes:
    return cose.sign1(payload, KEY, kid=KID)


@pytest.mark.parametrize(
    ("items", "why"),
    [
        ([0, 60, 1, None, None], "whole hours is encoded in hours"),
        ([0, 0, 1, None, None], "non-zero"),
        ([0, True, 1, None, None], "non-zero integer"),
        ([-1, -1, 1, None, None], "unsigned"),
        ([2**32, -1, 1, None, None], "out of range"),
        ([0, -1, 1, "", None], "short non-empty strings"),
        ([0, -1, 1, ["VR07"], None], "2-32 targets"),
        ([0, -1, 1, ["VR09", "VR07"], None], "sorted"),
        ([0, -1, 1, None, ""], "non-empty string"),
        ([0, -1, 1, None, 7], "null, a string or model-coded bytes"),
        ([0, -1, 1, None, b"\x10\x00"], "zero byte"),
        ([0, -1, 1, None, None, {}], "non-empty map"),
        ([0, -1, 1, None, None, {9: "x"}], "refs (8) and data (11)"),
        ([0, -1, 1, None, None, {8: []}], "non-empty list"),
        ([0, -1, 1, None, None, {11: None}], "never null"),
        ([0, -1, 1, None], "5 or 6 items"),
        ([0, -1, 1, None, None, {8: [b"x" * 32]}, 0], "5 or 6 items"),
    ],
)
def test_each_field_has_one_form(items: list[object], why: str) -> None:
    """Test that every field outside its one allowed form is refused as malformed, with why."""
    result = open_envelope(_sign_items(items))
    assert isinstance(result, Rejection) and result.reason == Reason.MALFORMED
    assert why in result.detail, result.detail


def test_flags_carry_precedence_exercise_and_kind() -> None:
    """Test that the stamp's six low bits give back every precedence, kind and exercise flag."""
    for prec in Precedence:
        for kind in Kind:
            for ex in (False, True):
                d = _v2(precedence=prec, kind=kind, exercise=ex)
                env = open_envelope(seal(d, KEY, version=PAYLOAD_V2))
                assert isinstance(env, Envelope) and env.decision == d


def test_version_2_is_shorter_on_unseen_decisions() -> None:
    """Test that version 2 saves at least a fifth of the signed size on the unseen decisions."""
    rows = [json.loads(line) for line in (DATA / "unseen-decisions.jsonl").read_text().splitlines()]
    saved = []
    for i, row in enumerate(rows):
        d = _v2(row["text"], precedence=Precedence[row["precedence"]], seq=i + 1)
        one, two = len(seal(d, KEY)), len(seal(d, KEY, version=PAYLOAD_V2))
        saved.append(1 - two / one)
    assert statistics.median(saved) > 0.2


def test_receipts_follow_the_roster() -> None:
    """Test that a roster declaring version 2 makes a node sign its receipts in version 2."""
    w = standard_world()
    trust = w.trust()
    assert trust.roster is not None and trust.roster.emit_version == 1
    w.roster = Roster(
        serial=w.roster.serial + 1,
        entries=w.roster.entries,
        revoked=w.roster.revoked,
        payload=PAYLOAD_V2,
    )
    env = open_envelope(w.roster_bytes())
    assert isinstance(env, Envelope)
    verdict = trust.check(env, NOW)
    assert isinstance(verdict, Accepted)
    trust.apply(verdict)
    assert trust.roster is not None and trust.roster.emit_version == PAYLOAD_V2
    # A roster from a newer root that names a version this code does not know: emit the highest
    # known one, and do not refuse the roster (its membership still matters).
    later = Roster(serial=99, payload=7)
    assert later.emit_version == PAYLOAD_V2


def test_a_failing_text_coder_sends_the_text_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that a decision still seals (its text as plain UTF-8) when the text model's own
    round-trip check fails, instead of the send failing."""

    def broken(text: str) -> bytes:
        raise RuntimeError("text model round trip failed")

    monkeypatch.setattr("relay.envelope.textmodel.encode", broken)
    d = Decision(
        issued_at=NOW, expires_at=NOW + 3600, precedence=Precedence.PRIORITY,
        audience=Audience.all(), seq=1, text="Besluit: evacuatie van de wijk.",
    )  # fmt: skip
    env = open_envelope(seal(d, KEY, version=PAYLOAD_V2))
    assert isinstance(env, Envelope) and env.decision.text == d.text
    assert cbor2.loads(encode_payload(d, version=PAYLOAD_V2))[4] == d.text
