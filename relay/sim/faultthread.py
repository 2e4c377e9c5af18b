"""``FaultProxy`` (relay.sim.faultproxy) on a background thread, for sync code: tests, the drill
runner and benchmarks. The mode methods wait until the switch took effect on the proxy's loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Self

from relay.sim.faultproxy import FaultProxy, Mode, ModeSwitch, serve
from relay.sim.net import LOOPBACK, require_loopback

__all__ = ["ThreadedFaultProxy"]


class ThreadedFaultProxy(ModeSwitch):
    """``FaultProxy`` on a background thread with its own event loop, for sync code."""

    def __init__(
        self,
        *,
        upstream_port: int,
        upstream_host: str = LOOPBACK,
        port: int = 0,
        control_port: int | None = None,
    ) -> None:
        self._upstream_port = upstream_port
        self._upstream_host = require_loopback(upstream_host)
        self._listen_port = port
        self._requested_control_port = control_port
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._proxy: FaultProxy | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return self._require()[1].port

    @property
    def control_port(self) -> int | None:
        return self._require()[1].control_port

    def start(self, *, timeout: float = 5.0) -> None:
        self._thread = threading.Thread(target=self._main, name="faultproxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"fault proxy did not start within {timeout} s")
        if self._error is not None:
            raise RuntimeError("fault proxy failed to start") from self._error

    def _main(self) -> None:
        try:
            asyncio.run(self._amain())
        except asyncio.CancelledError:
            pass  # stop() cancelled the main task: the normal way out
        except Exception as exc:
            self._error = exc  # start() raises it in the starting thread
            raise
        finally:
            self._ready.set()

    async def _amain(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        proxy = FaultProxy(
            upstream_port=self._upstream_port,
            upstream_host=self._upstream_host,
            port=self._listen_port,
            control_port=self._requested_control_port,
        )

        def started() -> None:
            self._proxy = proxy
            self._ready.set()

        await serve(proxy, started)

    def _require(self) -> tuple[asyncio.AbstractEventLoop, FaultProxy]:
        if self._loop is None or self._proxy is None:
            raise RuntimeError("threaded fault proxy is not running")
        return self._loop, self._proxy

    def set_mode(self, mode: Mode | str, *, timeout: float = 5.0) -> dict[str, int | str]:
        """Switch mode on the proxy's loop and return its statistics once the switch is done."""
        loop, proxy = self._require()

        async def switch() -> dict[str, int | str]:
            proxy.set_mode(mode)
            return proxy.statistics()

        return asyncio.run_coroutine_threadsafe(switch(), loop).result(timeout)

    def statistics(self) -> dict[str, int | str]:
        loop, proxy = self._require()

        async def read() -> dict[str, int | str]:
            return proxy.statistics()

        return asyncio.run_coroutine_threadsafe(read(), loop).result(5.0)

    def stop(self, *, timeout: float = 5.0) -> None:
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"fault proxy thread did not stop within {timeout} s")
        self._thread = self._loop = self._task = self._proxy = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
