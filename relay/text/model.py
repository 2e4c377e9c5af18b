"""The version-2 text coder: a static model of short crisis texts, driving an arithmetic coder.

A text is cut into tokens, each coded with probabilities from a fixed model (relay/data/
textmodel-v2.cbor.zz, built by ``python -m relay.text.build`` from general word frequencies):

* ``WORD``: a word of the vocabulary (the most frequent words of Dutch, English and German), by its
  frequency in the message's language, then its capitalisation;
* ``SPELL``: any other word, letter by letter from a letter-bigram model, then its capitalisation;
* ``NUM``: a run of ASCII digits;
* ``CHAR``: a space, a punctuation mark, or (escaped) any other Unicode character;
* ``END``.

The first symbol names the language whose word frequencies are used (the encoder tries each and
keeps the shortest). Token types, capitalisation, punctuation and digits use small adaptive tables
that start from fixed, general priors (typography, not any corpus) and learn within one message.

Decoding is bounded: it stops with an error past ``max_len`` characters, and every token but END
yields at least one character, so a hostile stream cannot make it loop or grow.
"""

from __future__ import annotations

import hashlib
import sys
import zlib
from array import array
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources
from itertools import accumulate

import cbor2

from relay.text.arith import ArithError, Decoder, Encoder

MODEL_VERSION = 1  # the model file's own version (payload version 2 names model version 1)
MODEL_NAME = "textmodel-v2.cbor.zz"
# The model file's bytes, pinned (see build.py): another model would decode texts into other words.
MODEL_SHA256 = "ceab840017fa29ab5f04d8321f018573e83ce80a84690c642c2cbaf8dd3d4178"
LANGS = ("nl", "en", "de")
ALPHABET = "abcdefghijklmnopqrstuvwxyzàáâäçèéêëíîïñóôöúûüß"
WORD_TOTAL = 1 << 22
SPELL_SCALE = 4000
CONTEXT_MIN = 40
ADAPT_STEP = 24  # how much one observation adds to an adaptive table (priors sum to about 100)

# Token types.
WORD, SPELL, NUM, CHAR, END = range(5)
# What came before a token, for the type and punctuation tables.
AT_START, AFTER_WORD, AFTER_NUM, AFTER_SPACE, AFTER_PUNCT = range(5)

# Priors of the token type after each kind of token (WORD, SPELL, NUM, CHAR, END). A word or a
# number is a maximal run, so a word never directly follows a word, nor a number a number.
TYPE_PRIORS = {
    AT_START: (55, 30, 10, 5, 1),
    AFTER_WORD: (1, 1, 2, 90, 6),
    AFTER_NUM: (5, 5, 1, 80, 9),
    AFTER_SPACE: (62, 25, 12, 1, 1),
    AFTER_PUNCT: (20, 10, 12, 50, 8),
}
# Punctuation (and space) that is coded directly; anything else is escaped as a code point.
CHARS = " .,:;-/()!?'\"\n&%+€°#*=@–’“”…"
ESCAPE = len(CHARS)
CHAR_PRIORS = {
    AT_START: {'"': 20, "(": 10, "#": 5, "*": 5, "“": 5},
    AFTER_WORD: {" ": 80, ",": 6, ".": 6, ":": 3, "-": 3, "/": 1, ")": 1, "'": 1, "?": 1, "!": 1},
    AFTER_NUM: {" ": 50, ":": 12, ".": 10, ",": 8, "-": 6, "/": 4, "%": 2, ")": 2},
    AFTER_SPACE: {"(": 10, "-": 10, '"': 10, "–": 5, "€": 5, "“": 3, "&": 3, "+": 3},
    AFTER_PUNCT: {" ": 80, "\n": 5, ")": 2, '"': 2, ".": 2, "-": 2},
}
CHAR_FLOOR = 1  # every coded character keeps a small prior, the escape too
# Capitalisation: lower, Capitalised, UPPER, mixed (then one flag per letter).
LOWER, CAPITAL, UPPER, MIXED = range(4)
CASE_PRIORS = {True: (10, 84, 5, 1), False: (78, 16, 5, 1)}  # keyed by "a sentence starts here"
DIGIT_PRIORS_FIRST = (10,) * 10
DIGIT_PRIORS_NEXT = (10,) * 10 + (30,)  # ... and END
ESC_BITS = 21  # an escaped character: its code point, 21 bits, uniformly


