"""``[metrics] listen = "127.0.0.1:9108"``: a Prometheus endpoint (``GET /metrics``).

The figures are the node's own ``status`` (the same numbers ``relay status --json`` shows), turned
into metric families with prometheus-client and rendered with its ``generate_latest``. The HTTP
side is a small asyncio server on the daemon's loop, so a scrape reads the node's state on the
loop that owns it (prometheus-client's own server would read it from another thread). Metric
names and sample alert rules: docs/operations.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from relay import __version__

log = structlog.get_logger("relay.metrics")

LINK_STATES = ("up", "degraded", "down")
MAX_REQUEST_BYTES = 8192
READ_TIMEOUT_S = 5.0

Status = Callable[[], Awaitable[dict[str, Any]]]


def families(st: dict[str, Any]) -> Iterator[Metric]:
    """Metric families from one ``Node.status()`` answer."""
    node = str(st["node"])
    info = GaugeMetricFamily("relay_info", "The node and its version", labels=["node", "version"])
    info.add_metric([node, __version__], 1)
    yield info
    eng = st["engine"]
    counters: dict[str, int] = eng["counters"]
    for name, key, doc in (
        ("relay_messages_accepted", "accepted", "Messages verified and accepted"),
        ("relay_messages_delivered", "delivered", "Messages delivered to this node's inbox"),
        ("relay_receipts", "receipts", "Signed receipts received for our messages"),
        ("relay_store_evictions", "evicted", "Messages evicted from the store by its bounds"),
    ):
        c = CounterMetricFamily(name, doc)
        c.add_metric([], counters.get(key, 0))
        yield c
    events = CounterMetricFamily("relay_engine_events", "Every engine counter", labels=["event"])
    for key, value in sorted(counters.items()):
        events.add_metric([key], value)
    yield events
    rejected = CounterMetricFamily(
        "relay_messages_rejected", "Messages rejected, by reason", labels=["reason"]
    )
    for reason, value in sorted(st["rejections"].items()):
        rejected.add_metric([reason], value)
    yield rejected
    yield from _link_families(st)
    rows = GaugeMetricFamily("relay_store_rows", "Rows in the store", labels=["table"])
    for table, value in sorted(st["store"].items()):
        rows.add_metric([table], value)
    yield rows
    if "store_bytes" in st:
        size = GaugeMetricFamily("relay_store_bytes", "Size of the store files (db and WAL)")
        size.add_metric([], st["store_bytes"])
        yield size
    for name, value, doc in (
        ("relay_messages", eng["messages"], "Messages held by the engine"),
        ("relay_outbox", eng["outbox"], "Outbox entries (message x link) waiting"),
        ("relay_input_queue", st["input_queue"], "Inbound messages waiting for the engine"),
        ("relay_roster_serial", eng.get("roster_serial") or 0, "Serial of the current roster"),
    ):
        g = GaugeMetricFamily(name, doc)
        g.add_metric([], value)
        yield g
    drops = CounterMetricFamily("relay_inbound_overload_drops", "Inbound dropped: engine behind")
    drops.add_metric([], st["overload_drops"])
    yield drops
    offset = eng.get("clock_offset_s")
    clock = GaugeMetricFamily(
        "relay_clock_offset_seconds",
        "Median of message issued-at minus this node's clock (NaN until 3 messages)",
    )
    clock.add_metric([], float(offset) if isinstance(offset, int | float) else math.nan)
    yield clock
    warn = GaugeMetricFamily("relay_clock_warning", "1 when the clock offset is too large")
    warn.add_metric([], 1 if st["clock_warning"] else 0)
    yield warn


def _link_families(st: dict[str, Any]) -> Iterator[Metric]:
    state = GaugeMetricFamily(
        "relay_link_state", "1 for the link's current state", labels=["link", "kind", "state"]
    )
    up = GaugeMetricFamily("relay_link_up", "1 when the link is up", labels=["link", "kind"])
    changes = CounterMetricFamily(
        "relay_link_state_changes", "Times the link changed state", labels=["link"]
    )
    outbox = GaugeMetricFamily(
        "relay_outbox_depth", "Messages waiting to go out on the link", labels=["link"]
    )
    crashes = CounterMetricFamily(
        "relay_link_crashes", "Times the link's task crashed and was restarted", labels=["link"]
    )
    used = GaugeMetricFamily(
        "relay_airtime_used_seconds", "Airtime used in the rolling hour", labels=["radio"]
    )
    budget = GaugeMetricFamily(
        "relay_airtime_budget_seconds", "Airtime allowed per rolling hour", labels=["radio"]
    )
    for link in st["links"]:
        name, kind = str(link["name"]), str(link["kind"])
        for s in LINK_STATES:
            state.add_metric([name, kind, s], 1 if link["state"] == s else 0)
        up.add_metric([name, kind], 1 if link["state"] == "up" else 0)
        changes.add_metric([name], st.get("link_changes", {}).get(name, 0))
        outbox.add_metric([name], link["outbox"])
        crashes.add_metric([name], st["link_crashes"].get(name, 0))
        mesh = link.get("mesh")
        if isinstance(mesh, dict) and "airtime_used_s" in mesh:
            used.add_metric([name], mesh["airtime_used_s"])
            budget.add_metric([name], mesh["airtime_budget_s"])
    yield from (state, up, changes, outbox, crashes, used, budget)


class _Snapshot(Collector):
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        return self._metrics


def render(st: dict[str, Any]) -> bytes:
    """The Prometheus text exposition of one status answer."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families(st)))
    return generate_latest(registry)


async def serve(host: str, port: int, status: Status, ready: asyncio.Event | None = None) -> None:
    """Serve ``GET /metrics`` until cancelled; anything else gets 404, a bad request 400."""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].split()
            if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
                code, body, ctype = "400 Bad Request", b"bad request\n", "text/plain"
            elif parts[1].split(b"?")[0] != b"/metrics":
                code, body, ctype = "404 Not Found", b"try /metrics\n", "text/plain"
            else:
                code, body, ctype = "200 OK", render(await status()), CONTENT_TYPE_LATEST
            writer.write(
                f"HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + (body if parts[:1] != [b"HEAD"] else b"")
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            log.info("metrics_bad_request", error=type(exc).__name__)
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(on_client, host, port, limit=MAX_REQUEST_BYTES)
    log.info("metrics_listening", listen=f"{host}:{port}")
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()
