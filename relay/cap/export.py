"""Signed decision -> CAP 1.2 alert (the tables are in relay.cap.mapping). Pure code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from relay.cap.mapping import (
    DATA_CUT,
    EXERCISE_NOTE,
    EXPORT_PAIR,
    KIND_EVENT,
    KIND_MSGTYPE,
    NOTICE_CODE,
    ZONE,
    Held,
    cap_time,
)
from relay.cap.model import Alert, Area, CapReason, CapRejection, Info, Reference
from relay.cap.regions import RegionTable
from relay.envelope import Decision, Kind


def export_alert(
    d: Decision,
    *,
    msg_id: bytes,
    signer: str,
    regions: RegionTable,
    referenced: Sequence[Held] = (),
) -> Alert | CapRejection:
    """The CAP 1.2 alert for a verified decision; ``referenced`` holds what ``d.refs`` names."""
    if d.kind not in KIND_MSGTYPE:
        return CapRejection(
            CapReason.NOT_AN_ALERT_KIND,
            f"a {d.kind.name} message is not an alert (only decisions, notices, cancels and "
            "supersedes are exported)",
        )
    by_id = {h.id: h for h in referenced}
    references = []
    for ref in d.refs:
        held = by_id.get(ref)
        if held is None:
            return CapRejection(
                CapReason.REFERENCE,
                f"referenced message {ref.hex()[:16]} is not in the store: its sender and "
                "sent time are needed for <references>",
            )
        references.append(Reference(held.signer, ref.hex(), cap_time(held.decision.issued_at)))
    notes = [EXERCISE_NOTE] if d.exercise else []
    data: Any = d.data
    if isinstance(data, Mapping) and isinstance(data.get(DATA_CUT), int):
        n = data[DATA_CUT]
        notes.append(
            f"Tekst bij import ingekort: {n} tekens weggelaten / "
            f"Text shortened at import: {n} characters cut"
        )
    headline, _, description = d.text.partition("\n")
    urgency, severity = EXPORT_PAIR[d.precedence]
    areas: list[Area] = []
    if d.audience.everyone:
        areas.append(Area("Nederland"))
    for code in sorted(d.audience.regions):
        region = regions.by_code(code)
        name = region.name if region else code
        areas.append(Area(f"Veiligheidsregio {name}", (("veiligheidsregio", code),)))
    info = Info(
        event=KIND_EVENT[d.kind],
        urgency=urgency,
        severity=severity,
        certainty="Unknown",
        categories=("Safety",),
        language="nl-NL",
        expires=datetime.fromtimestamp(d.expires_at, ZONE),
        sender_name=signer,
        headline=headline,
        description=description,
        areas=tuple(areas),
    )
    nodes = tuple(sorted(d.audience.nodes))
    return Alert(
        identifier=msg_id.hex(),
        sender=signer,
        sent=datetime.fromtimestamp(d.issued_at, ZONE),
        status="Exercise" if d.exercise else "Actual",
        msg_type=KIND_MSGTYPE[d.kind],
        scope="Private" if nodes else "Restricted",
        restriction=""
        if nodes
        else "Alleen voor crisisteams en relaisknooppunten / crisis teams and relay nodes only",
        addresses=nodes,
        codes=(NOTICE_CODE,) if d.kind == Kind.NOTICE else (),
        note=" — ".join(notes),
        references=tuple(references),
        infos=(info,),
    )
