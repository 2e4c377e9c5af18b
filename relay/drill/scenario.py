"""Drill scenarios: TOML naming nodes, brokers, the mesh, issuers, a timeline and expectations.

``load(path)`` / ``parse(text, source)`` validate everything up front, so a drill never fails half
way through because of a typo. Every error names the line and the problem, e.g.::

    demo.toml:42: timeline[3].do: unknown action 'explode' (one of: blackhole, clock, ...)

tomllib reports line numbers only for syntax errors, so ``_Lines`` finds the line of each key in
the text itself. The format is documented in docs/drills.md; built-in scenarios live in
``relay/drill/scenarios/`` and are found by name (``builtin("demo")``).
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from relay import airtime
from relay.envelope import Audience, Precedence
from relay.sim.spec import LinkSpec  # the emulator's own link description
from relay.trust import Role, Scope

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,40}$")
REGION = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

FAULTS = ("blackhole", "cut", "restore")  # a node's or a region's broker paths
ACTIONS = (
    "phase",
    "inject",
    *FAULTS,
    "stop_broker",
    "start_broker",
    "unplug",
    "replug",
    "kill",
    "restart",
    "clock",
    "set_loss",
)
EXPECTATIONS = ("delivered", "no_loss", "no_duplicates", "audience", "receipts")
ROLES = {"issuer": Role.ISSUER, "coordinator": Role.COORDINATOR}
MAX_INJECT_COUNT = 1000


class ScenarioError(ValueError):
    """The scenario is invalid; the message names the file, the line and the problem."""


@dataclass(frozen=True, slots=True)
class BrokerDef:
    name: str
    persistence: bool = True


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
class Step:
    """One timeline entry. ``args`` holds the action's own keys, already validated."""

    at: float
    do: str
    args: dict[str, Any]
    line: int | None = None

    def describe(self) -> str:
        a = self.args
        match self.do:
            case "phase":
                return f"phase {a['name']}"
            case "inject":
                return f"{a['issuer']} signs {a['precedence']} to {a['to']} at {a['via']}"
            case "blackhole" | "cut" | "restore":
                where = f"node {a['node']}" if "node" in a else f"region {a['region']}"
                broker = f" to broker {a['broker']}" if "broker" in a else ""
                return f"{self.do} broker path of {where}{broker}"
            case "stop_broker" | "start_broker":
                return f"{self.do.replace('_', ' ')} {a['broker']}"
            case "unplug" | "replug":
                return f"{self.do} the radio of {a['node']}"
            case "kill":
                return f"kill -9 {a['node']}"
            case "restart":
                return f"restart {a['node']}"
            case "clock":
                return f"restart {a['node']} with its clock off by {a['skew']:+g} s"
            case "set_loss":
                return f"set loss {a['a']}-{a['b']} to {a['loss']:g}"
        return self.do


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


# ---------------------------------------------------------------------------------- lines


class _Lines:
    """Line numbers of keys and table headers, found in the TOML text.

    Paths look like ``("node", 2, "name")`` for the third ``[[node]]``'s ``name``, or
    ``("mesh", "preset")``. Good enough for the layouts people write: one key per line, table
    headers on their own lines (inline tables and multi-line arrays count as their key's line).
    """

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"]+)\s*=")

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[Any, ...], int] = {}
        counts: dict[str, int] = {}
        current: tuple[Any, ...] = ()
        depth = 0  # open brackets of a multi-line value
        quote: str | None = None  # the delimiter of an open multi-line string
        for no, line in enumerate(text.splitlines(), start=1):
            if quote is not None:
                if line.count(quote) % 2:
                    quote = None
                continue
            if depth > 0:
                depth += _brackets(line)
                continue
            if m := self._HEADER.match(line):
                name = m.group(2).replace('"', "").replace(" ", "")
                parts: list[Any] = name.split(".")
                if m.group(1) == "[[":
                    index = counts.get(name, 0)
                    counts[name] = index + 1
                    parts.append(index)
                current = tuple(parts)
                self.lines.setdefault(current, no)
                continue
            if m := self._KEY.match(line):
                key = m.group(1).strip('"')
                self.lines.setdefault((*current, key), no)
                value = line.split("=", 1)[1]
                quote = next((q for q in ('"""', "'''") if value.count(q) % 2), None)
                depth = 0 if quote else max(0, _brackets(value))

    def find(self, path: tuple[Any, ...]) -> int | None:
        """The line of ``path``, or of the nearest enclosing table that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


def _brackets(text: str) -> int:
    """Net open brackets on a line, strings and comments left out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'', "", text).split("#", 1)[0]
    return text.count("[") + text.count("{") - text.count("]") - text.count("}")


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


