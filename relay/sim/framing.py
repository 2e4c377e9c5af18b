"""The Meshtastic stream framing, sans-I/O: ``0x94 0xC3 <len_hi> <len_lo>`` then one protobuf.

The same framing runs over serial and TCP. Bytes outside a frame are skipped (the library sends 32
wake bytes ``0xC3`` before its first frame, and a device prints log text between frames). A header
announcing more than 512 bytes is a corrupt or hostile header: the decoder drops it and resyncs on
the next ``0x94``, as the firmware does.
"""

from __future__ import annotations

from typing import Final

START1: Final = 0x94
START2: Final = 0xC3
HEADER_LEN: Final = 4
MAX_FRAME: Final = 512  # MAX_TO_FROM_RADIO_SIZE in firmware and library


def encode_frame(payload: bytes) -> bytes:
    """Frame one serialised protobuf. Raises ``ValueError`` if it is longer than 512 bytes."""
    if len(payload) > MAX_FRAME:
        raise ValueError(f"frame payload {len(payload)} B exceeds {MAX_FRAME} B")
    return bytes((START1, START2, len(payload) >> 8, len(payload) & 0xFF)) + payload


class FrameDecoder:
    """Splits a byte stream into frame payloads; feed bytes with ``receive_data``."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.skipped_bytes = 0
        self.dropped_frames = 0

    def receive_data(self, data: bytes) -> list[bytes]:
        """Add ``data`` and return the payloads of every frame it completed, in order."""
        self._buf += data
        frames: list[bytes] = []
        while True:
            start = self._buf.find(START1)
            if start < 0:
                self.skipped_bytes += len(self._buf)
                self._buf.clear()
                return frames
            if start:
                self.skipped_bytes += start
                del self._buf[:start]
            if len(self._buf) < 2:
                return frames
            if self._buf[1] != START2:
                # A lone 0x94 (log text): skip it and look for the next start.
                self.skipped_bytes += 1
                del self._buf[:1]
                continue
            if len(self._buf) < HEADER_LEN:
                return frames
            length = (self._buf[2] << 8) | self._buf[3]
            if length > MAX_FRAME:
                self.dropped_frames += 1
                del self._buf[:2]
                continue
            if len(self._buf) < HEADER_LEN + length:
                return frames
            frames.append(bytes(self._buf[HEADER_LEN : HEADER_LEN + length]))
            del self._buf[: HEADER_LEN + length]

    @property
    def pending(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)
