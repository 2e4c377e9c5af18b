"""Retained statuses at scale: how long a node needs to come up to date after connecting.

    python bench/retained_status.py [--nodes 500 2000] [--trials 3] [--decisions 50] [--json]

For each N of ``--nodes``: a fresh mosquitto holds N retained signed statuses, one per simulated
roster node (relay.sim.statuses: real keys, each costs a full verification). A real ``relay run``
node with a roster of those N nodes starts; as soon as its MQTT link is up, ``--decisions``
signed decisions are published to it (QoS 1, raw aiomqtt) while the retained burst is being
processed. Figures per trial, from link up (the node's ``status`` answer says "up"):

* ``statuses_s``: until the engine has verified N statuses (its ``statuses`` counter);
* ``decisions_s``: until every decision is in the node's SQLite inbox;
* the link's status counters (``statuses_in``, ``statuses_coalesced``, ...; absent before them)
  and the node's ``overload_drops``.

Medians over ``--trials``. The "before" figures in docs/scale.md are this bench run from a
checkout of the commit before the status mailbox and the roster index, with bench/ and
relay/sim/{cluster,statuses}.py copied in (the node runs from the working directory).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.envelope import Audience, Decision, Kind, Precedence, seal
from relay.keys import load_private
from relay.sim.broker import Mosquitto
from relay.sim.cluster import Cluster, IssuerSpec, NodeSpec
from relay.sim.statuses import signed_statuses, sim_nodes

ISSUERS = (IssuerSpec("national", ("all",)),)
POLL_S = 0.05


async def publish_statuses(port: int, statuses: list[tuple[str, bytes]], *, name: str) -> None:
    """Each status retained, QoS 1, on its node's status topic; returns once all are acked."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=name, timeout=120) as client:
        await asyncio.gather(
            *(
                client.publish(f"crisis/{node}/status", raw, qos=1, retain=True)
                for node, raw in statuses
            )
        )


async def publish_decisions(port: int, raws: list[bytes]) -> None:
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier="bench-decisions", timeout=120
    ) as client:
        for raw in raws:  # in order: the issuer's sequence numbers stay in order on the wire
            await client.publish("crisis/bench-pub/msg", raw, qos=1)


def decisions(c: Cluster, n: int) -> list[bytes]:
    key = load_private(c.keys / "national.key")
    now = int(time.time())
    return [
        seal(
            Decision(
                issued_at=now,
                expires_at=now + 3600,
                precedence=Precedence.PRIORITY,
                audience=Audience.parse("all"),
                seq=i + 1,
                text=f"Besluit {i}: statusgolf",
                kind=Kind.DECISION,
            ),
            key,
        )
        for i in range(n)
    ]


def trial(n: int, n_decisions: int) -> dict[str, Any]:
    nodes = sim_nodes(n)
    with tempfile.TemporaryDirectory(prefix="relay-rs-") as tmp, Mosquitto() as broker:
        c = Cluster(Path(tmp) / "cluster")
        c.create(
            [NodeSpec("rx", ("VR07",), (broker.url,))], ISSUERS, extra=[s.entry for s in nodes]
        )
        asyncio.run(publish_statuses(broker.port, signed_statuses(nodes, time.time()), name="st"))
        raws = decisions(c, n_decisions)
        try:
            c.start("rx")
            c.wait_ready("rx", timeout=60)
            up = time.monotonic()
            asyncio.run(publish_decisions(broker.port, raws))
            statuses_s = decisions_s = None
            deadline = up + 120
            while (statuses_s is None or decisions_s is None) and time.monotonic() < deadline:
                st = c.status("rx")
                now = time.monotonic() - up
                if statuses_s is None and st["engine"]["counters"].get("statuses", 0) >= n:
                    statuses_s = now
                if decisions_s is None and st["engine"]["counters"].get("delivered", 0) >= len(
                    raws
                ):
                    decisions_s = now
                time.sleep(POLL_S)
            mqtt = next(lk for lk in st["links"] if lk["kind"] == "mqtt")["mqtt"]
            return {
                "statuses_s": statuses_s,
                "decisions_s": decisions_s,
                "overload_drops": st["overload_drops"],
                "rejected_queue_full": mqtt["rejected_queue_full"],
                **{k: v for k, v in mqtt.items() if k.startswith("status")},
            }
        finally:
            c.stop_all()


def median(values: list[Any]) -> float | None:
    done = [v for v in values if v is not None]
    return round(statistics.median(done), 3) if len(done) == len(values) else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--decisions", type=int, default=50)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # aiomqtt's "pending publish calls"
    results: dict[str, Any] = {"load_average": os.getloadavg()[0], "runs": {}}
    for n in args.nodes:
        trials = [trial(n, args.decisions) for _ in range(args.trials)]
        results["runs"][n] = {
            "statuses_s": median([t["statuses_s"] for t in trials]),
            "decisions_s": median([t["decisions_s"] for t in trials]),
            "trials": trials,
        }
    results["load_average_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"load average {results['load_average']:.1f} -> {results['load_average_end']:.1f}")
    print(f"{'N':>6} {'statuses up to date s':>22} {'decisions in s':>15}  counters (last trial)")
    for n, run in results["runs"].items():
        last = {k: v for k, v in run["trials"][-1].items() if not k.endswith("_s")}
        print(f"{n:>6} {run['statuses_s']!s:>22} {run['decisions_s']!s:>15}  {last}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
