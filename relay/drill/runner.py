"""Run a drill scenario: real mosquitto brokers, emulated radios, real node processes, on loopback.

Shape::

    brokers (Mosquitto)  ◀── fault proxy per node and broker ◀── node process (relay run)
    radios (relay sim mesh, one process, control port)  ◀────── node process

The runner starts everything, waits until every node has a link up, then plays the timeline:
injections are signed as exercise by the scenario's issuers and submitted through a node's API;
faults go to the proxies (cut, blackhole, restore), the brokers (stop, start), the radio emulator
(unplug, replug, loss) and the node processes (SIGKILL, restart, wrong clock). While it waits it
polls the nodes for progress. After the timeline it waits (at most ``settle``) for outstanding
deliveries, stops the nodes, reads their audit logs from their stores, evaluates the
expectations and writes the report.

The runner's own events (phase, inject, fault, restore, airtime) use the runner's wall clock;
node events use each node's clock, which the runner knows is off by the skew it gave the node
(``RunResult.skews``), so latencies can be corrected.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relay import api
from relay.drill import expect
from relay.drill import steps as st
from relay.drill.events import RUNNER, Event, chains, collect_stores, sort_events
from relay.drill.progress import Progress
from relay.drill.report import Verdict, write_report
from relay.drill.scenario import BrokerDef, NodeDef, Scenario
from relay.drill.steps import Step
from relay.envelope import Precedence
from relay.keys import load_public
from relay.kit.mosquitto import Bridge, make_bridge
from relay.rosterfile import load_trust
from relay.sim.broker import BrokerError, Mosquitto
from relay.sim.cluster import Cluster, EmulatorError, EmulatorProcess, IssuerSpec, NodeSpec
from relay.sim.faultthread import ThreadedFaultProxy
from relay.sim.net import LOOPBACK, free_port

READY_TIMEOUT_S = 60.0
POLL_S = 1.0
MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to ~107 bytes


class DrillError(RuntimeError):
    """The drill could not be run (a part did not start); not an expectation failure."""


@dataclass(frozen=True, slots=True)
class Injection:
    id: str
    at: float  # runner wall clock, when the submission was handed to the node
    issuer: str
    via: str
    to: str
    precedence: Precedence
    nodes: tuple[str, ...]  # expected to show it


@dataclass
class RunResult:
    scenario: Scenario
    events: list[Event]
    injections: list[Injection]
    verdicts: list[Verdict]
    skews: dict[str, list[tuple[float, float]]]  # node -> [(from wall time, skew s)]
    report: tuple[Path, Path] | None
    workdir: Path
    failed_injections: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)


# ---------------------------------------------------------------------------------- the radios


def emulator_spec(scenario: Scenario) -> str:
    """The ``relay sim mesh`` spec for the scenario's radios (one per node with a radio)."""
    m = scenario.mesh
    lines = [
        "[mesh]",
        f'preset = "{m.preset}"',
        f"seed = {m.seed}",
        f"all_hear_all = {'true' if m.all_hear_all else 'false'}",
        f"loss = {m.loss!r}",
        f'control = "{LOOPBACK}:{free_port()}"',
        "",
    ]
    for node in scenario.nodes:
        if node.radio:
            lines += ["[[radio]]", f'name = "{node.name}"', f"tcp_port = {free_port()}", ""]
    for link in m.links:
        lines += ["[[link]]", f'a = "{link.a}"', f'b = "{link.b}"', f"loss = {link.loss!r}",
                  f"symmetric = {'true' if link.symmetric else 'false'}", ""]  # fmt: skip
    return "\n".join(lines)


