"""Relay throughput and latency over MQTT, against raw aiomqtt through the same broker.

    python bench/mqtt_throughput.py [--messages 2000] [--trials 3] [--rate 100] [--seconds 10]

Baseline: one aiomqtt client publishes QoS 1 messages of the same size as a signed decision, a
second one subscribed with QoS 1 receives them; nothing is verified or stored.

Relay: two real ``relay run`` processes on the same mosquitto. Pre-signed decisions are submitted to
the sending node's API (as operators do with ``relay send``); the figure counts until every one of
them is verified, committed to the receiving node's SQLite inbox (synchronous=FULL) and delivered.

Latency: both at a steady rate (default 100 messages/s), from submission (or publish) to arrival in
the receiving inbox (or subscriber). The machines are shared and noisy: medians over trials.

Ceiling: what no relay on this machine can beat, from costs measured in the same run. Every decision
costs at least its signature checks (sent node at submission, receiving node, and the sent node's
check of each receipt), the receipts' signatures, and for each MQTT message (the decision, and each
receipt) the CPU that raw aiomqtt + mosquitto spent per message in the baseline. With every core
busy on nothing else (storage, engine, API and scheduling free), throughput is at most
cores / that floor. ``ceiling_ratio`` is that bound against the baseline; ``of_ceiling`` is how much
of it the relay reaches.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt  # the baseline uses the library directly; the relay itself goes through links/mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay import api, cose
from relay.sim.broker import Mosquitto
from relay.sim.cluster import Cluster, IssuerSpec, NodeSpec

PAYLOAD_BYTES = 180  # about the median signed decision


async def baseline_throughput(port: int, n: int) -> float:
    done = asyncio.Event()
    got = 0

    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-sub") as sub:
        await sub.subscribe("bench/t", qos=1)

        async def receive() -> None:
            nonlocal got
            async for _ in sub.messages:
                got += 1
                if got == n:
                    done.set()
                    return

        async with aiomqtt.Client("127.0.0.1", port, identifier="bench-pub") as pub:
            task = asyncio.create_task(receive())
            payload = b"x" * PAYLOAD_BYTES
            t0 = time.perf_counter()
            await asyncio.gather(*(pub.publish("bench/t", payload, qos=1) for _ in range(n)))
            await asyncio.wait_for(done.wait(), 120)
            elapsed = time.perf_counter() - t0
            await task
    return n / elapsed


async def baseline_latency(port: int, rate: float, seconds: float) -> list[float]:
    lat: list[float] = []
    n = int(rate * seconds)
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-lsub") as sub:
        await sub.subscribe("bench/l", qos=1)

        async def receive() -> None:
            async for msg in sub.messages:
                assert isinstance(msg.payload, bytes)
                sent = float(msg.payload[:20].decode())
                lat.append(time.time() - sent)
                if len(lat) == n:
                    return

        async with aiomqtt.Client("127.0.0.1", port, identifier="bench-lpub") as pub:
            task = asyncio.create_task(receive())
            t0 = time.perf_counter()
            for i in range(n):
                await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
                stamp = f"{time.time():<20.6f}".encode()
                await pub.publish("bench/l", stamp + b"x" * (PAYLOAD_BYTES - 20), qos=1)
            await asyncio.wait_for(task, 60)
    return lat


async def submit_all(sock: Path, raws: list[bytes], concurrency: int = 16) -> None:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for raw in raws:
        queue.put_nowait(raw)

    async def worker() -> None:
        reader, writer = await asyncio.open_unix_connection(str(sock))
        try:
            while not queue.empty():
                raw = queue.get_nowait()
                writer.write(
                    json.dumps({"op": "submit", "raw": base64.b64encode(raw).decode()}).encode()
                    + b"\n"
                )
                await writer.drain()
                answer = json.loads(await reader.readline())
                if not answer.get("ok"):
                    raise RuntimeError(answer)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def delivered(sock: Path) -> int:
    return (await counters(sock)).get("delivered", 0)


def bench_decisions(c: Cluster, n: int, trial: int) -> list[bytes]:
    return [c.sign("national", f"Besluit {trial}.{i}: bench", to="region:VR07") for i in range(n)]


async def relay_throughput(c: Cluster, raws: list[bytes]) -> float:
    rx, n = c.socket_path("rx"), len(raws)
    base = await delivered(rx)
    t0 = time.perf_counter()
    await submit_all(c.socket_path("tx"), raws)
    # Polling the node's API is the only view into another process; 10 ms is below the noise.
    while await delivered(rx) < base + n:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    return n / (time.perf_counter() - t0)


async def relay_latency(c: Cluster, rate: float, seconds: float) -> list[float]:
    n = int(rate * seconds)
    raws = [c.sign("national", f"Latentie {i}", to="region:VR07") for i in range(n)]
    tx, rx = c.socket_path("tx"), c.socket_path("rx")
    submitted: dict[str, float] = {}
    reader, writer = await asyncio.open_unix_connection(str(tx))
    t0 = time.perf_counter()
    for i, raw in enumerate(raws):
        await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        at = time.time()
        writer.write(
            json.dumps({"op": "submit", "raw": base64.b64encode(raw).decode()}).encode() + b"\n"
        )
        await writer.drain()
        submitted[json.loads(await reader.readline())["id"]] = at
    writer.close()
    deadline = time.monotonic() + 60
    while True:
        inbox = (await api.request(rx, {"op": "inbox", "limit": 100_000}))["messages"]
        got = {m["id"]: m["received_at"] for m in inbox if m["id"] in submitted}
        if len(got) == n or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    return [got[i] - submitted[i] for i in got]


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def signature_costs_us(rounds: int = 5, n: int = 400) -> tuple[float, float]:
    """Median µs of one COSE_Sign1 Ed25519 check and one signing, of a decision-sized payload."""
    key = Ed25519PrivateKey.generate()
    raw = cose.sign1(os.urandom(PAYLOAD_BYTES - 90), key, kid=b"k" * 8)
    msg, public = cose.decode_sign1(raw), key.public_key()
    verify, sign = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            cose.verify_parsed(msg, public)
        t1 = time.perf_counter()
        for _ in range(n):
            cose.sign1(msg.payload, key, kid=b"k" * 8)
        verify.append((t1 - t0) / n * 1e6)
        sign.append((time.perf_counter() - t1) / n * 1e6)
    return statistics.median(verify), statistics.median(sign)


async def counters(sock: Path) -> dict[str, int]:
    st = await api.request(sock, {"op": "status"})
    return {k: int(v) for k, v in st["engine"]["counters"].items()}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    # aiomqtt warns on every publish while more than 10 wait for a PUBACK: that is the point here.
    logging.getLogger("mqtt").setLevel(logging.ERROR)

    # mosquitto queues at most 1000 messages per client by default and drops QoS 1 beyond that: the
    # baseline publishes its whole burst at once, so the bench raises the bound for both sides.
    queue = ["max_queued_messages 100000"]
    with (
        tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp,
        Mosquitto(extra_config=queue) as broker,
    ):
        c = Cluster(Path(tmp))
        c.create(
            [NodeSpec("tx", (), (broker.url,)), NodeSpec("rx", ("VR07",), (broker.url,))],
            [IssuerSpec("national", ("all",))],
        )
        for name in ("tx", "rx"):
            c.start(name)
        try:
            for name in ("tx", "rx"):
                c.wait_ready(name)
            assert broker.pid is not None
            raw_cpu0 = own_cpu_seconds() + cpu_seconds(broker.pid)
            raw_tp = [asyncio.run(baseline_throughput(broker.port, args.messages))
                      for _ in range(args.trials)]  # fmt: skip
            raw_cpu_us = ((own_cpu_seconds() + cpu_seconds(broker.pid) - raw_cpu0)
                          / (args.messages * args.trials) * 1e6)  # fmt: skip
            # Signed beforehand, outside the figures (operators' signing is not the relay's work).
            trials = [bench_decisions(c, args.messages, t) for t in range(args.trials)]
            cpu0 = {n: cpu_seconds(c.procs[n].pid) for n in ("tx", "rx")}
            count0 = {n: asyncio.run(counters(c.socket_path(n))) for n in ("tx", "rx")}
            side0 = (own_cpu_seconds(), cpu_seconds(broker.pid))
            relay_tp = [asyncio.run(relay_throughput(c, raws)) for raws in trials]
            decisions: int = args.messages * args.trials
            cpu_us = {n: round((cpu_seconds(c.procs[n].pid) - cpu0[n]) / decisions * 1e6)
                      for n in ("tx", "rx")}  # fmt: skip
            count1 = {n: asyncio.run(counters(c.socket_path(n))) for n in ("tx", "rx")}
            # The submitting client (this process: JSON, base64, the API socket) and the broker.
            cpu_us["submitter"] = round((own_cpu_seconds() - side0[0]) / decisions * 1e6)
            cpu_us["mosquitto"] = round((cpu_seconds(broker.pid) - side0[1]) / decisions * 1e6)
            raw_lat = asyncio.run(baseline_latency(broker.port, args.rate, args.seconds))
            relay_lat = asyncio.run(relay_latency(c, args.rate, args.seconds))
        finally:
            c.stop_all()

    def per_decision(node: str, name: str) -> float:
        return float(count1[node].get(name, 0) - count0[node].get(name, 0)) / decisions

    # Each accepted message was verified once. The sending node accepted each decision (at
    # submission) and each receipt; each receipt was signed once and is one more MQTT message.
    verifies = per_decision("tx", "accepted") + per_decision("rx", "accepted")
    receipts = per_decision("tx", "accepted") - 1
    verify_us, sign_us = signature_costs_us()
    floor_us = verifies * verify_us + receipts * sign_us + (1 + receipts) * raw_cpu_us
    cores = os.cpu_count() or 1
    ceiling = cores * 1e6 / floor_us
    baseline_tp, relay_median = statistics.median(raw_tp), statistics.median(relay_tp)
    result = {
        "messages": args.messages,
        "trials": args.trials,
        "baseline_msgs_per_s": baseline_tp,
        "relay_msgs_per_s": relay_median,
        "ratio": relay_median / baseline_tp,
        "rate": args.rate,
        "baseline_latency_ms": {"p50": pct(raw_lat, 50) * 1e3, "p99": pct(raw_lat, 99) * 1e3},
        "relay_latency_ms": {"p50": pct(relay_lat, 50) * 1e3, "p99": pct(relay_lat, 99) * 1e3},
        "relay_latency_samples": len(relay_lat),
        # A node's CPU time (user + system, /proc) over the throughput trials per decision:
        # tx signs nothing (pre-signed) but verifies, stores, publishes and takes the receipt;
        # rx verifies, stores, delivers and signs and publishes its receipt.
        "cpu_us_per_decision": cpu_us,
        "ceiling": {
            "cores": cores,
            "baseline_cpu_us_per_msg": round(raw_cpu_us),
            "verify_us": round(verify_us, 1),
            "sign_us": round(sign_us, 1),
            "verifies_per_decision": round(verifies, 2),
            "receipts_per_decision": round(receipts, 2),
            "floor_us_per_decision": round(floor_us),
            "msgs_per_s": round(ceiling),
            "ceiling_ratio": round(ceiling / baseline_tp, 2),
            "of_ceiling": round(relay_median / ceiling, 2),
        },
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "all_trials": {"baseline": raw_tp, "relay": relay_tp},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"MQTT throughput, {args.messages} messages x {args.trials} trials (medians)")
    print(f"{'':34} {'msgs/s':>10} {'p50 ms':>9} {'p99 ms':>9}")
    for label, tp, lat in (
        ("raw aiomqtt QoS1 pub->sub", "baseline_msgs_per_s", "baseline_latency_ms"),
        ("relay: verify+store(FULL)+deliver", "relay_msgs_per_s", "relay_latency_ms"),
    ):
        ms = result[lat]
        assert isinstance(ms, dict)
        print(f"{label:34} {result[tp]:>10.0f} {ms['p50']:>9.2f} {ms['p99']:>9.2f}")
    print(f"ratio relay/raw throughput: {result['ratio']:.2f} (goal >= 0.5); latency at "
          f"{args.rate:.0f} msgs/s, {result['relay_latency_samples']} samples")  # fmt: skip
    print(f"CPU per decision: tx {cpu_us['tx']} us, rx {cpu_us['rx']} us, submitting client "
          f"{cpu_us['submitter']} us, mosquitto {cpu_us['mosquitto']} us; "
          f"load {result['loadavg']}")  # fmt: skip
    ceil = result["ceiling"]
    assert isinstance(ceil, dict)
    print(f"ceiling on {cores} cores: {ceil['verifies_per_decision']} checks x "
          f"{ceil['verify_us']} us + {ceil['receipts_per_decision']} receipts x "
          f"{ceil['sign_us']} us "
          f"+ {1 + receipts:.2f} MQTT msgs x {ceil['baseline_cpu_us_per_msg']} us (baseline CPU) = "
          f"{ceil['floor_us_per_decision']} us/decision -> at most {ceil['msgs_per_s']} msgs/s, "
          f"ratio {ceil['ceiling_ratio']}; relay reaches {ceil['of_ceiling']} of it")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
