"""The envelope benchmark runs end to end on a tiny corpus (its timings are never asserted)."""

import json
from pathlib import Path

import pytest

from bench.envelope import BUDGET, ENCODINGS, OPERATIONS, main

CORPUS = Path(__file__).parent / "data" / "decisions.jsonl"


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "three.jsonl"
    path.write_text("\n".join(CORPUS.read_text(encoding="utf-8").splitlines()[:3]) + "\n")
    return path


def test_table_has_every_operation_and_encoding(
    tiny_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that the table lists each timed operation and each encoding's size row."""
    assert main(["--corpus", str(tiny_corpus), "--repeat", "1", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "3 decisions" in out
    for name in [*OPERATIONS, *ENCODINGS]:
        assert name in out, name
    assert f"≤ {BUDGET} B" in out


def test_json_output_has_medians_ratios_and_sizes(
    tiny_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that --json prints medians with ratios and per-encoding size statistics."""
    main(["--corpus", str(tiny_corpus), "--repeat", "2", "--rounds", "1", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["decisions"] == 3
    assert [r["operation"] for r in result["speed"]] == list(OPERATIONS)
    assert all(r["median_us"] > 0 and r["ratio"] > 0 for r in result["speed"])
    sizes = {r["encoding"]: r for r in result["sizes"]}
    assert list(sizes) == list(ENCODINGS)
    assert sizes["CBOR, deflate+dict"]["p50"] < sizes["naive JSON"]["p50"]
    assert all(0 <= r["within_budget"] <= 1 for r in sizes.values())
