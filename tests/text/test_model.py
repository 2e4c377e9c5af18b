"""The version-2 text model: exact round trips, bounded decoding, the pinned model file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import statistics
import zlib
from importlib import resources
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.text import model
from relay.text.model import TextModelError, decode, encode

DATA = Path(__file__).resolve().parent.parent / "data"
TEXTS = [
    json.loads(line)["text"]
    for name in ("decisions.jsonl", "unseen-decisions.jsonl")
    for line in (DATA / name).read_text(encoding="utf-8").splitlines()
    if line.strip()
]


@pytest.mark.parametrize("text", TEXTS[:: max(1, len(TEXTS) // 20)])
def test_decisions_round_trip(text: str) -> None:
    """Test that real decisions in Dutch, English and German decode to exactly their text."""
    coded = encode(text)
    assert decode(coded, max_len=len(text)) == text
    assert len(coded) < len(text.encode())


def test_decisions_shrink_to_well_under_half() -> None:
    """Test that the model codes the decisions in under half their UTF-8 size (median)."""
    ratios = [len(encode(t)) / len(t.encode()) for t in TEXTS]
    assert statistics.median(ratios) < 0.45


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=300))
def test_any_text_round_trips(text: str) -> None:
    """Test that any Unicode text, letters, digits, symbols or emoji, decodes back exactly."""
    assert decode(encode(text), max_len=len(text)) == text


def test_a_text_whose_coding_ends_in_zero_bits_still_encodes() -> None:
    """Test that a text whose shortest coding would have been read 9 bytes past its end (found
    by the round-trip property, about 1 text in 300) encodes, and decodes back exactly."""
    text = "\x1bj\x1b\x08{Ú\n¤\x83É"
    assert decode(encode(text), max_len=len(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_are_refused(data: bytes) -> None:
    """Test that hostile bytes give a text within the limit or a TextModelError, nothing else."""
    try:
        text = decode(data, max_len=100)
    except TextModelError:
        return
    assert len(text) <= 100


def test_decoding_stops_at_the_limit() -> None:
    """Test that a stream for a long text is refused at max_len, not decoded to the end."""
    coded = encode("Evacuatie " * 100)
    with pytest.raises(TextModelError, match="longer than 50"):
        decode(coded, max_len=50)


def test_truncated_streams_never_crash() -> None:
    """Test that every cut of a coded text decodes to something else or is refused."""
    text = "Besluit ROT: evacuatie Kanaleneiland-Zuid om 16:30, opvang Jaarbeurs hal 9."
    coded = encode(text)
    for cut in range(len(coded)):
        part = coded[:cut].rstrip(b"\0")
        with contextlib.suppress(TextModelError):
            assert decode(part, max_len=len(text) * 2) != text


def test_trailing_zero_and_unknown_language_are_refused() -> None:
    """Test that a trailing zero byte and the reserved fourth language are refused."""
    coded = encode("Dijkdoorbraak")
    with pytest.raises(TextModelError, match="zero byte"):
        decode(coded + b"\0", max_len=100)
    with pytest.raises(TextModelError, match="unknown language"):
        decode(b"\xff\xff", max_len=100)


def test_model_file_matches_its_pin() -> None:
    """Test that the shipped model file hashes to the pinned SHA-256 the decoder checks."""
    blob = resources.files("relay").joinpath("data", model.MODEL_NAME).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == model.MODEL_SHA256 == model.model_sha256()


def test_model_file_is_what_the_build_makes() -> None:
    """Test that building from wordfreq 3.1.1 gives exactly the shipped model's content."""
    pytest.importorskip("wordfreq", reason="wordfreq is a dev dependency (pyproject [dev])")
    from relay.text.build import build

    blob = resources.files("relay").joinpath("data", model.MODEL_NAME).read_bytes()
    assert cbor2.loads(zlib.decompress(blob)) == build()
