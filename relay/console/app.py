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
import hmac
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay import api
from relay.airtime import PRESETS, Preset
from relay.cli.common import DEFAULT_EXPIRY
from relay.console import views
from relay.console.accounts import NAME, AccountError, Accounts, User
from relay.console.settings import SESSION_MAX_S, ConsoleSettings
from relay.console.text import LANGUAGES, decimal, t
from relay.envelope import ID_LEN, Audience, Decision, Kind, Precedence, message_id, seal
from relay.mesh.events import frame_airtime
from relay.mesh.frames import MAX_FRAME, encode_message
from relay.trust import Scope

log = structlog.get_logger("relay.console")

POLL_S = 0.5  # how often the delivery view re-renders (two local API calls)
POLL_LIST_S = 1.0  # the inbox and network views (more work for the node each time)
KEEPALIVE_S = 15.0
LOGIN_FAILURES = 5  # this many failures for one name within LOGIN_WINDOW_S ...
ADDRESS_FAILURES = 20  # (or this many from one address, over any names: password spraying)
LOGIN_WINDOW_S = 15 * 60.0
LOGIN_LOCK_S = 5 * 60.0  # ... lock the name (and the address) for this long
# Cookies are per host, not per port: the node's name in the cookie's keeps two consoles on one
# machine (a test, a demo) from logging each other out.
SESSION_COOKIE = "relay_console_"
LOGIN_COOKIE = "relay_login_"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SENT_SHOWN = 50  # newest sent decisions listed (and searched for cancel/supersede marks)
SIGNING_KINDS = {
    "decision": Kind.DECISION,
    "notice": Kind.NOTICE,
    "cancel": Kind.CANCEL,
    "supersede": Kind.SUPERSEDE,
}


def see_other(location: str) -> web.Response:
    """A 303 redirect that can carry cookies (a raised HTTPSeeOther cannot, in aiohttp 4)."""
    return web.Response(status=303, headers={"Location": location})


@dataclass
class Session:
    user: User
    csrf: str
    created: float
    seen: float


SESSION = web.RequestKey("session", Session)


@dataclass
class Throttle:
    """Failed logins per key ("user:NAME", "addr:IP"): a name is locked after LOGIN_FAILURES,
    an address (all users of one crisis room may share it) only after ADDRESS_FAILURES."""

    failures: dict[str, deque[float]] = field(default_factory=dict)

    @staticmethod
    def limit(key: str) -> int:
        return ADDRESS_FAILURES if key.startswith("addr:") else LOGIN_FAILURES

    def locked_for(self, key: str, now: float) -> float:
        times = self.failures.get(key)
        if not times or len(times) < self.limit(key) or times[0] < now - LOGIN_WINDOW_S:
            return 0.0
        return max(0.0, times[-1] + LOGIN_LOCK_S - now)

    def failed(self, key: str, now: float) -> None:
        times = self.failures.setdefault(key, deque(maxlen=self.limit(key)))
        while times and times[0] < now - LOGIN_WINDOW_S:
            times.popleft()
        times.append(now)
        if len(self.failures) > 10_000:  # bounded: forget the oldest keys
            self.failures.pop(next(iter(self.failures)))

    def succeeded(self, key: str) -> None:
        self.failures.pop(key, None)


class NodeDown(Exception):
    pass


