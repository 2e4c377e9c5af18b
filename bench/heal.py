"""Partition healing: how fast a node catches up over MQTT, and what it costs on the mesh.

    python bench/heal.py [--decisions 1000] [--trials 3] [--mesh-missed 20] [--json]

MQTT (real ``relay run`` processes, a real mosquitto): ``src`` submits N decisions that ``peer``
receives and stores; then ``src`` stops (its retries go with it). A node that has never been
connected (so the broker keeps nothing for it) starts; the figure is the time from its MQTT link
being up to all N decisions being in its SQLite inbox, carried only by ``peer``'s answer to its
summary (relay.engine.sync). Baseline in the same run: another fresh node, up, gets the same N
signed decisions published directly to it (raw aiomqtt, QoS 1, no healing involved); same clock.
Each trial uses fresh nodes; medians over trials.

Mesh (virtual time, engines + MeshCores, airtime from relay.airtime): node A holds H decisions;
B received the first H - M and missed the last M while out of range. B's radio comes back, B
summarises, A answers (at most 8 per round, follow-ups after 300 s). Airtime of what healing put on
the air (summaries + answers) against the airtime of sending those M once, and against re-sending
all H (what healing without summaries would cost). B's receipts for what it gets are the same with
or without healing and are listed apart.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import json
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.mqtt_throughput import submit_all
from relay import api
from relay.engine.core import Engine, EngineConfig, LinkInfo
from relay.engine.ops import Action, Persist, SendSummary, Transmit
from relay.envelope import Audience, Decision, Envelope, Precedence, open_envelope, seal
from relay.keys import raw_public
from relay.mesh.core import MeshCore
from relay.mesh.events import Done, OutFrame, Received, frame_airtime
from relay.mesh.frames import FrameType, encode_message, frame_type
from relay.sim.broker import Mosquitto
from relay.sim.cluster import Cluster, IssuerSpec, NodeSpec
from relay.trust import (
    DEFAULT_KINDS,
    Accepted,
    Role,
    Roster,
    RosterEntry,
    Scope,
    TrustState,
    roster_decision,
)

# ----------------------------------------------------------------------------- MQTT


async def inbox_count(sock: Path) -> int:
    st = await api.request(sock, {"op": "status"})
    return int(st["engine"]["counters"].get("delivered", 0))


async def wait_link_up(sock: Path, limit_s: float = 30.0) -> float:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            st = await api.request(sock, {"op": "status"}, wait_s=2.0)
            if any(lk["kind"] == "mqtt" and lk["state"] == "up" for lk in st["links"]):
                return time.monotonic()
        except api.ApiError:
            pass
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{sock}: MQTT link not up in {limit_s} s")


async def wait_inbox(sock: Path, n: int, limit_s: float = 120.0) -> float:
    deadline = time.monotonic() + limit_s
    # Polling the node's API is the only view into another process; 10 ms is below the noise.
    while await inbox_count(sock) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sock}: {n} decisions not delivered in {limit_s} s")
        await asyncio.sleep(0.01)
    return time.monotonic()


def heal_trial(c: Cluster, name: str, n: int) -> tuple[float, float]:
    """(seconds from process start, seconds from link up) to all n decisions in the inbox."""
    t0 = time.monotonic()
    c.start(name)
    sock = c.socket_path(name)
    up = asyncio.run(wait_link_up(sock))
    done = asyncio.run(wait_inbox(sock, n))
    c.stop(name)  # healed nodes would answer the next ones too: one answering node per trial
    return done - t0, done - up


async def publish_direct(port: int, raws: list[bytes]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-direct") as pub:
        await asyncio.gather(*(pub.publish("crisis/direct/msg", r, qos=1) for r in raws))


def baseline_trial(c: Cluster, name: str, port: int, raws: list[bytes]) -> float:
    """Seconds from the first publish to all decisions in a fresh, connected node's inbox."""
    c.start(name)
    sock = c.socket_path(name)
    asyncio.run(wait_link_up(sock))
    time.sleep(2.0)  # let its own healing round (nothing to heal yet) pass
    t0 = time.monotonic()
    asyncio.run(publish_direct(port, raws))
    took = asyncio.run(wait_inbox(sock, len(raws))) - t0
    c.stop(name)
    return took


