"""Build the version-2 text model file from general-language word frequencies.

    python -m relay.text.build [-o relay/data/textmodel-v2.cbor.zz]

Needs the ``wordfreq`` package (a build-time tool, not a run-time dependency: ``pip install
wordfreq==3.1.1``). The model is general language by construction: the most frequent words of
Dutch, English and German as wordfreq measures them over its sources (subtitles, Wikipedia, news,
books, the web), and letter statistics over the most frequent word forms. Nothing in it comes from
the relay's test or benchmark corpora.

The file is part of the wire format: a message coded with it decodes only with the same model, so
``relay.text.model.MODEL_SHA256`` pins the bytes, and a different model needs a new model version.
The build is deterministic for one wordfreq version: it iterates in sorted orders only and, past
the conversion of wordfreq's floats, uses integer arithmetic.
"""

from __future__ import annotations

import argparse
import zlib
from collections import Counter
from pathlib import Path

import cbor2

from relay.text.model import (
    ALPHABET,
    CONTEXT_MIN,
    LANGS,
    MODEL_NAME,
    MODEL_VERSION,
    SPELL_SCALE,
    WORD_TOTAL,
)

WORDS_PER_LANG = 20000  # vocabulary: the top words of each language (union over the languages)
SPELL_WORDS_PER_LANG = 40000  # word forms whose letters train the spelling model
OWN_PERCENT = 85  # a word's probability: 85 % its own language, 15 % the others
WORDFREQ_VERSION = "3.1.1"


def _word_ok(word: str) -> bool:
    return bool(word) and all(c in ALPHABET for c in word)


def build() -> dict[str, object]:
    from importlib.metadata import version

    import wordfreq  # build-time only

    found = version("wordfreq")
    if found != WORDFREQ_VERSION:
        raise SystemExit(f"wordfreq {WORDFREQ_VERSION} builds the pinned model, not {found}")
    # top_n_list counts words our alphabet cannot spell: take the first WORDS_PER_LANG that fit.
    chosen: set[str] = set()
    for lang in LANGS:
        fit = [w for w in wordfreq.top_n_list(lang, WORDS_PER_LANG * 2) if _word_ok(w)]
        chosen.update(fit[:WORDS_PER_LANG])
    tables_of = {lang: wordfreq.get_frequency_dict(lang) for lang in LANGS}
    # Integers only from here: each frequency in units of 10^-12 (a float's exact rounding), so
    # the build gives the same tables on every machine and in seconds.
    freq_of = {
        lang: {w: round(tables_of[lang].get(w, 0.0) * 10**12) for w in chosen} for lang in LANGS
    }
    totals = {lang: sum(freq_of[lang].values()) for lang in LANGS}
    unit = 1 << 64  # a share of 1 within a language
    share_of = {
        lang: {w: freq_of[lang][w] * unit // totals[lang] for w in chosen} for lang in LANGS
    }
    # Order the vocabulary by its summed share over the languages (ties by spelling), so the most
    # useful words come first in the file.
    words = sorted(chosen, key=lambda w: (-sum(share_of[lang][w] for lang in LANGS), w))
    budget = WORD_TOTAL - len(words)  # every word keeps a count of at least one
    tables: dict[str, list[int]] = {}
    for lang in LANGS:
        others = [o for o in LANGS if o != lang]
        tables[lang] = [
            1
            + (
                OWN_PERCENT * len(others) * share_of[lang][w]
                + (100 - OWN_PERCENT) * sum(share_of[o][w] for o in others)
            )
            * budget
            // (100 * len(others) * unit)
            for w in words
        ]
    # Spelling model: letter bigram contexts over frequent word forms of all three languages.
    counts: dict[str, Counter[str]] = {}
    for lang in LANGS:
        for w in wordfreq.top_n_list(lang, SPELL_WORDS_PER_LANG):
            if not _word_ok(w):
                continue
            padded = "^^" + w + "$"
            for i in range(2, len(padded)):
                counts.setdefault(padded[i - 2 : i], Counter())[padded[i]] += 1
                counts.setdefault(padded[i - 1], Counter())[padded[i]] += 1
    for one in "^" + ALPHABET:  # every one-letter context exists: the back-off never fails
        counts.setdefault(one, Counter())
    symbols = ALPHABET + "$"
    spell: dict[str, list[int]] = {}
    for ctx in sorted(counts):
        c = counts[ctx]
        n = max(1, sum(c.values()))
        if len(ctx) == 2 and n < CONTEXT_MIN:
            continue  # too little evidence: the decoder backs off to the one-letter context
        spell[ctx] = [1 + c[s] * SPELL_SCALE // n for s in symbols]
    return {
        "version": MODEL_VERSION,
        "source": f"wordfreq {WORDFREQ_VERSION} (data CC BY-SA 4.0, Robyn Speer and contributors)",
        "alphabet": ALPHABET,
        "langs": list(LANGS),
        "words": "".join(words),
        "lengths": bytes(len(w) for w in words),
        # Tables as packed big-endian unsigned integers: a node loads them without building
        # tens of thousands of Python objects first.
        "tables": {lang: b"".join(f.to_bytes(4, "big") for f in t) for lang, t in tables.items()},
        "spell": {ctx: b"".join(f.to_bytes(2, "big") for f in row) for ctx, row in spell.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parent.parent / "data" / MODEL_NAME
    p.add_argument("-o", "--output", type=Path, default=default)
    args = p.parse_args()
    blob = zlib.compress(cbor2.dumps(build(), canonical=True), 9)
    args.output.write_bytes(blob)
    print(f"{args.output.name}: {len(blob)} bytes")


if __name__ == "__main__":
    main()
