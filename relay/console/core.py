"""The console's plumbing: the node's local API, sessions, page context and the security middleware.

relay.console.login adds the login pages to it, relay.console.app the rest of the application."""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from relay import api
from relay.console import views
from relay.console.accounts import Accounts
from relay.console.auth import SESSION, Session, Throttle
from relay.console.settings import SESSION_MAX_S, ConsoleSettings
from relay.console.text import LANGUAGES, t

log = structlog.get_logger("relay.console")

# Cookies are per host, not per port: the node's name in the cookie's keeps two consoles on one
# machine (a test, a demo) from logging each other out.
SESSION_COOKIE = "relay_console_"
LOGIN_COOKIE = "relay_login_"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SENT_SHOWN = 50  # newest sent decisions listed (and searched for cancel/supersede marks)


class NodeDown(Exception):
    """The node's local API did not answer (the page says so; nothing is signed or sent)."""


class ConsoleCore:
    """State shared by every page: the node, its accounts and sessions, and the plumbing."""

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
