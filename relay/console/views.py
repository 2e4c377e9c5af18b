"""Server-rendered HTML for the console: pure functions from data to markup, escaped throughout.

Every item that is an exercise carries EXERCISE_MARKER first (invariant 5); every page that shows
one also carries it in a banner and in its title.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import quote

from relay import pq
from relay.console.text import decimal, precedence_help, t, when
from relay.envelope import Precedence
from relay.render import EXERCISE_MARKER

Item = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Ctx:
    lang: str
    node: str
    path: str
    user: str | None = None
    issuer: str | None = None
    csrf: str | None = None


def e(x: object) -> str:
    return escape(str(x), quote=True)


def marker() -> str:
    return f'<span class="marker">{EXERCISE_MARKER}</span>'


def layout(
    ctx: Ctx, title: str, body: str, *, exercise: bool = False, live: str | None = None
) -> str:
    full = f"{title} — {t(ctx.lang, 'app')} {ctx.node}"
    if exercise:
        full = f"{EXERCISE_MARKER} — {full}"
    nav = ""
    if ctx.user is not None:
        links = [
            ("/inbox", "inbox"),
            ("/compose", "compose"),
            ("/sent", "sent"),
            ("/network", "network"),
        ]
        items = "".join(
            f'<a href="{href}"{" class=on" if ctx.path.startswith(href) else ""}>'
            f"{t(ctx.lang, key)}</a>"
            for href, key in links
        )
        nav = (
            f"<nav>{items}</nav>"
            f'<div class="who">{e(t(ctx.lang, "signed_in_as", user=ctx.user, issuer=ctx.issuer))}'
            f'<form method="post" action="/logout">{csrf_field(ctx)}'
            f'<button type="submit">{t(ctx.lang, "logout")}</button></form></div>'
        )
    other = "en" if ctx.lang == "nl" else "nl"
    switch = (
        f'<a class="lang" href="/lang?to={other}&amp;back={quote(ctx.path, safe="")}">'
        f"{'English' if other == 'en' else 'Nederlands'}</a>"
    )
    banner = f'<div id="exercise-banner" class="exercise-banner"{"" if exercise else " hidden"}>'
    banner += f"<span>{EXERCISE_MARKER}</span></div>"
    live_attr = f' data-live="{e(live)}"' if live else ""
    return (
        f'<!doctype html><html lang="{ctx.lang}"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(full)}</title>"
        f'<link rel="stylesheet" href="/static/console.css">'
        f'<link rel="icon" href="data:,">'
        f'<script src="/static/console.js" defer></script></head>'
        f'<body data-base-title="{e(title)} — {e(t(ctx.lang, "app"))} {e(ctx.node)}">'
        f'<header><span class="brand">{t(ctx.lang, "app")} · {e(ctx.node)}</span>'
        f"{nav}{switch}</header>{banner}"
        f'<div id="flash-alert" class="flash-alert" hidden role="alert">'
        f'<strong>{t(ctx.lang, "flash_alert")}</strong> <span id="flash-text"></span> '
        f'<button type="button" id="flash-dismiss">{t(ctx.lang, "dismiss")}</button></div>'
        f"<main{live_attr}><h1>{e(title)}</h1>{body}</main></body></html>"
    )


def csrf_field(ctx: Ctx) -> str:
    return f'<input type="hidden" name="csrf" value="{e(ctx.csrf or "")}">'


def login_page(ctx: Ctx, token: str, error: str = "", status_note: str = "") -> str:
    err = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
    note = f'<p class="note">{e(status_note)}</p>' if status_note else ""
    body = (
        f'{note}{err}<form method="post" action="/login" class="login">'
        f'<input type="hidden" name="csrf" value="{e(token)}">'
        f'<label>{t(ctx.lang, "user")} <input name="user" autocomplete="username" required></label>'
        f'<label>{t(ctx.lang, "password")} <input name="password" type="password" '
        f'autocomplete="current-password" required></label>'
        f'<button type="submit">{t(ctx.lang, "login")}</button></form>'
    )
    return layout(ctx, t(ctx.lang, "login"), body)


def message_page(ctx: Ctx, title: str, text: str, *, error: bool = False) -> str:
    cls = "error" if error else "note"
    return layout(ctx, title, f'<p class="{cls}">{e(text)}</p>')


# ----------------------------------------------------------------------------- decisions


def status_badges(lang: str, status: str | None) -> str:
    if status == "cancel":
        return f'<span class="badge gone">{t(lang, "cancelled")}</span>'
    if status == "supersede":
        return f'<span class="badge gone">{t(lang, "superseded")}</span>'
    return ""


def pq_badge(lang: str, state: object) -> str:
    """A PQ-enabled issuer's decision: its quantum-safe signature pending or verified."""
    if state not in ("pending", "verified"):
        return ""
    cls = "pq-pending" if state == "pending" else "pq-ok"
    return f'<span class="badge {cls}" data-pq="{state}">{e(pq.label(str(state), lang))}</span>'


