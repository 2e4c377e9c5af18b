"""The drill report as one self-contained HTML page: inline CSS and SVG, no script, no fetches.

It opens offline from a USB stick in any browser. SVG ``<title>`` elements give hover details
without JavaScript. Every string from the events is escaped; exercise decisions carry the
exercise marker wherever they are named.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from relay.render import EXERCISE_MARKER, timestamp

STATE_COLOURS = {"up": "#2e9e4f", "degraded": "#e0a100", "down": "#c9302c"}
PATH_COLOURS = {"mqtt": "#1f6fb2", "mesh": "#8e44ad", "local": "#555555"}
OTHER_PATH = "#16a085"

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222}
h1{margin:0 0 4px;font-size:22px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ccc}
.marker{display:inline-block;background:#ffd400;color:#000;font-weight:700;padding:1px 6px;
 border:2px solid #000;border-radius:3px;letter-spacing:.5px}
.banner{margin:8px 0 12px;padding:8px 12px;background:#fff5bf;border:2px dashed #000;
 font-weight:700}
table{border-collapse:collapse;margin:4px 0} th,td{border:1px solid #ccc;padding:3px 7px;
 text-align:left;vertical-align:top} th{background:#f2f2f2} td.num{text-align:right}
.ok{background:#dff3e4} .fail{background:#f8d7d5} .warn{background:#fff1c9} .none{color:#888}
.small{font-size:12px;color:#555} code{font-size:12px}
svg text{font:11px system-ui,sans-serif}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
"""


def esc(x: object) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def secs(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f} s"


def _path_colour(path: str | None) -> str:
    return PATH_COLOURS.get(path or "", OTHER_PATH)


def _marked(text: str, exercise: bool) -> str:
    return f'<span class="marker">{esc(EXERCISE_MARKER)}</span> {text}' if exercise else text


def _table(head: Sequence[str], rows: Iterable[str], *, id_: str | None = None) -> str:
    ident = f' id="{id_}"' if id_ else ""
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    return f"<table{ident}><thead><tr>{th}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


# ---------------------------------------------------------------------------- timeline


def timeline_svg(a: Mapping[str, Any], width: int = 1200) -> str:
    """Link states per node (one lane per link, one for the inbox) on a shared time axis."""
    if a["start"] is None:
        return '<p class="none">No events.</p>'
    start, end = float(a["start"]), float(a["end"])
    span = max(end - start, 1e-3)
    left, right, lane, gap, top = 190, 20, 16, 6, 50
    plot = width - left - right

    def x(t: float) -> float:
        return left + (min(max(t, start), end) - start) / span * plot

    lanes: list[tuple[str, str, str | None]] = []  # (node, label, link or None for inbox)
    for node in a["nodes"]:
        for link in a["links"].get(node, {}):
            lanes.append((node, f"{node} · {link}", link))
        lanes.append((node, f"{node} · inbox", None))
    height = top + len(lanes) * (lane + gap) + 30
    out = [
        f'<svg id="timeline-svg" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Timeline of link states and deliveries per node">'
    ]
    # time axis
    step = _tick_step(span)
    k = 0
    while k * step <= span + 1e-9:
        tx = left + k * step / span * plot
        out.append(
            f'<line x1="{tx:.1f}" y1="{top - 6}" x2="{tx:.1f}" y2="{height - 24}" '
            'stroke="#e3e3e3"/>'
        )
        out.append(
            f'<text x="{tx:.1f}" y="{height - 10}" text-anchor="middle">{k * step:g} s</text>'
        )
        k += 1
    # runner marks: phases, faults, restores, injects
    label_end = [-1e9, -1e9]  # where the last label on each of two rows ends: no overlaps
    for p in a["phases"]:
        px = x(p["t"])
        row = 0 if px > label_end[0] else 1 if px > label_end[1] else 0
        label_end[row] = px + 6.5 * len(str(p["name"])) + 8
        out.append(
            f'<line x1="{px:.1f}" y1="{2 + 12 * row}" x2="{px:.1f}" y2="{height - 24}" '
            f'stroke="#666" stroke-dasharray="4 3"><title>phase {esc(p["name"])}</title></line>'
        )
        out.append(f'<text x="{px + 3:.1f}" y="{12 + 12 * row}">{esc(p["name"])}</text>')
    for f in a["faults"]:
        fx = x(f["t"])
        out.append(
            f'<line x1="{fx:.1f}" y1="28" x2="{fx:.1f}" y2="{height - 24}" stroke="#c9302c" '
            f'stroke-width="2"><title>fault: {esc(f["detail"])}</title></line>'
        )
        out.append(f'<text x="{fx + 3:.1f}" y="37" fill="#c9302c">fault</text>')
        if f["restored_at"] is not None:
            rx = x(f["restored_at"])
            out.append(
                f'<line x1="{rx:.1f}" y1="28" x2="{rx:.1f}" y2="{height - 24}" '
                f'stroke="#2e9e4f" stroke-width="2"><title>restored: {esc(f["detail"])}'
                "</title></line>"
            )
            out.append(f'<text x="{rx + 3:.1f}" y="37" fill="#2e9e4f">restore</text>')
    for dec in a["decisions"]:
        if dec["t0_from"] == "inject":
            ix = x(dec["t0"])
            label = _marked_plain(f"inject {dec['id'][:12]} {dec['precedence'] or ''}", dec)
            out.append(
                f'<path d="M{ix - 4:.1f},{top - 10} l8,0 l-4,7 z" fill="#333">'
                f"<title>{esc(label)}</title></path>"
            )
    # lanes
    for i, (node, label, link) in enumerate(lanes):
        y = top + i * (lane + gap)
        out.append(f'<text x="{left - 8}" y="{y + lane - 4}" text-anchor="end">{esc(label)}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{plot}" height="{lane}" fill="#f4f4f4"/>')
        if link is not None:
            for seg in a["links"][node][link]:
                sx, ex = x(seg["from"]), x(seg["to"])
                colour = STATE_COLOURS.get(seg["state"], "#999")
                tip = f"{node} {link} {seg['state']} from t+{seg['from'] - start:.3f} s"
                out.append(
                    f'<rect class="seg seg-{esc(seg["state"])}" x="{sx:.1f}" y="{y}" '
                    f'width="{max(ex - sx, 1.5):.1f}" height="{lane}" fill="{colour}">'
                    f"<title>{esc(tip)}</title></rect>"
                )
        else:
            for dec in a["decisions"]:
                for d in dec["deliveries"]:
                    if d["node"] != node or d["t"] is None:
                        continue
                    dx = x(d["t"])
                    tip = _marked_plain(
                        f"{dec['id'][:12]} delivered via {d['path']} after {secs(d['latency_s'])}",
                        dec,
                    )
                    out.append(
                        f'<circle class="delivery" cx="{dx:.1f}" cy="{y + lane / 2}" r="4.5" '
                        f'fill="{_path_colour(d["path"])}" stroke="#000" stroke-width=".6">'
                        f"<title>{esc(tip)}</title></circle>"
                    )
    out.append("</svg>")
    return "".join(out)


