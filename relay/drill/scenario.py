"""Drill scenarios: TOML naming nodes, brokers, the mesh, issuers, a timeline and expectations.

``load(path)`` / ``parse(text, source)`` validate everything up front, so a drill never fails half
way through because of a typo. Every error names the line and the problem, e.g.::

    demo.toml:42: timeline[3].do: unknown action 'explode' (one of: blackhole, clock, ...)

The checks and the line numbers are ``relay.tomlcheck``'s, shared with relay.toml; the
timeline's actions are ``relay.drill.steps``. The format is documented in docs/drills.md;
built-in scenarios live in ``relay/drill/scenarios/`` and are found by name (``builtin("demo")``).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from relay import airtime, tomlcheck
from relay.drill import steps as st
from relay.drill.steps import Inject, Step
from relay.envelope import Audience, Precedence
from relay.sim.spec import LinkSpec  # the emulator's own link description
from relay.trust import Role, Scope

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,40}$")
REGION = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

ACTIONS = tuple(st.ACTIONS)
EXPECTATIONS = ("delivered", "no_loss", "no_duplicates", "audience", "receipts")
ROLES = {"issuer": Role.ISSUER, "coordinator": Role.COORDINATOR}
MAX_INJECT_COUNT = 1000


class ScenarioError(ValueError):
    """The scenario is invalid; the message names the file, the line and the problem."""


@dataclass(frozen=True, slots=True)
class BrokerDef:
    name: str
    persistence: bool = True
    # Brokers this one bridges to, in failover order (mosquitto's own bridge; docs/broker.md).
    bridge: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeDef:
    name: str
    regions: tuple[str, ...] = ()
    mqtt: tuple[str, ...] = ()  # broker names, in preference order
    radio: bool = False  # one emulated radio, named after the node
    clock_skew_s: float = 0.0


@dataclass(frozen=True, slots=True)
class IssuerDef:
    name: str
    role: Role = Role.ISSUER
    scope: tuple[str, ...] = ("all",)


@dataclass(frozen=True, slots=True)
class MeshDef:
    preset: str = "LONG_FAST"
    all_hear_all: bool = False
    loss: float = 0.0  # of the all_hear_all links
    seed: int = 0
    links: tuple[LinkSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class Expectation:
    kind: str
    within_s: float | None = None
    precedence: Precedence | None = None
    line: int | None = None

    def describe(self) -> str:
        which = (
            "every decision"
            if self.precedence is None
            else f"every {self.precedence.name} decision"
        )
        match self.kind:
            case "delivered":
                return f"{which} at every node in its audience within {self.within_s:g} s"
            case "no_loss":
                return f"{which} reaches every node in its audience by the end"
            case "no_duplicates":
                return "no decision shown twice at any node"
            case "audience":
                return "no decision shown at a node outside its audience"
            case "receipts":
                within = "" if self.within_s is None else f" within {self.within_s:g} s"
                return f"{which} signed for by every node in its audience{within}"
        return self.kind


@dataclass(frozen=True, slots=True)
class Scenario:
    title: str
    source: str
    nodes: tuple[NodeDef, ...]
    brokers: tuple[BrokerDef, ...]
    issuers: tuple[IssuerDef, ...]
    mesh: MeshDef
    timeline: tuple[Step, ...]
    expectations: tuple[Expectation, ...]
    description: str = ""
    duration_s: float = 0.0  # the timeline runs at least this long
    settle_s: float = 30.0  # then wait at most this long for outstanding deliveries
    by_name: dict[str, NodeDef] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {n.name: n for n in self.nodes})

    def regions(self) -> set[str]:
        return {r for n in self.nodes for r in n.regions}

    def audience_of(self, to: str) -> list[str]:
        """Node names that should show a decision addressed to ``to``."""
        aud = Audience.parse(to)
        return [n.name for n in self.nodes if aud.includes(n.name, frozenset(n.regions))]

    def nodes_in(self, region: str) -> list[str]:
        return [n.name for n in self.nodes if region in n.regions]

    def end_s(self) -> float:
        return max([self.duration_s, *(s.at for s in self.timeline)])


# ---------------------------------------------------------------------------------- parsing


KeyPath = tomlcheck.KeyPath


class _Parser:
    """The scenario's own rules on top of ``relay.tomlcheck``'s checks; every problem is a
    ``TomlProblem`` that ``parse`` turns into a ScenarioError with the file and line."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.where = tomlcheck.Lines(text)

    def fail(self, path: KeyPath, problem: str) -> tomlcheck.TomlProblem:
        return tomlcheck.TomlProblem(path, problem)

    def table(self, doc: dict[str, Any], path: KeyPath, known: set[str]) -> None:
        tomlcheck.known(doc, path, known)

    def array(self, doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
        return tomlcheck.tables(doc, (), key)

    def str_(self, t: dict[str, Any], path: KeyPath, key: str, default: str | None = None,
             *, pattern: re.Pattern[str] | None = None) -> str:  # fmt: skip
        what = "a valid name (lower case, digits, - and _)"
        return tomlcheck.string(t, path, key, default, pattern=pattern, what=what)

    def num(self, t: dict[str, Any], path: KeyPath, key: str, default: float | None,
            *, lo: float, hi: float) -> float:  # fmt: skip
        return tomlcheck.number(t, path, key, default, lo=lo, hi=hi)

    def bool_(self, t: dict[str, Any], path: KeyPath, key: str, default: bool) -> bool:
        return tomlcheck.boolean(t, path, key, default)

    def strs(self, t: dict[str, Any], path: KeyPath, key: str) -> tuple[str, ...]:
        return tomlcheck.strings(t, path, key)

    # -------------------------------------------------------------------------- sections

    def scenario(self, doc: dict[str, Any]) -> Scenario:
        self.table(doc, (), {"drill", "broker", "node", "issuer", "mesh", "timeline", "expect"})
        drill = doc.get("drill", {})
        if not isinstance(drill, dict):
            raise self.fail(("drill",), "must be a table")
        self.table(drill, ("drill",), {"title", "description", "duration", "settle"})
        title = self.str_(drill, ("drill",), "title", self.source)
        description = drill.get("description", "")
        if not isinstance(description, str):
            raise self.fail(("drill", "description"), "must be a string")
        duration = self.num(drill, ("drill",), "duration", 0.0, lo=0, hi=24 * 3600)
        settle = self.num(drill, ("drill",), "settle", 30.0, lo=0, hi=3600)

        brokers = self.brokers(doc)
        nodes = self.nodes(doc, {b.name for b in brokers})
        issuers = self.issuers(doc, {n.name for n in nodes})
        mesh = self.mesh(doc, {n.name for n in nodes if n.radio})
        scenario = Scenario(
            title=title,
            source=self.source,
            nodes=nodes,
            brokers=brokers,
            issuers=issuers,
            mesh=mesh,
            timeline=(),
            expectations=self.expectations(doc),
            description=description,
            duration_s=duration,
            settle_s=settle,
        )
        timeline = self.timeline(doc, scenario)
        return Scenario(**{**_fields(scenario), "timeline": timeline})

    def brokers(self, doc: dict[str, Any]) -> tuple[BrokerDef, ...]:
        out: list[BrokerDef] = []
        raw = self.array(doc, "broker")
        names = {b.get("name") for b in raw}
        for i, b in enumerate(raw):
            path = ("broker", i)
            self.table(b, path, {"name", "persistence", "bridge"})
            name = self.str_(b, path, "name", pattern=NAME)
            if any(o.name == name for o in out):
                raise self.fail((*path, "name"), f"broker {name!r} is defined twice")
            bridge = self.strs(b, path, "bridge")
            for target in bridge:
                if target == name:
                    raise self.fail((*path, "bridge"), f"broker {name!r} cannot bridge to itself")
                if target not in names:
                    known = ", ".join(sorted(str(n) for n in names if n != name)) or "none"
                    raise self.fail((*path, "bridge"), f"no [[broker]] named {target!r} ({known})")
            out.append(BrokerDef(name, self.bool_(b, path, "persistence", True), bridge))
        self.no_bridge_loop(out)
        return tuple(out)

    def no_bridge_loop(self, brokers: list[BrokerDef]) -> None:
        """Bridges must form a tree: on a loop of bridges a message goes round for ever
        (mosquitto only keeps it off the one bridge it came in on)."""
        edges = {b.name: b.bridge for b in brokers}
        done: set[str] = set()

        def visit(name: str, trail: tuple[str, ...]) -> None:
            if name in trail:
                loop = " -> ".join((*trail[trail.index(name) :], name))
                i = next(k for k, b in enumerate(brokers) if b.name == trail[-1])
                raise self.fail(("broker", i, "bridge"), f"bridges form a loop: {loop}")
            if name in done:
                return
            for target in edges[name]:
                visit(target, (*trail, name))
            done.add(name)

        for b in brokers:
            visit(b.name, ())

    def nodes(self, doc: dict[str, Any], brokers: set[str]) -> tuple[NodeDef, ...]:
        out: list[NodeDef] = []
        for i, n in enumerate(self.array(doc, "node")):
            path = ("node", i)
            self.table(n, path, {"name", "regions", "mqtt", "radio", "clock_skew"})
            name = self.str_(n, path, "name", pattern=NAME)
            if any(o.name == name for o in out):
                raise self.fail((*path, "name"), f"node {name!r} is defined twice")
            regions = self.strs(n, path, "regions")
            for r in regions:
                if not REGION.match(r):
                    raise self.fail((*path, "regions"), f"{r!r} is not a region code, e.g. VR07")
            mqtt = self.strs(n, path, "mqtt")
            for b in mqtt:
                if b not in brokers:
                    known = ", ".join(sorted(brokers)) or "none defined"
                    raise self.fail((*path, "mqtt"), f"no [[broker]] named {b!r} ({known})")
            radio = self.bool_(n, path, "radio", False)
            if not mqtt and not radio:
                raise self.fail(
                    (*path, "name"), f"node {name!r} has no link: give mqtt and/or radio"
                )
            skew = self.num(n, path, "clock_skew", 0.0, lo=-30 * 86400, hi=30 * 86400)
            out.append(NodeDef(name, regions, mqtt, radio, skew))
        if not out:
            raise self.fail(("node",), "a drill needs at least one [[node]]")
        return tuple(out)

    def issuers(self, doc: dict[str, Any], nodes: set[str]) -> tuple[IssuerDef, ...]:
        out: list[IssuerDef] = []
        for i, s in enumerate(self.array(doc, "issuer")):
            path = ("issuer", i)
            self.table(s, path, {"name", "role", "scope"})
            name = self.str_(s, path, "name", pattern=NAME)
            if name in nodes or any(o.name == name for o in out):
                raise self.fail((*path, "name"), f"{name!r} is already a node or issuer name")
            role_name = self.str_(s, path, "role", "issuer")
            if role_name not in ROLES:
                raise self.fail((*path, "role"), f"{role_name!r}: one of {', '.join(ROLES)}")
            scope = self.strs(s, path, "scope") if "scope" in s else ("all",)
            try:
                Scope.parse(scope)
            except ValueError as exc:
                raise self.fail((*path, "scope"), str(exc)) from None
            out.append(IssuerDef(name, ROLES[role_name], scope))
        if not out:
            raise self.fail(("issuer",), "a drill needs at least one [[issuer]] to sign decisions")
        return tuple(out)

    def mesh(self, doc: dict[str, Any], radios: set[str]) -> MeshDef:
        m = doc.get("mesh", {})
        if not isinstance(m, dict):
            raise self.fail(("mesh",), "must be a table")
        self.table(m, ("mesh",), {"preset", "all_hear_all", "loss", "seed", "link"})
        preset = self.str_(m, ("mesh",), "preset", "LONG_FAST").upper()
        if preset not in airtime.PRESETS:
            raise self.fail(("mesh", "preset"), f"unknown preset {preset!r} "
                            f"({', '.join(sorted(airtime.PRESETS))})")  # fmt: skip
        seed = m.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise self.fail(("mesh", "seed"), f"must be an integer, got {seed!r}")
        links: list[LinkSpec] = []
        raw_links = m.get("link", [])
        if not isinstance(raw_links, list) or not all(isinstance(x, dict) for x in raw_links):
            raise self.fail(("mesh", "link"), "must be an array of tables ([[mesh.link]])")
        for i, link in enumerate(raw_links):
            path = ("mesh", "link", i)
            self.table(link, path, {"a", "b", "loss", "symmetric"})
            ends = (self.str_(link, path, "a"), self.str_(link, path, "b"))
            for key, end in zip(("a", "b"), ends, strict=True):
                if end not in radios:
                    raise self.fail((*path, key), f"{end!r} is not a node with radio = true")
            if ends[0] == ends[1]:
                raise self.fail((*path, "b"), "a link needs two different radios")
            links.append(LinkSpec(*ends, self.num(link, path, "loss", 0.0, lo=0, hi=1),
                                 self.bool_(link, path, "symmetric", True)))  # fmt: skip
        return MeshDef(
            preset=preset,
            all_hear_all=self.bool_(m, ("mesh",), "all_hear_all", False),
            loss=self.num(m, ("mesh",), "loss", 0.0, lo=0, hi=1),
            seed=seed,
            links=tuple(links),
        )

    def expectations(self, doc: dict[str, Any]) -> tuple[Expectation, ...]:
        out: list[Expectation] = []
        for i, e in enumerate(self.array(doc, "expect")):
            path = ("expect", i)
            self.table(e, path, {"kind", "within", "precedence"})
            kind = self.str_(e, path, "kind")
            if kind not in EXPECTATIONS:
                raise self.fail((*path, "kind"), f"unknown expectation {kind!r} "
                                f"(one of: {', '.join(EXPECTATIONS)})")  # fmt: skip
            within = None
            if kind == "delivered" or (kind == "receipts" and "within" in e):
                within = self.num(e, path, "within", None, lo=0.1, hi=24 * 3600)
            elif "within" in e:
                raise self.fail((*path, "within"), f"{kind!r} takes no 'within'")
            precedence = None
            if "precedence" in e:
                if kind not in ("delivered", "no_loss", "receipts"):
                    raise self.fail((*path, "precedence"), f"{kind!r} takes no 'precedence'")
                precedence = self.precedence(e, path)
            out.append(Expectation(kind, within, precedence, self.where.find(path)))
        return tuple(out)

    def precedence(self, t: dict[str, Any], path: KeyPath) -> Precedence:
        name = self.str_(t, path, "precedence", "PRIORITY").upper()
        if name not in Precedence.__members__:
            raise self.fail((*path, "precedence"), f"{name!r}: one of FLASH, IMMEDIATE, "
                            "PRIORITY, ROUTINE")  # fmt: skip
        return Precedence[name]

    # -------------------------------------------------------------------------- timeline

    def timeline(self, doc: dict[str, Any], sc: Scenario) -> tuple[Step, ...]:
        steps: list[Step] = []
        issuers = {i.name: i for i in sc.issuers}
        for i, t in enumerate(self.array(doc, "timeline")):
            path = ("timeline", i)
            at = self.num(t, path, "at", None, lo=0, hi=24 * 3600)
            do = self.str_(t, path, "do")
            if do not in st.ACTIONS:
                raise self.fail((*path, "do"), f"unknown action {do!r} "
                                f"(one of: {', '.join(sorted(st.ACTIONS))})")  # fmt: skip
            line = self.where.find(path)
            if do == "inject":
                steps += self.injects(t, path, at, line, sc, issuers)
            else:
                steps.append(self.step(st.ACTIONS[do], t, path, at, line, sc))
        steps.sort(key=lambda s: s.at)  # stable: equal times keep the file's order
        if not any(isinstance(s, Inject) for s in steps):
            raise self.fail(("timeline",), 'the timeline injects no decision (do = "inject")')
        return tuple(steps)

    def injects(self, t: dict[str, Any], path: KeyPath, at: float, line: int | None,
                sc: Scenario, issuers: dict[str, IssuerDef]) -> list[Inject]:  # fmt: skip
        """One ``do = "inject"`` entry: ``count`` decisions ``every`` seconds apart."""
        self.table(t, path, {"at", "do", "issuer", "via", "to", "precedence", "text", "count",
                             "every"})  # fmt: skip
        issuer = self.str_(t, path, "issuer")
        if issuer not in issuers:
            raise self.fail((*path, "issuer"), f"no [[issuer]] named {issuer!r}")
        via = self.node(t, path, "via", set(sc.by_name))
        to = self.str_(t, path, "to", "all")
        try:
            audience = Audience.parse(to)
        except ValueError as exc:
            raise self.fail((*path, "to"), str(exc)) from None
        regions = {n.name: frozenset(n.regions) for n in sc.nodes}
        if not Scope.parse(issuers[issuer].scope).covers(audience, regions):
            raise self.fail((*path, "to"), f"{to!r} is outside the scope of {issuer} "
                            f"({', '.join(issuers[issuer].scope)})")  # fmt: skip
        if not sc.audience_of(to):
            raise self.fail((*path, "to"), f"no node of the drill is in {to!r}")
        precedence = self.precedence(t, path)
        text = self.str_(t, path, "text", f"Oefenbesluit van {issuer}")
        count = self.num(t, path, "count", 1, lo=1, hi=MAX_INJECT_COUNT)
        if count != int(count):
            raise self.fail((*path, "count"), f"must be a whole number, got {count!r}")
        every = self.num(t, path, "every", 1.0, lo=0, hi=3600)
        n = int(count)
        return [
            Inject(at=at + k * every, line=line, issuer=issuer, via=via, to=str(audience),
                   precedence=precedence, text=f"{text} ({k + 1}/{n})" if n > 1 else text)
            for k in range(n)
        ]  # fmt: skip

    def step(self, cls: type[Step], t: dict[str, Any], path: KeyPath, at: float,
             line: int | None, sc: Scenario) -> Step:  # fmt: skip
        """Validate the keys of one (non-inject) action and build its step."""
        base = {"at", "do"}
        node_names = set(sc.by_name)
        do = cls.action
        if cls is st.Phase:
            self.table(t, path, base | {"name"})
            return st.Phase(at=at, line=line, name=self.str_(t, path, "name"))
        if issubclass(cls, st.BrokerPath):
            self.table(t, path, base | {"node", "region", "bridge", "broker"})
            if sum(k in t for k in ("node", "region", "bridge")) != 1:
                one_of = "give exactly one of node, region or bridge"
                raise self.fail((*path, "do"), f"{do}: {one_of}")
            if "bridge" in t:
                bridge, target = self.bridge_fault(t, path, sc)
                return cls(at=at, line=line, bridge=bridge, broker=target)
            node = region = broker = None
            if "node" in t:
                node = self.node(t, path, "node", node_names)
                targets = [node]
            else:
                region = self.str_(t, path, "region")
                if region not in sc.regions():
                    raise self.fail((*path, "region"), f"no node serves region {region!r}")
                targets = sc.nodes_in(region)
            if not any(sc.by_name[n].mqtt for n in targets):
                raise self.fail((*path, "do"), f"{do}: {', '.join(targets)} use no broker")
            if "broker" in t:
                broker = self.str_(t, path, "broker")
                if not any(broker in sc.by_name[n].mqtt for n in targets):
                    raise self.fail((*path, "broker"), f"{', '.join(targets)} do not use "
                                    f"broker {broker!r}")  # fmt: skip
            return cls(at=at, line=line, node=node, region=region, broker=broker)
        if issubclass(cls, st.BrokerStep):
            self.table(t, path, base | {"broker"})
            broker = self.str_(t, path, "broker")
            if broker not in {b.name for b in sc.brokers}:
                raise self.fail((*path, "broker"), f"no [[broker]] named {broker!r}")
            return cls(at=at, line=line, broker=broker)
        if cls is st.Clock:
            self.table(t, path, base | {"node", "skew"})
            node = self.node(t, path, "node", node_names)
            skew = self.num(t, path, "skew", None, lo=-30 * 86400, hi=30 * 86400)
            return st.Clock(at=at, line=line, node=node, skew=skew)
        if issubclass(cls, st.NodeStep):
            self.table(t, path, base | {"node"})
            node = self.node(t, path, "node", node_names)
            if cls in (st.Unplug, st.Replug) and not sc.by_name[node].radio:
                raise self.fail((*path, "node"), f"{node} has no radio (radio = true)")
            return cls(at=at, line=line, node=node)
        if cls is st.SetLoss:
            self.table(t, path, base | {"a", "b", "loss"})
            radios = {n.name for n in sc.nodes if n.radio}
            a = self.node(t, path, "a", radios)
            b = self.node(t, path, "b", radios)
            loss = self.num(t, path, "loss", None, lo=0, hi=1)
            return st.SetLoss(at=at, line=line, a=a, b=b, loss=loss)
        raise AssertionError(f"no parser for action {do!r}")

    def bridge_fault(self, t: dict[str, Any], path: KeyPath, sc: Scenario
                     ) -> tuple[str, str | None]:  # fmt: skip
        """``bridge = "vr07"``: the paths of broker vr07's bridge (optionally to one ``broker``)."""
        name = self.str_(t, path, "bridge")
        brokers = {b.name: b for b in sc.brokers}
        if name not in brokers:
            raise self.fail((*path, "bridge"), f"no [[broker]] named {name!r}")
        if not brokers[name].bridge:
            raise self.fail((*path, "bridge"), f"broker {name!r} has no bridge (bridge = [...])")
        target = None
        if "broker" in t:
            target = self.str_(t, path, "broker")
            if target not in brokers[name].bridge:
                raise self.fail((*path, "broker"), f"broker {name!r} does not bridge to "
                                f"{target!r} ({', '.join(brokers[name].bridge)})")  # fmt: skip
        return name, target

    def node(self, t: dict[str, Any], path: KeyPath, key: str, names: set[str]) -> str:
        name = self.str_(t, path, key)
        if name not in names:
            raise self.fail((*path, key), f"no such node {name!r} here "
                            f"({', '.join(sorted(names)) or 'none'})")  # fmt: skip
        return name


def _fields(sc: Scenario) -> dict[str, Any]:
    return {f: getattr(sc, f) for f in Scenario.__dataclass_fields__ if f != "by_name"}


# ---------------------------------------------------------------------------------- entry points


def parse(text: str, source: str = "scenario") -> Scenario:
    """Validate a scenario given as TOML text; ``source`` names it in error messages."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(tomlcheck.syntax_error(exc, source)) from None
    try:
        return _Parser(text, source).scenario(doc)
    except tomlcheck.TomlProblem as problem:
        raise ScenarioError(tomlcheck.locate(text, source, problem)) from None


def load(path: Path) -> Scenario:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not UTF-8 text") from None
    return parse(text, path.name)


def builtin_names() -> list[str]:
    folder = resources.files("relay.drill").joinpath("scenarios")
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir()
                  if p.name.endswith(".toml"))  # fmt: skip


def builtin_text(name: str) -> str:
    if name not in builtin_names():
        raise ScenarioError(
            f"no scenario file {name!r} and no built-in scenario of that name "
            f"(built in: {', '.join(builtin_names())})"
        )
    return resources.files("relay.drill").joinpath("scenarios", f"{name}.toml").read_text("utf-8")


def resolve(arg: str) -> Scenario:
    """A scenario file path, or the name of a built-in scenario (e.g. ``demo``)."""
    path = Path(arg)
    if path.exists() or path.suffix == ".toml" or "/" in arg:
        return load(path)
    return parse(builtin_text(arg), f"{arg}.toml (built in)")
