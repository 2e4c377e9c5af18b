"""`relay status` tells the truth: real attempts per link, and the radio's own preset and region."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from relay.envelope import Precedence
from relay.sim.broker import Mosquitto
from relay.sim.cluster import Cluster, MeshProcess, NodeSpec
from tests.node.util import ISSUERS, cluster_of, wait_until


def relay_cli(c: Cluster, node: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "relay", *args, "--config", str(c.config_path(node))],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def sends_in_audit(c: Cluster, node: str, msg_id: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in c.call(node, {"op": "audit"})["events"]:
        if row["event"] == "sent" and row["msg_id"] == msg_id:
            out[row["link"]] = out.get(row["link"], 0) + 1
    return out


@pytest.mark.broker
@pytest.mark.subprocess
def test_status_of_a_message_counts_the_sends_the_audit_log_has(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Test that `relay status ID` shows per link as many sends as the audit log records, and
    the live outbox's real attempt count, while a recipient that never answers is retried."""
    nodes = [
        NodeSpec("hq", (), (mosquitto.url,)),
        NodeSpec("vr05-twente", ("VR05",), (mosquitto.url,)),  # on the roster, never started
    ]
    c = Cluster(tmp_path / "c")
    c.create(nodes, ISSUERS)
    try:
        c.start("hq")
        c.wait_ready("hq")
        raw = c.sign("national", "Besluit: sirenes", precedence=Precedence.FLASH)
        msg_id = c.submit("hq", raw)
        # FLASH is re-sent after 10 s, then 20 s later: wait for the second send.
        wait_until(lambda: sends_in_audit(c, "hq", msg_id).get("mqtt", 0) >= 2, 40,
                   "a second send of the FLASH")  # fmt: skip
        before = sends_in_audit(c, "hq", msg_id)["mqtt"]
        msg: dict[str, Any] = json.loads(relay_cli(c, "hq", "status", msg_id, "--json"))
        text = relay_cli(c, "hq", "status", msg_id)
        after = sends_in_audit(c, "hq", msg_id)["mqtt"]
        sent = {a["link"]: a["sent"] for a in msg["attempts"]}
        assert before <= sent["mqtt"] <= after
        assert [o["link"] for o in msg["outbox"]] == ["mqtt"]
        assert before <= msg["outbox"][0]["attempts"] <= after  # no failures: attempts = sends
        assert f"{before} keer verzonden / sent {before} times" in text or (
            f"{after} keer verzonden / sent {after} times" in text
        )
        assert "vr05-twente" in text and "waiting" in text
    finally:
        c.stop_all()


@pytest.mark.radio
@pytest.mark.subprocess
def test_status_warns_when_the_radio_preset_differs_from_the_config(tmp_path: Path) -> None:
    """Test that a node on a MEDIUM_FAST emulated radio with the default LONG_FAST config shows
    the mismatch in `relay status`, and a node configured MEDIUM_FAST does not and uses it."""
    with MeshProcess(tmp_path / "mesh", {"m": ["r1", "r2"]}, preset="MEDIUM_FAST") as mesh:
        radios = {r: f"127.0.0.1:{mesh.ports[r]}" for r in ("r1", "r2")}
        nodes = [
            NodeSpec("vr07-post", ("VR07",), radios=(radios["r1"],)),
            NodeSpec(
                "vr07-post2",
                ("VR07",),
                radios=(radios["r2"],),
                radio_options={"preset": "MEDIUM_FAST"},
            ),
        ]
        with cluster_of(tmp_path, nodes) as c:
            text = relay_cli(c, "vr07-post", "status")
            assert "LET OP: de radio gebruikt preset MEDIUM_FAST, relay.toml zegt LONG_FAST" in text
            assert "WARNING: the radio uses preset MEDIUM_FAST, relay.toml says LONG_FAST" in text
            assert "kanaal 0 van de radio heeft de publieke standaardsleutel" in text
            good = c.call("vr07-post2", {"op": "status"})
            mesh_link = good["links"][0]["mesh"]
            assert mesh_link["radio_config"]["warnings"] == ["public-channel-key"]
            assert mesh_link["preset"] == "MEDIUM_FAST"
            assert good["bridge_slot_s"] == pytest.approx(6.0 - 2.156 + 0.641, abs=0.01)
            assert c.call("vr07-post", {"op": "status"})["bridge_slot_s"] == pytest.approx(6.0)
