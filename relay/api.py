"""The local operator API: JSON lines over a Unix socket (mode 0660, beside the store).

One request line, one response line:

    {"op": "submit", "raw": "<base64 COSE_Sign1>"} -> {"ok": true, "id": "<hex>", "duplicate": …}
    {"op": "inbox", "limit": 100}                    -> {"ok": true, "messages": [...]}
    {"op": "status"}                                 -> {"ok": true, "node": …, "links": [...], …}
    {"op": "message", "id": "<hex or prefix>"}       -> {"ok": true, "message": {...}}
    {"op": "audit", "since": 0}                      -> {"ok": true, "events": [...]}
    {"op": "audit_verify"}                           -> {"ok": true, "chain": {"ok": …, …}}

Errors: {"ok": false, "error": "<what>", "reason": "<rejection reason, when there is one>"}.
A request the API cannot take (not JSON, not an object, a number out of range or not finite,
nesting too deep, over 64 KiB) gets ``{"ok": false, "error": "bad request: …", "reason":
"bad-request"}``; ops read their fields through ``integer`` and ``text``, which raise
``BadRequest`` with the field named.

Each connection is served by its own task under the daemon's TaskGroup-owned server. At most
``MAX_CONNECTIONS`` are open at once: a connection that has sent no complete request for
``IDLE_TIMEOUT_S`` is closed; at the bound a new connection makes room by closing the one idle
longest (so held idle connections cannot lock operators out), and is refused with a ``busy``
answer when every open connection is inside a request.
Refusals and bad requests are counted (``ApiStats``) and logged at most once per
``LOG_INTERVAL_S``, so a flood cannot fill the disk with log lines. The socket is created with
mode 0660 (umask at bind), never widened afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

MAX_REQUEST = 64 * 1024
MAX_CONNECTIONS = 64
IDLE_TIMEOUT_S = 30.0
LOG_INTERVAL_S = 10.0
SOCKET_UMASK = 0o117  # the socket file gets 0660: owner and group (the operators) only
MAX_INT_DIGITS = 20  # longer integer literals are refused before Python parses them

log = structlog.get_logger("relay.api")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ApiError(Exception):
    """The node could not be reached or answered with an error."""


class BadRequest(Exception):
    """A request (or one of its fields) the API refuses; the message says which and why."""


# ---------------------------------------------------------------------- request fields


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def integer(req: dict[str, Any], key: str, *, default: int, lo: int, hi: int) -> int:
    """``req[key]`` as a whole number from ``lo`` to ``hi`` (``default`` when absent)."""
    value = req.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadRequest(f"{key!r} must be a whole number from {lo} to {hi}, got {_shown(value)}")
    return value


def text(req: dict[str, Any], key: str, *, default: str = "", max_len: int = MAX_REQUEST) -> str:
    """``req[key]`` as a string of at most ``max_len`` characters (``default`` when absent)."""
    value = req.get(key, default)
    if not isinstance(value, str) or len(value) > max_len:
        raise BadRequest(f"{key!r} must be a string of at most {max_len} characters")
    return value


def _constant(name: str) -> Any:
    raise BadRequest(f"{name} is not a number JSON allows")


def _float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise BadRequest(f"number {literal[:40]} is out of range")
    return value


def _int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise BadRequest(f"integer of {len(literal)} digits is out of range")
    return int(literal)


def parse_request(line: bytes) -> dict[str, Any]:
    """One request line as a JSON object, or ``BadRequest`` saying why not."""
    try:
        request = json.loads(line, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except RecursionError:
        raise BadRequest("nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise BadRequest(f"not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise BadRequest("request must be a JSON object")
    return request


# ---------------------------------------------------------------------- the server


@dataclass
class ApiStats:
    """What the API refused, for `relay status` (``api``)."""

    open: int = 0
    refused_busy: int = 0
    evicted_idle: int = 0
    closed_idle: int = 0
    bad_requests: int = 0
    internal_errors: int = 0
    _logged_at: float = field(default=0.0, repr=False)
    _unlogged: dict[str, int] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def note(self, what: str, **context: Any) -> None:
        """Count one refusal; log the ones since the last line at most once per interval."""
        setattr(self, what, getattr(self, what) + 1)
        self._unlogged[what] = self._unlogged.get(what, 0) + 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_INTERVAL_S:
            self._logged_at = now
            log.warning("api_refused", **self._unlogged, open=self.open, **context)
            self._unlogged = {}


class _Connections:
    """The open connections, when each last finished a request, and which are inside one."""

    def __init__(self, stats: ApiStats) -> None:
        self.stats = stats
        self.idle_since: dict[asyncio.StreamWriter, float] = {}
        self.busy: set[asyncio.StreamWriter] = set()

    def admit(self, writer: asyncio.StreamWriter) -> bool:
        now = time.monotonic()
        if len(self.idle_since) >= MAX_CONNECTIONS:
            idle = [(t, id(w), w) for w, t in self.idle_since.items() if w not in self.busy]
            if not idle:
                return False
            _, _, oldest = min(idle)
            self.drop(oldest)
            oldest.transport.abort()
            self.stats.note("evicted_idle")
        self.idle_since[writer] = now
        self.stats.open = len(self.idle_since)
        return True

    def drop(self, writer: asyncio.StreamWriter) -> None:
        self.idle_since.pop(writer, None)
        self.busy.discard(writer)
        self.stats.open = len(self.idle_since)


async def serve(
    path: Path,
    handler: Handler,
    ready: asyncio.Event | None = None,
    *,
    sock: socket.socket | None = None,
    stats: ApiStats | None = None,
) -> None:
    """Serve until cancelled (on ``sock`` when given: see ``bind_socket``)."""
    if sock is None:
        sock = bind_socket(path)
    stats = stats if stats is not None else ApiStats()
    conns = _Connections(stats)

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not conns.admit(writer):
            stats.note("refused_busy", bound=MAX_CONNECTIONS)
            with contextlib.suppress(ConnectionError):
                writer.write(_line({"ok": False, "error": f"busy: {MAX_CONNECTIONS} API "
                                    "connections are open; try again"}))  # fmt: skip
            writer.close()
            return
        try:
            while True:
                try:
                    async with asyncio.timeout(IDLE_TIMEOUT_S):
                        line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return
                except TimeoutError:
                    stats.note("closed_idle")
                    return
                except asyncio.LimitOverrunError:
                    stats.note("bad_requests", error="request too large")
                    await _send(writer, _bad("request too large"))
                    return
                conns.busy.add(writer)
                answer = await _answer(line, handler, stats)
                try:
                    async with asyncio.timeout(IDLE_TIMEOUT_S):  # a client that does not read
                        await _send(writer, answer)
                except TimeoutError:
                    stats.note("closed_idle")
                    return
                conns.busy.discard(writer)
                conns.idle_since[writer] = time.monotonic()
        except ConnectionError:
            return
        finally:
            conns.drop(writer)
            writer.close()

    server = await asyncio.start_unix_server(on_client, sock=sock, limit=MAX_REQUEST)
    if ready is not None:
        ready.set()
    try:
        async with server:
            await server.serve_forever()
    finally:
        _remove(path)


async def _answer(line: bytes, handler: Handler, stats: ApiStats) -> dict[str, Any]:
    try:
        return await handler(parse_request(line))
    except BadRequest as exc:
        stats.note("bad_requests", error=str(exc))
        return _bad(str(exc))
    except Exception as exc:  # our bug: answer it, log it with its traceback, keep serving
        stats.internal_errors += 1
        log.error("api_internal_error", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        return {"ok": False, "error": f"internal error: {type(exc).__name__}"}


def _bad(why: str) -> dict[str, Any]:
    return {"ok": False, "error": f"bad request: {why}", "reason": "bad-request"}


# sockaddr_un.sun_path is 108 bytes on Linux, one of them the terminating NUL.
MAX_SOCKET_PATH = 107


class SocketPathTooLong(OSError):
    """The socket path is longer than a Unix socket address can hold."""

    def __init__(self, path: Path, size: int) -> None:
        super().__init__(
            f"the path is {size} bytes; a Unix socket path holds at most {MAX_SOCKET_PATH}"
        )
        self.path = path
        self.size = size


def bind_socket(path: Path) -> socket.socket:
    """A Unix socket bound at ``path`` with mode 0660 from the start: the umask is set around
    ``bind`` (the only call that creates the file), so no client can connect through a wider
    mode in between. A stale socket left by a killed process is removed first.

    Raises SocketPathTooLong (an OSError) when the path does not fit a Unix socket address."""
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        raise SocketPathTooLong(path, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(SOCKET_UMASK)
    try:
        sock.bind(str(path))
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    return sock


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _line(response: dict[str, Any]) -> bytes:
    return json.dumps(response, separators=(",", ":")).encode() + b"\n"


async def _send(writer: asyncio.StreamWriter, response: dict[str, Any]) -> None:
    writer.write(_line(response))
    await writer.drain()


async def request(path: Path, req: dict[str, Any], *, wait_s: float = 30.0) -> dict[str, Any]:
    """Send one request to a running node and return its answer."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(path), limit=64 * 1024 * 1024), wait_s
        )
    except (OSError, TimeoutError) as exc:
        raise ApiError(f"no relay node answers on {path} ({exc}); is `relay run` running?") from exc
    try:
        writer.write(json.dumps(req).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), wait_s)
    except (OSError, TimeoutError) as exc:
        raise ApiError(f"the node on {path} did not answer: {exc!r}") from exc
    finally:
        writer.close()
    if not line:
        raise ApiError(f"the node on {path} closed the connection")
    answer = json.loads(line)
    if not isinstance(answer, dict):
        raise ApiError("the node sent a malformed answer")
    return answer


def call(path: Path, req: dict[str, Any], *, timeout: float = 30.0) -> dict[str, Any]:
    return asyncio.run(request(path, req, wait_s=timeout))
