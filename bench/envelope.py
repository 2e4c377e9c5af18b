"""Benchmark the signed-decision envelope: speed against raw Ed25519, size against other encodings.

Usage: ``python bench/envelope.py [--corpus FILE] [--json] [--repeat N] [--rounds N] [--limit N]``

Speed. Each repetition times, over the whole corpus and ``--rounds`` times in a row:

- ``seal`` (CBOR payload, dictionary deflate, COSE_Sign1) against a raw Ed25519 ``sign`` of the
  same CBOR payload bytes (the baseline: what signing costs with no envelope at all);
- ``open_envelope`` plus ``TrustState.check`` (parse, inflate, roster lookup, signature, rules)
  against a raw Ed25519 ``verify`` of those payload bytes;
- ``open_envelope`` alone, to show how the verify time splits between parsing and checking;
- the post-quantum hybrid (docs/wire-format.md section 9): an ML-DSA-44 attestation of each
  decision's message id, signed (``pq.attest``) and opened plus checked against the roster's key
  hash (``pq.open_attestation`` + ``pq.check``), alone and together with the Ed25519 envelope,
  against the same raw Ed25519 baselines.

Baseline and envelope run interleaved in the same repetition; the table shows the median
per-operation time over the repetitions, the matching rate and the ratio envelope / raw.

Size. Every corpus line becomes a decision (issued at a fixed time, valid for a day, its own
sequence number) and is encoded four ways, each signed with Ed25519:

- ``naive JSON``: compact UTF-8 JSON of the same fields (defaults omitted, as ours does; key id in
  hex) with a base64 signature field, i.e. what a straightforward implementation would send;
- ``CBOR, plain text``: our COSE_Sign1 and CBOR payload, text never compressed;
- ``CBOR, deflate``: the same with raw deflate but no preset dictionary;
- ``CBOR, deflate+dict``: the relay's encoding (``seal``), deflate primed with dictionary-v1.
- ``v2, text model``: payload version 2 (``seal(..., version=2)``), docs/wire-format.md section 2a.
- ``ML-DSA-44 attestation`` and ``hybrid: decision + att.``: the post-quantum attestation alone
  and with its decision, what one PQ-enabled decision costs on MQTT (never on the mesh).

Percentiles are nearest-rank. ``within 227 B`` is the share that fits the 227 B budget the test
suite holds the corpus to (one LoRa frame carries at most 231 B on a private portnum).
This script is not part of the test run and nothing asserts on its timings.
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import json
import math
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey

from relay import cose, pq
from relay.envelope import (
    K_TEXT,
    K_TEXT_DEFLATED,
    PAYLOAD_V2,
    Audience,
    Decision,
    Envelope,
    Precedence,
    encode_payload,
    key_id,
    open_envelope,
    seal,
)
from relay.keys import raw_public
from relay.trust import (
    DEFAULT_KINDS,
    Accepted,
    Role,
    Roster,
    RosterEntry,
    Scope,
    TrustState,
    roster_decision,
)

DEFAULT_CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "decisions.jsonl"
NOW = 1_800_000_000
LIFETIME_S = 86_400
BUDGET = 227
ENCODINGS = (
    "naive JSON",
    "CBOR, plain text",
    "CBOR, deflate",
    "CBOR, deflate+dict",
    "v2, text model",
    "ML-DSA-44 attestation",
    "hybrid: decision + att.",
)


# ---------------------------------------------------------------------------------------------
# Corpus and keys


def load_corpus(path: Path, limit: int | None = None) -> list[Decision]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    if limit is not None:
        rows = rows[:limit]
    return [
        Decision(
            issued_at=NOW,
            expires_at=NOW + LIFETIME_S,
            precedence=Precedence[row["precedence"]],
            audience=Audience.parse(row["audience"]),
            seq=1000 + i,
            text=row["text"],
        )
        for i, row in enumerate(rows)
    ]


def trust_world(issuer: Ed25519PrivateKey, pq_key: MLDSA44PrivateKey | None = None) -> TrustState:
    """A root and a roster holding one national issuer, as a receiving node would see them."""
    root = Ed25519PrivateKey.generate()
    entry = RosterEntry(
        public_key=raw_public(issuer.public_key()),
        name="national",
        role=Role.ISSUER,
        scope=Scope(everyone=True),
        kinds=DEFAULT_KINDS[Role.ISSUER],
        pq_key=None if pq_key is None else pq.key_hash(pq_key.public_key().public_bytes_raw()),
    )
    state = TrustState(root_public=raw_public(root.public_key()))
    env = open_envelope(seal(roster_decision(Roster(serial=2, entries=(entry,)), NOW), root))
    assert isinstance(env, Envelope), env
    verdict = state.check(env, NOW)
    assert isinstance(verdict, Accepted), verdict
    state.apply(verdict)
    return state


# ---------------------------------------------------------------------------------------------
# Sizes


def naive_json(d: Decision, key: Ed25519PrivateKey) -> bytes:
    """The same fields as compact JSON, signed, with the signature appended in base64."""
    fields: dict[str, object] = {
        "v": 1,
        "kid": key_id(raw_public(key.public_key())).hex(),
        "issued_at": d.issued_at,
        "expires_at": d.expires_at,
        "precedence": d.precedence.name,
        "audience": d.audience.specs(),
        "seq": d.seq,
        "text": d.text,
    }
    body = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    signature = base64.b64encode(key.sign(body.encode())).decode()
    return json.dumps(
        {**fields, "sig": signature}, ensure_ascii=False, separators=(",", ":")
    ).encode()


def _rewrite_text(d: Decision, key: Ed25519PrivateKey, pack: Callable[[bytes], bytes]) -> bytes:
    """Our envelope with the text field encoded by ``pack`` instead of dictionary deflate."""
    payload = encode_payload(d)
    m: dict[int, Any] = cbor2.loads(payload)
    assert cbor2.dumps(m) == payload, "re-encoding must reproduce the payload exactly"
    m.pop(K_TEXT, None)
    m.pop(K_TEXT_DEFLATED, None)
    if d.text:
        plain = d.text.encode()
        packed = pack(plain)
        # Same rule as encode_payload: the compressed form only when it is shorter.
        if len(packed) < len(plain):
            m[K_TEXT_DEFLATED] = packed
        else:
            m[K_TEXT] = d.text
    return cose.sign1(cbor2.dumps(m), key, kid=key_id(raw_public(key.public_key())))


def deflate_no_dict(text: bytes) -> bytes:
    comp = zlib.compressobj(level=9, method=zlib.DEFLATED, wbits=-15, memLevel=9)
    return comp.compress(text) + comp.flush()


def encoded_sizes(
    decisions: Sequence[Decision], key: Ed25519PrivateKey, pq_key: MLDSA44PrivateKey
) -> dict[str, list[int]]:
    sealed = [seal(d, key) for d in decisions]
    kid = key_id(raw_public(key.public_key()))
    attested = [len(pq.attest(cose_id(raw), kid, pq_key)) for raw in sealed]
    return {
        "ML-DSA-44 attestation": attested,
        "hybrid: decision + att.": [len(r) + a for r, a in zip(sealed, attested, strict=True)],
        "naive JSON": [len(naive_json(d, key)) for d in decisions],
        "CBOR, plain text": [len(_rewrite_text(d, key, lambda b: b)) for d in decisions],
        "CBOR, deflate": [len(_rewrite_text(d, key, deflate_no_dict)) for d in decisions],
        "CBOR, deflate+dict": [len(seal(d, key)) for d in decisions],
        "v2, text model": [len(seal(d, key, version=PAYLOAD_V2)) for d in decisions],
    }


def nearest_rank(values: Sequence[int], pct: float) -> int:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def size_stats(sizes: Sequence[int]) -> dict[str, float]:
    return {
        "p50": nearest_rank(sizes, 50),
        "p90": nearest_rank(sizes, 90),
        "max": max(sizes),
        "within_budget": sum(s <= BUDGET for s in sizes) / len(sizes),
    }


# ---------------------------------------------------------------------------------------------
# Speed


@dataclass(frozen=True, slots=True)
class Workload:
    decisions: list[Decision]
    key: Ed25519PrivateKey
    trust: TrustState
    payloads: list[bytes]  # the CBOR payloads, for the raw baseline
    signatures: list[bytes]  # raw Ed25519 signatures over those payloads
    sealed: list[bytes]  # the envelopes
    sealed_v2: list[bytes] = field(default_factory=list)  # the same in payload version 2
    pq_key: MLDSA44PrivateKey = field(default_factory=MLDSA44PrivateKey.generate)
    attestations: list[bytes] = field(default_factory=list)  # ML-DSA-44, one per envelope


def make_workload(decisions: list[Decision]) -> Workload:
    key = Ed25519PrivateKey.generate()
    pq_key = MLDSA44PrivateKey.generate()
    payloads = [encode_payload(d) for d in decisions]
    sealed = [seal(d, key) for d in decisions]
    kid = key_id(raw_public(key.public_key()))
    work = Workload(
        decisions=decisions,
        key=key,
        trust=trust_world(key, pq_key),
        payloads=payloads,
        signatures=[key.sign(p) for p in payloads],
        sealed=sealed,
        sealed_v2=[seal(d, key, version=PAYLOAD_V2) for d in decisions],
        pq_key=pq_key,
        attestations=[pq.attest(cose_id(raw), kid, pq_key) for raw in sealed],
    )
    for raw in (*sealed, *work.sealed_v2):  # the verify benchmark must time the accepting path
        assert isinstance(_open_and_check(work, raw), Accepted)
    for att in work.attestations:
        assert _check_attestation(work, att) is None
    return work


def cose_id(raw: bytes) -> bytes:
    env = open_envelope(raw)
    assert isinstance(env, Envelope), env
    return env.id


def _check_attestation(work: Workload, raw: bytes) -> object:
    att = pq.open_attestation(raw)
    if not isinstance(att, pq.Attestation):
        return att
    entry = work.trust.entry_for(att.kid)
    return pq.check(att, kid=att.kid, pq_key_hash=entry.pq_key if entry else None, msg_id=None)


def _attest(work: Workload) -> None:
    kid = key_id(raw_public(work.key.public_key()))
    for raw in work.sealed:
        pq.attest(hashlib.sha256(raw).digest(), kid, work.pq_key)


def _seal_hybrid(work: Workload) -> None:
    kid = key_id(raw_public(work.key.public_key()))
    for d in work.decisions:
        pq.attest(hashlib.sha256(seal(d, work.key)).digest(), kid, work.pq_key)


def _check_pq(work: Workload) -> None:
    for att in work.attestations:
        _check_attestation(work, att)


def _check_hybrid(work: Workload) -> None:
    for raw, att in zip(work.sealed, work.attestations, strict=True):
        _open_and_check(work, raw)
        _check_attestation(work, att)


def _open_and_check(work: Workload, raw: bytes) -> object:
    env = open_envelope(raw)
    return env if not isinstance(env, Envelope) else work.trust.check(env, NOW)


def _raw_sign(work: Workload) -> None:
    sign = work.key.sign
    for p in work.payloads:
        sign(p)


def _seal(work: Workload) -> None:
    for d in work.decisions:
        seal(d, work.key)


def _seal_v2(work: Workload) -> None:
    for d in work.decisions:
        seal(d, work.key, version=PAYLOAD_V2)


def _open_check_v2(work: Workload) -> None:
    for raw in work.sealed_v2:
        _open_and_check(work, raw)


def _open_only_v2(work: Workload) -> None:
    for raw in work.sealed_v2:
        open_envelope(raw)


def _raw_verify(work: Workload) -> None:
    verify = work.key.public_key().verify
    for sig, p in zip(work.signatures, work.payloads, strict=True):
        verify(sig, p)


def _open_check(work: Workload) -> None:
    for raw in work.sealed:
        _open_and_check(work, raw)


def _open_only(work: Workload) -> None:
    for raw in work.sealed:
        open_envelope(raw)


OPERATIONS: dict[str, Callable[[Workload], None]] = {
    "sign: raw Ed25519": _raw_sign,
    "sign: seal": _seal,
    "sign: seal v2 (text model)": _seal_v2,
    "verify: raw Ed25519": _raw_verify,
    "verify: open_envelope + check": _open_check,
    "verify: open_envelope only": _open_only,
    "verify: v2 open_envelope + check": _open_check_v2,
    "verify: v2 open_envelope only": _open_only_v2,
    "sign: ML-DSA-44 attestation": _attest,
    "sign: hybrid (seal + attest)": _seal_hybrid,
    "verify: ML-DSA-44 attestation": _check_pq,
    "verify: hybrid (both)": _check_hybrid,
}
BASELINE = {
    "sign: seal": "sign: raw Ed25519",
    "sign: seal v2 (text model)": "sign: raw Ed25519",
    "verify: open_envelope + check": "verify: raw Ed25519",
    "verify: open_envelope only": "verify: raw Ed25519",
    "verify: v2 open_envelope + check": "verify: raw Ed25519",
    "verify: v2 open_envelope only": "verify: raw Ed25519",
    "sign: ML-DSA-44 attestation": "sign: raw Ed25519",
    "sign: hybrid (seal + attest)": "sign: raw Ed25519",
    "verify: ML-DSA-44 attestation": "verify: raw Ed25519",
    "verify: hybrid (both)": "verify: raw Ed25519",
}


def time_operations(work: Workload, repeat: int, rounds: int) -> dict[str, list[float]]:
    """Per-operation seconds for each repetition, all operations interleaved in each one."""
    samples: dict[str, list[float]] = {name: [] for name in OPERATIONS}
    ops = len(work.decisions) * rounds
    for fn in OPERATIONS.values():  # warm up caches (dictionary, imports)
        fn(work)
    for _ in range(repeat):
        for name, fn in OPERATIONS.items():
            gc_was_enabled = gc.isenabled()
            gc.disable()
            try:
                start = time.perf_counter_ns()
                for _ in range(rounds):
                    fn(work)
                elapsed = time.perf_counter_ns() - start
            finally:
                if gc_was_enabled:
                    gc.enable()
            samples[name].append(elapsed / 1e9 / ops)
    return samples


def speed_rows(samples: dict[str, list[float]]) -> list[dict[str, Any]]:
    medians = {name: statistics.median(values) for name, values in samples.items()}
    rows: list[dict[str, Any]] = []
    for name, median in medians.items():
        base = BASELINE.get(name)
        rows.append(
            {
                "operation": name,
                "median_us": median * 1e6,
                "ops_per_s": 1 / median,
                "ratio": median / medians[base] if base else 1.0,
                "baseline": base,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# Output


def run(corpus: Path, *, repeat: int, rounds: int, limit: int | None) -> dict[str, Any]:
    decisions = load_corpus(corpus, limit)
    if not decisions:
        raise SystemExit(f"{corpus}: no decisions")
    work = make_workload(decisions)
    samples = time_operations(work, repeat, rounds)
    sizes = encoded_sizes(decisions, work.key, work.pq_key)
    return {
        "corpus": corpus.name,
        "decisions": len(decisions),
        "repeat": repeat,
        "ops_per_repetition": len(decisions) * rounds,
        "speed": speed_rows(samples),
        "budget_bytes": BUDGET,
        "sizes": [{"encoding": name, **size_stats(sizes[name])} for name in ENCODINGS],
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"Envelope benchmark: {result['decisions']} decisions from {result['corpus']}, "
        f"{result['repeat']} repetitions of {result['ops_per_repetition']} operations each",
        "",
        f"{'operation':<32}{'median µs/op':>14}{'ops/s':>10}{'× raw':>8}",
    ]
    for row in result["speed"]:
        ratio = f"{row['ratio']:.2f}" if row["baseline"] else "1"
        lines.append(
            f"{row['operation']:<32}{row['median_us']:>14.1f}{row['ops_per_s']:>10.0f}{ratio:>8}"
        )
    budget = result["budget_bytes"]
    lines += ["", f"{'encoding (signed, bytes)':<26}{'p50':>6}{'p90':>6}{'max':>6}"]
    lines[-1] += f"{'≤ ' + str(budget) + ' B':>10}"
    for row in result["sizes"]:
        lines.append(
            f"{row['encoding']:<26}{row['p50']:>6}{row['p90']:>6}{row['max']:>6}"
            f"{row['within_budget']:>10.0%}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="decisions JSONL")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--repeat", type=int, default=7, help="repetitions (median is reported)")
    parser.add_argument("--rounds", type=int, default=20, help="passes over the corpus per rep")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N decisions")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.rounds < 1:
        parser.error("--repeat and --rounds must be at least 1")
    result = run(args.corpus, repeat=args.repeat, rounds=args.rounds, limit=args.limit)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
