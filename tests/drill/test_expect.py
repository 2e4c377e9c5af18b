"""Expectations evaluated from events alone; the summary table; the progress line."""

import io
import json

from relay.drill.events import Event
from relay.drill.expect import evaluate, format_summary, summary, true_time
from relay.drill.progress import Progress, status_line
from relay.drill.scenario import parse

T0 = 1_800_000_000.0
SCENARIO = """\
[[broker]]
name = "b"

[[node]]
name = "hq"
mqtt = ["b"]

[[node]]
name = "vr07-a"
regions = ["VR07"]
mqtt = ["b"]

[[node]]
name = "vr05-a"
regions = ["VR05"]
mqtt = ["b"]

[[issuer]]
name = "ncc"

[[timeline]]
at = 0
do = "inject"
issuer = "ncc"
via = "hq"
to = "region:VR07"
precedence = "FLASH"

[[expect]]
kind = "delivered"
within = 10

[[expect]]
kind = "no_loss"

[[expect]]
kind = "no_duplicates"

[[expect]]
kind = "audience"

[[expect]]
kind = "receipts"
within = 30
"""
MSG = "ab" * 32


def _inject(nodes: list[str]) -> Event:
    detail = {"precedence": "FLASH", "audience": ["region:VR07"], "nodes": nodes,
              "exercise": True, "via": "hq"}  # fmt: skip
    return Event(T0, "drill", "inject", MSG, None, "ncc", json.dumps(detail))


def _delivered(node: str, t: float, link: str = "mqtt") -> Event:
    return Event(t, node, "delivered", MSG, link, node, None)


def _verdicts(
    events: list[Event], skews: dict[str, list[tuple[float, float]]] | None = None
) -> dict[str, tuple[bool, str]]:
    """Verdicts keyed by expectation kind ("injected" for the first)."""
    sc = parse(SCENARIO, "x.toml")
    vs = evaluate(sc, events, skews or {})
    kinds = ["injected", *(e.kind for e in sc.expectations)]
    return {k: (v.ok, v.detail) for k, v in zip(kinds, vs, strict=True)}


def test_all_expectations_hold_for_a_clean_delivery() -> None:
    """Test that one timely, single, in-audience delivery with its receipt passes every check."""
    events = [
        _inject(["vr07-a"]),
        _delivered("vr07-a", T0 + 2.0),
        Event(T0 + 3.0, "hq", "receipt", MSG, "mqtt", "vr07-a", None),
    ]
    verdicts = evaluate(parse(SCENARIO, "x.toml"), events, {})
    assert all(v.ok for v in verdicts), verdicts
    assert "1/1 deliveries within 10 s (median 2.0 s, max 2.0 s)" in verdicts[1].detail


def test_late_missing_duplicate_and_stray_deliveries_fail_with_details() -> None:
    """Test that lateness, loss, a second showing and a showing outside the audience each fail."""
    late = _verdicts([_inject(["vr07-a"]), _delivered("vr07-a", T0 + 12.5)])
    assert late["delivered"][0] is False and "after 12.5 s" in late["delivered"][1]
    missing = _verdicts([_inject(["vr07-a"])])
    assert [missing[k][0] for k in ("delivered", "no_loss", "receipts")] == [False] * 3
    assert "never shown at vr07-a" in missing["no_loss"][1]
    twice = _verdicts([_inject(["vr07-a"]), _delivered("vr07-a", T0 + 1),
                       _delivered("vr07-a", T0 + 5, "mesh")])  # fmt: skip
    assert twice["no_duplicates"] == (False, f"shown more than once: {MSG[:12]} vr07-a x2")
    stray = _verdicts([_inject(["vr07-a"]), _delivered("vr07-a", T0 + 1),
                       _delivered("vr05-a", T0 + 1)])  # fmt: skip
    assert stray["audience"][0] is False and "at vr05-a" in stray["audience"][1]


def test_node_clock_skew_is_taken_out_of_latencies() -> None:
    """Test that a node whose clock runs 3 h behind still gets its true delivery latency."""
    skews = {"vr07-a": [(T0 - 100, -10800.0)]}
    assert true_time(T0 - 10800 + 4, "vr07-a", skews) == T0 + 4
    # Set back an hour at T0 + 100: readings before and after the change both map back right.
    reset = {"vr07-a": [(T0 - 100, 0.0), (T0 + 100, -3600.0)]}
    assert true_time(T0 + 50, "vr07-a", reset, end=T0 + 300) == T0 + 50
    assert true_time(T0 + 150 - 3600, "vr07-a", reset, end=T0 + 300) == T0 + 150
    verdicts = _verdicts([_inject(["vr07-a"]), _delivered("vr07-a", T0 - 10800 + 4)], skews)
    assert verdicts["delivered"] == (True, "1/1 deliveries within 10 s (median 4.0 s, max 4.0 s)")


def test_summary_table_lists_each_decision_with_paths() -> None:
    """Test that the summary counts showings, duplicates, latency and arrival links."""
    events = [_inject(["vr07-a", "hq"]), _delivered("vr07-a", T0 + 3, "mesh"),
              _delivered("hq", T0, "local")]  # fmt: skip
    (row,) = summary(events, {})
    assert (row.shown, row.expected, row.duplicates, row.max_s) == (2, 2, 0, 3.0)
    assert row.paths == "local:1 mesh:1"
    table = format_summary([row]).splitlines()
    assert table[0].startswith("decision") and table[2].startswith(MSG[:12])


def test_progress_line_shows_phase_count_and_links() -> None:
    """Test that the status line names the phase, the delivered count and each node's links."""
    links = {"a": {"mqtt": "up", "mesh": "down"}, "b": None}
    line = status_line(12.0, "cut", 3, 7, links)
    assert line == "[  12.0 s] cut | delivered 3/7 | a mqtt:up mesh:DOWN | b (not running)"
    out = io.StringIO()
    p = Progress(out, tty=False, every_s=5.0)
    for t in (0.0, 1.0, 2.0, 5.5):
        p.status(t, "x", 0, 1, {})
    p.line(6.0, "fault: cut")
    assert out.getvalue().count("delivered 0/1") == 2 and "fault: cut\n" in out.getvalue()
