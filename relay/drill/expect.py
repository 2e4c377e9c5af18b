"""Evaluate a scenario's expectations against the drill's event timeline, into Verdicts.

Everything here works from events alone (runner ``inject`` events plus the nodes' audit logs), so
it gives the same answer for a live drill and for logs collected afterwards. Node event times are
the node's own clock; ``skews`` (node -> [(from wall time, skew s)], as the runner set them) turns
them back into the runner's clock before latencies are computed.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from relay.drill.events import RUNNER, Event
from relay.drill.report import Verdict
from relay.drill.scenario import Expectation, Scenario
from relay.drill.steps import Inject
from relay.envelope import Precedence

Skews = Mapping[str, Sequence[tuple[float, float]]]
SHOW = 5  # problems listed in a verdict's detail
SLACK_S = 5.0  # node events may straddle a clock change by this much (the node's restart)


@dataclass(frozen=True, slots=True)
class Injected:
    id: str
    t: float
    issuer: str
    precedence: Precedence
    nodes: tuple[str, ...]
    via: str | None


@dataclass(frozen=True, slots=True)
class Arrival:
    t: float  # corrected to the runner's clock
    link: str | None

    def latency(self, inj: Injected) -> float:
        return max(0.0, self.t - inj.t)


@dataclass
class Timeline:
    """Who showed what, when and how; built once from the events."""

    injected: list[Injected] = field(default_factory=list)
    first: dict[tuple[str, str], Arrival] = field(default_factory=dict)  # (msg, node)
    shown: Counter[tuple[str, str]] = field(default_factory=Counter)
    receipts: dict[tuple[str, str], Arrival] = field(default_factory=dict)  # (msg, recipient)


def true_time(t: float, node: str, skews: Skews, *, end: float = math.inf) -> float:
    """A node's clock reading turned into runner time, using the skew in force at that moment.

    A segment ``(start, skew)`` holds from ``start`` until the next one starts (the last one until
    ``end``, when the drill was over). A reading is taken in the first segment it falls inside once
    corrected, with ``SLACK_S`` for the restart between segments; a clock set back can make one
    reading fit two segments, so ``end`` matters.
    """
    segments = list(skews.get(node, ()))
    for i, (start, skew) in enumerate(segments):
        until = segments[i + 1][0] if i + 1 < len(segments) else end
        if start - SLACK_S <= t - skew <= until + SLACK_S:
            return t - skew
    return t - segments[0][1] if segments else t


def timeline(events: Sequence[Event], skews: Skews) -> Timeline:
    tl = Timeline()
    runner_times = [e.t for e in events if e.node == RUNNER]
    end = max(runner_times) if runner_times else math.inf  # the runner's last word ends the drill
    for e in events:
        if e.node == RUNNER and e.event == "inject" and e.msg is not None:
            d = json.loads(e.detail or "{}")
            prec = Precedence[d["precedence"]]
            inj = Injected(e.msg, e.t, e.peer or "", prec, tuple(d["nodes"]), d.get("via"))
            tl.injected.append(inj)
        elif e.event == "delivered" and e.msg is not None:
            key = (e.msg, e.node)
            tl.shown[key] += 1
            if key not in tl.first:
                tl.first[key] = Arrival(true_time(e.t, e.node, skews, end=end), e.link)
        elif e.event == "receipt" and e.msg is not None and e.peer is not None:
            key = (e.msg, e.peer)
            if key not in tl.receipts:
                tl.receipts[key] = Arrival(true_time(e.t, e.node, skews, end=end), e.link)
    return tl


def _matching(tl: Timeline, exp: Expectation) -> list[Injected]:
    return [i for i in tl.injected if exp.precedence is None or i.precedence == exp.precedence]


def _latencies(values: list[float]) -> str:
    if not values:
        return ""
    return f" (median {statistics.median(values):.1f} s, max {max(values):.1f} s)"


def _problems(items: list[str]) -> str:
    more = f", and {len(items) - SHOW} more" if len(items) > SHOW else ""
    return "; ".join(items[:SHOW]) + more


def _timed(
    injected: Sequence[Injected],
    arrivals: Mapping[tuple[str, str], Arrival],
    within_s: float | None,
    *,
    skip_origin: bool,
    missing: Callable[[str, str], str],
    late: Callable[[str, str, float], str],
) -> tuple[int, list[str], list[float]]:
    """(expected, problems, latencies) of the arrivals (shown or receipt) each injection expects
    at each node of its audience; ``skip_origin`` leaves out the node it was submitted at."""
    bad: list[str] = []
    lat: list[float] = []
    total = 0
    for inj in injected:
        for node in inj.nodes:
            if skip_origin and node == inj.via:
                continue
            total += 1
            arrival = arrivals.get((inj.id, node))
            if arrival is None:
                bad.append(missing(inj.id[:12], node))
                continue
            latency = arrival.latency(inj)
            lat.append(latency)
            if within_s is not None and latency > within_s:
                bad.append(late(inj.id[:12], node, latency))
    return total, bad, lat


def check(exp: Expectation, tl: Timeline) -> Verdict:
    name = exp.describe()
    injected = _matching(tl, exp)
    match exp.kind:
        case "delivered" | "no_loss":
            total, bad, lat = _timed(
                injected, tl.first, exp.within_s, skip_origin=False,
                missing=lambda m, n: f"{m} never shown at {n}",
                late=lambda m, n, t: f"{m} at {n} after {t:.1f} s",
            )  # fmt: skip
            if not total:
                return Verdict(name, False, "no matching decision was injected")
            good = total - len(bad)
            detail = f"{good}/{total} deliveries" + (
                f" within {exp.within_s:g} s" if exp.within_s is not None else ""
            )
            detail += _latencies(lat)
            return Verdict(name, not bad, detail + (f"; {_problems(bad)}" if bad else ""))
        case "no_duplicates":
            twice = sorted(f"{m[:12]} {n} x{c}" for (m, n), c in tl.shown.items() if c > 1)
            shown = sum(tl.shown.values())
            if twice:
                return Verdict(name, False, f"shown more than once: {_problems(twice)}")
            return Verdict(name, True, f"{shown} showings, each decision at most once per node")
        case "audience":
            ids = {i.id: set(i.nodes) for i in tl.injected}
            wrong = sorted(f"{m[:12]} at {n}" for (m, n) in tl.shown
                           if m in ids and n not in ids[m])  # fmt: skip
            if wrong:
                return Verdict(name, False, f"shown outside the audience: {_problems(wrong)}")
            return Verdict(name, True, "no decision shown outside its audience")
        case "receipts":
            total, bad, lat = _timed(
                injected, tl.receipts, exp.within_s, skip_origin=True,  # no receipt for oneself
                missing=lambda m, n: f"no receipt from {n} for {m}",
                late=lambda m, n, t: f"receipt from {n} for {m} after {t:.1f} s",
            )  # fmt: skip
            detail = f"{total - len(bad)}/{total} receipts back at the origin" + _latencies(lat)
            return Verdict(name, not bad, detail + (f"; {_problems(bad)}" if bad else ""))
    raise AssertionError(f"unknown expectation {exp.kind!r}")  # the scenario parser rejects it


def evaluate(
    scenario: Scenario, events: Sequence[Event], skews: Skews, *, failed: Sequence[str] = ()
) -> list[Verdict]:
    """One verdict per expectation, after one on the injections themselves."""
    tl = timeline(events, skews)
    planned = sum(1 for s in scenario.timeline if isinstance(s, Inject))
    verdicts = [
        Verdict(
            "every planned decision was injected",
            not failed and len(tl.injected) == planned,
            f"{len(tl.injected)}/{planned} injected"
            + (f"; failed: {_problems(list(failed))}" if failed else ""),
        )
    ]
    verdicts += [check(exp, tl) for exp in scenario.expectations]
    return verdicts


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the summary table: a decision and how it reached its audience."""

    id: str
    precedence: str
    issuer: str
    shown: int
    expected: int
    duplicates: int
    median_s: float | None
    max_s: float | None
    paths: str


