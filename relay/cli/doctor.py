"""``relay doctor --config relay.toml [--json]``: on-site self-check, exit 1 on any failure."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from relay.checks import Check, failed
from relay.cli import CliError
from relay.config import ConfigError, load

LABELS = {
    "nl": {"ok": "ok", "warn": "let op", "fail": "FOUT", "fix": "oplossing"},
    "en": {"ok": "ok", "warn": "warn", "fail": "FAIL", "fix": "fix"},
}
SUMMARY = {
    "nl": "{fail} fout, {warn} let op, {ok} ok: de node is {verdict}",
    "en": "{fail} failed, {warn} warnings, {ok} ok: the node is {verdict}",
}
VERDICT = {"nl": ("klaar voor gebruik", "NIET klaar"), "en": ("ready", "NOT ready")}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "doctor",
        help="check this node on site: config, keys, roster, store, "
        "brokers, radios, clock, drill window",
    )
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    p.add_argument("--lang", choices=["nl", "en"], default="nl", help="language (default nl)")
    p.set_defaults(handler=cmd_doctor)


def check_line(c: Check, lang: str) -> str:
    words = LABELS[lang]
    message, fix = c.text(lang)
    tail = f"  — {words['fix']}: {fix}" if fix and c.status != "ok" else ""
    return f"{words[c.status]:<7} {c.key}: {message}{tail}"


def check_json(c: Check, lang: str) -> dict[str, str]:
    message, fix = c.text(lang)
    return {"key": c.key, "status": c.status, "message": message, "fix": fix}


def cmd_doctor(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        checks = [
            Check(
                "config",
                "fail",
                str(exc),
                "fix the key named, see docs/config.md",
                nl=(str(exc), "verbeter de genoemde sleutel, zie docs/config.md"),
            )
        ]
    else:
        from relay.doctor import diagnose

        try:
            checks = diagnose(cfg)
        except KeyboardInterrupt:
            raise CliError("interrupted", status=130) from None
    return report(checks, args, SUMMARY, VERDICT)


def report(
    checks: list[Check],
    args: argparse.Namespace,
    summary: dict[str, str],
    verdicts: dict[str, tuple[str, str]],
) -> int:
    """Print the checks (``--json``: one document; else a line each and the summary, in
    ``--lang``); 1 when any failed. Shared by ``relay doctor`` and ``relay broker check``."""
    bad = failed(checks)
    if args.json:
        doc = {"ok": not bad, "checks": [check_json(c, args.lang) for c in checks]}
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        for c in checks:
            print(check_line(c, args.lang))
        counts = {s: sum(c.status == s for c in checks) for s in ("ok", "warn", "fail")}
        verdict = verdicts[args.lang][1 if bad else 0]
        print(summary[args.lang].format(verdict=verdict, **counts))
    return 1 if bad else 0
