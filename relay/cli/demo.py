"""``relay demo``: what a newcomer runs first.

``relay demo`` (part ``drill``) runs the built-in drill scenario (relay/drill/scenarios/demo.toml):
five nodes in two regions on loopback, the internet cut for one region half-way and restored, a
summary table and an HTML report. ``relay demo trust`` walks through keys, roster and signatures.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="a guided demonstration with zero configuration")
    p.add_argument(
        "part",
        nargs="?",
        default="drill",
        choices=["drill", "trust"],
        help="drill (default): five nodes, two regions, one region's internet cut and restored, "
        "with a report; trust: keys, roster, a signed decision, verification, a forgery rejected",
    )
    p.add_argument("--dir", type=Path, help="work in this directory (default: a temporary one; "
                   "the drill keeps it for its report)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="drill: no live progress")
    p.set_defaults(handler=cmd_demo)


def _step(title: str, *args: str, cwd: Path, expect: int = 0) -> str:
    print(f"\n== {title}\n$ relay {shlex.join(args)}")
    proc = subprocess.run(
        [sys.executable, "-m", "relay", *args], cwd=cwd, capture_output=True, text=True
    )
    out = (proc.stdout + proc.stderr).rstrip()
    if out:
        print("  " + out.replace("\n", "\n  "))
    if proc.returncode != expect:
        raise SystemExit(f"demo step failed: exit {proc.returncode}, expected {expect}")
    return proc.stdout


def trust_walkthrough(d: Path) -> None:
    for name in ("root", "vr07-rbt", "vr07-utrecht"):
        _step(f"create the {name} key", "keys", "new", name, "--dir", "keys", cwd=d)
    _step(
        "the root authority starts a roster",
        "roster",
        "new",
        "--root-key",
        "keys/root.key",
        "-o",
        "roster.cbor",
        cwd=d,
    )
    _step(
        "it admits the regional policy team of Utrecht (VR07) as an issuer",
        "roster",
        "add",
        "roster.cbor",
        "--root-key",
        "keys/root.key",
        "--pub",
        "keys/vr07-rbt.pub",
        "--name",
        "vr07-rbt",
        "--role",
        "issuer",
        "--scope",
        "region:VR07",
        cwd=d,
    )
    _step(
        "and the relay node in Utrecht",
        "roster",
        "add",
        "roster.cbor",
        "--root-key",
        "keys/root.key",
        "--pub",
        "keys/vr07-utrecht.pub",
        "--name",
        "vr07-utrecht",
        "--role",
        "node",
        "--scope",
        "region:VR07",
        cwd=d,
    )
    _step(
        "the roster, as any node sees it",
        "roster",
        "show",
        "roster.cbor",
        "--root",
        "keys/root.pub",
        cwd=d,
    )
    text = (
        "Besluit RBT: evacuatie van de wijken Kanaleneiland-Zuid en Transwijk. "
        "Opvang in Jaarbeurs hal 9. Start 16:30."
    )
    _step(
        "the RBT signs a decision",
        "sign",
        "--key",
        "keys/vr07-rbt.key",
        "--precedence",
        "IMMEDIATE",
        "--to",
        "region:VR07",
        "--text",
        text,
        "-o",
        "decision.cose",
        cwd=d,
    )
    size = (d / "decision.cose").stat().st_size
    print(f"  ({size} bytes signed: fits one LoRa frame of 231 bytes)")
    _step(
        "a node verifies it",
        "verify",
        "--root",
        "keys/root.pub",
        "--roster",
        "roster.cbor",
        "decision.cose",
        cwd=d,
    )
    forged = bytearray((d / "decision.cose").read_bytes())
    forged[forged.index(b"\x03\x01") + 1] = 0x00  # IMMEDIATE -> FLASH inside the signed payload
    (d / "forged.cose").write_bytes(forged)
    _step(
        "someone turns IMMEDIATE into FLASH in transit: rejected",
        "verify",
        "--root",
        "keys/root.pub",
        "--roster",
        "roster.cbor",
        "forged.cose",
        cwd=d,
        expect=1,
    )
    _step(
        "the RBT tries to address the whole country: outside its scope",
        "sign",
        "--key",
        "keys/vr07-rbt.key",
        "--precedence",
        "FLASH",
        "--to",
        "all",
        "--text",
        "Landelijke oproep",
        "-o",
        "scope.cose",
        cwd=d,
    )
    _step(
        "rejected by every node",
        "verify",
        "--root",
        "keys/root.pub",
        "--roster",
        "roster.cbor",
        "scope.cose",
        cwd=d,
        expect=1,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    if args.part == "drill":
        from relay.cli.drill import run_and_summarise

        return run_and_summarise("demo", report=None, workdir=args.dir, quiet=args.quiet)
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        trust_walkthrough(args.dir)
        print(f"\nAll files are in {args.dir}")
        return 0
    with tempfile.TemporaryDirectory(prefix="relay-demo-") as tmp:
        trust_walkthrough(Path(tmp))
    return 0
