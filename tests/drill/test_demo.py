"""`relay demo`: the built-in drill runs end to end and its report shows every decision once."""

import json
import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.radio, pytest.mark.subprocess]


def test_demo_delivers_every_decision_exactly_once(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Test that `relay demo` passes, prints the report path, and the report shows exactly once."""
    work = tmp_path_factory.mktemp("demo")  # short: node API sockets live below it
    proc = subprocess.run(
        [sys.executable, "-m", "relay", "demo", "--dir", str(work)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "phase: VR07 cut off from the internet" in out and "delivered " in out
    assert "Verdict: all expectations met" in out
    assert "decision      precedence  issuer    shown  dupl  median" in out  # the summary table
    m = re.search(r"^Report: (\S+report\.html)$", out, re.M)
    assert m is not None, out
    html = (work / "report" / "report.html").read_text()
    assert m.group(1) == str(work / "report" / "report.html") and "OEFENING" in html

    report = json.loads((work / "report" / "report.json").read_text())
    assert all(v["ok"] for v in report["verdicts"]), report["verdicts"]
    decisions = report["analysis"]["decisions"]
    assert len(decisions) == 7
    for d in decisions:
        assert d["exercise"] is True and d["missing"] == []
        assert sorted(x["node"] for x in d["deliveries"]) == d["expected"]
        assert all(x["status"] == "delivered" and x["count"] == 1 for x in d["deliveries"])
    assert report["analysis"]["duplicates"] == []
    # The radio-only post in VR07 is served over the mesh, also while VR07 is cut off.
    for d in decisions:
        paths = {x["node"]: x["path"] for x in d["deliveries"]}
        assert paths.get("vr07-zeist", "mesh") == "mesh"
        assert paths.get("vr07-nieuwegein", "mqtt") == "mqtt"  # internet only: caught up later