def mqtt_bench(n: int, trials: int) -> dict[str, Any]:
    """Each trial on a fresh broker and fresh nodes: the peer holds the n decisions and their
    receipts only (an earlier design reused one peer for every trial; by the 18th it carried
    17,000 receipts of the healed nodes, which is a different measurement: see docs/failover.md)."""
    heal: list[tuple[float, float]] = []
    direct: list[float] = []
    pushed = 0
    for trial in range(trials):
        with tempfile.TemporaryDirectory(prefix="relay-heal-") as tmp, Mosquitto() as broker:
            url = (broker.url,)
            names = ("src", "peer", "late", "direct")
            c = Cluster(Path(tmp))
            c.create([NodeSpec(nm, (), url) for nm in names], [IssuerSpec("national", ("all",))])
            try:
                for name in ("src", "peer"):
                    c.start(name)
                for name in ("src", "peer"):
                    c.wait_ready(name)
                raws = [c.sign("national", f"Besluit {i}: heal bench {trial}") for i in range(n)]
                asyncio.run(submit_all(c.socket_path("src"), raws))
                asyncio.run(wait_inbox(c.socket_path("peer"), n))
                # The receipts settle, and the decisions are older than mqtt_fresh_s (5 s):
                # missed ones, not ones still being carried.
                time.sleep(6.0)
                c.stop("src")
                heal.append(heal_trial(c, "late", n))
                direct.append(baseline_trial(c, "direct", broker.port, raws))
                pushed += c.status("peer")["engine"]["counters"].get("sync_pushed", 0)
            finally:
                c.stop_all()
    return {
        "decisions": n,
        "trials": trials,
        "heal_from_link_up_s": statistics.median(h[1] for h in heal),
        "heal_from_process_start_s": statistics.median(h[0] for h in heal),
        "direct_publish_s": statistics.median(direct),
        "all_trials": {"heal": heal, "direct": direct},
        "peer_pushed": pushed,  # summed over the trials
    }


# ----------------------------------------------------------------------------- mesh

MESH = "mesh"
T0 = 1_800_000_000.0


def _world(names: list[str]) -> tuple[TrustState, dict[str, Ed25519PrivateKey]]:
    root = Ed25519PrivateKey.generate()
    keys = {n: Ed25519PrivateKey.generate() for n in [*names, "national"]}
    entries = [
        RosterEntry(
            raw_public(keys[n].public_key()),
            n,
            Role.NODE if n != "national" else Role.ISSUER,
            Scope.parse(["region:VR07"] if n != "national" else ["all"]),
            DEFAULT_KINDS[Role.NODE if n != "national" else Role.ISSUER],
        )
        for n in keys
    ]
    roster = Roster(serial=1, entries=tuple(entries))
    trust = TrustState(root_public=raw_public(root.public_key()))
    env = open_envelope(seal(roster_decision(roster, int(T0)), root))
    assert isinstance(env, Envelope)
    verdict = trust.check(env, T0)
    assert isinstance(verdict, Accepted)
    trust.apply(verdict)
    return trust, keys


@dataclass
class Radio:
    """One engine and its MeshCore; frames it put on air, by kind."""

    engine: Engine
    core: MeshCore
    tickets: dict[int, bytes] = field(default_factory=dict)
    airtime: dict[str, list[float]] = field(default_factory=dict)
    counting: bool = False