class TextModelError(ValueError):
    """The coded text does not decode with this model."""


@dataclass(frozen=True)
class _Static:
    """The loaded model, kept compact (a node holds it for its lifetime): the vocabulary as one
    string with an offset table, the frequency tables as cumulative unsigned arrays."""

    text: str
    offsets: array[int]
    cums: dict[str, array[int]]
    spell: dict[str, array[int]]
    sha256: str

    def word(self, i: int) -> str:
        return self.text[self.offsets[i] : self.offsets[i + 1]]

    @cached_property
    def index(self) -> dict[str, int]:
        """Word -> index: only an encoder needs it, so only an encoder builds it."""
        return {self.word(i): i for i in range(len(self.offsets) - 1)}


@cache
def _model() -> _Static:
    blob = resources.files("relay").joinpath("data", MODEL_NAME).read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != MODEL_SHA256:
        # Another model decodes version 2 texts into other words: never run with one.
        raise RuntimeError(f"{MODEL_NAME} has SHA-256 {digest}, expected {MODEL_SHA256}")
    m = cbor2.loads(zlib.decompress(blob))
    if m["version"] != MODEL_VERSION or m["alphabet"] != ALPHABET or tuple(m["langs"]) != LANGS:
        raise RuntimeError(f"{MODEL_NAME} does not match this code")
    offsets = array("I", [0])
    offsets.extend(accumulate(m["lengths"]))  # bytes: each word's length in characters
    if offsets[-1] != len(m["words"]):
        raise RuntimeError(f"{MODEL_NAME}: the word table does not match the words")
    cums = {lang: _cumulative(m["tables"][lang], 4) for lang in LANGS}
    spell = {ctx: _cumulative(row, 2) for ctx, row in m["spell"].items()}
    return _Static(m["words"], offsets, cums, spell, digest)


def _cumulative(packed: bytes, width: int) -> array[int]:
    """Big-endian unsigned integers of ``width`` bytes -> 0 followed by their running sums."""
    values = array("I" if width == 4 else "H")
    if values.itemsize != width:
        raise RuntimeError(f"this platform's array item is not {width} bytes")
    values.frombytes(packed)
    if sys.byteorder == "little":
        values.byteswap()
    out = array("I", [0])
    out.extend(accumulate(values))
    return out


def model_sha256() -> str:
    return _model().sha256


class _Adaptive:
    """A small frequency table that learns within one message."""

    __slots__ = ("freqs",)

    def __init__(self, priors: tuple[int, ...] | list[int]) -> None:
        self.freqs = list(priors)

    def cums(self) -> list[int]:
        return [0, *accumulate(self.freqs)]

    def seen(self, sym: int) -> None:
        self.freqs[sym] += ADAPT_STEP


def _char_priors(ctx: int) -> list[int]:
    given = CHAR_PRIORS[ctx]
    return [given.get(c, 0) * 4 + CHAR_FLOOR for c in CHARS] + [CHAR_FLOOR * 2]


class _Tables:
    """Every adaptive table of one message, shared by the encoder and the decoder's steps."""

    def __init__(self) -> None:
        self.types = {ctx: _Adaptive(p) for ctx, p in TYPE_PRIORS.items()}
        self.chars = {ctx: _Adaptive(_char_priors(ctx)) for ctx in CHAR_PRIORS}
        self.case = {k: _Adaptive(p) for k, p in CASE_PRIORS.items()}
        self.letter_case = _Adaptive((1, 1))
        self.digits_first = _Adaptive(DIGIT_PRIORS_FIRST)
        self.digits_next = _Adaptive(DIGIT_PRIORS_NEXT)