def prec_badge(p: str) -> str:
    return f'<span class="prec prec-{e(p.lower())}">{e(p)}</span>'


def card(lang: str, m: Item, status: str | None = None) -> str:
    """One decision as every surface shows it (inbox, decision page, preview, print)."""
    exercise = bool(m.get("exercise"))
    kind = str(m.get("kind", "decision"))
    head = [marker()] if exercise else []
    head.append(prec_badge(str(m["precedence"])))
    if kind != "decision":
        head.append(f'<span class="kind">{e(kind.upper())}</span>')
    head.append(status_badges(lang, status))
    head.append(pq_badge(lang, m.get("pq")))
    body = str(m.get("text", ""))
    text = f"{EXERCISE_MARKER}: {body}" if exercise else body
    classes = ["card"]
    if m["precedence"] == "FLASH":
        classes.append("flash")
    if exercise:
        classes.append("exercise")
    return (
        f'<article class="{" ".join(classes)}" data-id="{e(m["id"])}">'
        f'<div class="card-head">{" ".join(head)}</div>'
        f'<p class="meta">{t(lang, "issuer")}: <b>{e(m["issuer"])}</b> · '
        f"{t(lang, 'audience')}: {e(', '.join(m.get('audience', [])))}</p>"
        f'<p class="body">{e(text)}</p></article>'
    )


def inbox_fragment(
    lang: str, items: Sequence[Item], statuses: Mapping[str, str], *, base_title: str
) -> str:
    exercise = any(m["exercise"] for m in items)
    title = f"{EXERCISE_MARKER} — {base_title}" if exercise else base_title
    rows = []
    for m in items:
        flash = m["precedence"] == "FLASH"
        cls = " ".join(
            c for c in ("row", "flash" if flash else "", "exercise" if m["exercise"] else "") if c
        )
        flash_attr = f' data-flash-id="{e(m["id"])}" data-flash-text="{e(m["text"][:80])}"'
        rows.append(
            f'<tr class="{cls}"{flash_attr if flash else ""}>'
            f"<td>{marker() if m['exercise'] else ''}{prec_badge(m['precedence'])}"
            f"{status_badges(lang, statuses.get(m['id']))}{pq_badge(lang, m.get('pq'))}</td>"
            f"<td>{e(when(lang, m.get('received_at')))}</td><td>{e(m['issuer'])}</td>"
            f"<td>{e(', '.join(m['audience']))}</td>"
            f'<td><a href="/m/{e(m["id"])}">'
            f"{e((EXERCISE_MARKER + ': ' if m['exercise'] else '') + m['text'][:120])}</a></td>"
            "</tr>"
        )
    table = (
        f"<table class=list><thead><tr><th>{t(lang, 'precedence')}</th>"
        f"<th>{t(lang, 'received')}</th><th>{t(lang, 'issuer')}</th>"
        f"<th>{t(lang, 'audience')}</th><th>{t(lang, 'text')}</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        if rows
        else f'<p class="note">{t(lang, "empty")}</p>'
    )
    return f'<div data-title="{e(title)}" data-exercise="{int(exercise)}">{table}</div>'


