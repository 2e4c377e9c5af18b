"""Analyse a drill's event timeline and write the report: ``report.json`` and ``report.html``.

``analyse`` is pure: events in, a JSON-able dict out. Per decision it finds each node's delivery
(time, path = the link it arrived on, latency from the runner's inject or, without a runner,
from the submission at the origin), copies delivered or accepted more than once, and the receipts
that came back; per node the timeline of each link's measured state, and per outage of a link
how long until traffic left on another link (failover) and how long after the link returned until
traffic used it again (failback); per radio the airtime used against its budget.

Latencies between nodes compare different clocks: a node whose clock is off shows it as latency
(the report lists each node's earliest and latest event so a skewed node stands out).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.drill.events import RUNNER, Event, EventError, sort_events
from relay.render import EXERCISE_MARKER

REPORT_VERSION = 1
NOT_SHOWN = frozenset({"ack", "roster", "revocation", "status"})  # accepted kinds never delivered
LOCAL = "local"
# What shows a link carrying traffic at a node: confirmed sends, and what arrived over it.
TRAFFIC = frozenset({"sent", "accepted", "delivered", "receipt"})


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Verdict:
        name, ok, detail = d.get("name"), d.get("ok"), d.get("detail")
        if not isinstance(name, str) or not isinstance(ok, bool) or not isinstance(detail, str):
            raise EventError(f"a verdict needs name (string), ok (bool), detail (string): {d!r}")
        return cls(name, ok, detail)


# ---------------------------------------------------------------------------- analysis


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3) + 0.0  # + 0.0: no "-0.0"


def _json_detail(e: Event) -> dict[str, Any]:
    """A runner event's JSON detail; anything else is reported, not trusted."""
    if not e.detail:
        return {}
    try:
        value = json.loads(e.detail)
    except ValueError as exc:
        raise EventError(f"{e.event} event at {e.t}: detail is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise EventError(f"{e.event} event at {e.t}: detail must be a JSON object")
    return value


def _airtime_of(detail: str | None) -> float | None:
    for part in (detail or "").split():
        if part.startswith("airtime_s="):
            try:
                value = float(part.removeprefix("airtime_s="))
            except ValueError:
                return None
            return value if math.isfinite(value) else None
    return None


def _stats(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "median_s": None, "max_s": None, "min_s": None}
    return {
        "n": len(values),
        "median_s": _r(statistics.median(values)),
        "min_s": _r(min(values)),
        "max_s": _r(max(values)),
    }


def _audience(rows: Sequence[Event]) -> tuple[list[str] | None, str | None]:
    """The expected nodes of one decision from its ``audience`` events: the union of what each
    node's source said (nodes on different roster serials may differ), the roster's word first."""
    found: dict[str, set[str]] = defaultdict(set)
    for e in rows:
        if e.event == "audience":
            info = _json_detail(e)
            nodes, source = info.get("nodes"), info.get("from")
            if isinstance(nodes, list) and isinstance(source, str):
                found[source] |= {str(n) for n in nodes}
    for source in ("roster", "origin"):
        if source in found:
            return sorted(found[source]), source
    return None, None


def _audience_spec(rows: Sequence[Event]) -> list[str] | None:
    for e in rows:
        if e.event == "audience":
            spec = _json_detail(e).get("audience")
            if isinstance(spec, str) and spec:
                return spec.split(",")
    return None


def _decisions(evs: Sequence[Event]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    injects: dict[str, Event] = {}
    by_msg: dict[str, list[Event]] = defaultdict(list)
    order: dict[str, None] = {}  # decisions in order of first appearance
    for e in evs:
        if e.msg is None:
            continue
        if e.node == RUNNER:
            if e.event == "inject":
                injects.setdefault(e.msg, e)
                order.setdefault(e.msg, None)
            continue
        by_msg[e.msg].append(e)
        is_decision = e.event == "delivered" or (
            e.event == "accepted" and e.link == LOCAL and (e.detail or "") not in NOT_SHOWN
        )
        if is_decision:
            order.setdefault(e.msg, None)

    decisions: list[dict[str, Any]] = []
    duplicates: list[dict[str, Any]] = []
    for msg in order:
        rows = by_msg.get(msg, [])
        inject = injects.get(msg)
        info = _json_detail(inject) if inject is not None else {}
        accepted = [e for e in rows if e.event == "accepted"]
        local = next((e for e in accepted if e.link == LOCAL), None)
        if inject is not None:
            t0, t0_from = inject.t, "inject"
        elif local is not None:
            t0, t0_from = local.t, "submitted"
        else:
            t0, t0_from = min(e.t for e in rows), "first seen"
        delivered: dict[str, list[Event]] = defaultdict(list)
        for e in rows:
            if e.event == "delivered":
                delivered[e.node].append(e)
        accepted_at = Counter(e.node for e in accepted)
        nodes_expected = info.get("nodes")
        expected_from: str | None = "inject"
        if not isinstance(nodes_expected, list):
            # Real (non-drill) traffic has no inject: the nodes' audience events say who should
            # get it (from the roster and the nodes' regions, or the origin's recipient list).
            nodes_expected, expected_from = _audience(rows)
        expected = (
            sorted(str(n) for n in nodes_expected) if isinstance(nodes_expected, list) else None
        )
        shown_words = {w for e in rows if e.event == "delivered" for w in (e.detail or "").split()}
        precedence = info.get("precedence")
        if precedence is None:
            precedence = next((w for w in shown_words if w != "exercise"), None)
        exercise = bool(info.get("exercise")) or "exercise" in shown_words
        deliveries: list[dict[str, Any]] = []
        for node in sorted(set(expected or ()) | set(delivered)):
            got = delivered.get(node, [])
            first = got[0] if got else None
            if first is None:
                status = "missing"
            elif len(got) > 1:
                status = "duplicate"
            elif expected is not None and node not in expected:
                status = "unexpected"
            else:
                status = "delivered"
            deliveries.append(
                {
                    "node": node,
                    "status": status,
                    "t": first.t if first else None,
                    "latency_s": _r(first.t - t0) if first else None,
                    "path": first.link if first else None,
                    "count": len(got),
                }
            )
        for node in sorted(set(delivered) | set(accepted_at)):
            n_del, n_acc = len(delivered.get(node, [])), accepted_at.get(node, 0)
            if n_del > 1 or n_acc > 1:
                duplicates.append({"msg": msg, "node": node, "delivered": n_del, "accepted": n_acc})
        origin = local.node if local is not None else None
        receipts = [
            {"node": e.peer, "t": e.t, "latency_s": _r(e.t - t0), "path": e.link}
            for e in rows
            if e.event == "receipt" and e.node == origin
        ]
        sent = Counter(f"{e.node}/{e.link}" for e in rows if e.event == "sent")
        rejected = [
            {"node": e.node, "t": e.t, "link": e.link, "detail": e.detail}
            for e in rows
            if e.event == "rejected"
        ]
        ok = [d for d in deliveries if d["status"] in ("delivered", "duplicate", "unexpected")]
        carried = [d["latency_s"] for d in ok if d["path"] != LOCAL]  # the origin's own is ~0
        decisions.append(
            {
                "id": msg,
                "issuer": inject.peer
                if inject is not None
                else (accepted[0].peer if accepted else None),
                "origin": origin,
                "t0": t0,
                "t0_from": t0_from,
                "precedence": precedence,
                "audience": info.get("audience") or _audience_spec(rows),
                "exercise": exercise,
                "marker": EXERCISE_MARKER if exercise else None,
                "expected": expected,
                "expected_from": expected_from if expected is not None else None,
                "deliveries": deliveries,
                "delivered": len(ok),
                "missing": [d["node"] for d in deliveries if d["status"] == "missing"],
                "latency": _stats(carried),
                "receipts": receipts,
                "sent": dict(sorted(sent.items())),
                "rejected": rejected,
            }
        )
    return decisions, duplicates


def _links(evs: Sequence[Event], end: float) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per node and link, the measured states as segments [from, to)."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(dict)
    for e in evs:
        if e.event != "link" or e.node == RUNNER or e.link is None:
            continue
        segs = out[e.node].setdefault(e.link, [])
        state = e.detail or "unknown"
        if segs and segs[-1]["state"] == state:
            continue
        if segs:
            segs[-1]["to"] = e.t
        segs.append({"state": state, "from": e.t, "to": end})
    return {n: dict(sorted(links.items())) for n, links in sorted(out.items())}


def _outages(
    evs: Sequence[Event],
    links: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]],
    faults: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Each time a link went down: failover (first traffic on another link at that node after)
    and failback (first traffic on the link after it came back). Traffic is a confirmed send or
    anything that arrived over the link: a mesh send is confirmed only when every frame is
    ACKed, often well after the copy arrived, so sends alone would overstate the failover."""
    sends: dict[str, list[Event]] = defaultdict(list)  # traffic per node, by link
    for e in evs:
        if e.event in TRAFFIC and e.node != RUNNER and e.link not in (None, LOCAL):
            sends[e.node].append(e)
    out = []
    for node, per_link in links.items():
        for link, segs in per_link.items():
            for i, seg in enumerate(segs):
                if seg["state"] != "down" or i == 0:
                    continue  # an outage is a link that was up and went down
                down_at = seg["from"]
                back = next((s for s in segs[i + 1 :] if s["state"] != "down"), None)
                up_at = back["from"] if back is not None else None
                again = next(
                    (
                        s["from"]
                        for s in segs[i + 1 :]
                        if back and s["from"] > back["from"] and s["state"] == "down"
                    ),
                    None,
                )
                over = next(
                    (
                        e
                        for e in sends[node]
                        if e.link != link and e.t >= down_at and (up_at is None or e.t < up_at)
                    ),
                    None,
                )
                backe = next(
                    (
                        e
                        for e in sends[node]
                        if e.link == link
                        and up_at is not None
                        and e.t >= up_at
                        and (again is None or e.t < again)
                    ),
                    None,
                )
                fault = next((f for f in reversed(faults) if f["t"] <= down_at), None)
                out.append(
                    {
                        "node": node,
                        "link": link,
                        "down_at": down_at,
                        "up_at": up_at,
                        "outage_s": _r(up_at - down_at) if up_at is not None else None,
                        "fault": fault["detail"] if fault else None,
                        "detected_s": _r(down_at - fault["t"]) if fault else None,
                        "failover_link": over.link if over else None,
                        "failover_s": _r(over.t - down_at) if over else None,
                        "failback_s": _r(backe.t - up_at) if backe and up_at is not None else None,
                    }
                )
    return sorted(out, key=lambda o: (o["down_at"], o["node"], o["link"]))


def _faults(evs: Sequence[Event]) -> list[dict[str, Any]]:
    faults: list[dict[str, Any]] = []
    for e in evs:
        if e.node != RUNNER:
            continue
        if e.event == "fault":
            faults.append({"t": e.t, "detail": e.detail or "", "restored_at": None})
        elif e.event == "restore":
            open_ = [f for f in faults if f["restored_at"] is None]
            same = [f for f in open_ if e.detail and e.detail.endswith(f["detail"])]
            if same or open_:
                (same or open_)[0]["restored_at"] = e.t
    return faults


def _airtime(evs: Sequence[Event]) -> dict[str, Any]:
    radios: dict[tuple[str, str], dict[str, Any]] = {}  # the latest reading per radio counts
    for e in evs:
        if e.event == "airtime":
            info = _json_detail(e)
            used, budget = info.get("airtime_s"), info.get("budget_s")
            if not isinstance(used, int | float) or not isinstance(budget, int | float):
                raise EventError(f"airtime event at {e.t}: needs numeric airtime_s and budget_s")
            # the emulator names radios; a node names its own link
            radio = (e.link or "?") if e.node == RUNNER else f"{e.node}/{e.link}"
            source = "emulator" if e.node == RUNNER else "node"
            radios[(radio, source)] = {
                "radio": radio,
                "source": source,
                "airtime_s": _r(float(used)),
                "budget_s": _r(float(budget)),
                "fraction": _r(used / budget) if budget > 0 else None,
            }
    by_link: dict[str, float] = defaultdict(float)
    for e in evs:
        if e.event == "sent" and e.node != RUNNER:
            a = _airtime_of(e.detail)
            if a is not None:
                by_link[f"{e.node}/{e.link}"] += a
    return {
        "radios": [radios[k] for k in sorted(radios)],
        "sent_by_node": {k: _r(v) for k, v in sorted(by_link.items())},
    }


def analyse(events: Sequence[Event]) -> dict[str, Any]:
    """Everything the report shows, as plain JSON-able data (see the module doc)."""
    evs = sort_events(events)
    if not evs:
        return {
            "start": None,
            "end": None,
            "nodes": [],
            "clocks": {},
            "phases": [],
            "faults": [],
            "decisions": [],
            "duplicates": [],
            "links": {},
            "outages": [],
            "airtime": {"radios": [], "sent_by_node": {}},
            "rejections": {},
            "summary": {
                "decisions": 0,
                "expected": 0,
                "delivered": 0,
                "missing": 0,
                "duplicates": 0,
                "latency": _stats([]),
            },
        }
    start, end = evs[0].t, evs[-1].t
    nodes = sorted({e.node for e in evs if e.node != RUNNER})
    clocks = {
        n: {
            "first": min(e.t for e in evs if e.node == n),
            "last": max(e.t for e in evs if e.node == n),
        }
        for n in nodes
    }
    decisions, duplicates = _decisions(evs)
    links = _links(evs, end)
    faults = _faults(evs)
    rejections: dict[str, dict[str, int]] = defaultdict(dict)
    for e in evs:
        if e.event == "rejected" and e.node != RUNNER:
            reason = (e.detail or "unknown").split(":", 1)[0]
            rejections[e.node][reason] = rejections[e.node].get(reason, 0) + 1
    latencies = [
        d["latency_s"]
        for dec in decisions
        for d in dec["deliveries"]
        if d["latency_s"] is not None and d["status"] != "unexpected" and d["path"] != LOCAL
    ]
    return {
        "start": start,
        "end": end,
        "nodes": nodes,
        "clocks": clocks,
        "phases": [
            {"t": e.t, "name": e.detail} for e in evs if e.node == RUNNER and e.event == "phase"
        ],
        "faults": faults,
        "decisions": decisions,
        "duplicates": duplicates,
        "links": links,
        "outages": _outages(evs, links, faults),
        "airtime": _airtime(evs),
        "rejections": dict(sorted(rejections.items())),
        "summary": {
            "decisions": len(decisions),
            "expected": sum(len(d["expected"] or d["deliveries"]) for d in decisions),
            "delivered": sum(d["delivered"] for d in decisions),
            "missing": sum(len(d["missing"]) for d in decisions),
            "duplicates": len(duplicates),
            "audience_unknown": sum(1 for d in decisions if d["expected"] is None),
            "latency": _stats(latencies),
        },
    }


# ---------------------------------------------------------------------------- files


def build(
    *,
    title: str,
    events: Sequence[Event],
    verdicts: Sequence[Verdict],
    meta: Mapping[str, Any],
    chains: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The whole report document (what report.json holds). ``chains``: per node, whether its
    audit chain verified (``relay.store.ChainReport.to_json``; relay.drill.events.chains)."""
    evs = sort_events(events)
    return {
        "version": REPORT_VERSION,
        "title": title,
        "exercise_marker": EXERCISE_MARKER,
        "meta": dict(meta),
        "verdicts": [v.to_json() for v in verdicts],
        "analysis": analyse(evs),
        "chains": {n: dict(c) for n, c in sorted((chains or {}).items())},
        "events": [e.to_json() for e in evs],
    }


def write_report(
    out_dir: Path,
    *,
    title: str,
    events: Sequence[Event],
    verdicts: Sequence[Verdict],
    meta: Mapping[str, Any],
    chains: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[Path, Path]:
    """Write ``report.json`` (every event, the analysis, the verdicts, the nodes' audit chains)
    and ``report.html``."""
    from relay.drill.page import render_html

    doc = build(title=title, events=events, verdicts=verdicts, meta=meta, chains=chains)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / "report.json", out_dir / "report.html"
    json_path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    html_path.write_text(render_html(doc))
    return json_path, html_path


def load_report(path: Path) -> tuple[str, list[Event], list[Verdict], dict[str, Any]]:
    """Read a report.json back: title, events, verdicts, meta (to re-render or merge)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EventError(f"{path}: not a readable report: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("version") != REPORT_VERSION:
        raise EventError(f"{path}: not a version {REPORT_VERSION} drill report")
    events = [Event.from_json(e) for e in doc.get("events", [])]
    verdicts = [Verdict.from_json(v) for v in doc.get("verdicts", [])]
    meta = doc.get("meta", {})
    return str(doc.get("title", "")), events, verdicts, meta if isinstance(meta, dict) else {}