# ---------------------------------------------------------------------------------- parsing


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.where = _Lines(text)

    def fail(self, path: tuple[Any, ...], problem: str) -> ScenarioError:
        line = self.where.find(path)
        at = f"{self.source}:{line}" if line is not None else self.source
        return ScenarioError(f"{at}: {_dotted(path) or 'top level'}: {problem}")

    def table(self, doc: dict[str, Any], path: tuple[Any, ...], known: set[str]) -> None:
        extra = sorted(set(doc) - known)
        if extra:
            key = extra[0]
            raise self.fail(
                (*path, key), f"unknown key {key!r} (known: {', '.join(sorted(known))})"
            )

    def array(self, doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
        value = doc.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail((key,), f"must be an array of tables ([[{key}]])")
        return value

    def str_(self, t: dict[str, Any], path: tuple[Any, ...], key: str, default: str | None = None,
             *, pattern: re.Pattern[str] | None = None) -> str:  # fmt: skip
        value = t.get(key, default)
        if value is None:
            raise self.fail((*path, key), "missing (required)")
        if not isinstance(value, str) or not value:
            raise self.fail((*path, key), f"must be a non-empty string, got {value!r}")
        if pattern is not None and not pattern.match(value):
            raise self.fail(
                (*path, key), f"{value!r} is not a valid name (lower case, digits, - and _)"
            )
        return value

    def num(self, t: dict[str, Any], path: tuple[Any, ...], key: str, default: float | None,
            *, lo: float, hi: float) -> float:  # fmt: skip
        value = t.get(key, default)
        if value is None:
            raise self.fail((*path, key), "missing (required)")
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or not lo <= value <= hi:
            raise self.fail((*path, key), f"must be a number from {lo:g} to {hi:g}, got {value!r}")
        return float(value)

    def bool_(self, t: dict[str, Any], path: tuple[Any, ...], key: str, default: bool) -> bool:
        value = t.get(key, default)
        if not isinstance(value, bool):
            raise self.fail((*path, key), f"must be true or false, got {value!r}")
        return value

    def strs(self, t: dict[str, Any], path: tuple[Any, ...], key: str) -> tuple[str, ...]:
        value = t.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail((*path, key), f"must be a list of strings, got {value!r}")
        if len(set(value)) != len(value):
            raise self.fail((*path, key), f"lists a name twice: {value!r}")
        return tuple(value)

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
        for i, b in enumerate(self.array(doc, "broker")):
            path = ("broker", i)
            self.table(b, path, {"name", "persistence"})
            name = self.str_(b, path, "name", pattern=NAME)
            if any(o.name == name for o in out):
                raise self.fail((*path, "name"), f"broker {name!r} is defined twice")
            out.append(BrokerDef(name, self.bool_(b, path, "persistence", True)))
        return tuple(out)

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

    def precedence(self, t: dict[str, Any], path: tuple[Any, ...]) -> Precedence:
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
            if do not in ACTIONS:
                raise self.fail((*path, "do"), f"unknown action {do!r} "
                                f"(one of: {', '.join(sorted(ACTIONS))})")  # fmt: skip
            args = self.step_args(do, t, path, sc, issuers)
            line = self.where.find(path)
            if do == "inject":
                count = int(args.pop("count"))
                every = float(args.pop("every"))
                for k in range(count):
                    one = dict(args)
                    if count > 1:
                        one["text"] = f"{args['text']} ({k + 1}/{count})"
                    steps.append(Step(at + k * every, do, one, line))
            else:
                steps.append(Step(at, do, args, line))
        steps.sort(key=lambda s: s.at)  # stable: equal times keep the file's order
        if not any(s.do == "inject" for s in steps):
            raise self.fail(("timeline",), 'the timeline injects no decision (do = "inject")')
        return tuple(steps)

    def step_args(self, do: str, t: dict[str, Any], path: tuple[Any, ...], sc: Scenario,
                  issuers: dict[str, IssuerDef]) -> dict[str, Any]:  # fmt: skip
        base = {"at", "do"}
        node_names = set(sc.by_name)
        match do:
            case "phase":
                self.table(t, path, base | {"name"})
                return {"name": self.str_(t, path, "name")}
            case "inject":
                self.table(t, path, base | {"issuer", "via", "to", "precedence", "text",
                                            "count", "every"})  # fmt: skip
                issuer = self.str_(t, path, "issuer")
                if issuer not in issuers:
                    raise self.fail((*path, "issuer"), f"no [[issuer]] named {issuer!r}")
                via = self.node(t, path, "via", node_names)
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
                return {"issuer": issuer, "via": via, "to": str(audience),
                        "precedence": precedence.name, "text": text, "count": count,
                        "every": every}  # fmt: skip
            case "blackhole" | "cut" | "restore":
                self.table(t, path, base | {"node", "region", "broker"})
                if ("node" in t) == ("region" in t):
                    raise self.fail((*path, "do"), f"{do}: give exactly one of node or region")
                args: dict[str, Any] = {}
                if "node" in t:
                    args["node"] = self.node(t, path, "node", node_names)
                    targets = [args["node"]]
                else:
                    region = self.str_(t, path, "region")
                    if region not in sc.regions():
                        raise self.fail((*path, "region"), f"no node serves region {region!r}")
                    args["region"] = region
                    targets = sc.nodes_in(region)
                if not any(sc.by_name[n].mqtt for n in targets):
                    raise self.fail((*path, "do"), f"{do}: {', '.join(targets)} use no broker")
                if "broker" in t:
                    broker = self.str_(t, path, "broker")
                    if not any(broker in sc.by_name[n].mqtt for n in targets):
                        raise self.fail((*path, "broker"), f"{', '.join(targets)} do not use "
                                        f"broker {broker!r}")  # fmt: skip
                    args["broker"] = broker
                return args
            case "stop_broker" | "start_broker":
                self.table(t, path, base | {"broker"})
                broker = self.str_(t, path, "broker")
                if broker not in {b.name for b in sc.brokers}:
                    raise self.fail((*path, "broker"), f"no [[broker]] named {broker!r}")
                return {"broker": broker}
            case "unplug" | "replug":
                self.table(t, path, base | {"node"})
                node = self.node(t, path, "node", node_names)
                if not sc.by_name[node].radio:
                    raise self.fail((*path, "node"), f"{node} has no radio (radio = true)")
                return {"node": node}
            case "kill" | "restart":
                self.table(t, path, base | {"node"})
                return {"node": self.node(t, path, "node", node_names)}
            case "clock":
                self.table(t, path, base | {"node", "skew"})
                node = self.node(t, path, "node", node_names)
                return {
                    "node": node,
                    "skew": self.num(t, path, "skew", None, lo=-30 * 86400, hi=30 * 86400),
                }
            case "set_loss":
                self.table(t, path, base | {"a", "b", "loss"})
                radios = {n.name for n in sc.nodes if n.radio}
                a = self.node(t, path, "a", radios)
                b = self.node(t, path, "b", radios)
                return {"a": a, "b": b, "loss": self.num(t, path, "loss", None, lo=0, hi=1)}
        raise AssertionError(do)

    def node(self, t: dict[str, Any], path: tuple[Any, ...], key: str, names: set[str]) -> str:
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
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        at = f"{source}:{m.group(1)}" if m else source
        raise ScenarioError(f"{at}: not valid TOML: {exc}") from None
    return _Parser(text, source).scenario(doc)


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
