"""The scale benchmark's smoke run: 25 regions of engines on virtual time, a cut, a table."""

import json
from pathlib import Path

import pytest

from bench.scale import ROWS, main
from relay import cose


def test_quick_run_loses_nothing_and_fits_exponents(capsys: pytest.CaptureFixture[str]) -> None:
    """Test that the quick run delivers every decision to every recipient exactly once, across
    the cut and over the mesh, counts its traffic and fits a growth exponent per row."""
    verify = cose.verify_parsed
    assert main(["--quick", "--json"]) == 0
    assert cose.verify_parsed is verify  # the shared verification cache is removed again
    out = json.loads(capsys.readouterr().out)
    small, large = out["results"]
    assert (small["nodes"], large["nodes"]) == (75, 100)
    for r in (small, large):
        assert r["lost"] == 0 and r["shown_twice"] == 0, r
        assert r["rejected"] == {}
        assert r["decisions_in_cut"] >= 1
        assert r["receipts_per_decision"] > 0
        assert r["publishes"]["decision"] == r["decisions"]
        assert r["status_deliveries_per_node_hour"] == 720 * (r["mqtt_nodes"] - 1)
        assert r["airtime_by_frame_s"].get("SINGLE", 0) > 0  # decisions went onto the meshes
        assert r["memory"]["engine_mqtt_bytes"] > 0
    # More nodes, more recipients: each decision reaches more nodes.
    assert large["recipients_per_decision"] > small["recipients_per_decision"]
    assert out["exponents"]["recipients_per_decision"] == pytest.approx(1.0, abs=0.05)
    assert set(out["exponents"]) == {key for _, key in ROWS}


def test_table_lists_every_row(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Test that --merge prints one table from two runs' JSON, with every row and the sizes."""
    row = {
        "nodes": 75,
        "per_region": 3,
        "decisions": 1,
        "decisions_in_cut": 1,
        "hours": 1.0,
        "cut_hours": 0.5,
        "memory": {"engine_mqtt_bytes": 1000.0, "roster_bytes": 2000.0},
        "bridge_dropped": 0,
        "rejected": {},
        "status_bytes": 193,
        "build_s": 0.0,
        "run_s": 0.0,
        **{key: 1.0 for _, key in ROWS if key != "memory_kb"},
    }
    paths = []
    for n in (75, 150):
        p = tmp_path / f"{n}.json"
        p.write_text(json.dumps({"load": "1.0", "results": [{**row, "nodes": n}]}))
        paths.append(str(p))
    assert main(["--merge", *paths]) == 0
    out = capsys.readouterr().out
    assert "N=75" in out and "N=150" in out
    for label, _ in ROWS:
        assert label in out, label
