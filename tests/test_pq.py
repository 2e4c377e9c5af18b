"""Post-quantum attestations (relay.pq): the codec, the checks and the roster's key hash."""

from __future__ import annotations

from dataclasses import replace

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from relay import cose, pq
from relay.envelope import Envelope, Reason, Rejection, open_envelope
from relay.trust import Roster, roster_decision
from tests.world import NOW, World, standard_world

PQ_KEY = MLDSA44PrivateKey.generate()


def pq_world() -> World:
    """The standard world with "national" PQ-enabled (its ML-DSA key hash on the roster)."""
    w = standard_world()
    entry = w.roster.by_name("national")
    assert entry is not None
    pq_entry = replace(entry, pq_key=pq.key_hash(PQ_KEY.public_key().public_bytes_raw()))
    entries = tuple(pq_entry if e.name == "national" else e for e in w.roster.entries)
    w.roster = replace(w.roster, entries=entries, serial=w.roster.serial + 1)
    return w


def signed(w: World, signer: str = "national") -> tuple[Envelope, bytes]:
    env = open_envelope(w.sign(signer))
    assert isinstance(env, Envelope)
    return env, pq.attest(env.id, env.kid, PQ_KEY)


def opened(raw: bytes) -> pq.Attestation:
    att = pq.open_attestation(raw)
    assert isinstance(att, pq.Attestation), att
    return att


def reason(result: object) -> Reason:
    assert isinstance(result, Rejection), result
    return result.reason


def test_attestation_round_trip() -> None:
    """Test that an attestation opens, names its decision and verifies against the roster."""
    w = pq_world()
    env, raw = signed(w)
    att = opened(raw)
    assert (att.msg_id, att.kid) == (env.id, env.kid)
    assert len(raw) == pq.ATTESTATION_BYTES
    assert pq.is_attestation(raw) and not pq.is_attestation(env.raw)
    entry = w.trust().entry_for(env.kid)
    assert entry is not None and entry.pq_key is not None
    assert pq.check(att, kid=env.kid, pq_key_hash=entry.pq_key, msg_id=env.id) is None


def test_attestation_layout_is_cose_sign1_with_alg_minus_48() -> None:
    """Test that the attestation is a tagged COSE_Sign1, alg -48, with an AKP COSE_Key."""
    env, raw = signed(pq_world())
    msg = cose.decode_sign1(raw)
    assert msg.protected == {1: -48, 4: env.kid}
    payload = cbor2.loads(msg.payload)
    assert payload[1] == env.id
    assert payload[2] == {1: 7, 3: -48, -1: PQ_KEY.public_key().public_bytes_raw()}
    assert len(msg.signature) == 2420


def test_tampered_signature_is_rejected() -> None:
    """Test that one flipped bit in the ML-DSA signature is a pq-bad-signature rejection."""
    w = pq_world()
    env, raw = signed(w)
    bad = bytearray(raw)
    bad[-100] ^= 0x01
    key_hash = pq.key_hash(PQ_KEY.public_key().public_bytes_raw())
    result = pq.check(opened(bytes(bad)), kid=env.kid, pq_key_hash=key_hash, msg_id=env.id)
    assert reason(result) == Reason.PQ_BAD_SIGNATURE


def test_attestation_for_the_wrong_id_is_rejected() -> None:
    """Test that an attestation of one decision does not pass for another (pq-wrong-message)."""
    w = pq_world()
    env_a, _ = signed(w)
    _, raw_b = signed(w)
    key_hash = pq.key_hash(PQ_KEY.public_key().public_bytes_raw())
    result = pq.check(opened(raw_b), kid=env_a.kid, pq_key_hash=key_hash, msg_id=env_a.id)
    assert reason(result) == Reason.PQ_WRONG_MESSAGE


def test_attestation_under_another_key_id_is_rejected() -> None:
    """Test that an attestation claiming another signer's key id is pq-wrong-message."""
    w = pq_world()
    env, _ = signed(w)
    other = open_envelope(w.sign("vr07-issuer", to="region:VR07"))
    assert isinstance(other, Envelope)
    raw = pq.attest(env.id, other.kid, PQ_KEY)
    key_hash = pq.key_hash(PQ_KEY.public_key().public_bytes_raw())
    result = pq.check(opened(raw), kid=env.kid, pq_key_hash=key_hash, msg_id=env.id)
    assert reason(result) == Reason.PQ_WRONG_MESSAGE


def test_key_hash_mismatch_is_rejected() -> None:
    """Test that a valid attestation by an ML-DSA key not on the roster is pq-key-mismatch."""
    w = pq_world()
    env, _ = signed(w)
    raw = pq.attest(env.id, env.kid, MLDSA44PrivateKey.generate())
    key_hash = pq.key_hash(PQ_KEY.public_key().public_bytes_raw())
    result = pq.check(opened(raw), kid=env.kid, pq_key_hash=key_hash, msg_id=env.id)
    assert reason(result) == Reason.PQ_KEY_MISMATCH


def test_issuer_without_pq_key_is_rejected() -> None:
    """Test that an attestation for an issuer with no ML-DSA key hash is pq-not-enabled."""
    env, raw = signed(pq_world(), "vr07-issuer")
    result = pq.check(opened(raw), kid=env.kid, pq_key_hash=None, msg_id=env.id)
    assert reason(result) == Reason.PQ_NOT_ENABLED


