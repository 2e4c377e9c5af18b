"""CAP 1.2 alert <-> signed decision: the mapping tables and the import. Pure code.

``import_alert`` turns a parsed ``Alert`` into a ``Decision`` ready to seal (or says why not);
``relay.cap.export.export_alert`` turns a verified decision back into an ``Alert``. The tables
are the documented mapping (docs/cap.md); tests/cap/test_mapping.py checks them cell by cell.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.airtime import MAX_PRIVATE_PAYLOAD
from relay.cap.model import Alert, CapReason, CapRejection, Info, Reference
from relay.cap.regions import RegionTable
from relay.envelope import (
    MAX_AUDIENCE,
    MAX_REFS,
    PAYLOAD_V2,
    Audience,
    Decision,
    Kind,
    Precedence,
    seal,
    v2_time,
)
from relay.trust import Role, TrustState

ZONE = ZoneInfo("Europe/Amsterdam")
FRAME_BUDGET = MAX_PRIVATE_PAYLOAD  # 231 B: one LoRa frame on a private portnum
MIN_TEXT = 24  # a text cut shorter than this says too little: refuse instead (too-large)
ELLIPSIS = "…"
NOTICE_CODE = "crisis-relay:notice"  # <code> that marks a NOTICE (imported as one, exported so)
EXERCISE_NOTE = "OEFENING / EXERCISE"

# The decision's data for a CAP import (docs/cap.md): {0: tag, ? 1: characters cut}. The tag
# lets any node resolve a later CAP Update or Cancel that names the alert by its own identifier.
DATA_TAG = 0
DATA_CUT = 1
TAG_LEN = 8

_P = Precedence
# urgency -> severity -> precedence. Unknown urgency is taken as Expected (the safe side);
# Past (the event is over: all-clear, after-action) is ROUTINE whatever the severity.
PRECEDENCE: dict[str, dict[str, Precedence]] = {
    "Immediate": {"Extreme": _P.FLASH, "Severe": _P.FLASH, "Moderate": _P.IMMEDIATE,
                  "Minor": _P.IMMEDIATE, "Unknown": _P.IMMEDIATE},
    "Expected": {"Extreme": _P.IMMEDIATE, "Severe": _P.IMMEDIATE, "Moderate": _P.PRIORITY,
                 "Minor": _P.PRIORITY, "Unknown": _P.PRIORITY},
    "Future": {"Extreme": _P.PRIORITY, "Severe": _P.PRIORITY, "Moderate": _P.ROUTINE,
               "Minor": _P.ROUTINE, "Unknown": _P.ROUTINE},
    "Past": {"Extreme": _P.ROUTINE, "Severe": _P.ROUTINE, "Moderate": _P.ROUTINE,
             "Minor": _P.ROUTINE, "Unknown": _P.ROUTINE},
    "Unknown": {"Extreme": _P.IMMEDIATE, "Severe": _P.IMMEDIATE, "Moderate": _P.PRIORITY,
                "Minor": _P.PRIORITY, "Unknown": _P.PRIORITY},
}  # fmt: skip
# What export writes for each precedence: a cell of PRECEDENCE that maps back to it.
EXPORT_PAIR: dict[Precedence, tuple[str, str]] = {
    _P.FLASH: ("Immediate", "Extreme"),
    _P.IMMEDIATE: ("Immediate", "Moderate"),
    _P.PRIORITY: ("Expected", "Moderate"),
    _P.ROUTINE: ("Future", "Minor"),
}
STATUS_EXERCISE = {"Actual": False, "Exercise": True}
STATUS_REFUSED = {
    "Test": "status Test: een technische test is geen besluit / a technical test is not a decision",
    "System": "status System: systeemverkeer is geen besluit / system traffic is not a decision",
    "Draft": "status Draft: een concept wordt niet ondertekend / a draft is not signed",
}
MSGTYPE_KIND = {"Alert": Kind.DECISION, "Update": Kind.SUPERSEDE, "Cancel": Kind.CANCEL}
KIND_MSGTYPE = {
    Kind.DECISION: "Alert",
    Kind.NOTICE: "Alert",
    Kind.SUPERSEDE: "Update",
    Kind.CANCEL: "Cancel",
}
KIND_EVENT = {
    Kind.DECISION: "Crisisbesluit",
    Kind.NOTICE: "Crisismededeling",
    Kind.SUPERSEDE: "Gewijzigd crisisbesluit",
    Kind.CANCEL: "Ingetrokken crisisbesluit",
}
# A throwaway key to measure a sealed size: every Ed25519 signature is 64 B and every kid 4 B.
_MEASURE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(32))


def cap_tag(sender: str, identifier: str) -> bytes:
    """The tag an imported decision carries for the CAP alert ``sender``/``identifier``."""
    return hashlib.sha256(f"{sender},{identifier}".encode()).digest()[:TAG_LEN]


def cap_time(t: float) -> str:
    """A CAP dateTime in Europe/Amsterdam with its offset (UTC would be written -00:00)."""
    text = datetime.fromtimestamp(t, ZONE).isoformat(timespec="seconds")
    return text[:-6] + "-00:00" if text.endswith("+00:00") else text


@dataclass(frozen=True, slots=True)
class Held:
    """A verified message this node holds: for resolving references and exporting them."""

    id: bytes
    decision: Decision
    signer: str


@dataclass(frozen=True, slots=True)
class Cut:
    """What was cut from headline + description to fit the frame budget (characters)."""

    total: int  # characters of headline + description
    kept: int
    headline: int  # characters of the headline cut
    description: int  # characters of the description cut

    @property
    def cut(self) -> int:
        return self.total - self.kept

    def line(self) -> str:
        parts_nl, parts_en = [], []
        if self.headline:
            parts_nl.append(f"kop {self.headline}")
            parts_en.append(f"headline {self.headline}")
        if self.description:
            parts_nl.append(f"omschrijving {self.description}")
            parts_en.append(f"description {self.description}")
        return (
            f"tekst ingekort tot één LoRa-frame: {self.cut} van {self.total} tekens weggelaten "
            f"({', '.join(parts_nl)}) / text shortened to one LoRa frame: {self.cut} of "
            f"{self.total} characters cut ({', '.join(parts_en)})"
        )


@dataclass(frozen=True, slots=True)
class Imported:
    decision: Decision
    cut: Cut | None
    not_carried: tuple[str, ...]  # CAP parts read but not carried, for the operator


def _rej(reason: CapReason, detail: str) -> CapRejection:
    return CapRejection(reason, detail)


def choose_info(infos: Sequence[Info]) -> tuple[Info | None, list[Info]]:
    """The info block to carry: the first in Dutch, else the first; and the others."""
    if not infos:
        return None, []
    chosen = next((i for i in infos if i.language.lower().startswith("nl")), infos[0])
    return chosen, [i for i in infos if i is not chosen]


def precedence_of(info: Info) -> Precedence:
    return PRECEDENCE[info.urgency][info.severity]


def resolve(references: Sequence[Reference], held: Sequence[Held]) -> list[Held] | CapRejection:
    """The held messages each reference names: by message id (what export writes as the
    identifier), else by the tag of an earlier import of that sender's identifier."""
    found: list[Held] = []
    for ref in references:
        matches: list[Held] = []
        ident = ref.identifier.lower()
        if len(ident) == 64 and all(c in "0123456789abcdef" for c in ident):
            matches = [h for h in held if h.id.hex() == ident]
        if not matches:
            tag = cap_tag(ref.sender, ref.identifier)
            matches = [h for h in held if _tag_of(h.decision) == tag]
        if not matches:
            return _rej(
                CapReason.REFERENCE,
                f"{ref} is not a message this node holds ({len(held)} messages searched)",
            )
        found.extend(m for m in matches if m not in found)
    return found