def inbox_page(
    ctx: Ctx,
    fragment: str,
    filters: Mapping[str, str],
    choices: Mapping[str, Iterable[str]],
    live: str,
    exercise: bool,
) -> str:
    lang = ctx.lang

    def select(name: str, label: str, options: Iterable[tuple[str, str]]) -> str:
        opts = "".join(
            f'<option value="{e(v)}"{" selected" if filters.get(name, "") == v else ""}>'
            f"{e(text)}</option>"
            for v, text in options
        )
        return f'<label>{label} <select name="{name}">{opts}</select></label>'

    every = [("", t(lang, "all"))]
    form = (
        '<form method="get" action="/inbox" class="filters">'
        + select(
            "precedence", t(lang, "precedence"), every + [(p.name, p.name) for p in Precedence]
        )
        + select("region", t(lang, "region"), every + [(r, r) for r in choices["region"]])
        + select("issuer", t(lang, "issuer"), every + [(i, i) for i in choices["issuer"]])
        + select(
            "exercise",
            t(lang, "exercise"),
            [*every, ("yes", t(lang, "only_exercise")), ("no", t(lang, "only_real"))],
        )
        + f'<button type="submit">{t(lang, "apply")}</button>'
        f'<label class="sound"><input type="checkbox" id="sound"> {t(lang, "sound")}</label>'
        "</form>"
    )
    body = f'{form}<div id="live">{fragment}</div>'
    return layout(ctx, t(lang, "inbox"), body, exercise=exercise, live=live)


def detail_rows(lang: str, m: Item) -> str:
    rows = [
        (t(lang, "id"), m["id"]),
        (t(lang, "kind"), str(m["kind"]).upper()),
        (t(lang, "issuer"), m["issuer"]),
        (t(lang, "signature"), t(lang, "verified", kid=m.get("kid", "?"))),
        *(
            [(t(lang, "pq"), pq.label(str(m["pq"]), lang))]
            if m.get("pq") in ("pending", "verified")
            else []
        ),
        (t(lang, "issued"), when(lang, m["issued_at"])),
        (t(lang, "expires"), when(lang, m["expires_at"])),
        (t(lang, "received"), when(lang, m.get("received_at"))),
        (
            t(lang, "via"),
            t(lang, "path_here") if m.get("origin") else str(m.get("received_via", "?")),
        ),
        (t(lang, "audience"), ", ".join(m["audience"])),
    ]
    rows += [(t(lang, "refers"), r) for r in m.get("refs", [])]
    cells = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    return f'<table class="details">{cells}</table>'