def _marked_plain(text: str, dec: Mapping[str, Any]) -> str:
    return f"[{EXERCISE_MARKER}] {text}" if dec.get("exercise") else text


def _tick_step(span: float) -> float:
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200):
        if span / step <= 12:
            return step
    return 3600 * 6


def _legend() -> str:
    items = [
        f'<span><i style="background:{c}"></i>link {esc(s)}</span>'
        for s, c in STATE_COLOURS.items()
    ]
    items += [
        f'<span><i style="background:{c};border-radius:6px"></i>delivered via {esc(p)}</span>'
        for p, c in PATH_COLOURS.items()
        if p != "local"
    ]
    items.append('<span><i style="background:#c9302c;width:3px"></i>fault</span>')
    items.append('<span><i style="background:#2e9e4f;width:3px"></i>restore</span>')
    return f'<p class="legend small">{"".join(items)}</p>'


# ---------------------------------------------------------------------------- sections


def _verdicts(verdicts: Sequence[Mapping[str, Any]]) -> str:
    if not verdicts:
        return '<p class="none">No expectations were evaluated.</p>'
    rows = [
        f'<tr class="{"ok" if v["ok"] else "fail"}"><td>{"PASS" if v["ok"] else "FAIL"}</td>'
        f"<td>{esc(v['name'])}</td><td>{esc(v['detail'])}</td></tr>"
        for v in verdicts
    ]
    return _table(("verdict", "expectation", "detail"), rows, id_="verdicts")


