"""Fixtures that run the emulator's servers on loopback in a background thread."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from relay.sim.server import MeshServer
from relay.sim.spec import MeshSpec, uniform_mesh


class RunningMesh:
    """A MeshServer serving from its own thread and event loop; stop() joins it."""

    def __init__(self, spec: MeshSpec, *, control: bool = False) -> None:
        self.server = MeshServer(spec, control=("127.0.0.1", 0) if control else None)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="mesh-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("mesh server did not start")

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            await self.server.serve(ready=lambda _: self._ready.set())

        asyncio.run(main())

    def port(self, name: str) -> int:
        return self.server.tcp_ports[name]

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run a coroutine function on the server's loop and wait for its result."""
        assert self._loop is not None
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(fn(), self._loop)
        return fut.result(timeout)

    def stop(self) -> None:
        self.server.stop_threadsafe()
        self._thread.join(10)


def loopback_spec(count: int, *, time_scale: float = 20.0, pty: bool = False) -> MeshSpec:
    """``count`` all-hearing radios on free loopback ports (port 0 = pick one)."""
    spec = uniform_mesh(count, tcp_base=0, time_scale=time_scale, seed=7)
    radios = tuple(dataclasses.replace(r, tcp_port=0, pty="" if pty else None) for r in spec.radios)
    return dataclasses.replace(spec, radios=radios)


@pytest.fixture
def mesh_of_two() -> Iterator[RunningMesh]:
    running = RunningMesh(loopback_spec(2))
    yield running
    running.stop()