def trail(lang: str, m: Item) -> str:
    """The message's path through this node, from the node's audit log."""
    rows = "".join(
        f"<tr><td>{e(when(lang, r['at']))}</td><td>{e(r['event'])}</td>"
        f"<td>{e(r.get('link') or '')}</td><td>{e(r.get('node') or '')}</td>"
        f"<td>{e(r.get('detail') or '')}</td></tr>"
        for r in m.get("trail", [])
    )
    if not rows:
        return ""
    return (
        f"<h2>{t(lang, 'trail')}</h2><table class=list><thead><tr><th>{t(lang, 'when')}</th>"
        f"<th>{t(lang, 'event')}</th><th>{t(lang, 'via')}</th><th>{t(lang, 'node')}</th>"
        f"<th>{t(lang, 'detail')}</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def decision_page(ctx: Ctx, m: Item, status: str | None, *, may_follow_up: bool) -> str:
    lang, ident = ctx.lang, e(m["id"])
    actions = [
        f'<a class="button" href="/m/{ident}/delivery">{t(lang, "delivery")}</a>',
        f'<a class="button" href="/m/{ident}/print">{t(lang, "print")}</a>',
    ]
    if may_follow_up and m["kind"] in ("decision", "notice") and status is None:
        actions += [
            f'<a class="button" href="/compose?kind=cancel&amp;ref={ident}">'
            f"{t(lang, 'cancel')}</a>",
            f'<a class="button" href="/compose?kind=supersede&amp;ref={ident}">'
            f"{t(lang, 'supersede')}</a>",
        ]
    body = (
        card(lang, m, status)
        + detail_rows(lang, m)
        + f'<p class="actions">{"".join(actions)}</p>'
        + trail(lang, m)
    )
    return layout(ctx, f"{m['precedence']} {m['issuer']}", body, exercise=bool(m["exercise"]))


def delivery_fragment(lang: str, m: Item) -> str:
    rows = []
    for row in m["delivery"]:
        if row["signed"]:
            state = f'<span class="ok" data-state="delivered">{t(lang, "delivered")}</span>'
            extra = (
                f"<td>{e(when(lang, row.get('received_at')))}</td><td>{e(row.get('via', ''))}</td>"
            )
        else:
            state = f'<span class="wait" data-state="waiting">{t(lang, "waiting")}</span>'
            extra = "<td>—</td><td>—</td>"
        rows.append(
            f'<tr data-node="{e(row["node"])}"><td>{e(row["node"])}</td>'
            f"<td>{state}</td>{extra}</tr>"
        )
    done = sum(1 for r in m["delivery"] if r["signed"])
    return (
        f'<div data-title="" data-exercise="{int(bool(m["exercise"]))}">'
        f'<p class="summary">{done} {t(lang, "of")} {len(m["delivery"])} {t(lang, "delivered")}</p>'
        f"<table class=list><thead><tr><th>{t(lang, 'node')}</th><th>{t(lang, 'state')}</th>"
        f"<th>{t(lang, 'when')}</th><th>{t(lang, 'via')}</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        f'<p class="note">{t(lang, "delivery_help")}</p></div>'
    )


def delivery_page(ctx: Ctx, m: Item, status: str | None, fragment: str, live: str) -> str:
    body = (
        card(ctx.lang, m, status)
        + f'<p><a href="/m/{e(m["id"])}">{t(ctx.lang, "id")} {e(m["id"][:16])}</a></p>'
        + f'<div id="live">{fragment}</div>'
    )
    title = f"{t(ctx.lang, 'delivery')} {m['precedence']}"
    return layout(ctx, title, body, exercise=bool(m["exercise"]), live=live)


def print_page(ctx: Ctx, m: Item, status: str | None, now: float) -> str:
    lang = ctx.lang
    body = (
        card(lang, m, status)
        + detail_rows(lang, m)
        + f"<h2>{t(lang, 'receipts')}</h2>"
        + delivery_fragment(lang, m)
        + f'<p class="note">{t(lang, "printed_at")}: {e(when(lang, now))} · {e(ctx.user or "")}</p>'
        + f'<p class="noprint"><button type="button" data-print>{t(lang, "print")}</button></p>'
    )
    return layout(ctx, f"{m['precedence']} {m['issuer']}", body, exercise=bool(m["exercise"]))


def sent_page(ctx: Ctx, items: Sequence[Item], statuses: Mapping[str, str]) -> str:
    lang = ctx.lang
    rows = "".join(
        f"<tr><td>{marker() if m['exercise'] else ''}{prec_badge(m['precedence'])} "
        f"{status_badges(lang, statuses.get(m['id']))}</td>"
        f"<td>{e(when(lang, m['issued_at']))}</td><td>{e(', '.join(m['audience']))}</td>"
        f'<td><a href="/m/{e(m["id"])}">{e(m["text"][:80])}</a></td>'
        f'<td><a href="/m/{e(m["id"])}/delivery">{m["signed"]} {t(lang, "of")} {m["recipients"]} '
        f"{t(lang, 'delivered')}</a></td></tr>"
        for m in items
    )
    table = (
        f"<table class=list><thead><tr><th>{t(lang, 'precedence')}</th><th>{t(lang, 'issued')}</th>"
        f"<th>{t(lang, 'audience')}</th><th>{t(lang, 'text')}</th>"
        f"<th>{t(lang, 'delivery')}</th></tr></thead><tbody>{rows}</tbody></table>"
        if items
        else f'<p class="note">{t(lang, "empty")}</p>'
    )
    return layout(ctx, t(lang, "sent"), table, exercise=any(m["exercise"] for m in items))


# ----------------------------------------------------------------------------- compose


@dataclass(frozen=True, slots=True)
class ComposeForm:
    precedence: str = "FLASH"
    to: tuple[str, ...] = ()
    text: str = ""
    validity_min: int = 0  # 0: the default for the precedence
    exercise: bool = False
    kind: str = "decision"
    ref: str = ""


VALIDITY_CHOICES = (30, 60, 120, 360, 720, 1440, 4320)  # minutes


def validity_label(lang: str, minutes: int) -> str:
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 1440:
        h = minutes // 60
        return f"{h} uur" if lang == "nl" else f"{h} h"
    d = minutes // 1440
    return (f"{d} dag" if d == 1 else f"{d} dagen") if lang == "nl" else f"{d} d"


def compose_page(
    ctx: Ctx,
    form: ComposeForm,
    options: Sequence[tuple[str, str]],
    *,
    error: str = "",
    original: Item | None = None,
) -> str:
    lang = ctx.lang
    err = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
    precs = "".join(
        f'<label class="choice"><input type="radio" name="precedence" value="{p.name}"'
        f"{' checked' if form.precedence == p.name else ''}> {e(precedence_help(lang, p))}</label>"
        for p in Precedence
    )
    aud = "".join(
        f'<label class="choice"><input type="checkbox" name="to" value="{e(spec)}"'
        f"{' checked' if spec in form.to else ''}> {e(label)}</label>"
        for spec, label in options
    )
    validity = f'<option value="0">{"standaard" if lang == "nl" else "default"}</option>' + "".join(
        f'<option value="{m}"{" selected" if form.validity_min == m else ""}>'
        f"{validity_label(lang, m)}</option>"
        for m in VALIDITY_CHOICES
    )
    follow = ""
    if form.kind in ("cancel", "supersede") and original is not None:
        follow = (
            f'<div class="follow"><p><b>{t(lang, form.kind)}</b> — {t(lang, "refers")}:</p>'
            f"{card(lang, original)}</div>"
        )
    exercise_box = (
        f'<label class="choice exercise-switch"><input type="checkbox" name="exercise" '
        f'id="exercise"{" checked" if form.exercise else ""}'
        f"{' disabled' if original is not None else ''}> {t(lang, 'exercise')} — "
        f"{t(lang, 'exercise_help')}</label>"
    )
    if original is not None and form.exercise:
        exercise_box += '<input type="hidden" name="exercise" value="on">'
    body = (
        f"{err}{follow}"
        '<form method="post" action="/compose/send" id="compose" '
        'data-estimate="/compose/estimate">'
        f"{csrf_field(ctx)}"
        f'<input type="hidden" name="kind" value="{e(form.kind)}">'
        f'<input type="hidden" name="ref" value="{e(form.ref)}">'
        f"<fieldset><legend>{t(lang, 'precedence')}</legend>{precs}</fieldset>"
        f"<fieldset><legend>{t(lang, 'audience')}</legend>"
        f'<p class="note">{t(lang, "audience_help")}</p>{aud}</fieldset>'
        f'<label>{t(lang, "text")}<textarea name="text" id="text" rows="4" maxlength="2048">'
        f"{e(form.text)}</textarea></label>"
        f'<label>{t(lang, "validity")} <select name="validity">{validity}</select></label>'
        f"{exercise_box}"
        f'<p id="estimate" class="estimate" aria-live="polite"></p>'
        f'<h2>{t(lang, "preview")}</h2><div id="preview" class="preview"></div>'
        f'<label>{t(lang, "sign_password")} <input type="password" name="password" '
        f'autocomplete="current-password" required></label>'
        f'<button type="submit" class="send">{t(lang, "sign_send")}</button></form>'
    )
    title = t(lang, "compose") if form.kind == "decision" else t(lang, form.kind)
    return layout(ctx, title, body, exercise=form.exercise)


# ----------------------------------------------------------------------------- network


def network_fragment(
    lang: str, st: Item, rejections: Sequence[Item], console_counts: Mapping[str, int] | None = None
) -> str:
    links = "".join(
        f"<tr><td>{e(lk['name'])}</td><td>{e(lk['kind'])}</td>"
        f'<td><span class="state state-{e(lk["state"])}">{e(lk["state"])}</span> '
        f"{t(lang, 'since')} {e(when(lang, lk['since']))}</td>"
        f"<td>{e(lk.get('routing', ''))}</td><td>{e(lk.get('outbox', 0))}</td></tr>"
        for lk in st["links"]
    )
    radios = []
    for lk in st["links"]:
        mesh = lk.get("mesh")
        if isinstance(mesh, dict) and "airtime_budget_s" in mesh:
            used, budget = float(mesh["airtime_used_s"]), float(mesh["airtime_budget_s"])
            pct = 0 if budget <= 0 else min(100, round(100 * used / budget))
            row = t(
                lang,
                "airtime_row",
                used=decimal(lang, used),
                budget=decimal(lang, budget, 0),
                cap=decimal(lang, float(mesh.get("airtime_cap_nonflash_s", budget)), 0),
            )
            radios.append(
                f"<tr><td>{e(lk['name'])} ({e(mesh.get('preset', '?'))})</td>"
                f'<td><meter min="0" max="100" value="{pct}"></meter> {e(row)}</td></tr>'
            )
    peers = "".join(
        f"<tr><td>{e(name)}</td><td>{e(info.get('state', '?'))}</td>"
        f"<td>{e(when(lang, info.get('heard_at')))}</td></tr>"
        for name, info in sorted(st.get("peers", {}).items())
    )
    if st.get("clock_warning"):
        off = float(st.get("engine", {}).get("clock_offset_s") or 0)
        clock = f'<p class="error">{e(t(lang, "clock_warning", off=f"{off:+.0f}"))}</p>'
    else:
        clock = f'<p class="ok">{t(lang, "clock_ok")}</p>'
    rej = "".join(
        f"<tr><td>{e(when(lang, r['at']))}</td><td>{e(r.get('link') or '')}</td>"
        f"<td>{e(r.get('detail') or '')}</td></tr>"
        for r in rejections
    )
    none = f"<tr><td colspan=3>{t(lang, 'none')}</td></tr>"
    counts = "".join(
        f"<tr><td>{e(name)}</td><td>{n}</td></tr>"
        for name, n in sorted((console_counts or {}).items())
    )
    return (
        '<div data-title="" data-exercise="0">'
        f"{clock}<h2>{t(lang, 'links')}</h2><table class=list><tbody>{links}</tbody></table>"
        f"<h2>{t(lang, 'airtime')}</h2><table class=list><tbody>"
        f"{''.join(radios) or none}</tbody></table>"
        f"<h2>{t(lang, 'peers')}</h2><table class=list><tbody>{peers or none}</tbody></table>"
        f"<h2>{t(lang, 'rejections')}</h2><table class=list><thead><tr><th>{t(lang, 'when')}</th>"
        f"<th>{t(lang, 'via')}</th><th>{t(lang, 'reason')}</th></tr></thead>"
        f"<tbody>{rej or none}</tbody></table>"
        f"<h2>{t(lang, 'console_counts')}</h2><table class=list><tbody>{counts or none}</tbody>"
        "</table></div>"
    )


def network_page(ctx: Ctx, fragment: str, live: str) -> str:
    return layout(ctx, t(ctx.lang, "network"), f'<div id="live">{fragment}</div>', live=live)
