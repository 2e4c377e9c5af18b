"""docs/wire-format.md stays true: its worked example, byte budget and dictionary pin."""

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.wire_example import (
    DOC,
    example_decision,
    example_key,
    generate,
    section_of,
)
from relay import compress
from relay.envelope import (
    Audience,
    Decision,
    Envelope,
    Precedence,
    encode_payload,
    open_envelope,
    seal,
)
from relay.keys import raw_public
from relay.trust import (
    DEFAULT_KINDS,
    Accepted,
    Role,
    Roster,
    RosterEntry,
    Scope,
    TrustState,
    roster_decision,
)

DOC_TEXT = DOC.read_text(encoding="utf-8")


def test_worked_example_matches_the_code() -> None:
    """Test that the generated example in the doc is exactly what the code emits today."""
    assert section_of(DOC_TEXT) == generate(), "run: python bench/wire_example.py --write"


def test_worked_example_is_known_answer_and_verifies() -> None:
    """Test that the example uses RFC 8032 key 1 and passes open_envelope and the trust check."""
    key = example_key()
    assert raw_public(key.public_key()).hex() == (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )
    d = example_decision()
    root = Ed25519PrivateKey.generate()
    entry = RosterEntry(
        public_key=raw_public(key.public_key()),
        name="vr07-issuer",
        role=Role.ISSUER,
        scope=Scope.parse(["region:VR07"]),
        kinds=DEFAULT_KINDS[Role.ISSUER],
    )
    trust = TrustState(root_public=raw_public(root.public_key()))
    roster = open_envelope(seal(roster_decision(Roster(2, (entry,)), d.issued_at), root))
    assert isinstance(roster, Envelope)
    accepted = trust.check(roster, d.issued_at)
    assert isinstance(accepted, Accepted)
    trust.apply(accepted)
    hex_lines = section_of(DOC_TEXT).split("The whole message in hex (what travels):")[1]
    raw = bytes.fromhex("".join(hex_lines.split("```")[1].split()))
    env = open_envelope(raw)
    assert isinstance(env, Envelope) and env.decision == d
    assert isinstance(trust.check(env, d.issued_at), Accepted)
    assert hashlib.sha256(raw).hexdigest() in DOC_TEXT


def test_envelope_overhead_is_as_documented() -> None:
    """Test that the envelope adds 79 B plus the payload's byte-string head, as the doc says."""
    key = Ed25519PrivateKey.generate()
    for refs, head in ((0, 1), (1, 2), (8, 3)):  # payloads of 14, 48 and 278 bytes
        ids = tuple(bytes([i]) * 32 for i in range(refs))
        d = Decision(0, 60, Precedence.ROUTINE, Audience.all(), 1, refs=ids)
        payload = encode_payload(d)
        assert len(seal(d, key)) - len(payload) == 79 + head, (refs, len(payload))
    assert "**81 B for every real decision" in DOC_TEXT


def test_dictionary_matches_its_pin_and_the_doc() -> None:
    """Test that the shipped dictionary hashes to the pinned SHA-256 quoted in the doc."""
    digest = hashlib.sha256(compress.dictionary()).hexdigest()
    assert digest == compress.DICTIONARY_SHA256 == compress.dictionary_sha256()
    assert f"dictionary-v1.txt  sha256 {digest}" in DOC_TEXT
    assert Path(compress.__file__).parent.joinpath("data", compress.DICTIONARY_NAME).is_file()


def test_untagged_copy_is_rejected_as_the_doc_says() -> None:
    """Test that an untagged COSE_Sign1 is rejected as non-canonical, as section 1 and 6 say."""
    raw = seal(Decision(0, 60, Precedence.ROUTINE, Audience.all(), 1), Ed25519PrivateKey.generate())
    assert raw[0] == 0xD2  # tag 18
    verdict = open_envelope(raw[1:])
    assert not isinstance(verdict, Envelope)
    assert (verdict.reason, verdict.detail) == (
        "malformed",
        "not in canonical form (tagged, empty unprotected map)",
    )
    section1 = DOC_TEXT.split("## 2.")[0]
    assert (
        "tagged or untagged"
        not in section1.split("Accepted by `open_envelope`")[1].split("\n- ")[0]
    )
    assert f"`malformed: {verdict.detail}`" in " ".join(section1.split())
    assert "the bare array is accepted" not in DOC_TEXT
    assert "an untagged copy fails here: `not in canonical form`" in DOC_TEXT


def test_version_2_example_matches_the_code_and_verifies() -> None:
    """Test that the doc's version 2 example is what the code emits, and opens to the decision."""
    from bench.wire_example import BEGIN_V2, END_V2, generate_v2
    from relay.envelope import v2_time
    from relay.text import model as textmodel

    section = section_of(DOC_TEXT, BEGIN_V2, END_V2)
    assert section == generate_v2(), "run: python bench/wire_example.py --write"
    hex_lines = section.split("The whole message in hex:")[1].split("```")[1]
    env = open_envelope(bytes.fromhex("".join(hex_lines.split())))
    assert isinstance(env, Envelope)
    d = example_decision()
    assert env.decision.text == d.text and env.decision.issued_at == v2_time(d.issued_at)
    assert f"textmodel-v2.cbor.zz  sha256 {textmodel.MODEL_SHA256}" in DOC_TEXT
