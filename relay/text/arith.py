"""A range coder over integer frequency tables, with 64-bit precision and exact integer arithmetic.

Pure and deterministic: integers only, so every platform decodes exactly what another encoded. A
symbol is coded as ``(cum, freq, total)``: its slice ``[cum, cum + freq)`` of a table whose
frequencies add up to ``total`` (at most ``MAX_TOTAL``). The coding range is kept between 2**56
and 2**64, so the rounding of ``range // total`` costs nothing measurable.

The encoder keeps the low end of the interval as one Python integer, so a carry simply propagates
into the bytes already written; at the end it writes the shortest byte string, of at least as
many bytes as it shifted out and not ending in a zero byte, whose value lies in the final
interval (``Encoder.finish``). The decoder reads zeros past the end, so a trailing zero byte
would add nothing, and the decoder refuses a string that ends in one.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

WINDOW_BITS = 64
TOP = 1 << WINDOW_BITS
BOTTOM = 1 << (WINDOW_BITS - 8)
MAX_TOTAL = 1 << 24
OVERRUN_LIMIT = 16  # bytes a decoder may read past the end (zeros) before the stream is refused


class ArithError(ValueError):
    """The coded bytes are not a valid stream (or not in canonical form)."""


class Encoder:
    def __init__(self) -> None:
        self._low = 0  # the interval's low end, scaled by 256**shifts: grows with the message
        self._range = TOP
        self._shifts = 0

    def encode(self, cum: int, freq: int, total: int) -> None:
        if not (freq > 0 and cum >= 0 and cum + freq <= total <= MAX_TOTAL):
            raise ValueError(f"bad symbol slice {cum}+{freq}/{total}")
        r = self._range // total
        self._low += r * cum
        self._range = r * freq
        while self._range < BOTTOM:
            self._low <<= 8
            self._range <<= 8
            self._shifts += 1

    def finish(self) -> bytes:
        """The shortest byte string of at least ``shifts`` bytes, not ending in a zero byte,
        whose value lies in the final interval.

        Not shorter than ``shifts``: a decoder reads ``WINDOW_BITS // 8`` bytes ahead, so it
        then reads at most that many zeros past the end (``Decoder.overrun`` ≤ 8), which is
        what every decoder of payload version 2 allows. The plain shortest string is shorter
        than ``shifts`` for about 1 text in 300 (a run of zero bits at its end); such a stream
        decoded correctly but was refused ("coded text ends before its END"), so its sender's
        round-trip check failed the send."""
        n = self._shifts + WINDOW_BITS // 8  # bytes of full precision
        low, high = self._low, self._low + self._range
        for k in range(min(self._shifts, n), n + 1):
            unit = 1 << (8 * (n - k))
            value = -(-low // unit)
            while value * unit < high:
                if k == 0 or value & 0xFF:
                    return value.to_bytes(k, "big")
                value += 1
        raise AssertionError("unreachable: the full-precision value always fits")


class Decoder:
    def __init__(self, data: bytes) -> None:
        if data and data[-1] == 0:
            raise ArithError("coded text ends in a zero byte (not canonical)")
        self._data = data + bytes(WINDOW_BITS // 8 + OVERRUN_LIMIT)
        self._end = len(data)
        first = WINDOW_BITS // 8
        self._code = int.from_bytes(self._data[:first], "big")
        self._pos = first
        self._range = TOP

    def decode(self, cums: Sequence[int]) -> int:
        """Decode one symbol of a table of cumulative counts (``cums[0] == 0``, last = total)."""
        total = cums[-1]
        r = self._range // total
        t = self._code // r
        if t >= total:
            raise ArithError("coded value outside the model's range")
        sym = bisect_right(cums, t) - 1
        cum = cums[sym]
        self._code -= r * cum
        rng = r * (cums[sym + 1] - cum)
        if rng < BOTTOM:
            code, pos, data = self._code, self._pos, self._data
            while rng < BOTTOM:
                if pos >= len(data):
                    raise ArithError("coded text ends before its last symbol")
                code = (code << 8) | data[pos]
                pos += 1
                rng <<= 8
            self._code, self._pos = code, pos
        self._range = rng
        return sym

    @property
    def overrun(self) -> int:
        """How many bytes past the end of the data the decoder has read (as zeros)."""
        return max(0, self._pos - self._end)
