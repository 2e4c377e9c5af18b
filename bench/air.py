"""Airtime of signed decisions on the mesh, per text coder, against unsigned Meshtastic text.

    python bench/air.py [--corpus FILE] [--preset NAME ...] [--json]

For each decision of the corpus (JSON lines with at least "text" and "precedence"; "audience",
"lang" and "id" are used when present): seal it as the relay does (COSE_Sign1, Ed25519; a fresh key
per run), cut it into mesh frames (relay.mesh.frames) and count what goes on air: LoRa PHY bytes per
packet = 16 B Meshtastic header + the encoded ``Data`` protobuf (portnum 256, payload, bitfield),
airtime per packet for the preset. Coders, side by side:

* ``v1-deflate``: payload version 1 (CBOR map) with raw deflate and dictionary v1 (the old default);
* ``v2-model``: payload version 2 (compact array) with the static text model (relay.text);
* ``v2-brotli``, ``v2-zstd-dict``: the same version 2 header with the text compressed by brotli
  (quality 11, text mode: its built-in static dictionary) or by zstd with dictionary v1 as raw
  content; measured for comparison only (the relay does not emit them). Skipped when the package
  is not installed.

Baselines in the same run: ``plain``, the same text as an unsigned TEXT_MESSAGE_APP packet (what
people send today), split into 232-byte texts when longer; and ``json``, a naive signed encoding
(JSON with a base64 Ed25519 signature) in 231-byte packets. ``per_hour`` is how many such decisions
one node can send in an hour within the EU868 10 % duty cycle (360 s), sending nothing else.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from meshtastic.protobuf import mesh_pb2, portnums_pb2

from relay import compress, cose
from relay.airtime import MAX_PAYLOAD, MESH_HEADER_LEN, PRESETS, duty_cycle_budget_s, time_on_air
from relay.envelope import (
    PAYLOAD_V2,
    Audience,
    Decision,
    Kind,
    Precedence,
    encode_payload,
    key_id,
    seal,
)
from relay.keys import raw_public
from relay.mesh.frames import MAX_FRAME, encode_message

DEFAULT_CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "decisions.jsonl"
ISSUED_AT = 1_800_000_000  # 2027-01-15, a whole minute
PRIVATE_APP = 256
TEXT_APP = int(portnums_pb2.PortNum.TEXT_MESSAGE_APP)
BITFIELD = 1  # the firmware always sets it (ok_to_mqtt etc.): two bytes on air
GOAL_RATIO = 1.15  # median airtime signed / plain at LONG_FAST, payload version 2
GOAL_ONE_FRAME = 0.98

Coder = Callable[[Decision, Ed25519PrivateKey], bytes]


def phy_len(portnum: int, payload: bytes) -> int:
    """LoRa PHY payload of one packet: the clear 16 B header + the encoded Data protobuf."""
    data = mesh_pb2.Data(portnum=portnum, payload=payload, bitfield=BITFIELD)
    return MESH_HEADER_LEN + int(data.ByteSize())


def packets_airtime(portnum: int, payloads: list[bytes], preset: str) -> tuple[int, float]:
    """(PHY bytes, seconds on air) summed over ``payloads``, one packet each."""
    sizes = [phy_len(portnum, p) for p in payloads]
    return sum(sizes), sum(time_on_air(n, PRESETS[preset]) for n in sizes)


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def _v2_with_body(d: Decision, key: Ed25519PrivateKey, body: bytes) -> bytes:
    """A version 2 message whose text field holds ``body`` (for the comparison coders)."""
    items = cbor2.loads(encode_payload(d, version=PAYLOAD_V2))
    items[4] = body if len(body) < len(d.text.encode()) else d.text
    kid = key_id(raw_public(key.public_key()))
    return cose.sign1(cbor2.dumps(items), key, kid=kid)


def available_coders() -> dict[str, Coder]:
    coders: dict[str, Coder] = {
        "v1-deflate": lambda d, k: seal(d, k, version=1),
        "v2-model": lambda d, k: seal(d, k, version=PAYLOAD_V2),
    }
    try:
        import brotli
    except ImportError:
        pass
    else:

        def _brotli(d: Decision, k: Ed25519PrivateKey) -> bytes:
            body = brotli.compress(d.text.encode(), quality=11, mode=brotli.MODE_TEXT)
            return _v2_with_body(d, k, body)

        coders["v2-brotli"] = _brotli
    try:
        import zstandard
    except ImportError:
        pass
    else:
        zdict = zstandard.ZstdCompressionDict(
            compress.dictionary(), dict_type=zstandard.DICT_TYPE_RAWCONTENT
        )
        zc = zstandard.ZstdCompressor(
            level=19, dict_data=zdict, write_checksum=False, write_content_size=False
        )

        def _zstd(d: Decision, k: Ed25519PrivateKey) -> bytes:
            return _v2_with_body(d, k, zc.compress(d.text.encode()))

        coders["v2-zstd-dict"] = _zstd
    return coders


def decision_of(row: dict[str, Any], seq: int) -> Decision:
    return Decision(
        issued_at=ISSUED_AT,
        expires_at=ISSUED_AT + 24 * 3600,
        precedence=Precedence[str(row.get("precedence", "ROUTINE"))],
        audience=Audience.parse(str(row.get("audience", "all"))),
        seq=seq,
        text=str(row["text"]),
        kind=Kind.DECISION,
    )


def naive_json(row: dict[str, Any], d: Decision, key: Ed25519PrivateKey, raw: bytes) -> bytes:
    return json.dumps(
        {
            "id": row.get("id", ""),
            "precedence": d.precedence.name,
            "audience": str(d.audience),
            "issued_at": d.issued_at,
            "expires_at": d.expires_at,
            "seq": d.seq,
            "text": d.text,
            "kid": base64.b64encode(key_id(raw_public(key.public_key()))).decode(),
            "sig": base64.b64encode(raw[-64:]).decode(),  # COSE_Sign1 ends with it
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


def measure(
    row: dict[str, Any],
    seq: int,
    key: Ed25519PrivateKey,
    presets: list[str],
    coders: dict[str, Coder],
) -> dict[str, Any]:
    """One decision: sizes per coder, airtime per preset and coder, and the baselines."""
    d = decision_of(row, seq)
    text = d.text.encode()
    sealed = {name: coder(d, key) for name, coder in coders.items()}
    naive = naive_json(row, d, key, sealed["v1-deflate"])
    out: dict[str, Any] = {
        "id": row.get("id", f"#{seq}"),
        "lang": row.get("lang", "?"),
        "precedence": d.precedence.name,
        "text_bytes": len(text),
        "json_bytes": len(naive),
        "signed_bytes": {name: len(raw) for name, raw in sealed.items()},
        "frames": {name: len(encode_message(raw)) for name, raw in sealed.items()},
        "presets": {},
    }
    for preset in presets:
        _, plain = packets_airtime(TEXT_APP, chunks(text, MAX_PAYLOAD), preset)
        _, as_json = packets_airtime(PRIVATE_APP, chunks(naive, MAX_FRAME), preset)
        per: dict[str, Any] = {
            "plain_airtime_s": round(plain, 4),
            "json_airtime_s": round(as_json, 4),
        }
        for name, raw in sealed.items():
            on_air, airtime = packets_airtime(PRIVATE_APP, list(encode_message(raw)), preset)
            per[name] = {
                "bytes_on_air": on_air,
                "airtime_s": round(airtime, 4),
                "ratio_vs_plain": round(airtime / plain, 4),
                "per_hour": math.floor(duty_cycle_budget_s() / airtime),
            }
        out["presets"][preset] = per
    return out


def _p90(values: list[float]) -> float:
    return (
        statistics.quantiles(values, n=10, method="inclusive")[8] if len(values) > 1 else values[0]
    )


def summarise(
    results: list[dict[str, Any]], coders: list[str], presets: list[str]
) -> dict[str, Any]:
    """Per preset, coder and language ("all" too): one-frame share, ratio median/p90, per hour."""
    langs = ["all", *sorted({str(r["lang"]) for r in results})]
    summary: dict[str, Any] = {}
    for preset in presets:
        summary[preset] = {}
        for coder in coders:
            summary[preset][coder] = {}
            for lang in langs:
                rows = [r for r in results if lang in ("all", r["lang"])]
                ratios = [r["presets"][preset][coder]["ratio_vs_plain"] for r in rows]
                summary[preset][coder][lang] = {
                    "decisions": len(rows),
                    "one_frame_share": round(
                        sum(r["frames"][coder] == 1 for r in rows) / len(rows), 4
                    ),
                    "median_signed_bytes": statistics.median(
                        r["signed_bytes"][coder] for r in rows
                    ),
                    "median_ratio_vs_plain": round(statistics.median(ratios), 4),
                    "p90_ratio_vs_plain": round(_p90(ratios), 4),
                    "median_per_hour": statistics.median(
                        r["presets"][preset][coder]["per_hour"] for r in rows
                    ),
                    "median_plain_per_hour": statistics.median(
                        math.floor(duty_cycle_budget_s() / r["presets"][preset]["plain_airtime_s"])
                        for r in rows
                    ),
                }
    return summary


def goals(summary: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals, on this corpus: LONG_FAST, payload version 2, all languages."""
    s = summary.get("LONG_FAST", {}).get("v2-model", {}).get("all")
    if s is None:
        return {}
    return {
        "median_ratio_vs_plain": s["median_ratio_vs_plain"],
        "goal_ratio": s["median_ratio_vs_plain"] <= GOAL_RATIO,
        "one_frame_share": s["one_frame_share"],
        "goal_one_frame": s["one_frame_share"] >= GOAL_ONE_FRAME,
    }


