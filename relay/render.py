"""How a decision is shown to a person. Every surface uses these functions, so an exercise message
always carries the exercise marker first (invariant 5)."""

from __future__ import annotations

from datetime import UTC, datetime

from relay.envelope import Decision, Kind

EXERCISE_MARKER = "OEFENING / EXERCISE"


def timestamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def headline(d: Decision, signer: str) -> str:
    parts = [d.precedence.name]
    if d.kind != Kind.DECISION:
        parts.append(d.kind.name.lower())
    line = f"{' '.join(parts)} from {signer} to {d.audience}"
    return f"[{EXERCISE_MARKER}] {line}" if d.exercise else line


def render(d: Decision, signer: str, msg_id: bytes) -> str:
    lines = [
        headline(d, signer),
        f"id       {msg_id.hex()}",
        f"issued   {timestamp(d.issued_at)}   expires {timestamp(d.expires_at)}",
        f"sequence {d.seq}",
    ]
    lines.extend(f"refers   {r.hex()}" for r in d.refs)
    if d.text:
        body = f"{EXERCISE_MARKER}: {d.text}" if d.exercise else d.text
        lines += ["", body]
    return "\n".join(lines)


def as_json(d: Decision, signer: str, msg_id: bytes) -> dict[str, object]:
    return {
        "id": msg_id.hex(),
        "issuer": signer,
        "precedence": d.precedence.name,
        "kind": d.kind.name.lower(),
        "exercise": d.exercise,
        "marker": EXERCISE_MARKER if d.exercise else None,
        "audience": d.audience.specs(),
        "issued_at": d.issued_at,
        "expires_at": d.expires_at,
        "seq": d.seq,
        "refs": [r.hex() for r in d.refs],
        "text": d.text,
    }