def _tag_of(d: Decision) -> bytes | None:
    data: Any = d.data
    if isinstance(data, Mapping) and isinstance(data.get(DATA_TAG), bytes):
        tag: bytes = data[DATA_TAG]
        return tag
    return None


def node_addresses(alert: Alert, known_nodes: frozenset[str] | None) -> frozenset[str]:
    """The addresses of a Private alert that name relay nodes (all of them when the roster's
    node names are not given)."""
    if alert.scope != "Private":
        return frozenset()
    return frozenset(a for a in alert.addresses if known_nodes is None or a in known_nodes)


def _audience(
    alert: Alert,
    info: Info | None,
    regions: RegionTable,
    referenced: Sequence[Held],
    known_nodes: frozenset[str] | None,
) -> Audience | CapRejection:
    audiences: list[Audience] = []
    for area in info.areas if info else ():
        aud = regions.area_audience(area)
        if isinstance(aud, CapRejection):
            return aud
        audiences.append(aud)
    if nodes := node_addresses(alert, known_nodes):
        audiences.append(Audience(nodes=nodes))
    if not audiences and not (info and info.areas):
        audiences = [h.decision.audience for h in referenced]
    if not audiences:
        return _rej(CapReason.NO_AUDIENCE, "the alert names no <area>: give --to AUDIENCE")
    if any(a.everyone for a in audiences):
        return Audience.all()
    return Audience(
        frozenset().union(*(a.regions for a in audiences)),
        frozenset().union(*(a.nodes for a in audiences)),
    )


