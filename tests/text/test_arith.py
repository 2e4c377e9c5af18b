"""The range coder: exact round trips, one byte form, bounded on hostile input."""

from __future__ import annotations

from itertools import accumulate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.text.arith import MAX_TOTAL, ArithError, Decoder, Encoder

tables = st.lists(st.integers(1, 5000), min_size=1, max_size=40)


@st.composite
def messages(draw: st.DrawFn) -> tuple[list[list[int]], list[int]]:
    """A sequence of (table, symbol) pairs: tables of frequencies and a symbol of each."""
    steps = draw(st.lists(tables, max_size=60))
    symbols = [draw(st.integers(0, len(t) - 1)) for t in steps]
    return steps, symbols


def _encode(steps: list[list[int]], symbols: list[int]) -> bytes:
    enc = Encoder()
    for freqs, s in zip(steps, symbols, strict=True):
        cums = [0, *accumulate(freqs)]
        enc.encode(cums[s], freqs[s], cums[-1])
    return enc.finish()


@given(messages())
def test_round_trip(msg: tuple[list[list[int]], list[int]]) -> None:
    """Test that any sequence of symbols decodes back exactly from the coded bytes."""
    steps, symbols = msg
    data = _encode(steps, symbols)
    assert not data.endswith(b"\0")
    dec = Decoder(data)
    assert [dec.decode([0, *accumulate(f)]) for f in steps] == symbols


def test_skewed_tables_cost_what_they_should() -> None:
    """Test that 1,000 symbols of probability 1/2 take about 1,000 bits, not more."""
    data = _encode([[1, 1]] * 1000, [1, 0] * 500)
    assert 124 <= len(data) <= 127


def test_a_huge_table_still_resolves_every_symbol() -> None:
    """Test that a table of the largest total codes its rarest symbol and decodes it."""
    freqs = [1, MAX_TOTAL - 2, 1]
    for s in (0, 1, 2):
        data = _encode([freqs] * 3, [s] * 3)
        dec = Decoder(data)
        cums = [0, *accumulate(freqs)]
        assert [dec.decode(cums) for _ in range(3)] == [s] * 3


def test_trailing_zero_byte_is_refused() -> None:
    """Test that a stream ending in a zero byte (a second form of the same value) is refused."""
    data = _encode([[3, 5, 7]] * 10, [2, 1, 0, 2, 1, 0, 2, 1, 0, 2])
    with pytest.raises(ArithError, match="zero byte"):
        Decoder(data + b"\0")


def test_bad_slices_are_refused_by_the_encoder() -> None:
    """Test that the encoder refuses slices outside their table or past the largest total."""
    enc = Encoder()
    for cum, freq, total in ((0, 0, 4), (3, 2, 4), (-1, 1, 4), (0, 1, MAX_TOTAL + 1)):
        with pytest.raises(ValueError, match="bad symbol slice"):
            enc.encode(cum, freq, total)


@given(st.binary(max_size=64).filter(lambda b: not b.endswith(b"\0")))
def test_any_bytes_decode_to_symbols_or_end_cleanly(data: bytes) -> None:
    """Test that arbitrary bytes decode into symbols until the decoder runs out, never crash."""
    dec = Decoder(data)
    cums = [0, 1, 3, 6, 10]
    for _ in range(200):
        try:
            assert 0 <= dec.decode(cums) < 4
        except ArithError:
            return


def test_a_stream_ending_in_zero_bits_is_not_read_more_than_8_bytes_past_its_end() -> None:
    """Test that a coding whose last symbols add only zero bits is not cut shorter than the
    bytes it shifted out: decoding it reads at most 8 zero bytes past its end (the model refuses
    more), where the plain shortest form made the decoder read 9."""
    symbols = [(70, 128), (0, 128), (0, 2), (0, 2), (0, 2)]
    enc = Encoder()
    for cum, total in symbols:
        enc.encode(cum, 1, total)
    data = enc.finish()
    assert data and data[-1] != 0
    dec = Decoder(data)
    for cum, total in symbols:
        assert dec.decode([0, *range(1, total + 1)]) == cum
    assert dec.overrun <= 8