def _deliveries(a: Mapping[str, Any]) -> str:
    if not a["decisions"]:
        return '<p class="none">No decisions.</p>'
    nodes = a["nodes"]
    rows = []
    for dec in a["decisions"]:
        head = (
            f"<code>{esc(dec['id'][:12])}</code> {esc(dec['precedence'] or '')}"
            f"<br><span class=small>{esc(dec['issuer'] or '?')} → "
            f"{esc(_audience(dec['audience']))}"
            f" · from {esc(dec['t0_from'])} t+{dec['t0'] - a['start']:.3f} s</span>"
        )
        cells = []
        by_node = {d["node"]: d for d in dec["deliveries"]}
        for node in nodes:
            d = by_node.get(node)
            if d is None:
                cells.append('<td class="none">·</td>')
            elif d["status"] == "missing":
                cells.append('<td class="fail">missing</td>')
            else:
                cls = {"delivered": "ok", "duplicate": "fail", "unexpected": "warn"}[d["status"]]
                extra = (
                    "" if d["status"] == "delivered" else f"<br>{esc(d['status'])} ×{d['count']}"
                )
                cells.append(
                    f'<td class="{cls}">{esc(d["path"])} {esc(secs(d["latency_s"]))}{extra}</td>'
                )
        receipts = len(dec["receipts"])
        lat = dec["latency"]
        rows.append(
            f"<tr><td>{_marked(head, dec['exercise'])}</td>{''.join(cells)}"
            f'<td class="num">{dec["delivered"]}/{len(dec["expected"] or dec["deliveries"])}</td>'
            f'<td class="num">{esc(secs(lat["median_s"]))}</td><td class="num">{receipts}</td></tr>'
        )
    head_cells = ("decision", *nodes, "delivered", "median latency", "receipts")
    return _table(head_cells, rows, id_="deliveries")


def _audience(audience: object) -> str:
    if isinstance(audience, list):
        return ", ".join(str(x) for x in audience)
    return str(audience) if audience else "?"


def _outages(a: Mapping[str, Any]) -> str:
    if not a["outages"]:
        return '<p class="none">No link went down during the drill.</p>'
    start = a["start"]

    def rel(t: float | None) -> str:
        return "–" if t is None else f"t+{t - start:.3f} s"

    rows = [
        f"<tr><td>{esc(o['node'])}</td><td>{esc(o['link'])}</td>"
        f'<td class="num">{rel(o["down_at"])}</td><td class="num">{rel(o["up_at"])}</td>'
        f"<td>{esc(o['fault'] or '–')}</td><td class=num>{esc(secs(o['detected_s']))}</td>"
        f"<td>{esc(o['failover_link'] or '–')}</td><td class=num>{esc(secs(o['failover_s']))}</td>"
        f"<td class=num>{esc(secs(o['failback_s']))}</td></tr>"
        for o in a["outages"]
    ]
    head = (
        "node",
        "link",
        "down",
        "up again",
        "fault",
        "detected after",
        "failover to",
        "failover after",
        "failback after",
    )
    return _table(head, rows, id_="failover")


def _airtime(a: Mapping[str, Any]) -> str:
    radios = a["airtime"]["radios"]
    parts = []
    if radios:
        w, bar = 760, 420
        h = 26 * len(radios) + 10
        svg = [
            f'<svg id="airtime-svg" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}">'
        ]
        for i, r in enumerate(radios):
            y = 6 + i * 26
            frac = r["fraction"] or 0.0
            colour = "#c9302c" if frac > 1 else "#e0a100" if frac > 0.8 else "#2e9e4f"
            tip = "as the emulator counted it" if r.get("source") == "emulator" else "node's ledger"
            svg.append(f'<text x="0" y="{y + 13}">{esc(r["radio"])}<title>{tip}</title></text>')
            svg.append(
                f'<rect x="150" y="{y}" width="{bar}" height="18" fill="#eee" stroke="#999"/>'
            )
            svg.append(
                f'<rect x="150" y="{y}" width="{min(frac, 1.0) * bar:.1f}" height="18" '
                f'fill="{colour}"/>'
            )
            svg.append(
                f'<text x="{160 + bar}" y="{y + 13}">{r["airtime_s"]:.1f} s of '
                f"{r['budget_s']:.0f} s ({frac * 100:.1f} %)</text>"
            )
        svg.append("</svg>")
        parts.append("".join(svg))
    else:
        parts.append('<p class="none">No radio reported airtime.</p>')
    sent = a["airtime"]["sent_by_node"]
    if sent:
        rows = [f"<tr><td>{esc(k)}</td><td class=num>{v:.3f} s</td></tr>" for k, v in sent.items()]
        parts.append(_table(("node/link", "airtime of confirmed sends"), rows))
    return "".join(parts)


def _problems(a: Mapping[str, Any]) -> str:
    parts = []
    if a["duplicates"]:
        rows = [
            f"<tr class=fail><td><code>{esc(d['msg'][:12])}</code></td><td>{esc(d['node'])}"
            f"</td><td class=num>{d['delivered']}</td><td class=num>{d['accepted']}</td></tr>"
            for d in a["duplicates"]
        ]
        parts.append(_table(("decision", "node", "delivered", "accepted"), rows, id_="duplicates"))
    else:
        parts.append("<p>No decision was delivered or accepted twice at a node.</p>")
    if a["rejections"]:
        rows = [
            f"<tr><td>{esc(n)}</td><td>{esc(r)}</td><td class=num>{c}</td></tr>"
            for n, rs in a["rejections"].items()
            for r, c in rs.items()
        ]
        parts.append(_table(("node", "rejection reason", "count"), rows, id_="rejections"))
    else:
        parts.append("<p>No node rejected anything.</p>")
    return "".join(parts)