class Refusal(Exception):
    """A compose form that cannot be signed: the reason, shown to the user and audited."""

    def __init__(self, reason: str, original: dict[str, Any] | None, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.original = original
        self.status = status


class Console:
    def __init__(
        self,
        node: str,
        socket: Path,
        settings: ConsoleSettings,
        *,
        clock: Callable[[], float] = time.time,
        secure_cookies: bool = False,
    ) -> None:
        self.node = node
        self.socket = socket
        self.settings = settings
        self.accounts = Accounts(settings.users)
        self.clock = clock
        self.secure = secure_cookies
        self.sessions: dict[str, Session] = {}
        self.throttle = Throttle()
        self.closing = asyncio.Event()
        self.counters: dict[str, int] = {}
        suffix = re.sub(r"[^A-Za-z0-9_-]", "_", node)
        self.session_cookie = SESSION_COOKIE + suffix
        self.login_cookie = LOGIN_COOKIE + suffix

    # ------------------------------------------------------------------ plumbing

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    async def call(self, req: dict[str, Any]) -> dict[str, Any]:
        try:
            return await api.request(self.socket, req, wait_s=10.0)
        except api.ApiError as exc:
            raise NodeDown(str(exc)) from exc

    async def audit(
        self, user: str, event: str, msg_id: str | None = None, detail: str = ""
    ) -> bool:
        """Record a console event in the node's audit log; False when the node did not."""
        req: dict[str, Any] = {"op": "console-audit", "user": user, "event": event}
        if msg_id:
            req["id"] = msg_id
        if detail:
            req["detail"] = detail[:300]
        try:
            answer = await self.call(req)
        except NodeDown as exc:
            log.error("console_audit_failed", user=user, audit_event=event, error=str(exc))
            return False
        if not answer.get("ok"):
            log.error(
                "console_audit_refused", user=user, audit_event=event, error=answer.get("error")
            )
            return False
        return True

    def alive(self, token: str) -> bool:
        """Whether a session is still valid, without counting this as activity (a live page
        left open does not keep its session going)."""
        s = self.sessions.get(token)
        now = self.clock()
        return s is not None and (
            now - s.seen <= self.settings.session_idle_s and now - s.created <= SESSION_MAX_S
        )

    def session(self, request: web.Request) -> Session | None:
        token = request.cookies.get(self.session_cookie, "")
        s = self.sessions.get(token)
        if s is None:
            return None
        now = self.clock()
        if now - s.seen > self.settings.session_idle_s or now - s.created > SESSION_MAX_S:
            del self.sessions[token]
            return None
        s.seen = now
        return s

    def lang(self, request: web.Request) -> str:
        lang = request.cookies.get("lang", "nl")
        return lang if lang in LANGUAGES else "nl"

    def ctx(self, request: web.Request) -> views.Ctx:
        s: Session | None = request.get(SESSION)
        return views.Ctx(
            lang=self.lang(request),
            node=self.node,
            path=request.path_qs,
            user=s.user.name if s else None,
            issuer=s.user.issuer if s else None,
            csrf=s.csrf if s else None,
        )

    def html(self, body: str, status: int = 200) -> web.Response:
        return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")

    def refuse(self, request: web.Request, status: int, text: str) -> web.Response:
        ctx = self.ctx(request)
        return self.html(views.message_page(ctx, t(ctx.lang, "refused"), text, error=True), status)

    # ------------------------------------------------------------------ middleware

    @web.middleware
    async def guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response: web.StreamResponse
        try:
            response = await self._guarded(request, handler)
        except web.HTTPException as exc:
            response = web.Response(status=exc.status, text=exc.text, headers=exc.headers)
        except NodeDown as exc:
            ctx = self.ctx(request)
            response = self.html(
                views.message_page(
                    ctx, t(ctx.lang, "network"), t(ctx.lang, "node_down", error=exc), error=True
                ),
                503,
            )
        h = response.headers
        h["Content-Security-Policy"] = CSP
        h["X-Content-Type-Options"] = "nosniff"
        h["Referrer-Policy"] = "no-referrer"
        h["X-Frame-Options"] = "DENY"
        h["Cross-Origin-Opener-Policy"] = "same-origin"
        h["Cross-Origin-Resource-Policy"] = "same-origin"
        if not request.path.startswith("/static/"):
            h["Cache-Control"] = "no-store"
        return response

    async def _guarded(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        public = request.path in ("/login", "/lang") or request.path.startswith("/static/")
        if not public:
            s = self.session(request)
            if s is None:
                self.count("no_session")
                if request.method == "GET" and not request.path.startswith("/events"):
                    raise web.HTTPSeeOther("/login")
                raise web.HTTPUnauthorized(text="login required")
            request[SESSION] = s
        if request.method == "POST" and not await self._csrf_ok(request):
            self.count("csrf_refused")
            log.warning("console_csrf_refused", path=request.path)
            return self.refuse(request, 403, "CSRF-token ontbreekt of klopt niet / bad CSRF token")
        return await handler(request)

    async def _csrf_ok(self, request: web.Request) -> bool:
        sent = request.headers.get("X-CSRF-Token")
        if sent is None:
            form = await request.post()
            value = form.get("csrf")
            sent = value if isinstance(value, str) else ""
        s: Session | None = request.get(SESSION)
        expected = s.csrf if s is not None else request.cookies.get(self.login_cookie, "")
        return bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())

    # ------------------------------------------------------------------ login

    async def login_form(
        self, request: web.Request, error: str = "", status: int = 200
    ) -> web.Response:
        token = request.cookies.get(self.login_cookie) or secrets.token_urlsafe(24)
        ctx = self.ctx(request)
        response = self.html(views.login_page(ctx, token, error), status)
        response.set_cookie(
            self.login_cookie,
            token,
            httponly=True,
            samesite="Strict",
            secure=self.secure,
            path="/login",
        )
        return response

    async def login_get(self, request: web.Request) -> web.Response:
        if self.session(request) is not None:
            raise web.HTTPSeeOther("/inbox")
        return await self.login_form(request)

    async def login_post(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        name = str(form.get("user", ""))[:64]
        password = str(form.get("password", ""))
        lang = self.lang(request)
        now = self.clock()
        keys = (f"user:{name.lower()}", f"addr:{request.remote}")
        wait = max(self.throttle.locked_for(k, now) for k in keys)
        if wait > 0:
            self.count("login_throttled")
            log.warning("console_login_throttled", user=name, remote=request.remote)
            await self.audit(
                name if views_safe(name) else "unknown",
                "login-throttled",
                detail=f"from {request.remote}",
            )
            return await self.login_form(
                request, t(lang, "throttled", m=max(1, round(wait / 60))), status=429
            )
        user = await asyncio.to_thread(self.accounts.check_password, name, password)
        if user is None:
            for k in keys:
                self.throttle.failed(k, now)
            self.count("login_failed")
            log.warning("console_login_failed", user=name, remote=request.remote)
            await self.audit(
                name if views_safe(name) else "unknown",
                "login-failed",
                detail=f"from {request.remote}",
            )
            return await self.login_form(request, t(lang, "login_failed"), status=401)
        for k in keys:
            self.throttle.succeeded(k)
        # Every login is in the node's audit log: no record, no session.
        if not await self.audit(user.name, "login", detail=f"from {request.remote}; {user.issuer}"):
            raise NodeDown("the node did not record the login")
        token = secrets.token_urlsafe(32)
        self.sessions[token] = Session(user, secrets.token_urlsafe(32), now, now)
        log.info("console_login", user=user.name, issuer=user.issuer, remote=request.remote)
        response = see_other("/inbox")
        response.set_cookie(
            self.session_cookie,
            token,
            httponly=True,
            samesite="Strict",
            secure=self.secure,
            path="/",
        )
        response.del_cookie(self.login_cookie, path="/login")
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        s: Session = request[SESSION]
        self.sessions.pop(request.cookies.get(self.session_cookie, ""), None)
        await self.audit(s.user.name, "logout")
        response = see_other("/login")
        response.del_cookie(self.session_cookie, path="/")
        return response

    async def set_lang(self, request: web.Request) -> web.StreamResponse:
        lang = request.query.get("to", "nl")
        back = request.query.get("back", "/inbox")
        if not back.startswith("/") or back.startswith("//"):
            back = "/inbox"
        response = see_other(back)
        if lang in LANGUAGES:
            response.set_cookie(
                "lang", lang, samesite="Strict", secure=self.secure, path="/", max_age=365 * 86400
            )
        return response

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

    @staticmethod
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

    def parse_form(self, form: Mapping[str, Any], to: list[str]) -> views.ComposeForm:
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

    async def check_form(
        self, user: User, f: views.ComposeForm
    ) -> tuple[Decision, dict[str, Any] | None]:
        """Check a compose form against the key's scope: (decision with seq 0, the original of a
        cancel or supersede); raises Refusal with the reason."""
        if f.precedence not in Precedence.__members__:
            raise Refusal("voorrang ontbreekt / choose a precedence", None)
        precedence = Precedence[f.precedence]
        if f.kind not in SIGNING_KINDS:
            raise Refusal(f"soort {f.kind!r} onbekend / unknown kind", None)
        kind = SIGNING_KINDS[f.kind]
        original = None
        refs: tuple[bytes, ...] = ()
        if kind in (Kind.CANCEL, Kind.SUPERSEDE):
            original = await self.message(f.ref)
            if original is None:
                raise Refusal("het bericht waarnaar verwezen wordt is onbekend / unknown ref", None)
            if original["exercise"] != f.exercise:
                raise Refusal("oefening en echt mogen niet gemengd / exercise mismatch", original)
            refs = (bytes.fromhex(f.ref),)
        if not f.to:
            raise Refusal("kies ontvangers / choose an audience", original)
        roster = await self.roster()
        offered = {spec for spec, _ in self.audience_options(roster, user.issuer)}
        outside = [s for s in f.to if s not in offered]
        try:
            audience = Audience.parse(list(f.to))
        except ValueError as exc:
            raise Refusal(str(exc), original) from None
        entries = roster.get("entries", [])
        me = next((x for x in entries if x["name"] == user.issuer), None)
        nodes = {x["name"]: frozenset(x["regions"]) for x in entries if x["role"] == "node"}
        if outside or me is None or not Scope.parse(me["scope"]).covers(audience, nodes):
            where = ", ".join(outside) or str(audience)
            raise Refusal(f"buiten het bereik van sleutel {user.issuer}: {where}", original, 403)
        if f.validity_min not in (0, *views.VALIDITY_CHOICES):
            raise Refusal("ongeldige geldigheidsduur / bad validity", original)
        if kind != Kind.CANCEL and not f.text.strip():
            raise Refusal("tekst ontbreekt / text is empty", original)
        lifetime = f.validity_min * 60 or DEFAULT_EXPIRY[precedence]
        issued = int(self.clock())
        try:
            decision = Decision(
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
        return decision, original

    async def compose(self, request: web.Request) -> web.Response:
        s: Session = request[SESSION]
        ctx = self.ctx(request)
        q = request.query
        kind = q.get("kind", "decision")
        ref = q.get("ref", "").lower()
        original = await self.message(ref) if kind in ("cancel", "supersede") else None
        if kind not in SIGNING_KINDS or (kind in ("cancel", "supersede") and original is None):
            raise web.HTTPNotFound(text=t(ctx.lang, "not_found"))
        options = self.audience_options(await self.roster(), s.user.issuer, ctx.lang)
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
        form = self.parse_form(post, [v for v in post.getall("to", []) if isinstance(v, str)])
        try:
            decision, _ = await self.check_form(s.user, form)
        except Refusal as exc:
            return web.json_response(
                {"ok": False, "estimate": exc.reason, "preview": "", "exercise": form.exercise}
            )
        seq = self.accounts.peek_seq(s.user)
        probe = dataclasses.replace(decision, seq=seq)
        raw = seal(probe, Ed25519PrivateKey.generate(), kid=s.user.kid)  # same size as the real one
        frames = encode_message(raw)
        preset = await self.preset()
        air = sum(frame_airtime(len(fr), preset) for fr in frames)
        key = "fits_one" if len(frames) == 1 else "fits_many"
        text = t(lang, key, size=len(raw), limit=MAX_FRAME, n=len(frames), air=decimal(lang, air))
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
                "size": len(raw),
                "frames": len(frames),
                "airtime_s": round(air, 3),
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
        form = self.parse_form(post, [v for v in post.getall("to", []) if isinstance(v, str)])
        password = post.get("password", "")
        options = self.audience_options(await self.roster(), s.user.issuer, ctx.lang)
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


def views_safe(name: str) -> bool:
    return bool(NAME.match(name))
