"""`relay drill report` on real (non-drill) traffic: the expected audience comes from the roster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relay.cli import main
from relay.drill.events import Event, audience_event, collect
from relay.drill.report import analyse
from relay.sim.broker import Mosquitto
from relay.sim.cluster import NodeSpec
from tests.node.util import cluster_of, inbox_ids, wait_until

VR07 = ("vr07-a", "vr07-b", "vr07-c")


def test_audience_events_give_the_expected_nodes_without_an_inject() -> None:
    """Test that without a runner's inject the audience events decide who is missing."""
    msg = "ab" * 32
    evs = [
        Event(10.0, "hq", "accepted", msg, "local", "vr07-rbt", "decision"),
        Event(11.0, "vr07-a", "delivered", msg, "mqtt", "vr07-a", "priority"),
        audience_event("hq", msg, 10.0, "region:VR07", list(VR07), "origin"),
        audience_event("vr07-a", msg, 11.0, "region:VR07", None, None),
    ]
    d = analyse(evs)["decisions"][0]
    assert (d["expected"], d["expected_from"], d["missing"]) == (
        list(VR07), "origin", ["vr07-b", "vr07-c"]
    )  # fmt: skip
    assert d["audience"] == ["region:VR07"]
    unknown = analyse([e for e in evs if e.event != "audience"])
    assert unknown["decisions"][0]["expected"] is None
    assert unknown["summary"]["audience_unknown"] == 1


@pytest.mark.broker
@pytest.mark.subprocess
def test_report_of_real_traffic_counts_the_regions_nodes_that_missed_it(
    tmp_path: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that a decision to region:VR07 that reached 1 of the region's 3 nodes is reported
    as missing at 2, from a running origin's API and from stopped nodes' stores with --roster."""
    specs = [NodeSpec("hq", (), (mosquitto.url,))]
    specs += [NodeSpec(n, ("VR07",), (mosquitto.url,)) for n in VR07]
    with cluster_of(tmp_path, specs) as c:
        c.stop("vr07-b")
        c.stop("vr07-c")
        msg = c.submit("hq", c.sign("vr07-rbt", "Besluit: weg dicht", to="region:VR07"))
        wait_until(lambda: msg in inbox_ids(c, "vr07-a"), 30, "the decision at vr07-a")
        stores = {n: c.node_dir(n) / "relay.db" for n in specs_names(specs)}
        live = collect({"hq": c.socket_path("hq"), "vr07-a": c.socket_path("vr07-a")}
                       | {n: stores[n] for n in ("vr07-b", "vr07-c")})  # fmt: skip
        c.stop_all()
        roster, root = c.roster_path, c.keys / "root.pub"
    d = next(x for x in analyse(live)["decisions"] if x["id"] == msg)
    assert d["expected_from"] == "origin"  # hq's engine named the recipients
    assert d["expected"] == list(VR07) and d["missing"] == ["vr07-b", "vr07-c"]
    assert "hq" not in d["expected"]  # not in region VR07: not expected to show it

    args = [f"{n}={p}" for n, p in stores.items()]
    out = tmp_path / "r"
    assert main(["drill", "report", "--out", str(out), "--roster", str(roster),
                 "--root", str(root), *args]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "1/3 deliveries, 2 missing" in printed
    report = json.loads((out / "report.json").read_text())
    decision = next(x for x in report["analysis"]["decisions"] if x["id"] == msg)
    assert decision["expected_from"] == "roster" and decision["missing"] == ["vr07-b", "vr07-c"]

    assert main(["drill", "report", "--out", str(tmp_path / "r2"), *args]) == 0
    assert "WARNING: the expected audience of 1 decision(s) is unknown" in capsys.readouterr().out
    assert main(["drill", "report", "--out", str(tmp_path / "r3"), "--roster", str(roster),
                 *args]) == 2  # fmt: skip


def specs_names(specs: list[NodeSpec]) -> list[str]:
    return [s.name for s in specs]
