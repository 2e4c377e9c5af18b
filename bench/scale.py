"""Cost growth at national scale: 25 regions, N nodes, a day of traffic; pure engines, virtual time.

    python bench/scale.py [--nodes 100 500 2000] [--decisions 200] [--json] [--quick]

No processes: every node is a ``relay.engine.core.Engine`` on virtual time, driven like the
daemon drives it (persist at once, then ``persisted``; ``timer`` at ``next_deadline``), with
verification, signing and healing all real. Around the engines (docs/scale.md):

* MQTT: one regional broker per region, each bridged to the national broker (both directions,
  the whole ``crisis/#`` tree: mosquitto's bridge; the two national brokers of the deployment
  act as one here, a bridge uses one of them at a time). Every node subscribes to every node's
  ``msg``/``rcpt``/``sync`` topics (docs/mqtt.md), so a publication reaches all connected nodes:
  counted per node reached, and per bridge crossing. A bridge that is down queues up to 1,000
  messages each way (mosquitto's ``max_queued_messages``, bridge ``cleansession false``) and
  drops the rest, counted.
* Status heartbeats (every 5 s, signed, retained, one per node to every node): counted, not
  simulated message by message (that is N² per 5 s). Their effect on the engines is: a node
  hears every node it can reach, at most 10 s ago (the engine counts a peer cut off after 15 s).
* Healing summaries: delivered to everybody (counted), processed by the node asked (``to``) or,
  for a summary to anyone, by every node. The others note the sender and the running round (as
  the engine does first) without decoding it, so the pulls it could trigger are not simulated.
* Mesh: per region one gateway (MQTT + radio) and one radio-only post, a lossless regional
  channel at LONG_FAST (no collisions); each radio runs the real ``MeshCore`` (fragments,
  receipt bundles, the airtime ledger) and airtime is ``relay.airtime`` per frame.
* Ed25519 verification results are shared between the simulated nodes (a cache in front of
  ``relay.cose.verify_parsed``): each node still runs every check; only the same signature over
  the same bytes is not recomputed 2,000 times. Signing is not cached.

The day: ``--decisions`` decisions of mixed precedence and audience at random times (seeded),
from a national centre and regional centres; region VR07 loses its bridge for ``--cut-hours``
(its nodes still reach each other through their own broker). Figures per decision, per node,
and how each grows with N: the exponent of a least-squares fit on log-log.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import heapq
import itertools
import json
import math
import random
import statistics
import sys
import time
import tracemalloc
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from relay import cose
from relay.engine.config import EngineConfig
from relay.engine.core import Engine
from relay.engine.model import LinkInfo
from relay.engine.ops import Action, Deliver, Persist, Rejected, SendSummary, Transmit
from relay.engine.status import seal_status
from relay.envelope import Audience, Decision, Envelope, Kind, Precedence, open_envelope, seal
from relay.keys import raw_public
from relay.mesh.core import MeshCore
from relay.mesh.events import Done, OutFrame, Received
from relay.mesh.frames import frame_type
from relay.trust import DEFAULT_KINDS, Role, Roster, RosterEntry, Scope, TrustState
from relay.vocab import LinkKind

T0 = 1_800_000_000.0
REGIONS = tuple(f"VR{i:02d}" for i in range(1, 26))
CUT_REGION = "VR07"
STATUS_INTERVAL_S = 5.0  # relay.daemon.STATUS_INTERVAL_S
HEARD_REFRESH_S = 10.0  # how stale a reachable peer may look to an engine (< peer_timeout_s)
BRIDGE_QUEUE = 1000  # mosquitto max_queued_messages for the bridge's session
LOCAL_S, BRIDGED_S, PUBACK_S = 0.01, 0.03, 0.005  # broker latencies (virtual)
MQTT, MESH = LinkKind.MQTT, LinkKind.MESH
PREC_MIX = ((Precedence.FLASH, 0.1), (Precedence.IMMEDIATE, 0.2),
            (Precedence.PRIORITY, 0.3), (Precedence.ROUTINE, 0.4))  # fmt: skip


# ----------------------------------------------------------------------------- the world


@dataclass
class NodeSim:
    name: str
    region: str
    role: str  # "gateway" (MQTT + radio), "post" (radio only), "mqtt"
    engine: Engine
    radio: MeshCore | None = None
    radio_id: int = 0
    tickets: dict[int, bytes] = field(default_factory=dict)
    armed: float = math.inf  # the engine timer event in the heap
    radio_armed: float = math.inf
    refreshed: float = -math.inf
    has_mqtt: bool = True


def node_names(n_per_region: int) -> list[tuple[str, str, str]]:
    """(name, region, role): per region a gateway, a radio-only post, then MQTT-only nodes."""
    out = []
    for vr in REGIONS:
        for j in range(n_per_region):
            role = "gateway" if j == 0 else "post" if j == 1 else "mqtt"
            out.append((f"{vr.lower()}-n{j:03d}", vr, role))
    return out


def centre(vr: str, n_per_region: int) -> str:
    """The node where a region's crisis centre submits (the first MQTT-only node)."""
    return f"{vr.lower()}-n{2 if n_per_region > 2 else 0:03d}"


