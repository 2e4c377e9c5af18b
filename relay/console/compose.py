"""Composing a decision in the console: the audience a key may address, the form, and its checks.

Pure functions over the node's answers (roster, the original of a cancel or supersede): the web
handlers in relay.console.app fetch those and render what these return.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.airtime import Preset
from relay.cli.common import DEFAULT_EXPIRY
from relay.console import views
from relay.console.text import t
from relay.envelope import Audience, Decision, Kind, Precedence, seal
from relay.mesh.events import frame_airtime
from relay.mesh.frames import encode_message
from relay.trust import Scope

SIGNING_KINDS = {
    "decision": Kind.DECISION,
    "notice": Kind.NOTICE,
    "cancel": Kind.CANCEL,
    "supersede": Kind.SUPERSEDE,
}
FOLLOW_UPS = ("cancel", "supersede")  # the kinds that refer to an earlier message


class Refusal(Exception):
    """A compose form that cannot be signed: the reason, shown to the user and audited."""

    def __init__(self, reason: str, original: dict[str, Any] | None, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.original = original
        self.status = status


def audience_options(
    roster: Mapping[str, Any], issuer: str, lang: str = "nl"
) -> list[tuple[str, str]]:
    """The audience choices this issuer's key may address, as (spec, label)."""
    entries = roster.get("entries", [])
    me = next((x for x in entries if x["name"] == issuer), None)
    if me is None:
        return []
    scope = Scope.parse(me["scope"])
    nodes = {x["name"]: frozenset(x["regions"]) for x in entries if x["role"] == "node"}
    regions = sorted({r for rs in nodes.values() for r in rs} | set(scope.regions))
    out: list[tuple[str, str]] = []
    if scope.everyone:
        out.append(("all", t(lang, "everyone")))
    out += [
        (f"region:{r}", f"{t(lang, 'region')} {r}")
        for r in regions
        if scope.everyone or r in scope.regions
    ]
    for name, rs in sorted(nodes.items()):
        if scope.everyone or name in scope.nodes or rs & scope.regions:
            where = ",".join(sorted(rs)) or "—"
            out.append((f"node:{name}", f"{t(lang, 'node')} {name} ({where})"))
    return out


def parse_form(form: Mapping[str, Any], to: list[str]) -> views.ComposeForm:
    """The compose form as posted (missing or non-text fields read as empty)."""

    def one(key: str) -> str:
        v = form.get(key, "")
        return v if isinstance(v, str) else ""

    validity = one("validity")
    return views.ComposeForm(
        precedence=one("precedence").upper(),
        to=tuple(to),
        text=one("text"),
        validity_min=int(validity) if validity.isdigit() else -1,
        exercise=one("exercise") == "on",
        kind=one("kind") or "decision",
        ref=one("ref").lower(),
    )


def check(
    f: views.ComposeForm,
    issuer: str,
    roster: Mapping[str, Any],
    original: dict[str, Any] | None,
    now: float,
) -> Decision:
    """The decision (seq 0) a form asks for, checked against the key's scope; raises Refusal.

    `original` is the node's copy of the message a cancel or supersede refers to (None when the
    node does not hold it, or for a new decision)."""
    if f.precedence not in Precedence.__members__:
        raise Refusal("voorrang ontbreekt / choose a precedence", None)
    precedence = Precedence[f.precedence]
    if f.kind not in SIGNING_KINDS:
        raise Refusal(f"soort {f.kind!r} onbekend / unknown kind", None)
    kind = SIGNING_KINDS[f.kind]
    refs: tuple[bytes, ...] = ()
    if kind in (Kind.CANCEL, Kind.SUPERSEDE):
        if original is None:
            raise Refusal("het bericht waarnaar verwezen wordt is onbekend / unknown ref", None)
        if original["exercise"] != f.exercise:
            raise Refusal("oefening en echt mogen niet gemengd / exercise mismatch", original)
        refs = (bytes.fromhex(f.ref),)
    else:
        original = None
    if not f.to:
        raise Refusal("kies ontvangers / choose an audience", original)
    offered = {spec for spec, _ in audience_options(roster, issuer)}
    outside = [s for s in f.to if s not in offered]
    try:
        audience = Audience.parse(list(f.to))
    except ValueError as exc:
        raise Refusal(str(exc), original) from None
    entries = roster.get("entries", [])
    me = next((x for x in entries if x["name"] == issuer), None)
    nodes = {x["name"]: frozenset(x["regions"]) for x in entries if x["role"] == "node"}
    if outside or me is None or not Scope.parse(me["scope"]).covers(audience, nodes):
        where = ", ".join(outside) or str(audience)
        raise Refusal(f"buiten het bereik van sleutel {issuer}: {where}", original, 403)
    if f.validity_min not in (0, *views.VALIDITY_CHOICES):
        raise Refusal("ongeldige geldigheidsduur / bad validity", original)
    if kind != Kind.CANCEL and not f.text.strip():
        raise Refusal("tekst ontbreekt / text is empty", original)
    lifetime = f.validity_min * 60 or DEFAULT_EXPIRY[precedence]
    issued = int(now)
    try:
        return Decision(
            issued_at=issued,
            expires_at=issued + lifetime,
            precedence=precedence,
            audience=audience,
            seq=0,
            text=f.text,
            kind=kind,
            exercise=f.exercise,
            refs=refs,
        )
    except ValueError as exc:
        raise Refusal(str(exc), original) from None


@dataclasses.dataclass(frozen=True)
class Estimate:
    """What a decision costs on the mesh: its signed size, its frames and their airtime."""

    size: int
    frames: int
    airtime_s: float


def estimate(decision: Decision, seq: int, kid: bytes, preset: Preset) -> Estimate:
    """Seal the decision with a throwaway key (same size as the real signature) and measure it."""
    probe = dataclasses.replace(decision, seq=seq)
    raw = seal(probe, Ed25519PrivateKey.generate(), kid=kid)
    frames = encode_message(raw)
    air = sum(frame_airtime(len(fr), preset) for fr in frames)
    return Estimate(size=len(raw), frames=len(frames), airtime_s=air)
