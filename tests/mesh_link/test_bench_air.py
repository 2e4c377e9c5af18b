"""bench/air.py: the airtime benchmark runs and reports what the docs quote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.air import DEFAULT_CORPUS, main


def test_air_bench_json_on_three_decisions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that bench/air.py --json on three lines reports frames, bytes and airtime per coder."""
    corpus = tmp_path / "three.jsonl"
    corpus.write_text("\n".join(DEFAULT_CORPUS.read_text().splitlines()[:3]) + "\n")
    assert main(["--corpus", str(corpus), "--json", "--preset", "LONG_FAST"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["decisions"]
    assert [r["id"] for r in rows] == ["d001", "d002", "d003"]
    for r in rows:
        lf = r["presets"]["LONG_FAST"]
        assert lf["plain_airtime_s"] < lf["json_airtime_s"]
        for coder in ("v1-deflate", "v2-model"):
            assert r["frames"][coder] >= 1
            assert lf[coder]["bytes_on_air"] > r["signed_bytes"][coder] + 16  # header, protobuf
            assert lf[coder]["per_hour"] == int(360 // lf[coder]["airtime_s"])
        assert r["signed_bytes"]["v2-model"] < r["signed_bytes"]["v1-deflate"]
    all_langs = out["summary"]["LONG_FAST"]["v2-model"]["all"]
    assert all_langs["decisions"] == 3
    assert out["goals"]["median_ratio_vs_plain"] == all_langs["median_ratio_vs_plain"]


def test_air_bench_takes_a_minimal_corpus_and_prints_a_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that lines with only text and precedence work, and the table names each coder."""
    corpus = tmp_path / "min.jsonl"
    corpus.write_text(
        json.dumps({"text": "Stroomuitval Zwolle: noodsteunpunt open.", "precedence": "FLASH"})
        + "\n"
    )
    assert main(["--corpus", str(corpus), "--preset", "SHORT_FAST"]) == 0
    out = capsys.readouterr().out
    assert "SHORT_FAST  v2-model" in out and "SHORT_FAST  v1-deflate" in out
    assert "v2-model: median" not in out  # the goal line is about LONG_FAST only
