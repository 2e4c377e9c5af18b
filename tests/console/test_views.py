"""The console's HTML in isolation: markers, live parts and the network page's numbers."""

from __future__ import annotations

from relay.console import views
from relay.console.text import when
from relay.render import EXERCISE_MARKER

ITEM = {"id": "ab" * 32, "issuer": "national", "precedence": "FLASH", "kind": "decision",
        "exercise": True, "audience": ["region:VR07"], "text": "Schuilen <nu>",
        "received_at": 1_764_639_000.0}  # fmt: skip


def test_an_exercise_item_carries_the_marker_first_and_the_text_is_escaped() -> None:
    """Test that a card and an inbox row start with the marker and escape the text."""
    card = views.card("nl", ITEM)
    assert card.index(EXERCISE_MARKER) < card.index("FLASH") and "Schuilen &lt;nu&gt;" in card
    fragment = views.inbox_fragment("nl", [ITEM], {}, base_title="Binnengekomen")
    assert f'data-title="{EXERCISE_MARKER} — Binnengekomen"' in fragment
    assert 'data-exercise="1"' in fragment and "data-flash-id" in fragment
    real = views.inbox_fragment("nl", [{**ITEM, "exercise": False}], {}, base_title="B")
    assert EXERCISE_MARKER not in real and 'data-exercise="0"' in real


def test_the_network_page_shows_airtime_against_the_budget_and_the_clock_warning() -> None:
    """Test that a radio's airtime, the clock warning and rejections are rendered."""
    status = {
        "links": [
            {"name": "mesh", "kind": "mesh", "state": "up", "since": 1_764_639_000.0,
             "routing": "up", "outbox": 2,
             "mesh": {"preset": "LONG_FAST", "airtime_used_s": 36.5, "airtime_budget_s": 360.0,
                      "airtime_cap_nonflash_s": 324.0}},
        ],
        "peers": {"vr07-utrecht": {"state": "online", "heard_at": 1_764_639_100.0}},
        "clock_warning": True,
        "engine": {"clock_offset_s": -7300.0},
    }  # fmt: skip
    rejections = [{"at": 1_764_639_200.0, "link": "mqtt", "detail": "bad-signature: no match"}]
    html = views.network_fragment("nl", status, rejections)
    assert "36,5 s van 360 s gebruikt" in html and 'value="10"' in html
    assert "-7300 s" in html and "bad-signature: no match" in html
    assert when("nl", 1_764_639_100.0) in html and "vr07-utrecht" in html
    assert "36.5 s of 360 s used" in views.network_fragment("en", status, rejections)
    counted = views.network_fragment("nl", status, rejections, {"csrf_refused": 2})
    assert "<td>csrf_refused</td><td>2</td>" in counted


def test_times_are_amsterdam_time_with_the_date() -> None:
    """Test that times show in Europe/Amsterdam with weekday and date, summer and winter."""
    assert when("nl", 1_764_639_000.0) == "di 2 dec 2025 02:30:00 CET"
    assert when("en", 1_751_335_200.0) == "Tue 1 Jul 2025 04:00:00 CEST"