def test_every_truncation_and_trailing_garbage_is_malformed() -> None:
    """Test that each prefix of an attestation and one with a trailing byte are rejected."""
    _, raw = signed(pq_world())
    for cut in range(0, len(raw), 7):
        assert isinstance(pq.open_attestation(raw[:cut]), Rejection)
    assert reason(pq.open_attestation(raw + b"\0")) == Reason.MALFORMED
    assert reason(pq.open_attestation(raw + b"\0" * 400)) == Reason.OVERSIZED


def test_non_canonical_forms_are_rejected() -> None:
    """Test that an untagged copy, an unprotected header or another alg is rejected."""
    _, raw = signed(pq_world())
    msg = cose.decode_sign1(raw)
    untagged = cbor2.dumps([msg.protected_bytes, {}, msg.payload, msg.signature])
    assert reason(pq.open_attestation(untagged)) == Reason.MALFORMED
    extra = cbor2.dumps(
        cbor2.CBORTag(18, [msg.protected_bytes, {5: b"x"}, msg.payload, msg.signature])
    )
    assert reason(pq.open_attestation(extra)) == Reason.MALFORMED
    ed = cbor2.dumps({1: -19, 4: msg.kid})
    other_alg = cbor2.dumps(cbor2.CBORTag(18, [ed, {}, msg.payload, msg.signature]))
    assert reason(pq.open_attestation(other_alg)) == Reason.UNSUPPORTED_ALGORITHM


def test_wrong_key_type_is_rejected() -> None:
    """Test that a COSE_Key other than AKP / ML-DSA-44 is malformed."""
    env, raw = signed(pq_world())
    msg = cose.decode_sign1(raw)
    public = PQ_KEY.public_key().public_bytes_raw()
    payload = cbor2.dumps({1: env.id, 2: {1: 1, 3: -48, -1: public}})
    bad = cbor2.dumps(cbor2.CBORTag(18, [msg.protected_bytes, {}, payload, msg.signature]))
    assert reason(pq.open_attestation(bad)) == Reason.MALFORMED


def test_want_round_trip_and_bounds() -> None:
    """Test that a pq-want encodes, decodes, and that a malformed one is rejected."""
    ids = [bytes([i]) * 32 for i in range(20)]
    raw = pq.encode_want("vr07-utrecht", ids)
    assert pq.is_want(raw)
    want = pq.decode_want(raw)
    assert isinstance(want, pq.Want)
    assert want.sender == "vr07-utrecht" and want.ids == tuple(ids[:16])
    assert reason(pq.decode_want(raw + b"\0")) == Reason.MALFORMED
    assert reason(pq.decode_want(cbor2.dumps(["pq-want", 1, "x", []]))) == Reason.MALFORMED
    assert reason(pq.decode_want(cbor2.dumps(["pq-want", 1, "x", [b"short"]]))) == Reason.MALFORMED
    assert reason(pq.decode_want(b"\x84" + b"\0" * 2000)) == Reason.OVERSIZED


def test_roster_carries_only_the_key_hash() -> None:
    """Test that a PQ-enabled entry costs the roster 35 B (key 8: a 32-byte hash) and survives
    the wire round trip."""
    w = pq_world()
    plain = standard_world()
    with_pq = roster_decision(w.roster, NOW)
    back = Roster.from_decision(with_pq)
    entry = back.by_name("national")
    assert entry is not None
    assert entry.pq_key == pq.key_hash(PQ_KEY.public_key().public_bytes_raw())
    size = len(cbor2.dumps(w.roster.to_wire())) - len(cbor2.dumps(plain.roster.to_wire()))
    assert size == 1 + 2 + 32  # key 8, a bstr head, the hash


def test_roster_rejects_a_bad_key_hash() -> None:
    """Test that a roster entry whose key 8 is not 32 bytes makes the roster malformed."""
    w = pq_world()
    wire = w.roster.to_wire()
    entries = wire[1]
    assert isinstance(entries, list)
    entries[0][8] = b"short"
    d = replace(roster_decision(w.roster, NOW), data=wire)
    with pytest.raises(ValueError, match="ML-DSA key hash"):
        Roster.from_decision(d)


def test_labels_are_dutch_first() -> None:
    """Test that the pending state reads "kwantumveilige handtekening volgt" in Dutch."""
    assert pq.label("pending") == "kwantumveilige handtekening volgt"
    assert pq.label("pending", "en") == "quantum-safe signature pending"
    assert pq.label("none") == ""


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_decoders_never_raise_on_hostile_bytes(tail: bytes) -> None:
    """Test that bytes claiming to be an attestation or a want are parsed or rejected, never an
    exception, whatever follows the claim."""
    for raw in (pq.PREFIX + tail, pq.WANT_PREFIX + tail, tail):
        assert isinstance(pq.open_attestation(raw), pq.Attestation | Rejection)
        assert isinstance(pq.decode_want(raw), pq.Want | Rejection)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=pq.ATTESTATION_BYTES - 1), st.integers(1, 255))
def test_any_changed_byte_is_rejected(position: int, flip: int) -> None:
    """Test that changing any one byte of an attestation makes it fail to parse or to check."""
    env, raw = ATTESTED
    bad = bytearray(raw)
    bad[position] ^= flip
    att = pq.open_attestation(bytes(bad))
    key_hash = pq.key_hash(PQ_KEY.public_key().public_bytes_raw())
    assert isinstance(att, Rejection) or (
        pq.check(att, kid=env.kid, pq_key_hash=key_hash, msg_id=env.id) is not None
    )


ATTESTED = signed(pq_world())
