"""Does the broker keep an MQTT v5 client's Receive Maximum after the first window?

    python bench/receive_maximum.py [--window 10] [--total 200] [--mosquitto PATH] [--json]

A raw paho subscriber (manual acknowledgement, Receive Maximum ``--window``) and a publisher
that sends ``--total`` QoS 1 messages at once, through a fresh mosquitto on loopback. The
subscriber acknowledges what it holds, oldest first, at most a window per round, as a store
does after a group commit. Printed: how many arrived before any acknowledgement (the first
window) and the most it ever held unacknowledged. A broker that keeps the Receive Maximum shows
both equal to the window; mosquitto 2.0.11 shows about window x window after the first round
(docs/broker.md, "Flow control towards a node").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.kit.mosquitto import Limits
from relay.sim.broker import Mosquitto

SETTLE_S = 1.0  # how long the broker gets to overstep before we look


def measure(port: int, window: int, total: int) -> dict[str, int]:
    lock = threading.Lock()
    unacked: list[int] = []
    received = 0
    subscribed = threading.Event()

    def on_message(_c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        nonlocal received
        with lock:
            received += 1
            unacked.append(m.mid)

    sub = paho.Client(CallbackAPIVersion.VERSION2, "rm-sub", protocol=paho.MQTTv5)
    sub.manual_ack_set(True)
    sub.on_message = on_message
    sub.on_subscribe = lambda *_: subscribed.set()
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.ReceiveMaximum = window
    sub.connect("127.0.0.1", port, clean_start=True, properties=props)
    sub.loop_start()
    pub = paho.Client(CallbackAPIVersion.VERSION2, "rm-pub", protocol=paho.MQTTv5)
    pub.max_inflight_messages_set(0)  # the whole burst at once
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    try:
        sub.subscribe("rm/#", qos=1)
        if not subscribed.wait(10):
            raise RuntimeError("no SUBACK")
        for i in range(total):
            pub.publish("rm/x", b"m%d" % i, qos=1)
        time.sleep(SETTLE_S)  # timer by design: give the broker time to overstep
        with lock:
            first = received
        peak, rounds = first, 0
        deadline = time.monotonic() + 60
        while received < total and time.monotonic() < deadline:
            rounds += 1
            with lock:
                batch, unacked[:] = unacked[:window], unacked[window:]
            for mid in batch:
                sub.ack(mid, 1)
            time.sleep(0.05)  # timer by design: one "commit" per round
            with lock:
                peak = max(peak, len(unacked))
        return {"first_window": first, "peak_unacked": peak, "received": received, "rounds": rounds}
    finally:
        sub.loop_stop()
        pub.loop_stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--total", type=int, default=200)
    ap.add_argument("--mosquitto", help="the mosquitto binary (default: the one on PATH)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    binary = args.mosquitto or "mosquitto"
    head = subprocess.run([binary, "-h"], capture_output=True, text=True, check=False).stdout
    version = head.split("\n", 1)[0].removeprefix("mosquitto version ")
    limits = Limits(max_queued_messages=1_000_000, max_queued_bytes=0)
    with Mosquitto(limits=limits, executable=args.mosquitto) as broker:
        result = {"mosquitto": version, "window": args.window, "total": args.total}
        result |= measure(broker.port, args.window, args.total)
    if args.json:
        print(json.dumps(result))
    else:
        r = result
        print(f"mosquitto {version}, Receive Maximum {args.window}: {r['first_window']} "
              f"before any PUBACK, at most {r['peak_unacked']} unacknowledged "
              f"({r['received']}/{args.total} received in {r['rounds']} rounds)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