def _chains(doc: Mapping[str, Any]) -> str:
    chains = doc.get("chains") or {}
    if not chains:
        return "<p>Not checked (no node's store or API was given).</p>"
    rows = []
    for node, c in chains.items():
        latest = c.get("latest_checkpoint")
        if not c.get("ok"):
            verdict, cls = "BROKEN", "fail"
        elif not c.get("signatures_checked", True):
            verdict, cls = "links ok, signatures not checked (no roster)", ""
        else:
            verdict, cls = "verified", ""
        notes = [str(c["problem"])] if c.get("problem") else []
        if c.get("uncovered"):
            notes.append(f"{c['uncovered']} row(s) after the latest checkpoint")
        notes += [str(x) for x in c.get("notes", [])]
        rows.append(
            f"<tr class={cls or 'ok'}><td>{esc(node)}</td><td>{esc(verdict)}</td>"
            f"<td class=num>{esc(c.get('rows', ''))}</td>"
            f"<td class=num>{esc(latest['n'] if latest else '–')}</td>"
            f"<td>{esc('; '.join(notes))}</td></tr>"
        )
    head = ("node", "audit chain", "rows", "latest checkpoint (row)", "detail")
    return _table(head, rows, id_="chains")


def _meta(doc: Mapping[str, Any]) -> str:
    a = doc["analysis"]
    rows = [f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in doc["meta"].items()]
    if a["start"] is not None:
        rows.append(f"<tr><th>first event</th><td>{esc(timestamp(a['start']))}</td></tr>")
        rows.append(f"<tr><th>last event</th><td>{esc(timestamp(a['end']))}</td></tr>")
    for node, c in a["clocks"].items():
        rows.append(
            f"<tr><th>clock of {esc(node)}</th><td>events t+{c['first'] - a['start']:.3f}"
            f" s … t+{c['last'] - a['start']:.3f} s</td></tr>"
        )
    rows.append(f"<tr><th>events</th><td>{len(doc['events'])}</td></tr>")
    return f"<table id=meta><tbody>{''.join(rows)}</tbody></table>"


def render_html(doc: Mapping[str, Any]) -> str:
    """The page for a report document as ``relay.drill.report.build`` makes it."""
    a = doc["analysis"]
    s = a["summary"]
    verdicts = doc["verdicts"]
    failed = [v for v in verdicts if not v["ok"]]
    any_exercise = any(d["exercise"] for d in a["decisions"]) or bool(doc["meta"].get("exercise"))
    banner = (
        f'<div class="banner"><span class="marker">{esc(EXERCISE_MARKER)}</span> '
        "This report describes exercise traffic.</div>"
        if any_exercise
        else ""
    )
    overall = (
        '<span class="fail">&nbsp;FAIL&nbsp;</span>'
        if failed
        else ('<span class="ok">&nbsp;PASS&nbsp;</span>' if verdicts else "")
    )
    lat = s["latency"]
    met = (
        f"{len(verdicts) - len(failed)}/{len(verdicts)} expectations met"
        if verdicts
        else "no expectations evaluated"
    )
    summary = (
        f"<p id=summary>{overall} {met} · "
        f"{s['decisions']} decisions · {s['delivered']}/{s['expected']} deliveries · "
        f"{s['missing']} missing · {s['duplicates']} duplicates · latency median "
        f"{esc(secs(lat['median_s']))}, max {esc(secs(lat['max_s']))} · nodes: "
        f"{esc(', '.join(a['nodes']))}</p>"
    )
    title = esc(doc["title"])
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<style>{CSS}</style></head><body>"
        f"<h1>{_marked(title, any_exercise)}</h1>{banner}{summary}"
        f"<h2>Expectations</h2>{_verdicts(verdicts)}"
        f'<h2>Timeline</h2><div id="timeline">{_legend()}{timeline_svg(a)}</div>'
        f"<h2>Deliveries (path and latency per node)</h2>{_deliveries(a)}"
        f"<h2>Failover and failback</h2>{_outages(a)}"
        f"<h2>Airtime per radio against its budget</h2>{_airtime(a)}"
        f"<h2>Duplicates and rejections</h2>{_problems(a)}"
        f"<h2>Audit chains (tamper-evident logs)</h2>{_chains(doc)}"
        f"<h2>Drill</h2>{_meta(doc)}"
        "</body></html>\n"
    )
