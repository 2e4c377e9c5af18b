"""The console's web application (aiohttp): routes, sessions, CSRF, login throttling, live updates.

The console holds no message state of its own: every page asks the node's local API (relay.api)
and renders the answer (relay.console.views). Live updates are Server-Sent Events: the server
re-renders a page's live part every POLL_S seconds and sends it only when it changed.

Security: every route but /login and /static needs a session (pages redirect to /login, the rest
answer 401); every POST carries a CSRF token bound to the session (the login form a token bound
to a pre-session cookie); failed logins per name and per address are throttled; the
Content-Security-Policy allows nothing from another origin and no inline script or style.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

import structlog
from aiohttp import web

from relay.airtime import PRESETS, Preset
from relay.console import views
from relay.console.accounts import AccountError, User
from relay.console.auth import (
    SESSION,
    Session,
)
from relay.console.compose import (
    FOLLOW_UPS,
    SIGNING_KINDS,
    Refusal,
    audience_options,
    check,
    estimate,
    parse_form,
)
from relay.console.core import SENT_SHOWN, NodeDown
from relay.console.login import LoginPages
from relay.console.text import decimal, t
from relay.envelope import ID_LEN, Decision, message_id, seal
from relay.mesh.frames import MAX_FRAME

log = structlog.get_logger("relay.console")

POLL_S = 0.5  # how often the delivery view re-renders (two local API calls)
POLL_LIST_S = 1.0  # the inbox and network views (more work for the node each time)
KEEPALIVE_S = 15.0


class Console(LoginPages):
    # ------------------------------------------------------------------ reading pages

    async def messages(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        inbox = await self.call({"op": "inbox", "limit": 500})
        sent = await self.call({"op": "sent", "limit": SENT_SHOWN})
        return list(inbox.get("messages", [])), list(sent.get("messages", []))

    @staticmethod
    def statuses(*lists: list[dict[str, Any]]) -> dict[str, str]:
        """Which messages a later CANCEL or SUPERSEDE refers to: id -> kind."""
        out: dict[str, str] = {}
        for items in lists:
            for m in items:
                if m["kind"] in ("cancel", "supersede"):
                    for ref in m.get("refs", []):
                        out.setdefault(ref, m["kind"])
        return out

    def inbox_filters(self, request: web.Request) -> dict[str, str]:
        q = request.query
        return {k: q.get(k, "")[:64] for k in ("precedence", "region", "issuer", "exercise")}

    async def inbox_fragment(
        self, lang: str, filters: Mapping[str, str]
    ) -> tuple[str, bool, dict[str, list[str]]]:
        inbox, sent = await self.messages()
        statuses = self.statuses(inbox, sent)
        shown = [m for m in inbox if m["kind"] not in ("ack", "roster", "revocation", "status")]
        choices = {
            "region": sorted(
                {
                    s.split(":", 1)[1]
                    for m in shown
                    for s in m["audience"]
                    if s.startswith("region:")
                }
            ),
            "issuer": sorted({m["issuer"] for m in shown}),
        }
        f = filters
        items = [
            m
            for m in shown
            if (not f["precedence"] or m["precedence"] == f["precedence"])
            and (not f["region"] or f"region:{f['region']}" in m["audience"])
            and (not f["issuer"] or m["issuer"] == f["issuer"])
            and (not f["exercise"] or m["exercise"] == (f["exercise"] == "yes"))
        ]
        base = f"{t(lang, 'inbox')} — {t(lang, 'app')} {self.node}"
        return (
            views.inbox_fragment(lang, items, statuses, base_title=base),
            any(m["exercise"] for m in items),
            choices,
        )

    async def inbox(self, request: web.Request) -> web.Response:
        ctx = self.ctx(request)
        filters = self.inbox_filters(request)
        fragment, exercise, choices = await self.inbox_fragment(ctx.lang, filters)
        live = "/events?view=inbox&" + "&".join(f"{k}={v}" for k, v in filters.items() if v)
        return self.html(
            views.inbox_page(ctx, fragment, filters, choices, live.rstrip("&"), exercise)
        )

    async def sent(self, request: web.Request) -> web.Response:
        ctx = self.ctx(request)
        inbox, sent = await self.messages()
        return self.html(views.sent_page(ctx, sent, self.statuses(inbox, sent)))

    async def message(self, ident: str) -> dict[str, Any] | None:
        if len(ident) != 2 * ID_LEN or any(c not in "0123456789abcdef" for c in ident):
            return None
        answer = await self.call({"op": "message", "id": ident})
        if not answer.get("ok"):
            return None
        m: dict[str, Any] = answer["message"]
        return m

    async def with_message(self, request: web.Request) -> tuple[dict[str, Any], str | None]:
        m = await self.message(request.match_info["id"])
        if m is None:
            raise web.HTTPNotFound(text=t(self.lang(request), "not_found"))
        inbox, sent = await self.messages()
        # The key id the node verified the signature with: the issuer's on the node's roster.
        entries = (await self.roster()).get("entries", [])
        m["kid"] = next((x["kid"] for x in entries if x["name"] == m["issuer"]), "?")
        m["trail"] = (await self.call({"op": "trail", "id": m["id"]})).get("events", [])
        return m, self.statuses(inbox, sent).get(m["id"])

    async def decision(self, request: web.Request) -> web.Response:
        m, status = await self.with_message(request)
        s: Session = request[SESSION]
        return self.html(
            views.decision_page(
                self.ctx(request), m, status, may_follow_up=m["issuer"] == s.user.issuer
            )
        )

    async def delivery(self, request: web.Request) -> web.Response:
        m, status = await self.with_message(request)
        ctx = self.ctx(request)
        fragment = views.delivery_fragment(ctx.lang, m)
        live = f"/events?view=delivery&id={m['id']}"
        return self.html(views.delivery_page(ctx, m, status, fragment, live))

    async def printable(self, request: web.Request) -> web.Response:
        m, status = await self.with_message(request)
        return self.html(views.print_page(self.ctx(request), m, status, self.clock()))

    async def network_fragment(self, lang: str) -> str:
        st = await self.call({"op": "status"})
        rej = await self.call({"op": "rejections", "limit": 20})
        return views.network_fragment(lang, st, rej.get("events", []), self.counters)

    async def network(self, request: web.Request) -> web.Response:
        ctx = self.ctx(request)
        return self.html(
            views.network_page(ctx, await self.network_fragment(ctx.lang), "/events?view=network")
        )

    # ------------------------------------------------------------------ live updates (SSE)

    async def events(self, request: web.Request) -> web.StreamResponse:
        lang = self.lang(request)
        view = request.query.get("view", "")
        render: Callable[[], Awaitable[str]]
        period = POLL_LIST_S
        if view == "inbox":
            filters = self.inbox_filters(request)

            async def render() -> str:
                return (await self.inbox_fragment(lang, filters))[0]
        elif view == "delivery":
            ident = request.query.get("id", "")
            period = POLL_S

            async def render() -> str:
                m = await self.message(ident)
                return "" if m is None else views.delivery_fragment(lang, m)
        elif view == "network":

            async def render() -> str:
                return await self.network_fragment(lang)
        else:
            raise web.HTTPBadRequest(text="view must be inbox, delivery or network")
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        token = request.cookies.get(self.session_cookie, "")
        last, quiet = "", 0.0
        try:
            while not self.closing.is_set() and self.alive(token):
                try:
                    html = await render()
                except NodeDown:
                    html = ""
                if html and html != last:
                    data = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
                    await response.write(f"event: update\n{data}\n".encode())
                    last, quiet = html, 0.0
                elif quiet >= KEEPALIVE_S:
                    await response.write(b": keepalive\n\n")
                    quiet = 0.0
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(period):
                        await self.closing.wait()
                quiet += period
        except (ConnectionResetError, ConnectionError):
            pass
        return response

    # ------------------------------------------------------------------ composing

    async def roster(self) -> dict[str, Any]:
        return await self.call({"op": "roster"})

    async def check_form(
        self, user: User, f: views.ComposeForm
    ) -> tuple[Decision, dict[str, Any] | None]:
        """Check a compose form against the key's scope: (decision with seq 0, the original of a
        cancel or supersede); raises Refusal with the reason."""
        original = await self.message(f.ref) if f.kind in FOLLOW_UPS else None
        decision = check(f, user.issuer, await self.roster(), original, self.clock())
        return decision, original

    async def compose(self, request: web.Request) -> web.Response:
        s: Session = request[SESSION]
        ctx = self.ctx(request)
        q = request.query
        kind = q.get("kind", "decision")
        ref = q.get("ref", "").lower()
        original = await self.message(ref) if kind in FOLLOW_UPS else None
        if kind not in SIGNING_KINDS or (kind in FOLLOW_UPS and original is None):
            raise web.HTTPNotFound(text=t(ctx.lang, "not_found"))
        options = audience_options(await self.roster(), s.user.issuer, ctx.lang)
        form = views.ComposeForm(kind=kind, ref=ref)
        if original is not None:
            offered = {spec for spec, _ in options}
            form = views.ComposeForm(
                precedence=original["precedence"],
                to=tuple(a for a in original["audience"] if a in offered),
                text=original["text"] if kind == "supersede" else "",
                exercise=original["exercise"],
                kind=kind,
                ref=ref,
            )
        return self.html(views.compose_page(ctx, form, options, original=original))

    async def estimate(self, request: web.Request) -> web.Response:
        s: Session = request[SESSION]
        lang = self.lang(request)
        post = await request.post()
        form = parse_form(post, [v for v in post.getall("to", []) if isinstance(v, str)])
        try:
            decision, _ = await self.check_form(s.user, form)
        except Refusal as exc:
            return web.json_response(
                {"ok": False, "estimate": exc.reason, "preview": "", "exercise": form.exercise}
            )
        seq = self.accounts.peek_seq(s.user)
        probe = dataclasses.replace(decision, seq=seq)
        cost = estimate(decision, seq, s.user.kid, await self.preset())
        key = "fits_one" if cost.frames == 1 else "fits_many"
        text = t(
            lang,
            key,
            size=cost.size,
            limit=MAX_FRAME,
            n=cost.frames,
            air=decimal(lang, cost.airtime_s),
        )
        item = {
            "id": "0" * 64,
            "issuer": s.user.issuer,
            "precedence": probe.precedence.name,
            "kind": probe.kind.name.lower(),
            "exercise": probe.exercise,
            "audience": probe.audience.specs(),
            "text": probe.text,
        }
        return web.json_response(
            {
                "ok": True,
                "estimate": text,
                "size": cost.size,
                "frames": cost.frames,
                "airtime_s": round(cost.airtime_s, 3),
                "preview": views.card(lang, item),
                "exercise": probe.exercise,
            }
        )

    async def preset(self) -> Preset:
        try:
            st = await self.call({"op": "status"})
        except NodeDown:
            st = {"links": []}
        for lk in st.get("links", []):
            mesh = lk.get("mesh")
            if isinstance(mesh, dict) and mesh.get("preset") in PRESETS:
                return PRESETS[mesh["preset"]]
        return PRESETS["LONG_FAST"]

    async def send(self, request: web.Request) -> web.StreamResponse:
        s: Session = request[SESSION]
        ctx = self.ctx(request)
        post = await request.post()
        form = parse_form(post, [v for v in post.getall("to", []) if isinstance(v, str)])
        password = post.get("password", "")
        options = audience_options(await self.roster(), s.user.issuer, ctx.lang)
        original: dict[str, Any] | None = None

        def again(msg: str, status: int) -> web.Response:
            page = views.compose_page(ctx, form, options, error=msg, original=original)
            return self.html(page, status)

        try:
            decision, original = await self.check_form(s.user, form)
        except Refusal as exc:
            original = exc.original
            self.count("compose_refused")
            log.warning("console_send_refused", user=s.user.name, reason=exc.reason)
            await self.audit(s.user.name, "refused", detail=exc.reason)
            return again(exc.reason, exc.status)
        try:
            key = await asyncio.to_thread(self.accounts.unlock, s.user, str(password))
        except AccountError as exc:
            self.count("unlock_failed")
            self.throttle.failed(f"user:{s.user.name.lower()}", self.clock())
            await self.audit(s.user.name, "refused", detail=str(exc))
            return again(str(exc), 403)
        signed = dataclasses.replace(decision, seq=self.accounts.next_seq(s.user))
        raw = seal(signed, key, kid=s.user.kid)
        del key
        msg_id = message_id(raw).hex()
        what = f"{signed.precedence.name} {signed.kind.name.lower()} seq {signed.seq}"
        if not await self.audit(s.user.name, "sign", msg_id, f"{what} to {signed.audience}"):
            raise NodeDown("the node did not record the signature; nothing was sent")
        answer = await self.call({"op": "submit", "raw": base64.b64encode(raw).decode()})
        if not answer.get("ok"):
            await self.audit(s.user.name, "refused", msg_id, str(answer.get("error")))
            return again(str(answer.get("error")), 409)
        await self.audit(
            s.user.name, "send", msg_id, "duplicate" if answer.get("duplicate") else ""
        )
        log.info("console_sent", user=s.user.name, msg_id=msg_id, precedence=signed.precedence.name)
        raise web.HTTPSeeOther(f"/m/{msg_id}/delivery")

    # ------------------------------------------------------------------ static files

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        types = {"console.css": "text/css", "console.js": "text/javascript"}
        if name not in types:
            raise web.HTTPNotFound()
        body = resources.files("relay.console").joinpath("static", name).read_bytes()
        return web.Response(
            body=body,
            content_type=types[name],
            charset="utf-8",
            headers={"Cache-Control": "max-age=300"},
        )

    async def root(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther("/inbox")

    # ------------------------------------------------------------------ the application

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard], client_max_size=64 * 1024)
        r = app.router
        r.add_get("/", self.root)
        r.add_get("/login", self.login_get)
        r.add_post("/login", self.login_post)
        r.add_post("/logout", self.logout)
        r.add_get("/lang", self.set_lang)
        r.add_get("/inbox", self.inbox)
        r.add_get("/sent", self.sent)
        r.add_get("/network", self.network)
        r.add_get("/compose", self.compose)
        r.add_post("/compose/estimate", self.estimate)
        r.add_post("/compose/send", self.send)
        r.add_get("/m/{id}", self.decision)
        r.add_get("/m/{id}/delivery", self.delivery)
        r.add_get("/m/{id}/print", self.printable)
        r.add_get("/events", self.events)
        r.add_get("/static/{name}", self.static)

        async def on_shutdown(_: web.Application) -> None:
            self.closing.set()

        app.on_shutdown.append(on_shutdown)
        return app


# Routes for the security test: every one must refuse a request without a session.
PROTECTED_ROUTES = (
    ("GET", "/inbox"),
    ("GET", "/sent"),
    ("GET", "/network"),
    ("GET", "/compose"),
    ("POST", "/compose/estimate"),
    ("POST", "/compose/send"),
    ("POST", "/logout"),
    ("GET", "/m/" + "0" * 64),
    ("GET", "/m/" + "0" * 64 + "/delivery"),
    ("GET", "/m/" + "0" * 64 + "/print"),
    ("GET", "/events?view=inbox"),
    ("GET", "/"),
)