class Ether:
    """Two radios in virtual time on a lossless channel; ``cut`` stops B hearing anything (A's
    frames are still ACKed, as a neighbour relaying them would)."""

    def __init__(self, seed: int) -> None:
        trust_a, keys = _world(["a", "b"])
        trust_b, _ = _world(["a", "b"])
        trust_b.root_public, trust_b.roster = trust_a.root_public, trust_a.roster
        self.keys = keys
        never = 1e7  # origin retries out of the picture: what B gets, healing carried
        cfg = {"retry_base_s": never, "retry_max_s": never, "flash_retry_base_s": never}
        self.radios = {
            n: Radio(
                Engine(
                    EngineConfig(node=n, regions=frozenset({"VR07"}), seed=seed, **cfg),  # type: ignore[arg-type]
                    t,
                    keys[n],
                    [LinkInfo(MESH, "mesh")],
                ),
                MeshCore(),
            )
            for n, t in (("a", trust_a), ("b", trust_b))
        }
        self.now = T0
        self.cut = False
        self.events: list[tuple[float, int, str, OutFrame]] = []
        self._seq = itertools.count()
        for r in self.radios.values():
            self.run(r, r.engine.link_state(MESH, "up", self.now))

    def run(self, r: Radio, actions: list[Action]) -> None:
        pending = list(actions)
        while pending:
            a = pending.pop(0)
            if isinstance(a, Persist):
                pending += r.engine.persisted(a.token, self.now)
            elif isinstance(a, Transmit):
                r.tickets[r.core.submit(a, self.now)] = a.id
            elif isinstance(a, SendSummary):
                r.tickets[r.core.submit(Transmit(a.link, "sync", b"", a.raw, 3), self.now)] = b""

    def step(self) -> None:
        for name, r in self.radios.items():
            if r.engine.next_deadline() <= self.now:
                self.run(r, r.engine.timer(self.now))
            r.core.handle_timer(self.now)
            while (out := r.core.poll_transmit(self.now)) is not None:
                r.core.frame_sent(out.ref, self.now)
                if r.counting:
                    kind = frame_type(out.payload).name
                    r.airtime.setdefault(kind, []).append(out.airtime_s)
                heapq.heappush(self.events, (self.now + out.airtime_s, next(self._seq), name, out))
            for ev in r.core.events():
                match ev:
                    case Received(raw=raw, channel=channel):
                        self.run(r, r.engine.received(MESH, raw, self.now, channel=channel))
                    case Done(ticket=ticket, ok=ok):
                        self.run(r, r.engine.transmitted(MESH, r.tickets.pop(ticket), ok, self.now))
        while self.events and self.events[0][0] <= self.now:
            _, _, sender, out = heapq.heappop(self.events)
            self.radios[sender].core.frame_routed(out.ref, 0, implicit=True, now=self.now)
            for name, r in self.radios.items():
                if name != sender and not (self.cut and name == "b"):
                    r.core.frame_received(out.payload, 0x100 + ord(sender), self.now)

    def run_until(self, until: float, stop: Any = None) -> None:
        while self.now < until and not (stop and stop()):
            self.step()
            times = [until, *(t for t, *_ in self.events[:1])]
            for r in self.radios.values():
                times.append(r.engine.next_deadline())
                timer = r.core.get_timer()
                if timer is not None:
                    times.append(timer)
            self.now = max(min(times), self.now + 1e-3)
            self.step()

    def submit(self, raw: bytes) -> None:
        a = self.radios["a"]
        self.run(a, a.engine.submit(raw, self.now, ticket=1))