def summary(events: Sequence[Event], skews: Skews) -> list[Row]:
    tl = timeline(events, skews)
    rows = []
    for inj in tl.injected:
        arrivals = [tl.first[(inj.id, n)] for n in inj.nodes if (inj.id, n) in tl.first]
        lat = [a.latency(inj) for a in arrivals]
        paths = Counter(a.link or "?" for a in arrivals)
        rows.append(
            Row(
                id=inj.id[:12],
                precedence=inj.precedence.name,
                issuer=inj.issuer,
                shown=len(arrivals),
                expected=len(inj.nodes),
                duplicates=sum(max(0, tl.shown[(inj.id, n)] - 1) for n in inj.nodes),
                median_s=statistics.median(lat) if lat else None,
                max_s=max(lat) if lat else None,
                paths=" ".join(f"{k}:{v}" for k, v in sorted(paths.items())),
            )
        )
    return rows


def format_summary(rows: Sequence[Row]) -> str:
    head = ("decision", "precedence", "issuer", "shown", "dupl", "median", "max", "arrived via")
    body = [
        (
            r.id,
            r.precedence,
            r.issuer,
            f"{r.shown}/{r.expected}",
            str(r.duplicates),
            "-" if r.median_s is None else f"{r.median_s:.1f} s",
            "-" if r.max_s is None else f"{r.max_s:.1f} s",
            r.paths,
        )
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in (head, *body)]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
