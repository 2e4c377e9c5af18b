"""Body compression: raw deflate primed with a preset dictionary of crisis vocabulary.

LoRa frames carry at most 231 bytes, so a decision's text is deflated with a dictionary of common
Dutch and English crisis-communication words and phrases (``relay/data/dictionary-v1.txt``). The
dictionary is general vocabulary (region names, services, standard instructions), not sentences
fitted to any one corpus, so it helps with decisions nobody has seen yet.

The dictionary is part of the wire format: changing it changes what old messages decode to, so a new
dictionary needs a new payload version. ``DICTIONARY_SHA256`` pins the one in use; a test checks it.
"""

from __future__ import annotations

import hashlib
import zlib
from functools import cache
from importlib import resources

DICTIONARY_NAME = "dictionary-v1.txt"
DICTIONARY_SHA256 = "67e76c25d9e8f52ec0cd650a44ce7956ec9a4dd2f9d8122e453f523a2760491c"


class DecompressError(Exception):
    """The compressed body is corrupt or would expand past the limit."""


@cache
def dictionary() -> bytes:
    return resources.files("relay").joinpath("data", DICTIONARY_NAME).read_bytes()


def compress(text: bytes) -> bytes:
    """Raw deflate (no zlib header or checksum: the signature already protects the bytes)."""
    comp = zlib.compressobj(
        level=9, method=zlib.DEFLATED, wbits=-15, memLevel=9, zdict=dictionary()
    )
    return comp.compress(text) + comp.flush()


def decompress(data: bytes, *, max_len: int) -> bytes:
    """Inflate at most ``max_len`` bytes; a longer or truncated stream is an error (no bombs)."""
    decomp = zlib.decompressobj(wbits=-15, zdict=dictionary())
    try:
        out = decomp.decompress(data, max_len)
        if decomp.unconsumed_tail:
            raise DecompressError(f"body inflates to more than {max_len} bytes")
        out += decomp.flush()
    except zlib.error as exc:
        raise DecompressError(f"corrupt deflate stream: {exc}") from exc
    if not decomp.eof:
        raise DecompressError("truncated deflate stream")
    if decomp.unused_data:
        raise DecompressError("trailing bytes after the deflate stream")
    if len(out) > max_len:
        raise DecompressError(f"body inflates to more than {max_len} bytes")
    return out


def dictionary_sha256() -> str:
    return hashlib.sha256(dictionary()).hexdigest()
