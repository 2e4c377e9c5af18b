"""The Prometheus endpoint of a running node, checked against ``relay status --json``."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay import api
from relay.envelope import Precedence
from relay.sim.broker import Mosquitto
from relay.sim.cluster import Cluster, NodeSpec
from relay.sim.net import free_port
from tests.node.util import ISSUERS, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.subprocess]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_match_status_after_traffic(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Test that scraped metrics equal `relay status --json` after decisions and a rejection."""
    c = Cluster(tmp_path / "c")
    c.create(
        [NodeSpec("hq", (), (mosquitto.url,)), NodeSpec("vr07", ("VR07",), (mosquitto.url,))],
        ISSUERS,
    )
    port = free_port()
    with c.config_path("hq").open("a") as f:
        f.write(f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
    try:
        for n in ("hq", "vr07"):
            c.start(n)
        for n in ("hq", "vr07"):
            c.wait_ready(n)
        ids = [
            c.submit(
                "hq",
                c.sign(
                    "vr07-rbt", f"Besluit {i}", to="region:VR07", precedence=Precedence.IMMEDIATE
                ),
            )
            for i in range(3)
        ]
        for i in ids:

            def signed(i: str = i) -> bool:
                return any(r["signed"] for r in c.message("hq", i)["delivery"])

            wait_until(signed, 30, f"receipt for {i}")
        forged = bytearray(c.sign("vr07-rbt", "vervalst", to="region:VR07"))
        forged[-1] ^= 1
        with pytest.raises(api.ApiError, match="rejected"):
            c.submit("hq", bytes(forged))
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "relay",
                "status",
                "--json",
                "--config",
                str(c.config_path("hq")),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        st = json.loads(proc.stdout)
        m = scrape(port)
    finally:
        c.stop_all()
    counters = st["engine"]["counters"]
    assert m[("relay_messages_accepted_total", ())] == counters["accepted"] >= 3
    assert m[("relay_receipts_total", ())] == counters["receipts"] >= 3
    assert m[("relay_messages_delivered_total", ())] == counters.get("delivered", 0)
    for reason, n in st["rejections"].items():
        assert m[("relay_messages_rejected_total", (("reason", reason),))] == n
    assert sum(st["rejections"].values()) >= 1
    for link in st["links"]:
        labels = (("kind", link["kind"]), ("link", link["name"]))
        assert m[("relay_link_up", labels)] == (1 if link["state"] == "up" else 0)
        assert m[("relay_outbox_depth", (("link", link["name"]),))] == link["outbox"]
        assert m[("relay_link_state_changes_total", (("link", link["name"]),))] >= 1
    for table, rows in st["store"].items():
        assert m[("relay_store_rows", (("table", table),))] == rows
    assert m[("relay_roster_serial", ())] == st["engine"]["roster_serial"]
    assert m[("relay_info", (("node", "hq"), ("version", __import__("relay").__version__)))] == 1


@pytest.mark.radio
def test_metrics_show_airtime_of_a_radio(tmp_path: Path) -> None:
    """Test that a node with a radio exports airtime used and budget from its ledger."""
    from relay.sim.cluster import MeshProcess

    with MeshProcess(tmp_path / "mesh", {"m": ["r1"]}) as mesh:
        c = Cluster(tmp_path / "c")
        c.create([NodeSpec("post", ("VR07",), (), (mesh.radio("r1"),))], ISSUERS)
        port = free_port()
        with c.config_path("post").open("a") as f:
            f.write(f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
        try:
            c.start("post")
            c.wait_ready("post")
            m = scrape(port)
            st = c.status("post")
        finally:
            c.stop_all()
    (link,) = st["links"]
    assert (
        m[("relay_airtime_budget_seconds", (("radio", link["name"]),))]
        == (link["mesh"]["airtime_budget_s"])
    )
    assert ("relay_airtime_used_seconds", (("radio", link["name"]),)) in m