class VerifyCache:
    """The same signature over the same bytes with the same key verifies the same way: compute
    it once for all simulated nodes (a failure is not cached and is raised again)."""

    def __init__(self) -> None:
        self.ok: set[bytes] = set()
        self.real = cose.verify_parsed
        self.hits = 0

    def __call__(self, msg: cose.Sign1, key: Ed25519PublicKey, external_aad: bytes = b"") -> None:
        tag = hashlib.blake2b(
            key.public_bytes_raw() + msg.signature + msg.to_be_signed(external_aad), digest_size=16
        ).digest()
        if tag in self.ok:
            self.hits += 1
            return
        self.real(msg, key, external_aad)
        self.ok.add(tag)


# ----------------------------------------------------------------------------- the simulation


@dataclass
class Metrics:
    publishes: Counter[str] = field(default_factory=Counter)  # by class (see classify)
    publish_bytes: Counter[str] = field(default_factory=Counter)
    deliveries: Counter[str] = field(default_factory=Counter)  # node deliveries by channel
    delivered_bytes: Counter[str] = field(default_factory=Counter)
    bridge_transfers: int = 0
    bridge_dropped: int = 0
    airtime: dict[str, dict[str, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    airtime_hour: dict[tuple[str, int], float] = field(default_factory=lambda: defaultdict(float))
    rejected: Counter[str] = field(default_factory=Counter)
    per_node_in: Counter[str] = field(default_factory=Counter)  # deliveries per node (window)
    window: tuple[float, float] | None = None


class Sim:
    def __init__(self, n_per_region: int, seed: int) -> None:
        self.n = n_per_region
        self.rng = random.Random(seed)
        self.now = T0
        self.metrics = Metrics()
        self._seq = itertools.count()
        self.heap: list[tuple[float, int, Callable[[], None]]] = []
        names = node_names(n_per_region)
        root = Ed25519PrivateKey.generate()
        self.keys = {name: Ed25519PrivateKey.generate() for name, _, _ in names}
        issuers = {"national": "all", **{f"{vr.lower()}-issuer": f"region:{vr}" for vr in REGIONS}}
        for name in issuers:
            self.keys[name] = Ed25519PrivateKey.generate()
        entries = [
            RosterEntry(raw_public(self.keys[nm].public_key()), nm, Role.NODE,
                        Scope.parse([f"region:{vr}"]), DEFAULT_KINDS[Role.NODE])
            for nm, vr, _ in names
        ] + [
            RosterEntry(raw_public(self.keys[nm].public_key()), nm, Role.ISSUER,
                        Scope.parse([sc]), DEFAULT_KINDS[Role.ISSUER])
            for nm, sc in issuers.items()
        ]  # fmt: skip
        self.roster = Roster(serial=1, entries=tuple(entries))
        self.kid_name = {e.kid: e.name for e in entries}
        root_public = raw_public(root.public_key())
        self.nodes: dict[str, NodeSim] = {}
        self.by_region: dict[str, list[NodeSim]] = defaultdict(list)
        self.radios_by_id: dict[int, NodeSim] = {}
        n_total = len(names)
        for i, (name, vr, role) in enumerate(names):
            links = {
                "gateway": [LinkInfo(MQTT, MQTT), LinkInfo(MESH, MESH)],
                "post": [LinkInfo(MESH, MESH)],
                "mqtt": [LinkInfo(MQTT, MQTT)],
            }[role]
            cfg = EngineConfig(
                node=name,
                regions=frozenset({vr}),
                seed=seed * 100_003 + i,
                max_peers=max(1024, 2 * n_total),  # the default 1,024 is below 2,000 nodes
            )
            trust = TrustState(root_public=root_public, roster=self.roster)
            ns = NodeSim(name, vr, role, Engine(cfg, trust, self.keys[name], links))
            ns.has_mqtt = role != "post"
            if role != "mqtt":
                ns.radio, ns.radio_id = MeshCore(), 0x1000 + i
                self.radios_by_id[ns.radio_id] = ns
            self.nodes[name] = ns
            self.by_region[vr].append(ns)
        self.mqtt_nodes = [ns for ns in self.nodes.values() if ns.has_mqtt]
        self.gateways = [ns.name for ns in self.nodes.values() if ns.role == "gateway"]
        self.gateway_set = frozenset(self.gateways)
        self.cut: set[str] = set()  # regions whose bridge is down
        self.bridge_out: dict[str, deque[Callable[[], None]]] = defaultdict(deque)
        self.bridge_in: dict[str, deque[Callable[[], None]]] = defaultdict(deque)
        self.env_cache: dict[bytes, Envelope] = {}
        self.origin_of: dict[bytes, str] = {}  # decision id -> submitting node
        self.summaries_sent: Counter[str] = Counter()  # by link kind
        self._published: dict[tuple[str, bytes], int] = {}  # (node, id) -> times published
        self.shown: Counter[tuple[str, bytes]] = Counter()  # (node, id) -> times delivered
        for ns in self.nodes.values():
            self.refresh(ns, force=True)
            for link in ns.engine.links:
                self.run(ns, ns.engine.link_state(link, "up", self.now))

    # -- the event loop

    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self.heap, (t, next(self._seq), fn))

    def run_until(self, until: float) -> None:
        while self.heap and self.heap[0][0] <= until:
            t, _, fn = heapq.heappop(self.heap)
            self.now = max(self.now, t)
            fn()
        self.now = until

    def arm(self, ns: NodeSim) -> None:
        d = max(ns.engine.next_deadline(), self.now + 1e-3)
        if d < ns.armed:
            ns.armed = d
            self.at(d, lambda: self._timer(ns, d))

    def _timer(self, ns: NodeSim, d: float) -> None:
        if ns.armed != d:
            return  # superseded
        ns.armed = math.inf
        if ns.engine.next_deadline() <= self.now:
            self.refresh(ns)
            self.run(ns, ns.engine.timer(self.now))
        self.arm(ns)

    # -- heartbeats (their effect on the engines)

    def reachable(self, ns: NodeSim) -> Iterable[NodeSim]:
        if ns.region in self.cut:
            return (m for m in self.by_region[ns.region] if m.has_mqtt)
        return (m for m in self.mqtt_nodes if m.region not in self.cut)

    def refresh(self, ns: NodeSim, *, force: bool = False) -> None:
        """The status heartbeats ``ns`` heard lately: every MQTT node it can reach, last heard
        at the last 5 s tick (what the engine's peer_heard would have recorded)."""
        if not ns.has_mqtt or (not force and self.now - ns.refreshed < HEARD_REFRESH_S):
            return
        ns.refreshed = self.now
        heard = self.now - (self.now - T0) % STATUS_INTERVAL_S
        reach = [m.name for m in self.reachable(ns)]
        e = ns.engine
        e.peers.update(dict.fromkeys(reach, heard))
        e.mqtt_peers.update(dict.fromkeys(reach, heard))
        e.gateway_peers.update(dict.fromkeys((n for n in reach if n in self.gateway_set), heard))

    # -- carrying out actions

    def run(self, ns: NodeSim, actions: list[Action]) -> None:
        pending = deque(actions)
        e = ns.engine
        while pending:
            a = pending.popleft()
            match a:
                case Persist():
                    pending.extend(e.persisted(a.token, self.now))
                case Transmit(link=link) if link == MQTT:
                    self.publish(ns, a.channel, a.raw, a.id)
                case Transmit():
                    self.radio_submit(ns, a, a.id)
                case SendSummary(link=link, raw=raw) if link == MQTT:
                    self.summaries_sent[MQTT] += 1
                    self.publish(ns, "sync", raw, b"")
                case SendSummary(link=link, raw=raw):
                    self.summaries_sent[MESH] += 1
                    self.radio_submit(ns, Transmit(link, "sync", b"", raw, 3), b"")
                case Rejected(reason=reason):
                    self.metrics.rejected[str(reason)] += 1
                case Deliver(id=msg_id):
                    self.shown[(ns.name, msg_id)] += 1
                case _:
                    pass
        self.arm(ns)

    # -- MQTT: regional brokers bridged to the national broker

    def envelope(self, raw: bytes) -> Envelope:
        env = self.env_cache.get(raw)
        if env is None:
            parsed = open_envelope(raw, max_bytes=1 << 20)
            assert isinstance(parsed, Envelope), parsed
            env = self.env_cache[raw] = parsed
        return env

    def classify(self, ns: NodeSim, channel: str, raw: bytes) -> str:
        """What a publication is: decision (first send / retry by its origin), own receipt
        (first / re-sent), summary, or forward (a healing answer or a gateway's bridged copy)."""
        if channel == "sync":
            return "summary"
        env = self.envelope(raw)
        seen = self._published.setdefault((ns.name, env.id), 0)
        self._published[(ns.name, env.id)] += 1
        if env.decision.kind == Kind.ACK and self.kid_name.get(env.kid) == ns.name:
            return "receipt" if not seen else "receipt_resent"
        if self.origin_of.get(env.id) == ns.name:
            return "decision" if not seen else "decision_retry"
        return "answer_rcpt" if env.decision.kind == Kind.ACK else "answer_msg"

    def publish(self, ns: NodeSim, channel: str, raw: bytes, msg_id: bytes) -> None:
        m = self.metrics
        cls = self.classify(ns, channel, raw)
        m.publishes[cls] += 1
        m.publish_bytes[cls] += len(raw)
        if msg_id:
            self.at(self.now + PUBACK_S, lambda: self._puback(ns, msg_id))
        to = cbor2.loads(raw)[2] if channel == "sync" else None
        region = ns.region
        self.at(self.now + LOCAL_S, lambda: self._deliver(region, ns.name, channel, raw, to))
        # Over the bridge to the national broker, and from there to every other region.
        if region in self.cut:
            self._queue(self.bridge_out[region], lambda: self._fan_out(region, ns.name, channel,
                                                                       raw, to))  # fmt: skip
        else:
            self._fan_out(region, ns.name, channel, raw, to)

    def _queue(self, q: deque[Callable[[], None]], fn: Callable[[], None]) -> None:
        if len(q) >= BRIDGE_QUEUE:
            self.metrics.bridge_dropped += 1
        else:
            q.append(fn)

    def _fan_out(self, src: str, sender: str, channel: str, raw: bytes, to: str | None) -> None:
        self.metrics.bridge_transfers += 1  # regional -> national
        for vr in REGIONS:
            if vr == src:
                continue
            if vr in self.cut:
                self._queue(self.bridge_in[vr], lambda vr=vr: self._cross(vr, sender, channel,  # type: ignore[misc]
                                                                          raw, to))  # fmt: skip
            else:
                self._cross(vr, sender, channel, raw, to)

    def _cross(self, vr: str, sender: str, channel: str, raw: bytes, to: str | None) -> None:
        self.metrics.bridge_transfers += 1  # national -> regional
        self.at(self.now + BRIDGED_S, lambda: self._deliver(vr, sender, channel, raw, to))

    def _puback(self, ns: NodeSim, msg_id: bytes) -> None:
        self.run(ns, ns.engine.transmitted(MQTT, msg_id, True, self.now))

    def _deliver(self, vr: str, sender: str, channel: str, raw: bytes, to: str | None) -> None:
        m = self.metrics
        in_window = m.window is not None and m.window[0] <= self.now <= m.window[1]
        for ns in self.by_region[vr]:
            if not ns.has_mqtt or ns.name == sender:  # No Local (MQTT v5)
                continue
            m.deliveries[channel] += 1
            m.delivered_bytes[channel] += len(raw)
            if in_window:
                m.per_node_in[ns.name] += 1
            if channel == "sync" and to not in ("", ns.name):
                # Asked someone else: the engine notes the sender and that a round runs (its
                # answers' duplicates are no retries), and answers nothing. Its decoding of the
                # summary is skipped here, and with it the pull a summary can trigger.
                ns.engine.peer_heard(MQTT, sender, self.now)
                ns.engine.sync.heard(MQTT, sender, self.now)
                continue
            self.refresh(ns)
            self.run(ns, ns.engine.received(MQTT, raw, self.now, channel=channel, peer=sender))

    # -- bridge cut and restore

    def cut_bridge(self, vr: str) -> None:
        self.cut.add(vr)

    def restore_bridge(self, vr: str) -> None:
        self.cut.discard(vr)
        out, inn = self.bridge_out.pop(vr, deque()), self.bridge_in.pop(vr, deque())
        for fn in itertools.chain(out, inn):
            fn()
        # Heartbeats from across the restored bridge: each engine hears those peers return.
        inside = [m for m in self.by_region[vr] if m.has_mqtt]
        outside = [m for m in self.mqtt_nodes if m.region != vr]
        gw = self.gateway_set
        for a, others in ((inside, outside), (outside, inside)):
            for ns in a:
                for p in others:
                    ns.engine.peer_heard(MQTT, p.name, self.now, gateway=p.name in gw)
                ns.refreshed = self.now
                self.arm(ns)

    # -- mesh: a lossless regional channel

    def radio_submit(self, ns: NodeSim, t: Transmit, msg_id: bytes) -> None:
        assert ns.radio is not None
        ns.tickets[ns.radio.submit(t, self.now)] = msg_id
        self.service(ns)

    def service(self, ns: NodeSim) -> None:
        core = ns.radio
        assert core is not None
        core.handle_timer(self.now)
        while (out := core.poll_transmit(self.now)) is not None:
            core.frame_sent(out.ref, self.now)
            kind = frame_type(out.payload).name
            self.metrics.airtime[ns.region][kind] += out.airtime_s
            hour = int((self.now - T0) // 3600)
            self.metrics.airtime_hour[(ns.name, hour)] += out.airtime_s
            self.at(self.now + out.airtime_s, lambda out=out: self._on_air(ns, out))  # type: ignore[misc]
        for ev in core.events():
            match ev:
                case Received(raw=raw, channel=channel):
                    self.refresh(ns)
                    self.run(ns, ns.engine.received(MESH, raw, self.now, channel=channel))
                case Done(ticket=ticket, ok=ok):
                    msg_id = ns.tickets.pop(ticket, b"")
                    if msg_id:
                        self.run(ns, ns.engine.transmitted(MESH, msg_id, ok, self.now))
        timer = core.get_timer()
        if timer is not None and timer < ns.radio_armed:
            ns.radio_armed = when = max(timer, self.now + 1e-3)
            self.at(when, lambda: self._radio_timer(ns, when))

    def _radio_timer(self, ns: NodeSim, when: float) -> None:
        if ns.radio_armed == when:
            ns.radio_armed = math.inf
            self.service(ns)

    def _on_air(self, sender: NodeSim, out: OutFrame) -> None:
        assert sender.radio is not None
        sender.radio.frame_routed(out.ref, 0, implicit=True, now=self.now)
        self.service(sender)
        for ns in self.by_region[sender.region]:
            if ns.radio is not None and ns is not sender:
                ns.radio.frame_received(out.payload, sender.radio_id, self.now)
                self.service(ns)

    # -- traffic

    def submit(self, node: str, raw: bytes) -> None:
        ns = self.nodes[node]
        self.origin_of[self.envelope(raw).id] = node
        self.refresh(ns)
        self.run(ns, ns.engine.submit(raw, self.now, ticket=1))


# ----------------------------------------------------------------------------- the day


@dataclass(frozen=True, slots=True)
class Planned:
    at: float
    node: str
    issuer: str
    precedence: Precedence
    audience: str


def plan_day(n_per_region: int, decisions: int, hours: float, seed: int) -> list[Planned]:
    """Decisions at random times: 15 % national, 10 % to two or three regions, 65 % to one
    region, 10 % to a few named nodes of a region; precedence FLASH 10 %, IMMEDIATE 20 %,
    PRIORITY 30 %, ROUTINE 40 %. The first is a national FLASH (the receipt-flood case)."""
    rng = random.Random(seed)
    span = hours * 3600.0
    times = sorted(rng.uniform(600.0, span - 1800.0) for _ in range(decisions))
    precs = [p for p, _ in PREC_MIX]
    weights = [w for _, w in PREC_MIX]
    out: list[Planned] = []
    for i, t in enumerate(times):
        prec = Precedence.FLASH if i == 0 else rng.choices(precs, weights)[0]
        r = 0.0 if i == 0 else rng.random()
        vr = rng.choice(REGIONS)
        if r < 0.15:
            out.append(Planned(t, centre("VR01", n_per_region), "national", prec, "all"))
        elif r < 0.25:
            regions = rng.sample(REGIONS, rng.choice((2, 3)))
            aud = ",".join(f"region:{v}" for v in regions)
            out.append(Planned(t, centre("VR01", n_per_region), "national", prec, aud))
        elif r < 0.90:
            out.append(Planned(t, centre(vr, n_per_region), f"{vr.lower()}-issuer", prec,
                               f"region:{vr}"))  # fmt: skip
        else:
            k = min(n_per_region, 3)
            members = rng.sample(range(n_per_region), k)
            aud = ",".join(f"node:{vr.lower()}-n{j:03d}" for j in members)
            out.append(Planned(t, centre(vr, n_per_region), f"{vr.lower()}-issuer", prec, aud))
    return out


def snapshot(sim: Sim) -> dict[str, float]:
    """Running totals at one moment: publications by class, deliveries by channel, and the
    engines' healing counters."""
    out: dict[str, float] = {f"pub_{k}": v for k, v in sim.metrics.publishes.items()}
    out["t"] = sim.now
    out.update({f"dlv_{k}": v for k, v in sim.metrics.deliveries.items()})
    for ns in sim.nodes.values():
        for k in ("sync_pushed", "retries", "retries_skipped_quiet"):
            out[k] = out.get(k, 0) + ns.engine.counters.get(k, 0)
    return out


def run_day(
    n_per_region: int, decisions: int, hours: float, cut_at_h: float, cut_hours: float, seed: int
) -> dict[str, Any]:
    wall = time.perf_counter()
    sim = Sim(n_per_region, seed)
    build_s = time.perf_counter() - wall
    plan = plan_day(n_per_region, decisions, hours, seed)
    seqs: Counter[str] = Counter()
    raws: list[bytes] = []
    for p in plan:
        seqs[p.issuer] += 1
        lifetime = 12 * 3600 if p.precedence == Precedence.ROUTINE else 6 * 3600
        d = Decision(
            issued_at=int(T0 + p.at),
            expires_at=int(T0 + p.at) + lifetime,
            precedence=p.precedence,
            audience=Audience.parse(p.audience),
            seq=seqs[p.issuer],
            text=f"Besluit {seqs[p.issuer]}: opvang in sporthal De Wijk, ingang noord.",
        )
        raw = seal(d, sim.keys[p.issuer])
        raws.append(raw)
        sim.at(T0 + p.at, lambda node=p.node, raw=raw: sim.submit(node, raw))  # type: ignore[misc]
    sim.metrics.window = (T0 + plan[0].at, T0 + plan[0].at + 60.0)
    cut_start, cut_end = T0 + cut_at_h * 3600, T0 + (cut_at_h + cut_hours) * 3600
    sim.at(cut_start, lambda: sim.cut_bridge(CUT_REGION))
    sim.at(cut_end, lambda: sim.restore_bridge(CUT_REGION))
    # Healing: the hour after the restore, less the hour before the cut (background); shorter
    # windows when the day is (the same length on both sides).
    window = min(3600.0, cut_at_h * 3600, (hours - cut_at_h - cut_hours) * 3600)
    if window <= 0:
        raise ValueError("the cut must start after the day's start and end before its end")
    marks: dict[str, dict[str, float]] = {}
    for name, t in (("before", cut_start - window), ("cut", cut_start), ("restore", cut_end),
                    ("after", cut_end + window)):  # fmt: skip
        sim.at(t, lambda name=name: marks.__setitem__(name, snapshot(sim)))  # type: ignore[misc]
    sim.run_until(T0 + hours * 3600)
    run_s = time.perf_counter() - wall - build_s
    missed = sum(1 for p in plan if cut_start <= T0 + p.at < cut_end)
    return summarise(sim, plan, raws, marks, missed, build_s, run_s)


def memory_per_node(sim: Sim, sample: int = 6) -> dict[str, float]:
    """Bytes an engine holds after the day (tracemalloc over deep copies of a few engines of
    each role; the roster, which every node holds once, is shown on its own)."""
    out: dict[str, float] = {}
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        roster = copy.deepcopy(sim.roster)
        out["roster_bytes"] = tracemalloc.get_traced_memory()[0] - base
        del roster
        for role in ("mqtt", "gateway"):
            group = [ns for ns in sim.nodes.values() if ns.role == role][:sample]
            sizes = []
            for ns in group:
                e = ns.engine
                memo = {id(e._key): e._key, id(sim.roster): sim.roster}
                before = tracemalloc.get_traced_memory()[0]
                clone = copy.deepcopy(e, memo)
                sizes.append(tracemalloc.get_traced_memory()[0] - before)
                del clone
            if sizes:
                out[f"engine_{role}_bytes"] = statistics.median(sizes)
    finally:
        tracemalloc.stop()
    return out


def summarise(
    sim: Sim,
    plan: list[Planned],
    raws: list[bytes],
    marks: dict[str, dict[str, float]],
    missed: int,
    build_s: float,
    run_s: float,
) -> dict[str, Any]:
    m, n_dec = sim.metrics, len(plan)
    mqtt_nodes = len(sim.mqtt_nodes)
    cut_nodes = len(sim.by_region[CUT_REGION])
    hours = (sim.now - T0) / 3600
    node_hours = mqtt_nodes * hours
    pub, dlv = m.publishes, m.deliveries
    traffic = ("decision", "decision_retry", "receipt", "receipt_resent", "answer_msg",
               "answer_rcpt")  # fmt: skip
    recipients = sum(len(sim.roster.recipients(Audience.parse(p.audience))) for p in plan)
    # Status heartbeats: every MQTT node, every 5 s, to every MQTT node it reaches.
    status_raw = seal_status(
        {"time": sim.now, "regions": [CUT_REGION], "links": {MQTT: "up", MESH: "up"},
         "gateway": True, "clock_warning": False}, sim.keys[sim.gateways[0]], sim.now)  # fmt: skip
    status_into_node_per_hour = 3600 / STATUS_INTERVAL_S * (mqtt_nodes - 1)
    airtime_region = [sum(c.values()) for c in m.airtime.values()] or [0.0]

    def healed(key: str) -> float:
        after = marks["after"].get(key, 0) - marks["restore"].get(key, 0)
        background = marks["cut"].get(key, 0) - marks["before"].get(key, 0)
        return max(after - background, 0.0) / cut_nodes

    store = [len(ns.engine._msgs) for ns in sim.nodes.values() if ns.role == "mqtt"]
    wanted = {
        (name, sim.envelope(raw).id)
        for p, raw in zip(plan, raws, strict=True)
        for name in sim.roster.recipients(Audience.parse(p.audience))
    }
    lost = len(wanted - set(sim.shown))
    twice = sum(1 for c in sim.shown.values() if c > 1)
    counters = snapshot(sim)
    return {
        "nodes": len(sim.nodes),
        "mqtt_nodes": mqtt_nodes,
        "per_region": sim.n,
        "decisions": n_dec,
        "decisions_in_cut": missed,
        "cut_hours": (marks["restore"]["t"] - marks["cut"]["t"]) / 3600,
        "hours": hours,
        "recipients_per_decision": recipients / n_dec,
        "publishes": dict(pub),
        "deliveries": dict(dlv),
        "delivered_bytes": dict(m.delivered_bytes),
        # per decision: what decisions cause (decisions, retries, receipts, answers)
        "traffic_publishes_per_decision": sum(pub[k] for k in traffic) / n_dec,
        "decision_publishes_per_decision": (pub["decision"] + pub["decision_retry"]) / n_dec,
        "receipts_per_decision": pub["receipt"] / n_dec,
        "receipts_resent_per_decision": pub["receipt_resent"] / n_dec,
        "answers_per_decision": (pub["answer_msg"] + pub["answer_rcpt"]) / n_dec,
        "traffic_deliveries_per_decision": (dlv["msg"] + dlv["rcpt"]) / n_dec,
        "traffic_deliveries_per_node_per_decision": (dlv["msg"] + dlv["rcpt"]) / n_dec / mqtt_nodes,
        "traffic_kb_per_node_per_decision": (m.delivered_bytes["msg"] + m.delivered_bytes["rcpt"])
        / n_dec
        / mqtt_nodes
        / 1000,
        "bridge_transfers_per_decision": m.bridge_transfers / n_dec,
        "bridge_dropped": m.bridge_dropped,
        "flash_max_in_per_node_60s": max(m.per_node_in.values(), default=0),
        "retries_skipped_quiet": counters.get("retries_skipped_quiet", 0),
        # background, per MQTT node and hour
        "summaries_per_node_hour": pub["summary"] / node_hours,
        "summary_deliveries_per_node_hour": dlv["sync"] / node_hours,
        "summary_kb_per_node_hour": m.delivered_bytes["sync"] / node_hours / 1000,
        "status_deliveries_per_node_hour": status_into_node_per_hour,
        "status_kb_per_node_hour": status_into_node_per_hour * len(status_raw) / 1000,
        "status_bytes": len(status_raw),
        # healing after the cut, per cut-off node
        "heal_answers_per_cut_node": healed("pub_answer_msg") + healed("pub_answer_rcpt"),
        "heal_answer_receipts_per_cut_node": healed("pub_answer_rcpt"),
        "heal_summaries_per_cut_node": healed("pub_summary"),
        "heal_deliveries_per_cut_node": healed("dlv_msg") + healed("dlv_rcpt"),
        # the mesh: per region
        "airtime_per_region_per_decision_s": statistics.median(airtime_region) / n_dec,
        "airtime_max_region_s": max(airtime_region),
        "airtime_busiest_radio_hour_s": max(m.airtime_hour.values(), default=0.0),
        "airtime_by_frame_s": {
            k: sum(c[k] for c in m.airtime.values())
            for k in sorted({k for c in m.airtime.values() for k in c})
        },
        "summaries_sent": dict(sim.summaries_sent),
        "stored_per_node": statistics.median(store) if store else 0,
        "rejected": dict(m.rejected),
        "lost": lost,
        "shown_twice": twice,
        "memory": memory_per_node(sim),
        "build_s": build_s,
        "run_s": run_s,
    }


VERIFY = VerifyCache()

# ----------------------------------------------------------------------------- report

ROWS = (
    ("recipients per decision", "recipients_per_decision"),
    ("MQTT publishes per decision (no summaries)", "traffic_publishes_per_decision"),
    ("  the decision, and the origin's retries", "decision_publishes_per_decision"),
    ("  receipts", "receipts_per_decision"),
    ("  receipts sent again (retry heard)", "receipts_resent_per_decision"),
    ("  healing answers, bridged copies", "answers_per_decision"),
    ("MQTT deliveries per decision", "traffic_deliveries_per_decision"),
    ("  into each node", "traffic_deliveries_per_node_per_decision"),
    ("  kB into each node", "traffic_kb_per_node_per_decision"),
    ("bridge crossings per decision", "bridge_transfers_per_decision"),
    ("national FLASH: most msgs into a node, 60 s", "flash_max_in_per_node_60s"),
    ("healing summaries per node-hour", "summaries_per_node_hour"),
    ("  delivered into each node per hour", "summary_deliveries_per_node_hour"),
    ("  kB into each node per hour", "summary_kb_per_node_hour"),
    ("status heartbeats into each node per hour", "status_deliveries_per_node_hour"),
    ("  kB into each node per hour", "status_kb_per_node_hour"),
    ("after the cut, per cut-off node: summaries", "heal_summaries_per_cut_node"),
    ("  answers (publishes)", "heal_answers_per_cut_node"),
    ("  of which receipts", "heal_answer_receipts_per_cut_node"),
    ("  deliveries of answers", "heal_deliveries_per_cut_node"),
    ("mesh airtime per region per decision, s", "airtime_per_region_per_decision_s"),
    ("busiest radio-hour airtime, s (of 360)", "airtime_busiest_radio_hour_s"),
    ("messages stored per MQTT node (median)", "stored_per_node"),
    ("engine memory per MQTT node, kB", "memory_kb"),
)


def flat(r: dict[str, Any]) -> dict[str, float]:
    f = {k: float(v) for k, v in r.items() if isinstance(v, int | float)}
    f["memory_kb"] = r["memory"].get("engine_mqtt_bytes", 0.0) / 1000
    return f


def exponent(ns: list[float], vs: list[float]) -> float | None:
    """Slope of log(value) over log(nodes), least squares; None when a value is 0."""
    if len(ns) < 2 or min(vs) <= 0:
        return None
    fit = statistics.linear_regression([math.log(n) for n in ns], [math.log(v) for v in vs])
    return fit.slope


def growth(results: list[dict[str, Any]]) -> dict[str, float | None]:
    fl = [flat(r) for r in results]
    ns = [f["nodes"] for f in fl]
    return {key: exponent(ns, [f[key] for f in fl]) for _, key in ROWS}


def print_table(results: list[dict[str, Any]], load: str) -> None:
    fl = [flat(r) for r in results]
    exps = growth(results)
    head = f"{'':44}" + "".join(f"{'N=' + str(int(f['nodes'])):>11}" for f in fl) + f"{'exp':>7}"
    r0 = results[0]
    print(f"Scale: pure engines on virtual time, 25 regions, {r0['hours']:.0f} h, {CUT_REGION}'s "
          f"bridge cut for {r0['cut_hours']:g} h; load average {load}")  # fmt: skip
    print(head)
    print(f"{'decisions (in the cut)':44}"
          + "".join(f"{str(r['decisions']) + ' (' + str(r['decisions_in_cut']) + ')':>11}"
                    for r in results))  # fmt: skip
    for label, key in ROWS:
        vals = "".join(f"{f[key]:>11.4g}" for f in fl)
        e = exps[key]
        print(f"{label:44}{vals}{'' if e is None else f'{e:>7.2f}'}")
    for r in results:
        drop = r["bridge_dropped"]
        print(f"N={r['nodes']}: lost {r.get('lost')}, shown twice {r.get('shown_twice')}, "
              f"bridge queue drops {drop}, rejected {r['rejected'] or 0}, "
              f"status {r['status_bytes']} B, roster "
              f"{r['memory'].get('roster_bytes', 0) / 1000:.0f} kB per node, "
              f"built {r['build_s']:.1f} s, ran {r['run_s']:.1f} s")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", type=int, nargs="+", default=[100, 500, 2000],
                    help="total node counts (multiples of 25)")  # fmt: skip
    ap.add_argument("--decisions", type=int, nargs="+", default=[200],
                    help="decisions in the day, one for all sizes or one per size")  # fmt: skip
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--cut-at", type=float, default=8.0, help="hour the cut starts")
    ap.add_argument("--cut-hours", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 75 and 100 nodes, 3 decisions, 15 min, 6 min cut")  # fmt: skip
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--merge", nargs="+", metavar="JSON", type=Path,
                    help="print one table from the --json output of runs made apart")  # fmt: skip
    args = ap.parse_args(argv)
    if args.merge:
        runs = [json.loads(p.read_text()) for p in args.merge]
        merged = sorted((r for run in runs for r in run["results"]), key=lambda r: r["nodes"])
        print_table(merged, ", ".join(run["load"] for run in runs))
        return 0
    if args.quick:
        args.nodes, args.decisions = [75, 100], [3]
        args.hours, args.cut_at, args.cut_hours = 0.25, 0.05, 0.1
    if any(n % len(REGIONS) or n < 3 * len(REGIONS) for n in args.nodes):
        ap.error("--nodes: multiples of 25, at least 75 (a gateway, a post and a centre each)")
    if len(args.decisions) not in (1, len(args.nodes)):
        ap.error("--decisions: one count, or one per --nodes size")
    counts = args.decisions * len(args.nodes) if len(args.decisions) == 1 else args.decisions
    cose.verify_parsed = VERIFY
    try:
        results = [
            run_day(n // len(REGIONS), k, args.hours, args.cut_at, args.cut_hours, args.seed)
            for n, k in zip(args.nodes, counts, strict=True)
        ]
    finally:
        cose.verify_parsed = VERIFY.real
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    if args.json:
        print(json.dumps({"load": load, "results": results, "exponents": growth(results)},
                         indent=2))  # fmt: skip
    else:
        print_table(results, load)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
