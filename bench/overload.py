"""Overload: many publishers flood one node at once; is anything lost or shown twice?

    python bench/overload.py [--publishers 8] [--per-publisher 2500] [--slow-stop-ms 50] [--json]

Each of ``--publishers`` raw aiomqtt clients publishes ``--per-publisher`` signed decisions
(QoS 1, all at once, no retries: what the broker accepted is all there is) on its own
``crisis/pub<i>/msg`` topic into a real ``relay run`` node on a real mosquitto. Every publisher
signs as its own issuer, so each issuer's sequence numbers reach the node in order.

Runs, each on a fresh broker (``max_queued_messages`` raised: the broker must hold the excess):

* ``normal``: the node as configured (``inbound_queue`` 1000, the MQTT v5 Receive Maximum).
* ``slowed``: the same burst into a node whose inbound is deliberately slowed: the bench stops
  the node's process (SIGSTOP) for ``--slow-stop-ms`` out of every 100 ms while the burst runs.
* ``raw``: the same burst (same payload sizes) into one raw aiomqtt QoS 1 subscriber: the time
  the broker and the client library alone need.

Figures per run: ``sent``; ``delivered_once`` (sent decisions in the node's inbox); ``duplicates``
(deliveries beyond one per decision, from the engine's counter); ``lost`` (sent, not in the inbox
when the run ended); ``receipts_returned`` (distinct sent decisions for which the node's signed
receipt came back through the broker); ``seconds`` (first publish to the last delivery); the node's
CPU seconds and CPU µs per decision; queue-full re-sends and reconnects of the node's link.
One JSON object with ``--json``; the top level is the normal run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay import api
from relay.envelope import (
    Audience,
    Decision,
    Envelope,
    Kind,
    Precedence,
    message_id,
    open_envelope,
    seal,
)
from relay.keys import load_private
from relay.kit.mosquitto import Limits
from relay.sim.broker import Mosquitto
from relay.sim.cluster import Cluster, IssuerSpec, NodeSpec

# The broker kit's limits (relay.kit.mosquitto), with the per-client queue raised to hold the
# whole burst: what the broker drops past max_queued_messages no node can ever get back.
BROKER = Limits(max_queued_messages=1_000_000, max_queued_bytes=0)
# 20,000 decisions and the node's 20,000 receipts are more than the default store bound
# (max_messages 20,000): the run is about the link, not about eviction.
NODE_OPTIONS = {"max_messages": 100_000}
NODE = "rx"
MOSQUITTO: str | None = None  # --mosquitto
PUBLISH_TIMEOUT_S = 600.0  # a whole burst waits in paho's queue (20 in flight per client)


def sign_bursts(c: Cluster, publishers: int, per: int) -> list[list[bytes]]:
    bursts = []
    now = int(time.time())
    for p in range(publishers):
        key = load_private(c.keys / f"iss{p}.key")
        bursts.append([
            seal(
                Decision(
                    issued_at=now,
                    expires_at=now + 6 * 3600,
                    precedence=Precedence.PRIORITY,
                    audience=Audience.parse("region:VR07"),
                    seq=i + 1,
                    text=f"Besluit {i} van uitgever {p}: overbelasting",
                    kind=Kind.DECISION,
                ),
                key,
            )
            for i in range(per)
        ])  # fmt: skip
    return bursts


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def status(sock: Path) -> dict[str, Any]:
    return await api.request(sock, {"op": "status"}, wait_s=120.0)


async def publish_all(port: int, bursts: list[list[bytes]], topic: str | None = None) -> None:
    async def one(i: int, raws: list[bytes]) -> None:
        async with aiomqtt.Client(
            "127.0.0.1",
            port,
            identifier=f"pub{i}",
            protocol=aiomqtt.ProtocolVersion.V5,
            timeout=PUBLISH_TIMEOUT_S,
        ) as client:
            t = topic or f"crisis/pub{i}/msg"
            await asyncio.gather(*(client.publish(t, r, qos=1) for r in raws))

    await asyncio.gather(*(one(i, raws) for i, raws in enumerate(bursts)))


class Stopper:
    """SIGSTOP / SIGCONT a process: stopped ``stop_ms`` of every 100 ms, until ``close()``."""

    def __init__(self, pid: int, stop_ms: float) -> None:
        self._pid, self._stop_s = pid, stop_ms / 1000
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stopper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            os.kill(self._pid, signal.SIGSTOP)
            self._done.wait(self._stop_s)
            os.kill(self._pid, signal.SIGCONT)
            self._done.wait(0.1 - self._stop_s)

    def close(self) -> None:
        self._done.set()
        self._thread.join()
        os.kill(self._pid, signal.SIGCONT)


async def node_run(
    c: Cluster, port: int, bursts: list[list[bytes]], *, stop_ms: float, limit_s: float
) -> dict[str, Any]:
    sock = c.socket_path(NODE)
    pid = c.procs[NODE].pid
    sent = {message_id(r) for b in bursts for r in b}
    receipts: set[bytes] = set()
    cpu0 = cpu_seconds(pid)

    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-rcpt") as watcher:
        await watcher.subscribe(f"crisis/{NODE}/rcpt", qos=1)

        async def watch() -> None:
            async for m in watcher.messages:
                assert isinstance(m.payload, bytes)
                env = open_envelope(m.payload)
                if isinstance(env, Envelope):
                    receipts.update(r for r in env.decision.refs if r in sent)

        watching = asyncio.create_task(watch())
        stopper = Stopper(pid, stop_ms) if stop_ms > 0 else None
        t0 = time.perf_counter()
        last_change, last, done_at = t0, -1, None
        try:
            await publish_all(port, bursts)
            published = time.perf_counter() - t0
            # Polling the node's API is the only view into another process.
            while True:
                try:
                    st = await status(sock)
                except api.ApiError:
                    continue  # busy beyond the request's patience: ask again
                delivered = int(st["engine"]["counters"].get("delivered", 0))
                now = time.perf_counter()
                if delivered != last:
                    last, last_change = delivered, now
                if delivered >= len(sent) and done_at is None:
                    done_at = now
                    if stopper is not None:
                        stopper.close()
                        stopper = None
                if done_at is not None and (len(receipts) >= len(sent) or now - done_at > 30):
                    break
                if now - last_change > limit_s:
                    break  # stalled: report what arrived
                await asyncio.sleep(0.05)
        finally:
            if stopper is not None:
                stopper.close()
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await watching
    seconds = (done_at if done_at is not None else last_change) - t0
    cpu = cpu_seconds(pid) - cpu0
    st = await status(sock)
    inbox = (await api.request(sock, {"op": "inbox", "limit": 100_000}, wait_s=60.0))["messages"]
    have = {bytes.fromhex(m["id"]) for m in inbox} & sent
    counters = st["engine"]["counters"]
    mqtt = next(lk for lk in st["links"] if lk["kind"] == "mqtt")["mqtt"]
    return {
        "sent": len(sent),
        "delivered_once": len(have),
        "duplicates": int(counters.get("delivered", 0)) - len(have),
        "lost": len(sent) - len(have),
        "receipts_returned": len(receipts),
        "seconds": round(seconds, 2),
        "publish_seconds": round(published, 2),
        "complete": done_at is not None,
        "node_cpu_s": round(cpu, 2),
        "node_cpu_us_per_decision": round(cpu / len(sent) * 1e6),
        "queue_full_resends": mqtt.get("rejected_queue_full", 0),
        "reconnects": mqtt.get("connects", 0) - 1,
        "read_pauses": mqtt.get("read_pauses", 0),
        "overload_drops": st.get("overload_drops", 0),
        "slowed_stop_ms_per_100ms": stop_ms,
    }


def run_node(bursts_of: Any, publishers: int, per: int, stop_ms: float, limit_s: float) -> Any:
    with (
        tempfile.TemporaryDirectory(prefix="relay-overload-") as tmp,
        Mosquitto(limits=BROKER, executable=MOSQUITTO) as broker,
    ):
        c = Cluster(Path(tmp))
        c.create(
            [NodeSpec(NODE, ("VR07",), (broker.url,), options=NODE_OPTIONS)],
            [IssuerSpec(f"iss{p}", ("all",)) for p in range(publishers)],
        )
        c.start(NODE)
        try:
            c.wait_ready(NODE)
            bursts = sign_bursts(c, publishers, per)
            bursts_of.append([len(r) for b in bursts for r in b])
            return asyncio.run(node_run(c, broker.port, bursts, stop_ms=stop_ms, limit_s=limit_s))
        finally:
            c.stop_all()


async def raw_run(port: int, publishers: int, sizes: list[int]) -> float:
    total = len(sizes)
    got = 0
    done = asyncio.Event()
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier="raw-sub", protocol=aiomqtt.ProtocolVersion.V5
    ) as sub:
        await sub.subscribe("raw/+/msg", qos=1)

        async def receive() -> None:
            nonlocal got
            async for _ in sub.messages:
                got += 1
                if got == total:
                    done.set()
                    return

        task = asyncio.create_task(receive())
        per = total // publishers
        bursts = [[b"x" * n for n in sizes[i * per : (i + 1) * per]] for i in range(publishers)]
        t0 = time.perf_counter()

        async def one(i: int, raws: list[bytes]) -> None:
            async with aiomqtt.Client(
                "127.0.0.1",
                port,
                identifier=f"raw{i}",
                protocol=aiomqtt.ProtocolVersion.V5,
                timeout=PUBLISH_TIMEOUT_S,
            ) as client:
                await asyncio.gather(*(client.publish(f"raw/{i}/msg", r, qos=1) for r in raws))

        await asyncio.gather(*(one(i, b) for i, b in enumerate(bursts)))
        await asyncio.wait_for(done.wait(), 300)
        took = time.perf_counter() - t0
        await task
    return took


def mosquitto_version(binary: str) -> str:
    """``mosquitto -h``'s first line names the version (2.0.11 oversteps the Receive Maximum)."""
    out = subprocess.run([binary, "-h"], capture_output=True, text=True, check=False).stdout
    return out.split("\n", 1)[0].removeprefix("mosquitto version ")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--publishers", type=int, default=8)
    ap.add_argument("--per-publisher", type=int, default=2500)
    ap.add_argument("--slow-stop-ms", type=float, default=50.0)
    ap.add_argument("--stall-s", type=float, default=60.0, help="give up after no progress")
    ap.add_argument("--trials", type=int, default=1, help="raw baseline trials (median)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--mosquitto", help="the mosquitto binary (default: the one on PATH)")
    args = ap.parse_args()
    global MOSQUITTO
    MOSQUITTO = args.mosquitto
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # aiomqtt warns on many pending publishes
    load_before = os.getloadavg()
    sizes: list[list[int]] = []
    normal = run_node(sizes, args.publishers, args.per_publisher, 0.0, args.stall_s)
    slowed = run_node(sizes, args.publishers, args.per_publisher, args.slow_stop_ms, args.stall_s)
    raw: list[float] = []
    for _ in range(args.trials):
        with Mosquitto(limits=BROKER, executable=MOSQUITTO) as broker:
            raw.append(asyncio.run(raw_run(broker.port, args.publishers, sizes[0])))
    raw_s = statistics.median(raw)
    result = {
        **normal,
        "raw_aiomqtt_seconds": round(raw_s, 2),
        "ratio_seconds_relay_over_raw": round(normal["seconds"] / raw_s, 2),
        "slowed": slowed,
        "mosquitto": mosquitto_version(args.mosquitto or "mosquitto"),
        "publishers": args.publishers,
        "per_publisher": args.per_publisher,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"Overload: {args.publishers} publishers x {args.per_publisher} signed decisions at once")
    print(f"{'run':8} {'sent':>7} {'once':>7} {'dup':>5} {'lost':>6} {'rcpts':>7} {'s':>7} "
          f"{'cpu us/dec':>10} {'resends':>8} {'reconn':>7}")  # fmt: skip
    for name, r in (("normal", normal), ("slowed", slowed)):
        print(f"{name:8} {r['sent']:>7} {r['delivered_once']:>7} {r['duplicates']:>5} "
              f"{r['lost']:>6} {r['receipts_returned']:>7} {r['seconds']:>7.1f} "
              f"{r['node_cpu_us_per_decision']:>10} {r['queue_full_resends']:>8} "
              f"{r['reconnects']:>7}")  # fmt: skip
    ratio = result["ratio_seconds_relay_over_raw"]
    print(f"raw aiomqtt QoS 1, same burst: {raw_s:.1f} s (relay takes {ratio}x as long)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