def _spell_context(static: _Static, before: str) -> array[int]:
    padded = "^^" + before
    row = static.spell.get(padded[-2:])
    if row is None:
        row = static.spell[padded[-1]]
    return row


def _case_of(word: str) -> tuple[int, list[int]]:
    flags = [1 if c != c.lower() else 0 for c in word]
    if not any(flags):
        return LOWER, []
    if flags[0] and not any(flags[1:]):
        return CAPITAL, []
    if all(flags) and len(word) > 1:
        return UPPER, []
    return MIXED, flags


def _apply_case(lower: str, case: int, flags: list[int]) -> str:
    if case == LOWER:
        return lower
    if case == CAPITAL:
        return lower[0].upper() + lower[1:]
    if case == UPPER:
        return lower.upper()
    return "".join(c.upper() if f else c for c, f in zip(lower, flags, strict=True))


def _letter(c: str) -> str | None:
    """The lowercase alphabet letter ``c`` stands for, if it round-trips through upper()."""
    low = c.lower()
    if len(low) != 1 or low not in ALPHABET:
        return None
    if c != low and low.upper() != c:
        return None
    if c == low and len(low.upper()) != 1 and c != "ß":
        return None
    return low


def _tokens(text: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    i = 0
    while i < len(text):
        c = text[i]
        j = i + 1
        if _letter(c) is not None:
            while j < len(text) and _letter(text[j]) is not None:
                j += 1
            out.append((SPELL, text[i:j]))
        elif "0" <= c <= "9":
            while j < len(text) and "0" <= text[j] <= "9":
                j += 1
            out.append((NUM, text[i:j]))
        else:
            out.append((CHAR, c))
        i = j
    return out


def _after(kind: int, piece: str) -> int:
    if kind in (WORD, SPELL):
        return AFTER_WORD
    if kind == NUM:
        return AFTER_NUM
    return AFTER_SPACE if piece.isspace() else AFTER_PUNCT


def _sentence_starts(prev_chars: str) -> bool:
    tail = prev_chars.rstrip(" \"'“(")
    return not tail or tail[-1] in ".!?\n:"


def _encode(text: str, lang_index: int) -> bytes:
    static = _model()
    lang = LANGS[lang_index]
    word_cums = static.cums[lang]
    t = _Tables()
    enc = Encoder()
    enc.encode(lang_index, 1, 4)
    ctx = AT_START
    done = ""
    for kind, piece in _tokens(text):
        if kind == SPELL:
            lower = "".join(_letter(c) or "" for c in piece)
            if lower in static.index:
                kind = WORD
        cums = t.types[ctx].cums()
        enc.encode(cums[kind], cums[kind + 1] - cums[kind], cums[-1])
        t.types[ctx].seen(kind)
        if kind in (WORD, SPELL):
            if kind == WORD:
                i = static.index[lower]
                enc.encode(word_cums[i], word_cums[i + 1] - word_cums[i], word_cums[-1])
            else:
                for k, letter in enumerate(lower + "$"):
                    row = _spell_context(static, lower[:k])
                    s = (ALPHABET + "$").index(letter)
                    enc.encode(row[s], row[s + 1] - row[s], row[-1])
            case, flags = _case_of(piece)
            table = t.case[_sentence_starts(done)]
            cc = table.cums()
            enc.encode(cc[case], cc[case + 1] - cc[case], cc[-1])
            table.seen(case)
            for f in flags:
                lc = t.letter_case.cums()
                enc.encode(lc[f], lc[f + 1] - lc[f], lc[-1])
                t.letter_case.seen(f)
        elif kind == NUM:
            for k, d in enumerate([int(x) for x in piece] + [10]):
                table = t.digits_first if k == 0 else t.digits_next
                dc = table.cums()
                enc.encode(dc[d], dc[d + 1] - dc[d], dc[-1])
                table.seen(d)
        else:
            table = t.chars[ctx]
            cc = table.cums()
            s = CHARS.find(piece)
            if s < 0:
                enc.encode(cc[ESCAPE], cc[ESCAPE + 1] - cc[ESCAPE], cc[-1])
                point = ord(piece)
                for shift in (14, 7, 0):
                    enc.encode((point >> shift) & 0x7F, 1, 128)
            else:
                enc.encode(cc[s], cc[s + 1] - cc[s], cc[-1])
                table.seen(s)
        done += piece
        ctx = _after(kind, piece)
    cums = t.types[ctx].cums()
    enc.encode(cums[END], cums[END + 1] - cums[END], cums[-1])
    return enc.finish()


def encode(text: str) -> bytes:
    """The shortest coding of ``text`` over the model's languages (checked by decoding it)."""
    if not text:
        raise ValueError("empty text")
    best = min((_encode(text, i) for i in range(len(LANGS))), key=len)
    if decode(best, max_len=len(text)) != text:  # a bug, never expected: refuse, do not mangle
        raise RuntimeError("text model round trip failed")
    return best


def decode(data: bytes, *, max_len: int) -> str:
    """Decode at most ``max_len`` characters; anything else is a TextModelError (no bombs)."""
    try:
        return _decode(data, max_len)
    except ArithError as exc:
        raise TextModelError(str(exc)) from exc


def _decode(data: bytes, max_len: int) -> str:
    static = _model()
    dec = Decoder(data)
    lang_index = dec.decode((0, 1, 2, 3, 4))
    if lang_index >= len(LANGS):
        raise TextModelError(f"unknown language {lang_index}")
    word_cums = static.cums[LANGS[lang_index]]
    symbols = ALPHABET + "$"
    t = _Tables()
    ctx = AT_START
    done = ""
    while True:
        if dec.overrun > 8:
            raise TextModelError("coded text ends before its END")
        table = t.types[ctx]
        kind = dec.decode(table.cums())
        table.seen(kind)
        if kind == END:
            break
        if kind in (WORD, SPELL):
            if kind == WORD:
                lower = static.word(dec.decode(word_cums))
            else:
                lower = ""
                while True:
                    s = dec.decode(_spell_context(static, lower))
                    if symbols[s] == "$":
                        break
                    lower += symbols[s]
                    if len(lower) > max_len:
                        raise TextModelError(f"text longer than {max_len} characters")
                if not lower:
                    raise TextModelError("empty spelled word")
            case_table = t.case[_sentence_starts(done)]
            case = dec.decode(case_table.cums())
            case_table.seen(case)
            flags: list[int] = []
            if case == MIXED:
                for _ in lower:
                    f = dec.decode(t.letter_case.cums())
                    t.letter_case.seen(f)
                    flags.append(f)
            piece = _apply_case(lower, case, flags)
        elif kind == NUM:
            digits: list[str] = []
            while True:
                table = t.digits_first if not digits else t.digits_next
                d = dec.decode(table.cums())
                table.seen(d)
                if d == 10:
                    break
                digits.append(str(d))
                if len(digits) > max_len:
                    raise TextModelError(f"text longer than {max_len} characters")
            piece = "".join(digits)
        else:
            table = t.chars[ctx]
            s = dec.decode(table.cums())
            if s == ESCAPE:
                point = 0
                for _ in range(3):
                    point = (point << 7) | dec.decode(tuple(range(129)))
                if point > 0x10FFFF or 0xD800 <= point <= 0xDFFF:
                    raise TextModelError(f"escaped code point {point:#x} is not a character")
                piece = chr(point)
            else:
                table.seen(s)
                piece = CHARS[s]
        done += piece
        if len(done) > max_len:
            raise TextModelError(f"text longer than {max_len} characters")
        ctx = _after(kind, piece)
    return done
