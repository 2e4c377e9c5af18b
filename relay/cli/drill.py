"""``relay drill``: run a drill scenario on loopback (``run``), or check one (``check``).

``relay drill report`` (collecting audit logs of nodes that ran elsewhere into a report) is
registered below by ``_register_report``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import structlog

from relay.cli import CliError
from relay.drill.scenario import Scenario, ScenarioError, resolve
from relay.drill.steps import Inject


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    drill = sub.add_parser("drill", help="exercise drills: scenarios, faults, reports")
    drill_sub = drill.add_subparsers(dest="drill_command", metavar="COMMAND", required=True)

    run = drill_sub.add_parser(
        "run",
        help="run a scenario with real nodes, brokers and emulated radios on loopback",
        description="Run SCENARIO (a TOML file, or the name of a built-in scenario such as "
        "'demo'): start its brokers, radios and nodes, play its timeline, check its "
        "expectations and write the report. Exit status 1 when an expectation fails.",
    )
    run.add_argument("scenario", help="scenario file (.toml) or built-in name (e.g. demo)")
    run.add_argument("--report", type=Path, metavar="DIR", help="report directory "
                     "(default: report/ in the work directory)")  # fmt: skip
    run.add_argument("--workdir", type=Path, metavar="DIR",
                     help="where nodes, brokers and logs live (default: a new temporary "
                     "directory, kept)")  # fmt: skip
    run.add_argument("--quiet", action="store_true", help="no live progress, only the summary")
    run.set_defaults(handler=cmd_run)

    check = drill_sub.add_parser("check", help="validate a scenario without running it")
    check.add_argument("scenario", help="scenario file (.toml) or built-in name")
    check.set_defaults(handler=cmd_check)

    _register_report(drill_sub)


def _register_report(drill_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``relay drill report`` lives here (branch drillreport)."""
    rep = drill_sub.add_parser(
        "report",
        help="collect nodes' audit logs (running or stopped) into a drill report",
        description="Collect the audit log of each NODE=PATH (PATH: the API socket of a running "
        "node, or its SQLite store file, read-only) and write DIR/report.json and the "
        "self-contained DIR/report.html, as `relay drill run` does (docs/drills.md, Reports).",
    )
    rep.add_argument("sources", nargs="+", metavar="NODE=PATH", help="a node and its log")
    rep.add_argument("--out", type=Path, required=True, metavar="DIR", help="report directory")
    rep.add_argument("--title", default="Drill report", help="page title")
    rep.add_argument("--events", type=Path, metavar="REPORT_JSON",
                     help="add runner events and verdicts of an earlier report.json")  # fmt: skip
    rep.add_argument("--roster", type=Path, metavar="FILE",
                     help="the roster (as in trust.roster): each decision's expected audience "
                     "is derived from it and its nodes' regions; needs --root")  # fmt: skip
    rep.add_argument(
        "--root",
        type=Path,
        metavar="FILE",
        help="the root public key that signed --roster (as in trust.root)",
    )
    rep.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from relay.api import ApiError
    from relay.drill import events as ev
    from relay.drill.report import Verdict, analyse, load_report, write_report
    from relay.store import StoreError

    verdicts: list[Verdict] = []
    if (args.roster is None) != (args.root is None):
        raise CliError("--roster and --root go together (the roster is checked against the root)")
    try:
        roster = None
        if args.roster is not None:
            from relay.keys import KeyError_, load_public
            from relay.rosterfile import RosterFileError, load_trust

            try:
                roster = load_trust(args.roster, load_public(args.root)).roster
            except (RosterFileError, KeyError_) as exc:
                raise CliError(f"--roster {args.roster}: {exc}") from exc
        sources = ev.parse_sources(args.sources)
        kinds = {node: ev.source_kind(path) for node, path in sources.items()}
        events = ev.collect(sources, roster)
        chains = ev.chains(sources, roster)
        meta: dict[str, object] = {"collected": ", ".join(f"{n} ({k})" for n, k in kinds.items())}
        if args.events is not None:
            _, earlier, verdicts, _ = load_report(args.events)
            events += [e for e in earlier if e.node == ev.RUNNER]
            meta["runner events from"] = args.events.name
        analysis = analyse(events)
        _, html = write_report(args.out, title=args.title, events=events, verdicts=verdicts,
                               meta=meta, chains=chains)  # fmt: skip
    except (ev.EventError, StoreError, ApiError) as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:
        raise CliError(f"cannot write the report to {args.out}: {exc}") from exc
    s = analysis["summary"]
    print(f"{html}: {len(events)} events from {len(sources)} nodes; {s['decisions']} decisions, "
          f"{s['delivered']}/{s['expected']} deliveries, {s['missing']} missing, "
          f"{s['duplicates']} duplicates")  # fmt: skip
    for node, c in chains.items():
        if not c.get("ok"):
            print(f"FOUT / BROKEN: audit-keten / audit chain of {node}: {c.get('problem')}")
        elif not c.get("signatures_checked", True):
            print(f"audit-keten / audit chain of {node}: schakels in orde, handtekeningen niet "
                  "gecontroleerd (geen --roster) / links ok, signatures not checked (no "
                  "--roster)")  # fmt: skip
        else:
            print(f"audit-keten / audit chain of {node}: in orde / verified "
                  f"({c.get('rows')} rows)")  # fmt: skip
    if s.get("audience_unknown"):
        print(f"LET OP: van {s['audience_unknown']} besluit(en) zijn de verwachte ontvangers "
              "onbekend (geen --roster, geen oorsprong via de API) / WARNING: the expected "
              f"audience of {s['audience_unknown']} decision(s) is unknown (no --roster, no "
              "origin node over its API): missing nodes cannot be counted")  # fmt: skip
    return 0