def print_table(summary: dict[str, Any], n: int) -> None:
    print(f"Airtime of {n} signed decisions against the same text unsigned (EU868, 360 s/h)")
    head = f"{'preset':<12}{'coder':<14}{'lang':<5}{'n':>4}{'1 frame':>9}{'bytes':>7}"
    print(head + f"{'median x':>10}{'p90 x':>8}{'/hour':>7}{'plain/h':>9}")
    for preset, by_coder in summary.items():
        for coder, by_lang in by_coder.items():
            for lang, s in by_lang.items():
                print(
                    f"{preset:<12}{coder:<14}{lang:<5}{s['decisions']:>4}"
                    f"{s['one_frame_share']:>9.0%}{s['median_signed_bytes']:>7.0f}"
                    f"{s['median_ratio_vs_plain']:>10.3f}{s['p90_ratio_vs_plain']:>8.3f}"
                    f"{s['median_per_hour']:>7.0f}{s['median_plain_per_hour']:>9.0f}"
                )
    g = goals(summary)
    if g:
        print()
        verdict = "ok" if g["goal_ratio"] else "MISSED"
        print(
            f"LONG_FAST v2-model: median {g['median_ratio_vs_plain']:.3f}x plain "
            f"(goal <= {GOAL_RATIO}: {verdict}); "
            f"{g['one_frame_share']:.0%} in one frame "
            f"(goal >= {GOAL_ONE_FRAME:.0%}: {'ok' if g['goal_one_frame'] else 'MISSED'})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument(
        "--preset", action="append", choices=sorted(PRESETS), help="(repeatable; default: all)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    presets = args.preset or sorted(PRESETS)
    key = Ed25519PrivateKey.generate()
    rows = [json.loads(line) for line in args.corpus.read_text().splitlines() if line.strip()]
    if not rows:
        print(f"{args.corpus}: no decisions", file=sys.stderr)
        return 1
    coders = available_coders()
    results = [measure(row, i + 1, key, presets, coders) for i, row in enumerate(rows)]
    summary = summarise(results, list(coders), presets)
    if args.json:
        print(json.dumps({"summary": summary, "goals": goals(summary), "decisions": results}))
    else:
        print_table(summary, len(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
