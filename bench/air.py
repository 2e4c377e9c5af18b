"""Airtime of signed decisions on the mesh, against unsigned Meshtastic text and naive JSON.

    python bench/air.py [--corpus FILE] [--preset LONG_FAST] [--json]

For each decision of the corpus (JSON lines: id, precedence, audience, text): seal it as the relay
does (COSE_Sign1, Ed25519, compressed payload; a fresh key per run), cut it into mesh frames
(relay.mesh.frames) and count what goes on air: LoRa PHY bytes per packet = 16 B Meshtastic header
+ the encoded ``Data`` protobuf (portnum 256, payload, bitfield), airtime per packet for the preset.
Baselines in the same run:

* ``plain``: the same text as an unsigned TEXT_MESSAGE_APP packet (what people send today),
  split into 232-byte texts when longer;
* ``json``: a naive signed encoding, JSON with the fields and a base64 Ed25519 signature, split
  into 231-byte packets on the private portnum.

``per_hour`` is how many such decisions one node can send in an hour within the EU868 10 % duty
cycle (360 s), if it sends nothing else (no relays, no receipts, no retries).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from meshtastic.protobuf import mesh_pb2, portnums_pb2

from relay.airtime import MAX_PAYLOAD, MESH_HEADER_LEN, PRESETS, duty_cycle_budget_s, time_on_air
from relay.envelope import Audience, Decision, Kind, Precedence, key_id, seal
from relay.keys import raw_public
from relay.mesh.frames import MAX_FRAME, encode_message

DEFAULT_CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "decisions.jsonl"
ISSUED_AT = 1_800_000_000
PRIVATE_APP = 256
TEXT_APP = int(portnums_pb2.PortNum.TEXT_MESSAGE_APP)
BITFIELD = 1  # the firmware always sets it (ok_to_mqtt etc.): two bytes on air


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


def measure(row: dict[str, Any], seq: int, key: Ed25519PrivateKey, preset: str) -> dict[str, Any]:
    precedence = Precedence[str(row.get("precedence", "ROUTINE"))]
    decision = Decision(
        issued_at=ISSUED_AT,
        expires_at=ISSUED_AT + 24 * 3600,
        precedence=precedence,
        audience=Audience.parse(str(row.get("audience", "all"))),
        seq=seq,
        text=str(row["text"]),
        kind=Kind.DECISION,
    )
    raw = seal(decision, key)
    frames = list(encode_message(raw))
    on_air, airtime = packets_airtime(PRIVATE_APP, frames, preset)
    text = str(row["text"]).encode()
    _, plain = packets_airtime(TEXT_APP, chunks(text, MAX_PAYLOAD), preset)
    naive = json.dumps(
        {
            "id": row["id"],
            "precedence": precedence.name,
            "audience": row.get("audience", "all"),
            "issued_at": decision.issued_at,
            "expires_at": decision.expires_at,
            "seq": seq,
            "text": row["text"],
            "kid": base64.b64encode(key_id(raw_public(key.public_key()))).decode(),
            "sig": base64.b64encode(raw[-64:]).decode(),  # COSE_Sign1 ends with it
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()
    _, json_airtime = packets_airtime(PRIVATE_APP, chunks(naive, MAX_FRAME), preset)
    return {
        "id": row["id"],
        "precedence": precedence.name,
        "text_bytes": len(text),
        "signed_bytes": len(raw),
        "frames": len(frames),
        "bytes_on_air": on_air,
        "airtime_s": round(airtime, 4),
        "plain_airtime_s": round(plain, 4),
        "json_bytes": len(naive),
        "json_airtime_s": round(json_airtime, 4),
        "ratio_vs_plain": round(airtime / plain, 3),
        "per_hour": math.floor(duty_cycle_budget_s() / airtime),
    }


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    single = sum(1 for r in results if r["frames"] == 1) / len(results)
    ratio = statistics.median(r["airtime_s"] / r["plain_airtime_s"] for r in results)
    return {
        "decisions": len(results),
        "one_frame_share": single,
        "median_ratio_vs_plain": ratio,
        "median_airtime_s": statistics.median(r["airtime_s"] for r in results),
        "median_plain_airtime_s": statistics.median(r["plain_airtime_s"] for r in results),
        "median_json_airtime_s": statistics.median(r["json_airtime_s"] for r in results),
        "median_per_hour": statistics.median(r["per_hour"] for r in results),
        "goal_one_frame": single >= 0.95,
        "goal_ratio": ratio <= 1.25,
    }


def print_table(results: list[dict[str, Any]], preset: str) -> None:
    cols = [
        ("id", "id", 6),
        ("text B", "text_bytes", 7),
        ("signed B", "signed_bytes", 9),
        ("frames", "frames", 7),
        ("air B", "bytes_on_air", 6),
        ("air s", "airtime_s", 7),
        ("plain s", "plain_airtime_s", 8),
        ("ratio", "ratio_vs_plain", 6),
        ("json s", "json_airtime_s", 7),
        ("/hour", "per_hour", 6),
    ]
    print(
        f"Airtime per decision, preset {preset}, EU868 duty cycle {duty_cycle_budget_s():.0f} s/h"
    )
    print(" ".join(f"{title:>{width}}" for title, _, width in cols))
    for r in results:
        print(" ".join(f"{r[key]!s:>{width}}" for _, key, width in cols))
    s = summary(results)
    print()
    print(f"decisions                      {s['decisions']}")
    verdict = "ok" if s["goal_one_frame"] else "MISSED"
    print(f"in one frame                   {s['one_frame_share']:.0%}  (goal >= 95 %: {verdict})")
    verdict = "ok" if s["goal_ratio"] else "MISSED"
    ratio = s["median_ratio_vs_plain"]
    print(f"median airtime vs plain text   {ratio:.3f}x (goal <= 1.25x: {verdict})")
    print(
        f"median airtime                 signed {s['median_airtime_s']:.3f} s, "
        f"plain {s['median_plain_airtime_s']:.3f} s, naive JSON {s['median_json_airtime_s']:.3f} s"
    )
    print(f"median decisions per hour      {s['median_per_hour']:.0f} (one node, nothing else)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--preset", default="LONG_FAST", choices=sorted(PRESETS))
    parser.add_argument("--json", action="store_true", help="print a JSON list, one per decision")
    args = parser.parse_args(argv)
    key = Ed25519PrivateKey.generate()
    rows = [json.loads(line) for line in args.corpus.read_text().splitlines() if line.strip()]
    if not rows:
        print(f"{args.corpus}: no decisions", file=sys.stderr)
        return 1
    results = [measure(row, i + 1, key, args.preset) for i, row in enumerate(rows)]
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print_table(results, args.preset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
