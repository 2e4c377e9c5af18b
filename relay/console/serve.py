"""Start the console's web server: loopback by default, TLS required anywhere else."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl

import structlog
from aiohttp import web

from relay.config import Config, ConfigError
from relay.console.accounts import AccountError, Accounts
from relay.console.app import Console
from relay.console.settings import console_settings, is_loopback, parse_listen

log = structlog.get_logger("relay.console")


class ServeError(Exception):
    """The console cannot start; the message says why."""


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ServeError(f"console TLS: cannot load {cert} / {key}: {exc}") from exc
    return ctx


def prepare(cfg: Config, listen: str) -> tuple[Console, str, int, ssl.SSLContext | None]:
    try:
        settings = console_settings(cfg)
        host, port = parse_listen(listen)
    except (ConfigError, ValueError) as exc:
        raise ServeError(str(exc)) from exc
    context = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        context = tls_context(str(settings.tls_cert), str(settings.tls_key))
    elif not is_loopback(host):
        raise ServeError(
            f"refusing to listen on {host}:{port} without TLS: only loopback (127.0.0.1) may be "
            "plain HTTP; set console.tls_cert and console.tls_key in the config"
        )
    try:
        users = Accounts(settings.users).names()
    except AccountError as exc:
        raise ServeError(str(exc)) from exc
    if not users:
        log.warning("console_no_users", hint="add one with: relay console user add NAME ...")
    console = Console(cfg.node, cfg.api_socket, settings, secure_cookies=context is not None)
    return console, host, port, context


async def serve(cfg: Config, listen: str, ready: asyncio.Event | None = None) -> None:
    console, host, port, context = prepare(cfg, listen)
    runner = web.AppRunner(console.app(), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=context)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    scheme = "https" if context else "http"
    log.info("console_listening", url=f"{scheme}://{host}:{port}/", node=cfg.node)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        console.closing.set()
        await runner.cleanup()
        log.info("console_stopped")


def run(cfg: Config, listen: str) -> int:
    asyncio.run(serve(cfg, listen))
    return 0