def import_alert(
    alert: Alert,
    *,
    regions: RegionTable,
    now: float,
    seq: int,
    default_lifetime: Mapping[Precedence, int],
    held: Sequence[Held] = (),
    audience: Audience | None = None,
    version: int = 1,
    budget: int = FRAME_BUDGET,
    skew_s: int = 6 * 3600,
    known_nodes: frozenset[str] | None = None,
) -> Imported | CapRejection:
    """The decision that carries ``alert``, its text cut to fit ``budget`` bytes signed.

    ``known_nodes``: the roster's node names; addresses of a Private alert that are not among
    them are not made node targets (they are reported as not carried)."""
    audience_given = audience is not None
    if alert.status in STATUS_REFUSED:
        return _rej(CapReason.STATUS, STATUS_REFUSED[alert.status])
    exercise = STATUS_EXERCISE[alert.status]
    if alert.msg_type not in MSGTYPE_KIND:
        return _rej(
            CapReason.MSGTYPE,
            f"msgType {alert.msg_type}: alleen Alert, Update en Cancel / only Alert, Update "
            "and Cancel are decisions",
        )
    kind = MSGTYPE_KIND[alert.msg_type]
    if kind == Kind.DECISION and NOTICE_CODE in alert.codes:
        kind = Kind.NOTICE
    info, others = choose_info(alert.infos)
    if info is None and kind != Kind.CANCEL:
        return _rej(CapReason.NO_INFO, f"a CAP {alert.msg_type} needs an <info> block")
    referenced: list[Held] = []
    if kind in (Kind.CANCEL, Kind.SUPERSEDE):
        if not alert.references:
            return _rej(CapReason.NO_REFERENCES, f"a CAP {alert.msg_type} needs <references>")
        found = resolve(alert.references, held)
        if isinstance(found, CapRejection):
            return found
        if len(found) > MAX_REFS:
            return _rej(
                CapReason.TOO_LARGE, f"{len(found)} referenced messages: at most {MAX_REFS}"
            )
        referenced = found
        mixed = [h for h in referenced if h.decision.exercise != exercise]
        if mixed:
            what = "een oefening / an exercise" if mixed[0].decision.exercise else "real"
            return _rej(
                CapReason.EXERCISE_MISMATCH,
                f"status {alert.status} refers to {mixed[0].id.hex()[:16]}, which is {what}",
            )
    if info is not None:
        precedence = precedence_of(info)
    else:
        precedence = min(h.decision.precedence for h in referenced)
    if audience is None:
        aud = _audience(alert, info, regions, referenced, known_nodes)
        if isinstance(aud, CapRejection):
            return aud
        audience = aud
    wire = audience.to_wire()
    if isinstance(wire, list) and len(wire) > MAX_AUDIENCE:
        return _rej(CapReason.TOO_LARGE, f"{len(wire)} audience targets: at most {MAX_AUDIENCE}")
    try:
        Audience.from_wire(wire)
    except ValueError as exc:
        return _rej(CapReason.INVALID, f"audience {audience}: {exc}")
    issued = int(alert.sent.timestamp())
    if version == PAYLOAD_V2:
        issued = v2_time(issued)
    if issued > now + skew_s:
        return _rej(CapReason.NOT_YET_VALID, f"sent {alert.sent.isoformat()} is in the future")
    if info is not None and info.expires is not None:
        expires = int(info.expires.timestamp())
    else:
        expires = issued + default_lifetime[precedence]
    if expires <= issued:
        return _rej(CapReason.EXPIRED, "expires is not after sent")
    expires = issued + -(-(expires - issued) // 60) * 60  # whole minutes, rounded up
    if expires <= now:
        return _rej(CapReason.EXPIRED, f"expired at {cap_time(expires)}")
    tag = cap_tag(alert.sender, alert.identifier)

    def build(text: str, cut: int) -> Decision:
        data: dict[int, object] = {DATA_TAG: tag}
        if cut:
            data[DATA_CUT] = cut
        return Decision(
            issued_at=issued,
            expires_at=expires,
            precedence=precedence,
            audience=audience,
            seq=seq,
            text=text,
            kind=kind,
            exercise=exercise,
            refs=tuple(h.id for h in referenced),
            data=data,
        )

    headline = info.headline if info else ""
    description = info.description if info else ""
    if not (headline or description) and kind != Kind.CANCEL:
        return _rej(CapReason.NO_TEXT, "the <info> has neither <headline> nor <description>")

    def size(text: str, cut: int) -> int:
        try:
            return sealed_size(build(text, cut), version)
        except ValueError:  # longer than a decision's text may be (2048 B): does not fit
            return budget + 1

    fitted = fit_text(headline, description, size, budget)
    if isinstance(fitted, CapRejection):
        return fitted
    text, cut = fitted
    not_carried = _not_carried(alert, info, others)
    if audience_given or len(node_addresses(alert, known_nodes)) < len(alert.addresses):
        not_carried += ("addresses",) if alert.addresses else ()
    return Imported(build(text, cut.cut if cut else 0), cut, not_carried)


def sealed_size(d: Decision, version: int) -> int:
    return len(seal(d, _MEASURE_KEY, version=version))


def join_text(headline: str, description: str) -> str:
    """The decision text: the headline, a newline, the description (export splits there)."""
    return "\n".join(p for p in (headline.replace("\n", " "), description) if p)


def fit_text(
    headline: str, description: str, size: Callable[[str, int], int], budget: int
) -> tuple[str, Cut | None] | CapRejection:
    """The longest text (cut at a word where one is near, ending in "…") whose message fits.

    ``size(text, cut)`` is the sealed size with ``cut`` characters recorded as cut."""
    full = join_text(headline, description)
    if size(full, 0) <= budget:
        return full, None
    total = len(full)

    def cut_at(k: int) -> str:
        return full[:k].rstrip() + ELLIPSIS

    def fits(k: int) -> bool:
        return size(cut_at(k), total) <= budget  # ``total`` bounds the cut count's width

    low = min(MIN_TEXT, total - 1)
    if low < 1 or not fits(low):
        bare = size("", 0)
        return _rej(
            CapReason.TOO_LARGE,
            f"even {low} characters of text make the message more than {budget} B (without "
            f"text {bare} B): fewer areas or references, or a larger --max-bytes",
        )
    high = total - 1  # the largest k known to fit is ``low``; search (low, high]
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    space = full.rfind(" ", max(MIN_TEXT, low - 16), low + 1)
    if space > 0 and fits(space):
        low = space
    kept = len(full[:low].rstrip())
    cut_h = max(0, len(headline) - kept)
    cut_d = len(description) if kept <= len(headline) else total - kept
    return cut_at(low), Cut(total=total, kept=kept, headline=cut_h, description=cut_d)


def _not_carried(alert: Alert, info: Info | None, others: Sequence[Info]) -> tuple[str, ...]:
    out: list[str] = []
    if info is not None:
        out.extend(info.uncarried)
        if any(a.shapes for a in info.areas):
            out.append("polygon/circle")
    out.extend(f"info ({i.language})" for i in others)
    if alert.note:
        out.append("note")
    return tuple(out)


def signer_refusal(state: TrustState, kid: bytes, d: Decision) -> CapRejection | None:
    """Why the key ``kid`` may not sign ``d`` under the roster, checked before a sequence number
    is spent: revoked, not on it, an exercise coordinator signing real traffic, out of scope."""
    revoked = state.revoked.get(kid)
    if revoked is None and state.roster is not None:
        revoked = next((r.name for r in state.roster.revoked if r.kid == kid), None)
    if revoked is not None:
        return _rej(CapReason.REVOKED, f"key of {revoked!r} was revoked")
    entry = state.entry_for(kid)
    if entry is None:
        serial = state.roster.serial if state.roster else "none"
        return _rej(CapReason.SIGNER, f"key id {kid.hex()} is not on the roster (serial {serial})")
    if entry.role == Role.COORDINATOR and not d.exercise:
        return _rej(
            CapReason.EXERCISE_ONLY,
            f"{entry.name!r} is an exercise coordinator: status Actual needs an issuer key",
        )
    if entry.role == Role.NODE or d.kind not in entry.kinds:
        return _rej(CapReason.OUT_OF_SCOPE, f"{entry.name!r} may not sign {d.kind.name} messages")
    node_regions = state.roster.node_regions() if state.roster else {}
    if not entry.scope.covers(d.audience, node_regions):
        return _rej(
            CapReason.OUT_OF_SCOPE,
            f"{entry.name!r} may address {entry.scope.specs()}, not {d.audience.specs()}",
        )
    return None
