"""Asyncio shells around the channel model: a TCP port and/or a pty per radio, a control port.

The shell is a thin pump: bytes in -> ``Mesh.receive_data``; after every step, whatever each host
should read goes out; one timer task sleeps until ``Mesh.get_timer()`` (wall time = virtual time /
``time_scale``). Each TCP port serves ONE client at a time, as the firmware does: a new connection
closes the previous one. Unplugging a radio closes its host connection and its listener (or pty)
until it is plugged back in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any, Final

import structlog

from relay.sim.mesh import Mesh
from relay.sim.ptyport import PtyPort
from relay.sim.spec import MeshSpec

MAX_WRITE_BUFFER: Final = 256 * 1024  # a host that reads nothing is dropped past this
MAX_CONTROL_LINE: Final = 64 * 1024

log = structlog.get_logger("relay.sim.server")


class MeshServer:
    """Serves every radio of a mesh description on loopback; run with ``await serve()``."""

    def __init__(self, spec: MeshSpec, *, control: tuple[str, int] | None = None) -> None:
        self.spec = spec
        self.mesh = Mesh(spec)
        self.control = control or spec.control
        self.tcp_ports: dict[str, int] = {}
        self.control_port: int | None = None
        self._servers: dict[str, asyncio.Server] = {}
        self._writers: dict[str, asyncio.StreamWriter] = {}
        self._ptys: dict[str, PtyPort] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._kick = asyncio.Event()
        self._stop = asyncio.Event()

    # --- clock ---

    def now(self) -> float:
        assert self._loop is not None
        return (self._loop.time() - self._t0) * self.spec.time_scale

    # --- life cycle ----------------------------------------------------------------------------

    async def serve(self, *, ready: Callable[[MeshServer], None] | None = None) -> None:
        """Run until ``stop()`` (or cancellation); call ``ready`` once every port is open."""
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self.mesh.epoch0 = time.time()  # rx_time and last_heard in wall-clock Unix time
        control_server: asyncio.Server | None = None
        try:
            for r in self.spec.radios:
                if r.tcp_port is not None:
                    await self._listen(r.name, r.tcp_port)
                if r.pty is not None:
                    self._ptys[r.name] = self._open_pty(r.name, r.pty or None)
            if self.control is not None:
                control_server = await asyncio.start_server(
                    self._serve_control, self.control[0], self.control[1], limit=MAX_CONTROL_LINE
                )
                self.control_port = control_server.sockets[0].getsockname()[1]
            if ready is not None:
                ready(self)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._run_timers(), name="mesh-timers")
                await self._stop.wait()
                self._kick.set()
        finally:
            if control_server is not None:
                control_server.close()
            for name in list(self._servers):
                await self._close_listener(name)
            for name in list(self._writers):
                self._drop_host(name)
            for port in self._ptys.values():
                port.close()

    def stop(self) -> None:
        """Ask ``serve`` to return (call from the loop's thread)."""
        self._stop.set()

    def stop_threadsafe(self) -> None:
        """Ask ``serve`` to return, from any thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def _run_timers(self) -> None:
        while not self._stop.is_set():
            deadline = self.mesh.get_timer()
            timeout = None
            if deadline is not None:
                timeout = max((deadline - self.now()) / self.spec.time_scale, 0.0)
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout)
            self.mesh.handle_timer(self.now())
            self._pump()

    def _pump(self) -> None:
        """Write out whatever the hosts should read, and re-arm the timer."""
        for name, writer in list(self._writers.items()):
            data = self.mesh.data_to_send(name)
            if data:
                if writer.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
                    log.warning("host not reading, dropping it", radio=name)
                    self._drop_host(name)
                    continue
                writer.write(data)
        for name, port in self._ptys.items():
            if not port.is_open:
                continue
            data = self.mesh.data_to_send(name)
            if data and not port.write(data):
                log.warning("pty host not reading, treating it as gone", radio=name)
                self.mesh.disconnect(name, self.now())
        self._kick.set()

    # --- TCP -------------------------------------------------------------------------------------

    async def _listen(self, name: str, port: int) -> None:
        server = await asyncio.start_server(
            lambda r, w: self._serve_host(name, r, w), self.spec.host, port
        )
        self._servers[name] = server
        self.tcp_ports[name] = server.sockets[0].getsockname()[1]
        log.info("radio listening", radio=name, host=self.spec.host, port=self.tcp_ports[name])

    async def _close_listener(self, name: str) -> None:
        server = self._servers.pop(name, None)
        if server is not None:
            server.close()
            await server.wait_closed()

    def _drop_host(self, name: str) -> None:
        writer = self._writers.pop(name, None)
        if writer is not None:
            writer.close()
            self.mesh.disconnect(name, self.now())

    async def _serve_host(
        self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if name in self._writers:
            log.info("new client, closing the previous one", radio=name)
            self._drop_host(name)
        if not self.mesh.connect(name, self.now()):
            writer.close()
            return
        self._writers[name] = writer
        try:
            while data := await reader.read(4096):
                self.mesh.receive_data(name, data, self.now())
                self._pump()
        except ConnectionError:
            pass
        finally:
            if self._writers.get(name) is writer:
                self._drop_host(name)
            else:
                writer.close()

    # --- pty -------------------------------------------------------------------------------------

    def _open_pty(self, name: str, link: str | None) -> PtyPort:
        def on_data(data: bytes) -> None:
            if not self.mesh.radios[name].phone.connected:
                self.mesh.connect(name, self.now())
            self.mesh.receive_data(name, data, self.now())
            self._pump()

        assert self._loop is not None
        port = PtyPort(self._loop, on_data, link=link)
        log.info("radio pty", radio=name, path=port.path)
        return port

    def pty_path(self, name: str) -> str | None:
        port = self._ptys.get(name)
        return port.path if port is not None and port.is_open else None

    # --- drills ---

    async def unplug(self, name: str) -> None:
        """Pull the radio's host cable: close its client and stop listening until ``replug``."""
        self._check(name)
        self._drop_host(name)
        await self._close_listener(name)
        port = self._ptys.get(name)
        if port is not None:
            port.close()
        self.mesh.unplug(name, self.now())
        self._pump()

    async def replug(self, name: str) -> None:
        self._check(name)
        self.mesh.replug(name, self.now())
        if name in self.tcp_ports and name not in self._servers:
            await self._listen(name, self.tcp_ports[name])
        spec = self.spec.names[name]
        if spec.pty is not None:
            self._ptys[name] = self._open_pty(name, spec.pty or None)
        self._pump()

    def _check(self, name: str) -> None:
        if name not in self.mesh.radios:
            raise KeyError(f"no radio named {name!r}")

    async def _serve_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while line := await reader.readline():
                try:
                    reply = await self.control_command(json.loads(line))
                except (KeyError, ValueError, TypeError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def control_command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Run one control-port command (see docs/emulator.md) and return its JSON reply."""
        now = self.now()
        self.mesh.handle_timer(now)
        match cmd.get("cmd"):
            case "status":
                return {"ok": True, **self.status()}
            case "stats":
                return {"ok": True, "radio": cmd["radio"], **self.mesh.statistics(cmd["radio"])}
            case "unplug":
                await self.unplug(cmd["radio"])
            case "replug":
                await self.replug(cmd["radio"])
            case "set_loss":
                self.mesh.set_link(
                    cmd["a"], cmd["b"], float(cmd["loss"]), symmetric=cmd.get("symmetric", True)
                )
            case "cut":
                self.mesh.cut_link(cmd["a"], cmd["b"], symmetric=cmd.get("symmetric", True))
            case other:
                raise ValueError(f"unknown command {other!r}")
        self._pump()
        return {"ok": True}

    def status(self) -> dict[str, Any]:
        return {
            "now": round(self.mesh.now, 3),
            "time_scale": self.spec.time_scale,
            "radios": {
                name: {
                    **self.mesh.statistics(name),
                    "tcp_port": self.tcp_ports.get(name),
                    "pty": self.pty_path(name),
                }
                for name in self.mesh.radios
            },
            "links": [
                {"from": a, "to": b, "loss": loss}
                for (a, b), loss in sorted(self.mesh.links.items())
            ],
        }
