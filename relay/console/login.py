"""The console's login, logout and language pages, with the login throttle and audit."""

from __future__ import annotations

import asyncio
import secrets

import structlog
from aiohttp import web

from relay.console import views
from relay.console.auth import (
    SESSION,
    Session,
    see_other,
    views_safe,
)
from relay.console.core import ConsoleCore, NodeDown
from relay.console.text import LANGUAGES, t

log = structlog.get_logger("relay.console")


class LoginPages(ConsoleCore):
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
