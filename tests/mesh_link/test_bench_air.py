"""bench/air.py: the airtime benchmark runs and reports what the docs quote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.air import DEFAULT_CORPUS, main


def test_air_bench_json_on_three_decisions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that bench/air.py --json on three corpus lines reports frames, bytes and airtimes."""
    corpus = tmp_path / "three.jsonl"
    corpus.write_text("\n".join(DEFAULT_CORPUS.read_text().splitlines()[:3]) + "\n")
    assert main(["--corpus", str(corpus), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == ["d001", "d002", "d003"]
    for r in rows:
        assert r["frames"] >= 1
        assert r["bytes_on_air"] > r["signed_bytes"] + 16  # header, protobuf, frame byte
        assert 0 < r["plain_airtime_s"] < r["airtime_s"] < r["json_airtime_s"]
        assert r["per_hour"] == int(360 // r["airtime_s"])


def test_air_bench_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Test that the table output ends with the one-frame share and the ratio against plain."""
    corpus = tmp_path / "one.jsonl"
    corpus.write_text(DEFAULT_CORPUS.read_text().splitlines()[0] + "\n")
    assert main(["--corpus", str(corpus), "--preset", "SHORT_FAST"]) == 0
    out = capsys.readouterr().out
    assert "in one frame                   100%" in out
    assert "median airtime vs plain text" in out