def _scenario(arg: str) -> Scenario:
    try:
        return resolve(arg)
    except ScenarioError as exc:
        raise CliError(str(exc)) from exc


def cmd_check(args: argparse.Namespace) -> int:
    sc = _scenario(args.scenario)
    injections = sum(1 for s in sc.timeline if isinstance(s, Inject))
    print(f"{sc.source}: ok: {sc.title}: {len(sc.nodes)} nodes, {len(sc.brokers)} broker(s), "
          f"{sum(n.radio for n in sc.nodes)} radio(s), {len(sc.timeline)} timeline steps "
          f"({injections} decisions), {len(sc.expectations)} expectations")  # fmt: skip
    return 0


def run_and_summarise(arg: str, *, report: Path | None, workdir: Path | None,
                      quiet: bool) -> int:  # fmt: skip
    """Run a scenario, print the summary and verdicts; 0 when every expectation holds."""
    from relay.drill import expect, runner
    from relay.drill.progress import Progress

    sc = _scenario(arg)
    out = sys.stdout
    # The fault proxies and brokers log every switch; the progress lines already say it.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(f"Drill: {sc.title}", flush=True)
    progress = None if quiet else Progress(out)
    try:
        result = runner.run(sc, report_dir=report, workdir=workdir, progress=progress)
    except runner.DrillError as exc:
        raise CliError(f"drill could not run: {exc}", status=3) from exc
    if progress is not None:
        progress.done()
    print("\nDecisions (all signed as exercise, OEFENING):")
    print(expect.format_summary(expect.summary(result.events, result.skews)))
    print("\nExpectations:")
    for v in result.verdicts:
        print(f"  {'PASS' if v.ok else 'FAIL'}  {v.name}: {v.detail}")
    if result.report is not None:
        json_path, html_path = result.report
        print(f"\nReport: {html_path}\n        {json_path}")
    print(f"Nodes' stores and logs: {result.workdir}")
    print("Verdict: " + ("all expectations met" if result.ok else "EXPECTATIONS FAILED"))
    return 0 if result.ok else 1


def cmd_run(args: argparse.Namespace) -> int:
    return run_and_summarise(args.scenario, report=args.report, workdir=args.workdir,
                             quiet=args.quiet)  # fmt: skip