def mesh_trial(held: int, missed: int, seed: int) -> dict[str, Any]:
    ether = Ether(seed)
    a, b = ether.radios["a"], ether.radios["b"]
    raws = []
    for i in range(held):
        d = Decision(
            issued_at=int(T0),
            expires_at=int(T0) + 24 * 3600,
            precedence=Precedence.ROUTINE,
            audience=Audience.all(),
            seq=i + 1,
            text=f"Besluit {i}: opvang in sporthal De Wijk, ingang {i}.",
        )
        raws.append(seal(d, ether.keys["national"]))
    ether.run_until(T0 + 5)
    for i, raw in enumerate(raws):  # one every 40 s: within the duty cycle, with A's receipts
        if i == held - missed:
            ether.run_until(ether.now + 600)  # B heard the first ones
            ether.cut = True
        ether.submit(raw)
        ether.run_until(ether.now + 40)
    ether.run_until(ether.now + 600)
    a.counting = b.counting = True

    def delivered() -> int:
        return b.engine.counters["delivered"]

    assert delivered() == held - missed, delivered()
    ether.cut = False
    ether.run(b, b.engine.link_state(MESH, "down", ether.now))
    ether.run(b, b.engine.link_state(MESH, "up", ether.now))
    back = ether.now
    ether.run_until(back + 6 * 3600, stop=lambda: delivered() == held)
    took = ether.now - back
    assert delivered() == held, delivered()
    ether.run_until(ether.now + 60)  # the last receipts
    single = FrameType.SINGLE.name
    frag = FrameType.FRAGMENT.name
    summary = FrameType.SUMMARY.name
    bundle = FrameType.RECEIPT_BUNDLE.name

    def total(r: Radio, *kinds: str) -> float:
        return sum(sum(r.airtime.get(k, [])) for k in kinds)

    def frames(r: Radio, *kinds: str) -> int:
        return sum(len(r.airtime.get(k, [])) for k in kinds)

    def once(raw: bytes) -> float:  # the frames of one message, each sent once
        return sum(frame_airtime(len(f), a.core.preset) for f in encode_message(raw))

    return {
        "once_s": sum(once(r) for r in raws[held - missed :]),
        "all_held_s": sum(once(r) for r in raws),
        "summaries": frames(a, summary) + frames(b, summary),
        "summaries_s": total(a, summary) + total(b, summary),
        "answers": frames(a, single, frag),
        "answers_s": total(a, single, frag),
        "receipts_s": total(b, bundle),
        "heal_virtual_s": took,
        "heal_s": total(a, summary, single, frag) + total(b, summary),
    }


def mesh_bench(held: int, missed: int, trials: int) -> dict[str, Any]:
    runs = [mesh_trial(held, missed, seed) for seed in range(trials)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return {"held": held, "missed": missed, "trials": trials, **med, "all_trials": runs}


# ----------------------------------------------------------------------------- main


def print_report(mqtt: dict[str, Any] | None, mesh: dict[str, Any]) -> None:
    """Print the healing tables (also used by bench/failover.py)."""
    if mqtt is not None:
        print(f"MQTT healing: {mqtt['decisions']} decisions missed, {mqtt['trials']} trials "
              "(medians, wall clock)")  # fmt: skip
        print(f"{'':48} {'seconds':>9}")
        print(f"{'healed, from the link up (goal <= 10 s)':48} {mqtt['heal_from_link_up_s']:>9.2f}")
        print(f"{'healed, from the process start':48} {mqtt['heal_from_process_start_s']:>9.2f}")
        print(
            f"{'baseline: published directly to a fresh node':48} {mqtt['direct_publish_s']:>9.2f}"
        )
        print()
    m = mesh
    print(f"Mesh healing (LONG_FAST, virtual time): A holds {m['held']}, B missed {m['missed']}; "
          f"{m['trials']} trials (medians)")  # fmt: skip
    print(f"{'':48} {'frames':>7} {'airtime s':>10}")
    print(f"{'baseline: the missed ones sent once':48} {'':>7} {m['once_s']:>10.1f}")
    print(f"{'re-sending all held (no summaries)':48} {'':>7} {m['all_held_s']:>10.1f}")
    print(
        f"{'healing: summaries (both nodes)':48} {m['summaries']:>7.0f} {m['summaries_s']:>10.1f}"
    )
    print(f"{'healing: answers (the missed ones)':48} {m['answers']:>7.0f} {m['answers_s']:>10.1f}")
    print(f"{'healing total':48} {'':>7} {m['heal_s']:>10.1f}")
    print(f"{'(receipts of B: delivery, not healing)':48} {'':>7} {m['receipts_s']:>10.1f}")
    print(f"healing / sending once: {m['heal_s'] / m['once_s']:.2f}; "
          f"B complete {m['heal_virtual_s']:.0f} s after its radio came back")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--decisions", type=int, default=1000)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--mesh-held", type=int, default=100)
    ap.add_argument("--mesh-missed", type=int, default=20)
    ap.add_argument("--skip-mqtt", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    mesh = mesh_bench(args.mesh_held, args.mesh_missed, args.trials)
    mqtt = None if args.skip_mqtt else mqtt_bench(args.decisions, args.trials)
    if args.json:
        print(json.dumps({"mqtt": mqtt, "mesh": mesh}, indent=2))
        return 0
    print_report(mqtt, mesh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
