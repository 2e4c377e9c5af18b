"""How fast the MQTT link notices a dead broker path, and fails over and back, on loopback.

    python bench/mqtt_liveness.py [--trials 8] [--json]

Setup: a real mosquitto (two for failover), a fault proxy (relay.sim.faultproxy) in front of
the measured one, and one ``MqttLink`` with the node's settings (probe every 1 s, timeout 3 s).

* blackhole: the proxy drops everything silently (no RST, no FIN) at ``--trials`` different
  points of the 1 s probe cycle; time until the link reports ``down``. The bound the design
  promises (``tests/mqtt/test_core.py`` checks it on virtual time) is probe_timeout_s to
  probe_timeout_s + probe_interval_s; the requirement is under 5 s. Baseline, computed:
  keepalive alone notices a silent broker 1-2 x keepalive after it went silent.
* woken publish: a QoS 1 publish waiting for its PUBACK (publish timeout 30 s) behind the
  blackhole; time until it raises ``LinkUnavailable`` (it is woken when the link goes down).
* failover / failback: the preferred broker's path is cut (RST): time until the link is up on
  the second broker; then restored: time until it is back on the first (failback every 1 s).

These were stopwatch assertions in tests/mqtt and tests/node; the tests now assert behaviour
(down reported, publish woken, no down during failback) and the times are measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.links.mqtt import (
    BrokerConfig,
    LinkEvent,
    LinkStateChanged,
    LinkUnavailable,
    MqttLink,
    MqttSettings,
)
from relay.sim.broker import Mosquitto
from relay.sim.faultproxy import FaultProxy

KEEPALIVE_S = 30  # relay.config default for mqtt.keepalive
WAIT_S = 30.0


class States:
    """An ``on_event`` callback that lets the bench await a state (optionally on one broker)."""

    def __init__(self) -> None:
        self.events: list[LinkStateChanged] = []
        self._wake = asyncio.Event()

    def __call__(self, event: LinkEvent) -> None:
        if isinstance(event, LinkStateChanged):
            self.events.append(event)
            self._wake.set()

    async def wait(self, state: str, url: str | None = None, *, since: int = 0) -> None:
        def seen() -> bool:
            return any(
                e.state == state and (url is None or e.broker_url == url)
                for e in self.events[since:]
            )

        async with asyncio.timeout(WAIT_S):
            while not seen():
                self._wake.clear()
                await self._wake.wait()


def _settings(*urls: str, **overrides: Any) -> MqttSettings:
    return MqttSettings("bench", tuple(BrokerConfig(u) for u in urls), **overrides)


async def _running(link: MqttLink, body: Callable[[], Any]) -> Any:
    task = asyncio.create_task(link.run(), name="bench-link")
    try:
        return await body()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def blackhole_trial(broker: Mosquitto, phase_s: float) -> tuple[float, float]:
    """Seconds from blackhole to ``down``, and to the woken publish raising."""
    states = States()
    async with FaultProxy(upstream_port=broker.port) as proxy:
        url = f"mqtt://127.0.0.1:{proxy.port}"
        link = MqttLink(_settings(url, publish_timeout_s=30.0), on_event=states)

        async def body() -> tuple[float, float]:
            loop = asyncio.get_running_loop()
            await states.wait("up")
            await asyncio.sleep(1.0 + phase_s)  # a point of the probe cycle, on purpose
            mark = len(states.events)
            began = loop.time()
            proxy.blackhole()
            publish = asyncio.create_task(link.publish("msg", b"into the void"))
            await states.wait("down", since=mark)
            down = loop.time() - began
            try:
                await publish
            except LinkUnavailable:
                return down, loop.time() - began
            raise RuntimeError("a publish behind the blackhole got its PUBACK")

        result: tuple[float, float] = await _running(link, body)
        return result


async def failover_trial(first: Mosquitto, second: Mosquitto) -> tuple[float, float]:
    """Seconds from cutting the preferred path to up on the second broker, and from restoring
    it to up on the first again."""
    states = States()
    async with FaultProxy(upstream_port=first.port) as proxy:
        preferred = f"mqtt://127.0.0.1:{proxy.port}"
        link = MqttLink(_settings(preferred, second.url, failback_interval_s=1.0), on_event=states)

        async def body() -> tuple[float, float]:
            loop = asyncio.get_running_loop()
            await states.wait("up", preferred)
            mark, began = len(states.events), loop.time()
            proxy.cut()
            await states.wait("up", second.url, since=mark)
            failover = loop.time() - began
            mark, began = len(states.events), loop.time()
            proxy.restore()
            await states.wait("up", preferred, since=mark)
            return failover, loop.time() - began

        result: tuple[float, float] = await _running(link, body)
        return result


async def measure(trials: int) -> dict[str, Any]:
    with Mosquitto() as one, Mosquitto() as two:
        blackholes = [await blackhole_trial(one, i / trials) for i in range(trials)]
        failovers = [await failover_trial(one, two) for _ in range(max(1, trials // 2))]
    s = MqttSettings("bench", (BrokerConfig("mqtt://127.0.0.1"),))
    down = [d for d, _ in blackholes]
    woken = [w for _, w in blackholes]
    return {
        "trials": trials,
        "blackhole_down_s": {"median": statistics.median(down), "min": min(down), "max": max(down)},
        "promised_s": [s.probe_timeout_s, s.probe_timeout_s + s.probe_interval_s],
        "keepalive_only_s": [KEEPALIVE_S, 2 * KEEPALIVE_S],
        "publish_woken_s": {"median": statistics.median(woken), "max": max(woken)},
        "failover_s": statistics.median(f for f, _ in failovers),
        "failback_s": statistics.median(b for _, b in failovers),
        "all_down_under_5_s": max(down) < 5.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.disable(logging.ERROR)  # paho logs each reset the proxy causes
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    r = asyncio.run(measure(args.trials))
    if args.json:
        print(json.dumps(r, indent=2))
        return
    b, w = r["blackhole_down_s"], r["publish_woken_s"]
    lo, hi = r["promised_s"]
    print(f"MQTT link liveness, {r['trials']} trials, loopback")
    print(f"{'measure':<34}{'median s':>10}{'min s':>8}{'max s':>8}")
    print(f"{'blackhole -> down':<34}{b['median']:>10.2f}{b['min']:>8.2f}{b['max']:>8.2f}")
    print(f"{'  promised bound':<34}{'':>10}{lo:>8.2f}{hi:>8.2f}")
    print(f"{'  keepalive only (computed)':<34}{1.5 * KEEPALIVE_S:>10.2f}{KEEPALIVE_S:>8.2f}"
          f"{2 * KEEPALIVE_S:>8.2f}")  # fmt: skip
    print(f"{'pending publish woken':<34}{w['median']:>10.2f}{'':>8}{w['max']:>8.2f}")
    print(f"{'failover (cut -> up on 2nd)':<34}{r['failover_s']:>10.2f}")
    print(f"{'failback (restore -> up on 1st)':<34}{r['failback_s']:>10.2f}")
    print(f"every blackhole down under 5 s: {'yes' if r['all_down_under_5_s'] else 'NO'}")


if __name__ == "__main__":
    main()
