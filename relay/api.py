"""The local operator API: JSON lines over a Unix socket (mode 0660, beside the store).

One request line, one response line:

    {"op": "submit", "raw": "<base64 COSE_Sign1>"} -> {"ok": true, "id": "<hex>", "duplicate": …}
    {"op": "inbox", "limit": 100}                    -> {"ok": true, "messages": [...]}
    {"op": "status"}                                 -> {"ok": true, "node": …, "links": [...], …}
    {"op": "message", "id": "<hex or prefix>"}       -> {"ok": true, "message": {...}}
    {"op": "audit", "since": 0}                      -> {"ok": true, "events": [...]}

Errors: {"ok": false, "error": "<what>", "reason": "<rejection reason, when there is one>"}.
Requests are bounded (64 KiB a line) and each connection is served by its own task under the
daemon's TaskGroup-owned server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

MAX_REQUEST = 64 * 1024

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ApiError(Exception):
    """The node could not be reached or answered with an error."""


async def serve(path: Path, handler: Handler, ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled."""
    _prepare(path)

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return
                except asyncio.LimitOverrunError:
                    await _send(writer, {"ok": False, "error": "request too large"})
                    return
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("request must be a JSON object")
                except ValueError as exc:
                    await _send(writer, {"ok": False, "error": f"bad request: {exc}"})
                    continue
                await _send(writer, await handler(request))
        except ConnectionError:
            return
        finally:
            writer.close()

    server = await asyncio.start_unix_server(on_client, path=str(path), limit=MAX_REQUEST)
    _restrict(path)
    if ready is not None:
        ready.set()
    try:
        async with server:
            await server.serve_forever()
    finally:
        _remove(path)


def _prepare(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove(path)  # a stale socket left by a killed process


def _restrict(path: Path) -> None:
    path.chmod(0o660)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def _send(writer: asyncio.StreamWriter, response: dict[str, Any]) -> None:
    writer.write(json.dumps(response, separators=(",", ":")).encode() + b"\n")
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