class Runner:
    def __init__(self, scenario: Scenario, workdir: Path, progress: Progress) -> None:
        self.sc = scenario
        self.dir = workdir
        self.progress = progress
        self.events: list[Event] = []
        self.injections: list[Injection] = []
        self.failed: list[str] = []
        self.skews: dict[str, list[tuple[float, float]]] = {}
        self.chains: dict[str, dict[str, Any]] = {}  # per node: its audit chain verified?
        self.brokers: dict[str, Mosquitto] = {}
        self.proxies: dict[tuple[str, str], ThreadedFaultProxy] = {}  # (node, broker)
        self.bridge_proxies: dict[tuple[str, str], ThreadedFaultProxy] = {}  # (broker, target)
        self.by_broker = {b.name: list(b.bridge) for b in scenario.brokers}
        self.mesh: EmulatorProcess | None = None
        self.cluster = Cluster(workdir / "c")
        self.phase = "setup"
        self.t0 = time.monotonic()
        self.delivered: set[tuple[str, str]] = set()  # (msg id, node) seen in inboxes
        self.links: dict[str, dict[str, str] | None] = {}
        self.signed: set[str] = set()  # injections whose receipts are all back at the origin

    # -------------------------------------------------------------------------- helpers

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def record(self, event: str, *, msg: str | None = None, link: str | None = None,
               peer: str | None = None, detail: str | None = None) -> None:  # fmt: skip
        self.events.append(Event(time.time(), RUNNER, event, msg, link, peer, detail))

    def say(self, text: str) -> None:
        self.progress.line(self.elapsed(), text)

    def set_phase(self, name: str) -> None:
        self.phase = name
        self.record("phase", detail=name)
        self.say(f"phase: {name}")

    # -------------------------------------------------------------------------- set-up

    def _emulator(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.mesh is not None
        try:
            return self.mesh.control(cmd)
        except EmulatorError as exc:
            raise DrillError(str(exc)) from None

    def setup(self, stack: ExitStack) -> None:
        sc = self.sc
        self.dir.mkdir(parents=True, exist_ok=True)
        longest = self.cluster.socket_path("x" * max(len(n.name) for n in sc.nodes))
        if len(str(longest)) > MAX_SOCKET_PATH:
            raise DrillError(f"work directory {self.dir} is too deep for Unix sockets "
                             "(choose a shorter --workdir)")  # fmt: skip
        self.set_phase("setup")
        self._start_brokers(stack)
        for n in sc.nodes:
            for b in n.mqtt:
                proxy = ThreadedFaultProxy(upstream_port=self.brokers[b].port)
                stack.callback(proxy.stop)
                proxy.start()
                self.proxies[(n.name, b)] = proxy
        if any(n.radio for n in sc.nodes):
            self.mesh = EmulatorProcess(self.dir, emulator_spec(sc))
            stack.callback(self.mesh.stop)
            try:
                self.mesh.start()
            except EmulatorError as exc:
                raise DrillError(str(exc)) from None
        specs = [
            NodeSpec(
                n.name,
                n.regions,
                mqtt=tuple(f"mqtt://{LOOPBACK}:{self.proxies[(n.name, b)].port}" for b in n.mqtt),
                radios=(f"{LOOPBACK}:{self.mesh.ports[n.name]}",) if n.radio and self.mesh else (),
                clock_skew_s=n.clock_skew_s,
                radio_options={"preset": sc.mesh.preset},  # as the emulator's radios run
            )
            for n in sc.nodes
        ]
        issuers = [IssuerSpec(i.name, i.scope, i.role) for i in sc.issuers]
        self.cluster.create(specs, issuers)
        self._write_drill_windows()
        stack.callback(self.cluster.stop_all)
        now = time.time()
        for n in sc.nodes:
            self.skews[n.name] = [(now, n.clock_skew_s)]
            self.cluster.start(n.name)
        for n in sc.nodes:
            try:
                self.cluster.wait_ready(n.name, timeout=READY_TIMEOUT_S)
            except (TimeoutError, RuntimeError) as exc:
                raise DrillError(f"node {n.name} did not come up: {exc}") from exc
        self.say(f"{len(sc.nodes)} nodes, {len(sc.brokers)} broker(s), "
                 f"{len(self.mesh.ports) if self.mesh else 0} radio(s) up")  # fmt: skip

    def _start_brokers(self, stack: ExitStack) -> None:
        """One mosquitto per ``[[broker]]``; a broker with ``bridge = [...]`` bridges to those
        brokers in failover order, each path through a fault proxy of its own, with the bridge
        the broker kit writes (relay.kit.mosquitto.make_bridge)."""
        sc = self.sc
        ports = {b.name: free_port() for b in sc.brokers}
        for bdef in sc.brokers:
            for target in bdef.bridge:
                proxy = ThreadedFaultProxy(upstream_port=ports[target])
                stack.callback(proxy.stop)
                proxy.start()
                self.bridge_proxies[(bdef.name, target)] = proxy
        takes_bridges = {t for b in sc.brokers for t in b.bridge}
        for bdef in _targets_first(sc.brokers):
            bdir = self.dir / "brokers" / bdef.name
            bdir.mkdir(parents=True, exist_ok=True)
            bridges: tuple[Bridge, ...] = ()
            if bdef.bridge:
                own = [n.name for n in sc.nodes if bdef.name in n.mqtt]
                addresses = [(LOOPBACK, self.bridge_proxies[(bdef.name, t)].port)
                             for t in bdef.bridge]  # fmt: skip
                bridges = (make_bridge(f"bridge-{bdef.name}", addresses, nodes=own,
                                       relay_all=bdef.name in takes_bridges),)  # fmt: skip
            broker = Mosquitto(port=ports[bdef.name], persistence=bdef.persistence, workdir=bdir,
                               bridges=bridges)  # fmt: skip
            stack.callback(broker.close)
            for b in bridges:
                self._prime_bridge(broker, b, bdef.bridge)
            broker.start()
            self.brokers[bdef.name] = broker

    def _prime_bridge(self, broker: Mosquitto, bridge: Bridge, targets: tuple[str, ...]) -> None:
        """Give the bridge its persistent session on every later address before the drill.

        mosquitto's bridge subscribes when it connects, so on its first failover to a national
        it has never been connected to, what reaches that national before the SUBSCRIBE is not
        for it (seen: a FLASH published during the failover waited 11 s for its origin's
        retry). Connected once, the session stays (cleansession false) and the national queues
        for it from then on (docs/broker.md, "Topology").
        """
        real = broker.bridges
        for address, target in zip(bridge.addresses[1:], targets[1:], strict=True):
            broker.bridges = (dataclasses.replace(bridge, addresses=(address,)),)
            broker.start()
            try:
                last_in = next(t for t in reversed(bridge.topics) if " in " in t or " both " in t)
                topic, _, qos = last_in.split()
                self.brokers[target].wait_for_log(f"{bridge.name} {qos} {topic}", timeout=20)
            finally:
                broker.stop()
        broker.bridges = real

    def _write_drill_windows(self) -> None:
        """Every node accepts exercise traffic only for the drill's own span (docs/config.md)."""
        skews = [abs(n.clock_skew_s) for n in self.sc.nodes]
        skews += [abs(s.skew) for s in self.sc.timeline if isinstance(s, st.Clock)]
        margin = max(skews, default=0.0) + 600.0
        start = time.time() - margin
        end = time.time() + self.sc.end_s() + self.sc.settle_s + READY_TIMEOUT_S * 3 + margin
        window = ", ".join(f'"{datetime.fromtimestamp(t, UTC).isoformat()}"' for t in (start, end))
        for n in self.sc.nodes:
            path = self.cluster.config_path(n.name)
            path.write_text(path.read_text() + f"\n[drill]\nwindow = [{window}]\n")

    # -------------------------------------------------------------------------- the timeline

    def play(self) -> None:
        self.t0 = time.monotonic()
        self.set_phase("running")
        for step in self.sc.timeline:
            self.wait_until(step.at)
            try:
                self.apply(step)
            except (BrokerError, OSError, RuntimeError, TimeoutError, ValueError) as exc:
                where = f"line {step.line}: " if step.line else ""
                raise DrillError(f"{where}{step.describe()}: {exc}") from exc
        self.wait_until(self.sc.end_s())
        self.set_phase("settle")
        deadline = time.monotonic() + self.sc.settle_s
        while time.monotonic() < deadline and not (self.all_delivered() and self.all_signed()):
            self.poll()
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        self.poll()

    def wait_until(self, at: float) -> None:
        while True:
            left = at - self.elapsed()
            if left <= 0:
                return
            self.poll()
            time.sleep(min(POLL_S, max(0.0, at - self.elapsed())))

    def all_delivered(self) -> bool:
        want = {(i.id, n) for i in self.injections for n in i.nodes}
        return want <= self.delivered

    def all_signed(self) -> bool:
        """When receipts are expected: every recipient's receipt is back at each origin."""
        if not any(e.kind == "receipts" for e in self.sc.expectations):
            return True
        for inj in self.injections:
            if inj.id in self.signed:
                continue
            try:
                answer = api.call(self.cluster.socket_path(inj.via),
                                  {"op": "message", "id": inj.id}, timeout=2)  # fmt: skip
            except (api.ApiError, OSError, ValueError):
                return False
            rows = answer.get("message", {}).get("delivery", []) if answer.get("ok") else []
            signed = {r["node"] for r in rows if r.get("signed")}
            if not set(inj.nodes) - {inj.via} <= signed:
                return False
            self.signed.add(inj.id)
        return True

    def poll(self) -> None:
        """Ask each running node for its links and inbox; update the progress line."""
        for n in self.sc.nodes:
            proc = self.cluster.procs.get(n.name)
            if proc is None or proc.poll() is not None:
                self.links[n.name] = None
                continue
            try:
                status = api.call(self.cluster.socket_path(n.name), {"op": "status"}, timeout=2)
                inbox = api.call(self.cluster.socket_path(n.name), {"op": "inbox",
                                 "limit": 100_000}, timeout=2)  # fmt: skip
            except (api.ApiError, OSError, ValueError):
                self.links[n.name] = None
                continue
            self.links[n.name] = {lk["name"]: lk["state"] for lk in status.get("links", [])}
            self.delivered.update((m["id"], n.name) for m in inbox.get("messages", []))
        total = sum(len(i.nodes) for i in self.injections)
        got = sum(1 for i in self.injections for n in i.nodes if (i.id, n) in self.delivered)
        self.progress.status(self.elapsed(), self.phase, got, total, self.links)

    def apply(self, step: Step) -> None:
        match step:
            case st.Phase(name=name):
                self.set_phase(name)
                return
            case st.Inject():
                self.inject(step)
                return
            case st.BrokerPath(bridge=str(bridge)):
                targets = [step.broker] if step.broker is not None else self.by_broker[bridge]
                for target in targets:
                    getattr(self.bridge_proxies[(bridge, target)], step.action)()
            case st.BrokerPath():
                for node, broker in self._paths(step):
                    proxy = self.proxies[(node, broker)]
                    getattr(proxy, step.action)()
            case st.StopBroker(broker=broker):
                self.brokers[broker].stop()
            case st.StartBroker(broker=broker):
                self.brokers[broker].start()
            case st.Unplug(node=node) | st.Replug(node=node):
                self._emulator({"cmd": step.action, "radio": node})
            case st.Kill(node=node):
                self.cluster.kill(node)
            case st.Restart(node=node):
                proc = self.cluster.procs.get(node)
                if proc is not None and proc.poll() is None:
                    self.cluster.stop(node)  # a running node restarts gracefully
                self._start(node)
            case st.Clock(node=node, skew=skew):
                spec = self.cluster.specs[node]
                self.cluster.specs[node] = dataclasses.replace(spec, clock_skew_s=skew)
                if node in self.cluster.procs:
                    self.cluster.stop(node)
                self.skews[node].append((time.time(), float(skew)))
                self._start(node)
            case st.SetLoss(a=a, b=b, loss=loss):
                self._emulator({"cmd": "set_loss", "a": a, "b": b, "loss": loss})
            case _:
                raise AssertionError(f"no runner for action {step.action!r}")
        self._fault(step)

    def _fault(self, step: Step) -> None:
        text = step.describe()
        self.record("restore" if step.restores else "fault", detail=text, peer=step.peer)
        self.say(("restore: " if step.restores else "fault: ") + text)

    def _paths(self, step: st.BrokerPath) -> list[tuple[str, str]]:
        nodes = [step.node] if step.node is not None else self.sc.nodes_in(step.region or "")
        return [(n, b) for n in nodes for b in self.sc.by_name[n].mqtt
                if step.broker is None or step.broker == b]  # fmt: skip

    def _start(self, node: str) -> None:
        self.cluster.start(node)
        with contextlib.suppress(TimeoutError, RuntimeError):
            self.cluster.wait_ready(node, timeout=10, link_up=False)  # API up; links follow

    def inject(self, a: st.Inject) -> None:
        precedence = a.precedence
        raw = self.cluster.sign(a.issuer, a.text, to=a.to, precedence=precedence,
                                exercise=True)  # fmt: skip
        handed_over = time.time()  # latencies count from here, the issuer's moment of sending
        try:
            answer = api.call(self.cluster.socket_path(a.via),
                              {"op": "submit", "raw": base64.b64encode(raw).decode()},
                              timeout=10)  # fmt: skip
        except (api.ApiError, OSError) as exc:
            answer = {"ok": False, "error": str(exc)}
        if not answer.get("ok"):
            what = f"{a.issuer} at {a.via}: {answer.get('error')}"
            self.failed.append(what)
            self.record("fault", peer=a.issuer, detail=f"injection failed: {what}")
            self.say(f"injection FAILED: {what}")
            return
        msg_id = str(answer["id"])
        nodes = tuple(self.sc.audience_of(a.to))
        inj = Injection(msg_id, handed_over, a.issuer, a.via, a.to, precedence, nodes)
        self.injections.append(inj)
        detail = {"precedence": precedence.name, "audience": a.to.split(","),
                  "nodes": list(nodes), "exercise": True, "via": a.via}  # fmt: skip
        self.events.append(Event(handed_over, RUNNER, "inject", msg_id, None, a.issuer,
                                 json.dumps(detail)))  # fmt: skip
        self.say(f"inject {msg_id[:12]}: {a.issuer} {precedence.name} to {a.to} "
                 f"at {a.via} ({len(nodes)} in the audience)")  # fmt: skip

    # -------------------------------------------------------------------------- the end

    def finish(self) -> list[Event]:
        """Stop the nodes, record airtime, and read every node's audit log from its store."""
        self.set_phase("collect")
        self.cluster.stop_all()
        if self.mesh is not None:
            for radio in self.mesh.ports:
                stats = self._emulator({"cmd": "stats", "radio": radio})
                detail = {"airtime_s": stats.get("airtime_total_s"),
                          "budget_s": stats.get("duty_cycle_budget_s")}  # fmt: skip
                self.record("airtime", link=radio, detail=json.dumps(detail))
        stores = {n.name: self.cluster.node_dir(n.name) / "relay.db" for n in self.sc.nodes}
        roster = load_trust(self.cluster.roster_path, load_public(self.cluster.keys / "root.pub"))
        self.chains = chains(stores, roster.roster)
        return sort_events([*collect_stores(stores, audiences=False), *self.events])


def _targets_first(brokers: tuple[BrokerDef, ...]) -> list[BrokerDef]:
    """Brokers ordered so that each starts after the brokers it bridges to (they form a tree:
    relay.drill.scenario refuses loops), so a bridge finds its first address up."""
    by_name = {b.name: b for b in brokers}
    order: list[BrokerDef] = []

    def add(b: BrokerDef) -> None:
        if b in order:
            return
        for target in b.bridge:
            add(by_name[target])
        order.append(b)

    for b in brokers:
        add(b)
    return order


def run(
    scenario: Scenario,
    *,
    report_dir: Path | None = None,
    workdir: Path | None = None,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.time,
) -> RunResult:
    """Run the scenario; raise ``DrillError`` when a part cannot be started."""
    work = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="relay-drill-"))
    work.mkdir(parents=True, exist_ok=True)
    started = clock()
    with ExitStack() as stack:
        if progress is None:
            progress = Progress(stack.enter_context(Path(os.devnull).open("w")))
        runner = Runner(scenario, work, progress)
        try:
            runner.setup(stack)
        except (BrokerError, OSError, RuntimeError) as exc:
            if isinstance(exc, DrillError):
                raise
            raise DrillError(f"setting up failed: {exc}") from exc
        runner.play()
        events = runner.finish()
    verdicts = expect.evaluate(scenario, events, runner.skews, failed=runner.failed)
    meta = _meta(scenario, runner, started, clock(), work)
    out = report_dir if report_dir is not None else work / "report"
    out.mkdir(parents=True, exist_ok=True)
    report = write_report(out, title=scenario.title, events=events, verdicts=verdicts, meta=meta,
                          chains=runner.chains)  # fmt: skip
    return RunResult(scenario, events, runner.injections, verdicts, runner.skews, report, work,
                     runner.failed)  # fmt: skip


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _meta(
    sc: Scenario, runner: Runner, started: float, finished: float, work: Path
) -> dict[str, str]:
    """What the report shows about the drill itself: one readable line per item."""

    def node(n: NodeDef) -> str:
        links = [f"mqtt {', '.join(n.mqtt)}"] if n.mqtt else []
        links += ["radio"] if n.radio else []
        return f"{n.name} ({', '.join(n.regions) or 'no region'}; {' + '.join(links)})"

    skews = {name: segs[-1][1] for name, segs in runner.skews.items() if any(s for _, s in segs)}
    meta = {
        "scenario": sc.source,
        "description": " ".join(sc.description.split()),
        "started": _iso(started),
        "finished": _iso(finished),
        "nodes": " · ".join(node(n) for n in sc.nodes),
        "brokers": ", ".join(
            b.name + (f" (bridged to {' / '.join(b.bridge)})" if b.bridge else "")
            for b in sc.brokers
        )
        or "none",
        "mesh": f"{sum(n.radio for n in sc.nodes)} radios, {sc.mesh.preset}, seed {sc.mesh.seed}",
        "timeline": " · ".join(f"t+{s.at:g} s {s.describe()}" for s in sc.timeline),
        "expectations": " · ".join(e.describe() for e in sc.expectations),
        "exercise": "every decision signed as an exercise (OEFENING)",
        "work directory": str(work),
    }
    if skews:
        meta["clock skew at the end"] = ", ".join(f"{n} {s:+g} s" for n, s in skews.items())
    if not meta["description"]:
        del meta["description"]
    return meta
