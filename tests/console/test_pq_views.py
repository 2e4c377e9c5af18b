"""The console shows a PQ-enabled issuer's decision as pending until its attestation came."""

from __future__ import annotations

from relay.console import views
from relay.render import EXERCISE_MARKER

ITEM = {"id": "cd" * 32, "issuer": "pq-national", "precedence": "IMMEDIATE", "kind": "decision",
        "exercise": True, "audience": ["region:VR07"], "text": "Evacuatie", "kid": "0102abcd",
        "issued_at": 1_764_639_000, "expires_at": 1_764_642_600,
        "received_at": 1_764_639_000.0, "pq": "pending"}  # fmt: skip


def test_pending_and_verified_badges_in_both_languages() -> None:
    """Test that card, inbox row and details say "kwantumveilige handtekening volgt" (English
    "quantum-safe signature pending"), after the exercise marker, and nothing for plain ones."""
    card = views.card("nl", ITEM)
    assert "kwantumveilige handtekening volgt" in card and 'data-pq="pending"' in card
    assert card.index(EXERCISE_MARKER) < card.index("kwantumveilige")
    assert "quantum-safe signature pending" in views.card("en", ITEM)
    row = views.inbox_fragment("nl", [ITEM], {}, base_title="Binnengekomen")
    assert "kwantumveilige handtekening volgt" in row
    details = views.detail_rows("nl", ITEM)
    assert "Kwantumveilige handtekening" in details and "volgt" in details
    verified = views.card("nl", {**ITEM, "pq": "verified"})
    assert "kwantumveilig ondertekend" in verified and "volgt" not in verified
    plain = views.card("nl", {**ITEM, "pq": "none"})
    assert "data-pq" not in plain
