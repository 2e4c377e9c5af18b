"""`relay drill run` on small scenarios: an expectation that cannot be met, and every fault kind."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from relay.drill import runner
from relay.drill.scenario import resolve

pytestmark = [pytest.mark.broker, pytest.mark.subprocess]

CUT_OFF = """\
[drill]
title = "VR05 has neither internet nor radio"
duration = 3
settle = 3

[[broker]]
name = "national"

[[node]]
name = "hq"
mqtt = ["national"]

[[node]]
name = "vr05-a"
regions = ["VR05"]
mqtt = ["national"]

[[issuer]]
name = "ncc"
role = "coordinator"

[[timeline]]
at = 0
do = "cut"
region = "VR05"

[[timeline]]
at = 1
do = "inject"
issuer = "ncc"
via = "hq"
to = "region:VR05"
precedence = "FLASH"

[[expect]]
kind = "delivered"
within = 5

[[expect]]
kind = "no_duplicates"

[[expect]]
kind = "receipts"
"""


def test_unreachable_region_fails_the_verdict_and_the_exit_status(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Test that a region with no internet and no radio yields a FAIL verdict and exit status 1."""
    work = tmp_path_factory.mktemp("cut")
    path = work / "cut.toml"
    path.write_text(CUT_OFF)
    proc = subprocess.run(
        [sys.executable, "-m", "relay", "drill", "run", str(path), "--workdir", str(work / "w"),
         "--report", str(work / "r"), "--quiet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL  every FLASH" not in proc.stdout  # no precedence filter in this expectation
    assert "FAIL  every decision at every node in its audience within 5 s" in proc.stdout
    assert "never shown at vr05-a" in proc.stdout
    assert "PASS  no decision shown twice" in proc.stdout
    assert "Verdict: EXPECTATIONS FAILED" in proc.stdout
    report = json.loads((work / "r" / "report.json").read_text())
    assert (
        "FAIL  every decision signed for by every node in its audience: 0/1 receipts" in proc.stdout
    )
    assert [v["ok"] for v in report["verdicts"]] == [True, False, True, False]
    # Every node's audit chain verified with its roster key (docs/store.md, "The audit chain").
    chains = report["chains"]
    assert chains and all(c["ok"] and c["signatures_checked"] for c in chains.values()), chains


def test_invalid_scenario_exits_2_naming_the_line(tmp_path: Path) -> None:
    """Test that `relay drill run` refuses a bad scenario before starting anything."""
    path = tmp_path / "bad.toml"
    path.write_text(CUT_OFF.replace('region = "VR05"', 'region = "VR06"'))
    proc = subprocess.run(
        [sys.executable, "-m", "relay", "drill", "run", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "relay: bad.toml:25: timeline[0].region: no node serves region 'VR06'"
    )


@pytest.mark.radio
def test_every_fault_kind_is_applied_and_nothing_is_lost(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Test that kill, restart, unplug, replug, broker stop/start, clock, blackhole and loss run."""
    work = tmp_path_factory.mktemp("faults")
    result = runner.run(resolve("faults"), workdir=work / "w")
    assert result.ok, result.verdicts
    faults = [e.detail for e in result.events if e.node == "drill" and e.event == "fault"]
    restores = [e.detail for e in result.events if e.node == "drill" and e.event == "restore"]
    assert faults == [
        "kill -9 vr07-gw",
        "unplug the radio of vr07-post",
        "stop broker b",
        "restart vr07-post with its clock off by -3600 s",
        "blackhole broker path of node hq",
    ]
    assert restores == [
        "restart vr07-gw",
        "replug the radio of vr07-post",
        "start broker b",
        "restore broker path of node hq",
        "set loss vr07-gw-vr07-post to 0",
    ]
    assert result.skews["vr07-post"][-1][1] == -3600.0
    # The node really ran with the wrong clock: its events are an hour behind the runner's.
    clock_set = next(e.t for e in result.events if e.detail and "clock off" in e.detail)
    assert any(e.t < clock_set - 3000 for e in result.events if e.node == "vr07-post")
    airtime = [e for e in result.events if e.event == "airtime"]
    assert {e.link for e in airtime} == {"vr07-gw", "vr07-post"}
    assert result.report is not None and result.report[1].exists()


def test_a_drill_that_cannot_start_exits_3_with_the_reason(tmp_path: Path) -> None:
    """Test that a work directory too deep for the nodes' API sockets is refused with exit 3."""
    path = tmp_path / "cut.toml"
    path.write_text(CUT_OFF)
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    proc = subprocess.run(
        [sys.executable, "-m", "relay", "drill", "run", str(path), "--workdir", str(deep)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert "drill could not run" in proc.stderr and "too deep for Unix sockets" in proc.stderr
