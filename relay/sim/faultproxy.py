"""A loopback TCP proxy that breaks the path between a client and a broker on command.

Modes (``Mode``):

``pass``
    Bytes flow both ways. This is the starting mode; ``restore()`` returns to it.
``cut``
    Every open connection is closed with a TCP reset (SO_LINGER 0) on both sides, and every new
    connection is accepted and reset at once. The listening port stays ours, so nobody else can
    take it while the path is cut; to the client this looks like a refused or reset connection.
``blackhole``
    Like a dead router: sockets stay open, nothing is reset, and bytes are read and dropped in both
    directions. New connections are accepted and their bytes dropped too (nothing is opened towards
    the broker). A connection that lived through a blackhole is *tainted*: bytes were lost from the
    middle of its stream, so it stays a blackhole after ``restore()``. An end that closes a
    tainted connection is not passed on to the other end (no FIN, no RST), so the broker keeps its
    side until its own keepalive gives up, as it would behind a dead router; the proxy forgets the
    connection once both ends have closed.

Only 127.0.0.0/8 addresses are accepted, for listening and for the upstream.

Three ways to drive it:

* asyncio: ``await proxy.run()`` inside your own TaskGroup (runs until cancelled; ``await
  proxy.wait_started()`` before reading ``proxy.port``), or ``async with FaultProxy(...) as
  proxy:``; switch with ``proxy.cut()``, ``proxy.blackhole()``, ``proxy.restore()`` on the loop.
* sync: ``with ThreadedFaultProxy(upstream_port=p) as proxy: proxy.cut()`` (relay.sim.faultthread)
  runs the same core on a background thread with its own event loop; the mode methods wait until
  the switch took effect.
* another process: start ``python -m relay.sim.faultproxy --upstream-port P --control-port C``
  (it prints one JSON line ``{"port": …, "control_port": …}`` when ready) and send JSON lines to
  the control port, one request per line, one answer line each::

      → {"op": "blackhole"}
      ← {"ok": true, "mode": "blackhole", "connections_open": 1, ...}

  ``op`` is one of ``pass``, ``restore`` (same as ``pass``), ``cut``, ``blackhole``, ``status``.
  A bad request gets ``{"ok": false, "error": "..."}`` and the connection stays usable.
  ``control(port, op)`` is a small sync client for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import itertools
import json
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Self

import structlog

from relay.sim.net import LOOPBACK, require_loopback

__all__ = ["FaultProxy", "Mode", "ModeSwitch", "control", "main", "serve"]

_log = structlog.get_logger("relay.sim.faultproxy")

_CHUNK = 65536
_CONTROL_LINE_LIMIT = 4096


class Mode(enum.StrEnum):
    PASS = "pass"  # noqa: S105 (a mode name, not a password)
    CUT = "cut"
    BLACKHOLE = "blackhole"


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP RST instead of a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _nodelay(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(slots=True)
class _Conn:
    """One client connection and, unless it started in a blackhole, its upstream socket."""

    ident: int
    client: socket.socket
    upstream: socket.socket | None = None
    tainted: bool = False
    reset: bool = False
    open_directions: int = 2
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def abort(self) -> None:
        self.reset = True
        self.finished.set()


class ModeSwitch:
    """``cut()``, ``blackhole()`` and ``restore()``: shorthands for ``set_mode``."""

    def set_mode(self, mode: Mode | str) -> object:
        raise NotImplementedError

    def cut(self) -> None:
        self.set_mode(Mode.CUT)

    def blackhole(self) -> None:
        self.set_mode(Mode.BLACKHOLE)

    def restore(self) -> None:
        self.set_mode(Mode.PASS)


class FaultProxy(ModeSwitch):
    """The asyncio core: one listener, two pumps per connection, all tasks in one TaskGroup."""

    def __init__(
        self,
        *,
        upstream_port: int,
        upstream_host: str = LOOPBACK,
        host: str = LOOPBACK,
        port: int = 0,
        control_port: int | None = None,
    ) -> None:
        self.upstream = (require_loopback(upstream_host), upstream_port)
        self.host = require_loopback(host)
        self._requested_port = port
        self._requested_control_port = control_port
        self._mode = Mode.PASS
        self._conns: dict[int, _Conn] = {}
        self._ids = itertools.count(1)
        self._started = asyncio.Event()
        self._port: int | None = None
        self._control_port: int | None = None
        self._stats = {
            "connections_total": 0,
            "resets": 0,
            "bytes_forwarded": 0,
            "bytes_dropped": 0,
            "upstream_failures": 0,
        }
        self._runner: asyncio.Task[None] | None = None

    # -- public API (call on the proxy's event loop) ---------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("proxy not started: await wait_started() first")
        return self._port

    @property
    def control_port(self) -> int | None:
        return self._control_port

    async def wait_started(self) -> None:
        await self._started.wait()

    def set_mode(self, mode: Mode | str) -> None:
        new = Mode(mode)
        old, self._mode = self._mode, new
        match new:
            case Mode.CUT:
                for conn in self._conns.values():
                    conn.abort()
            case Mode.BLACKHOLE:
                for conn in self._conns.values():
                    conn.tainted = True
            case Mode.PASS:
                pass
        _log.info("faultproxy mode", old=str(old), new=str(new), port=self._port)

    def statistics(self) -> dict[str, int | str]:
        return {
            "mode": str(self._mode),
            "connections_open": len(self._conns),
            "connections_tainted": sum(c.tainted for c in self._conns.values()),
            **self._stats,
        }

    # -- serving ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until cancelled. Every connection's tasks belong to this call's TaskGroup."""
        listener = self._listen(self._requested_port)
        control = (
            self._listen(self._requested_control_port)
            if self._requested_control_port is not None
            else None
        )
        try:
            self._port = listener.getsockname()[1]
            if control is not None:
                self._control_port = control.getsockname()[1]
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._accept_loop(listener, tg), name=f"faultproxy-{self._port}")
                if control is not None:
                    tg.create_task(
                        self._control_loop(control, tg), name=f"faultproxy-control-{self._port}"
                    )
                self._started.set()
        finally:
            listener.close()
            if control is not None:
                control.close()
            for conn in list(self._conns.values()):
                self._close_conn(conn)

    def _listen(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    async def _accept_loop(self, listener: socket.socket, tg: asyncio.TaskGroup) -> None:
        loop = asyncio.get_running_loop()
        while True:
            client, _ = await loop.sock_accept(listener)
            self._stats["connections_total"] += 1
            if self._mode is Mode.CUT:
                self._stats["resets"] += 1
                _reset(client)
                continue
            _nodelay(client)
            conn = _Conn(ident=next(self._ids), client=client)
            self._conns[conn.ident] = conn
            tg.create_task(self._serve_conn(conn), name=f"faultproxy-conn-{conn.ident}")

    async def _serve_conn(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self._mode is Mode.BLACKHOLE:
                conn.tainted = True
            else:
                upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                upstream.setblocking(False)
                conn.upstream = upstream
                try:
                    await loop.sock_connect(upstream, self.upstream)
                except OSError:
                    self._stats["upstream_failures"] += 1
                    conn.abort()
                    return
                _nodelay(upstream)
            async with asyncio.TaskGroup() as tg:
                pumps = [tg.create_task(self._pump(conn, conn.client, conn.upstream))]
                if conn.upstream is not None:
                    pumps.append(tg.create_task(self._pump(conn, conn.upstream, conn.client)))
                else:
                    conn.open_directions = 1
                await conn.finished.wait()
                for task in pumps:
                    task.cancel()
        finally:
            self._close_conn(conn)

    async def _pump(self, conn: _Conn, src: socket.socket, dst: socket.socket | None) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.sock_recv(src, _CHUNK)
                if not data:
                    break
                if conn.tainted or dst is None or self._mode is Mode.BLACKHOLE:
                    conn.tainted = True
                    self._stats["bytes_dropped"] += len(data)
                    continue
                await loop.sock_sendall(dst, data)
                self._stats["bytes_forwarded"] += len(data)
        except OSError:
            # The peer reset or the socket broke: end the whole connection (peer fault, not ours).
            conn.finished.set()
            return
        # EOF. A clean pass-through connection ends as a whole; a tainted one keeps the other
        # side open and silent (a dead router does not pass FINs on) until both ends are gone.
        conn.open_directions -= 1
        if not conn.tainted or conn.open_directions == 0:
            conn.finished.set()

    def _close_conn(self, conn: _Conn) -> None:
        if self._conns.pop(conn.ident, None) is None:
            return
        for sock in (conn.client, conn.upstream):
            if sock is None:
                continue
            if conn.reset:
                _reset(sock)
            else:
                sock.close()
        if conn.reset:
            self._stats["resets"] += 1

    # -- control port ----------------------------------------------------------------------------

    async def _control_loop(self, listener: socket.socket, tg: asyncio.TaskGroup) -> None:
        loop = asyncio.get_running_loop()
        for n in itertools.count(1):
            sock, _ = await loop.sock_accept(listener)
            tg.create_task(self._control_conn(sock), name=f"faultproxy-control-conn-{n}")

    async def _control_conn(self, sock: socket.socket) -> None:
        reader, writer = await asyncio.open_connection(sock=sock, limit=_CONTROL_LINE_LIMIT)
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # line longer than the limit
                    writer.write(b'{"ok": false, "error": "line too long"}\n')
                    break
                if not line:
                    break
                writer.write(json.dumps(self._control_request(line)).encode() + b"\n")
                await writer.drain()
        except OSError:
            pass  # the controller went away; nothing to answer
        finally:
            writer.close()

    def _control_request(self, line: bytes) -> dict[str, object]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "not JSON"}
        op = request.get("op") if isinstance(request, dict) else None
        match op:
            case "pass" | "restore":
                self.restore()
            case "cut" | "blackhole":
                self.set_mode(op)
            case "status":
                pass
            case _:
                return {"ok": False, "error": f"unknown op {op!r}"}
        return {"ok": True, **self.statistics()}

    # -- async context manager -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._runner = asyncio.create_task(self.run(), name="faultproxy-run")
        started = asyncio.create_task(self.wait_started(), name="faultproxy-wait-started")
        done, _ = await asyncio.wait({self._runner, started}, return_when=asyncio.FIRST_COMPLETED)
        if self._runner in done:
            started.cancel()
            await self._runner  # raises the reason it could not start
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None


async def serve(proxy: FaultProxy, started: Callable[[], None]) -> None:
    """Run ``proxy`` until cancelled; call ``started`` once it listens."""
    async with asyncio.TaskGroup() as tg:
        tg.create_task(proxy.run(), name="faultproxy-run")
        await proxy.wait_started()
        started()
        # run() only ends by cancellation, which propagates out of the TaskGroup.


def control(port: int, op: str, *, host: str = LOOPBACK, timeout: float = 5.0) -> dict[str, object]:
    """Send one request to a proxy's control port and return its answer."""
    with socket.create_connection((require_loopback(host), port), timeout=timeout) as sock:
        sock.sendall(json.dumps({"op": op}).encode() + b"\n")
        with sock.makefile("rb") as answer:
            line = answer.readline(_CONTROL_LINE_LIMIT)
    result = json.loads(line)
    if not isinstance(result, dict):
        raise ValueError(f"control port answered {line!r}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m relay.sim.faultproxy", description="Loopback TCP fault proxy."
    )
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--upstream-host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=0, help="listen port (0: any free port)")
    parser.add_argument("--control-port", type=int, default=0, help="0: any free port")
    args = parser.parse_args(argv)

    async def run_proxy() -> None:
        proxy = FaultProxy(
            upstream_port=args.upstream_port,
            upstream_host=args.upstream_host,
            port=args.port,
            control_port=args.control_port,
        )

        def started() -> None:
            print(json.dumps({"port": proxy.port, "control_port": proxy.control_port}), flush=True)

        await serve(proxy, started)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_proxy())
    return 0


if __name__ == "__main__":
    sys.exit(main())
