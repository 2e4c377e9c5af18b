"""The loopback fault proxy: pass, cut, blackhole, restore, and its control port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from relay.sim.faultproxy import FaultProxy, Mode, control
from relay.sim.faultthread import ThreadedFaultProxy

WAIT_S = 5.0
SILENCE_S = 0.3  # how long "nothing arrives" is observed; absence has no event to await


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@asynccontextmanager
async def _echo_behind_proxy() -> AsyncIterator[FaultProxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with FaultProxy(upstream_port=port) as proxy:
            yield proxy
    finally:
        server.close()
        await server.wait_closed()


async def _connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def _roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"ping")
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(4), WAIT_S)


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"ping")
    await writer.drain()
    try:
        await asyncio.wait_for(reader.read(1), SILENCE_S)
    except TimeoutError:
        return True
    return False


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():  # noqa: ASYNC110 (counters have no event to await; poll them)
            await asyncio.sleep(0.01)


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(20):
            await scenario()

    asyncio.run(bounded())


def test_pass_forwards_both_ways() -> None:
    """Test that in pass mode bytes reach the upstream and come back."""

    async def scenario() -> None:
        async with _echo_behind_proxy() as proxy:
            reader, writer = await _connect(proxy)
            assert await _roundtrip(reader, writer) == b"ping"
            writer.close()

    _run(scenario)


def test_cut_resets_open_and_new_connections() -> None:
    """Test that cut resets open connections and new ones, and restore lets new ones through."""

    async def scenario() -> None:
        async with _echo_behind_proxy() as proxy:
            reader, writer = await _connect(proxy)
            assert await _roundtrip(reader, writer) == b"ping"
            proxy.cut()
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(1), WAIT_S)
            writer.close()
            reader, writer = await _connect(proxy)
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(1), WAIT_S)
            writer.close()
            proxy.restore()
            reader, writer = await _connect(proxy)
            assert await _roundtrip(reader, writer) == b"ping"
            writer.close()

    _run(scenario)


def test_blackhole_drops_silently_and_taints_connections() -> None:
    """Test that blackhole drops bytes without closing, and restore helps only new connections."""

    async def scenario() -> None:
        async with _echo_behind_proxy() as proxy:
            old_r, old_w = await _connect(proxy)
            assert await _roundtrip(old_r, old_w) == b"ping"
            proxy.blackhole()
            assert await _silent(old_r, old_w)
            new_r, new_w = await _connect(proxy)
            assert await _silent(new_r, new_w)
            await _until(lambda: int(proxy.statistics()["bytes_dropped"]) >= 8)
            assert not old_r.at_eof() and not new_r.at_eof()
            proxy.restore()
            assert await _silent(old_r, old_w), "a tainted connection must stay a blackhole"
            fresh_r, fresh_w = await _connect(proxy)
            assert await _roundtrip(fresh_r, fresh_w) == b"ping"
            for w in (old_w, new_w, fresh_w):
                w.close()
            # The upstream side of the old connection never hears of the close (dead router).
            await _until(lambda: proxy.statistics()["connections_open"] == 1)

    _run(scenario)


def test_threaded_proxy_and_control_port() -> None:
    """Test that the threaded proxy switches modes from sync code and over its control port."""

    async def upstream_and_checks(proxy: ThreadedFaultProxy) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await _roundtrip(reader, writer) == b"ping"
        port = proxy.control_port
        assert port is not None
        answer = await asyncio.to_thread(control, port, "blackhole")
        assert answer["ok"] is True and answer["mode"] == "blackhole"
        assert await _silent(reader, writer)
        bad = await asyncio.to_thread(control, port, "explode")
        assert bad["ok"] is False
        await asyncio.to_thread(proxy.cut)
        assert proxy.statistics()["mode"] == Mode.CUT
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        proxy = ThreadedFaultProxy(upstream_port=port, control_port=0)
        await asyncio.to_thread(proxy.start)
        try:
            await upstream_and_checks(proxy)
        finally:
            await asyncio.to_thread(proxy.stop)
            server.close()

    _run(scenario)


def test_only_loopback() -> None:
    """Test that the proxy refuses a non-loopback upstream or listen address."""
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(upstream_port=1883, upstream_host="192.0.2.1")
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(upstream_port=1883, host="0.0.0.0")
