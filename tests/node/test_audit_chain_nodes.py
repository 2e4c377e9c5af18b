"""The audit chain of real `relay run` processes: SIGKILL mid-write, checkpoints at start and
stop, and a peer holding a node to its history through the checkpoint in its signed status."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from relay import api
from relay.cli import main
from relay.drill.events import chains
from relay.keys import load_public
from relay.sim.broker import Mosquitto
from relay.sim.cluster import NodeSpec
from relay.store import ChainReport, verify_store
from tests.node.util import cluster_of, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.subprocess]


def _verify_cli(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", "audit", "verify", "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _rows(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT COUNT(*) FROM audit").fetchone()[0])
    finally:
        con.close()


def test_sigkill_mid_write_leaves_a_chain_that_verifies(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Test that a node killed with SIGKILL while it writes audit rows leaves a chain that
    verifies up to its last commit, and that its next start and stop sign for the rest."""
    with cluster_of(tmp_path, [NodeSpec("hq", (), (mosquitto.url,))]) as c:
        raws = [c.sign("national", f"Besluit {i}", to="all") for i in range(200)]
        accepted: list[str] = []

        def burst() -> None:
            for raw in raws:
                try:
                    accepted.append(c.submit("hq", raw))
                except (api.ApiError, OSError):
                    return  # the node is gone

        writer = threading.Thread(target=burst, name="burst")
        writer.start()
        wait_until(lambda: len(accepted) >= 30, 60, "submissions being written")
        c.kill("hq")  # SIGKILL, while the burst goes on
        writer.join(30)
        db = c.node_dir("hq") / "relay.db"
        assert len(accepted) < len(raws), "the burst ended before the kill"
        killed = _verify_cli(c.config_path("hq"))
        report = json.loads(killed.stdout)
        assert killed.returncode == 0, report
        assert report["ok"] and report["rows"] == _rows(db) >= len(accepted)
        # Every acknowledged submission has its rows in the verified chain.
        con = sqlite3.connect(db)
        audited = {r[0].hex() for r in con.execute("SELECT msg_id FROM audit WHERE msg_id IS "
                                                    "NOT NULL")}  # fmt: skip
        con.close()
        assert set(accepted) <= audited
        c.start("hq")
        c.wait_ready("hq", link_up=False)
        assert c.stop("hq") == 0
        after = json.loads(_verify_cli(c.config_path("hq")).stdout)
        assert after["ok"] and after["uncovered"] == 0
        assert after["latest_checkpoint"]["n"] == after["last"] >= report["last"]


def test_a_peer_holds_a_node_to_its_history(
    tmp_path: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that a node keeps the checkpoint in a peer's signed status, that it exposes a
    truncated tail of that peer even after the peer's own checkpoints were removed, and that
    `relay drill report` shows per node whether its chain verified (running and stopped)."""
    nodes = [NodeSpec("hq", (), (mosquitto.url,)), NodeSpec("vr07-utrecht", ("VR07",),
                                                            (mosquitto.url,))]  # fmt: skip
    with cluster_of(tmp_path, nodes) as c:
        for i in range(5):
            c.submit("hq", c.sign("national", f"Besluit {i}", to="all"))
        wait_until(lambda: len(c.inbox("vr07-utrecht")) == 5, 30, "the decisions")
        hq_db = c.node_dir("hq") / "relay.db"
        held_db = c.node_dir("vr07-utrecht") / "relay.db"

        def held_n() -> int:
            con = sqlite3.connect(held_db)
            try:
                row = con.execute("SELECT n FROM peer_checkpoints WHERE node='hq'").fetchone()
            finally:
                con.close()
            return int(row[0]) if row else 0

        # hq's heartbeat (every 5 s) carries its committed head, audit rows of the 5 included.
        wait_until(lambda: held_n() >= 10, 30, "hq's checkpoint held by vr07-utrecht")
        running = chains({"hq": c.socket_path("hq")})  # the node verifies its own store
        assert running["hq"]["ok"] and running["hq"]["signatures_checked"]
        c.stop("hq")
        c.stop("vr07-utrecht")
    con = sqlite3.connect(held_db)
    n, raw = con.execute("SELECT n, raw FROM peer_checkpoints WHERE node='hq'").fetchone()
    con.close()
    key = load_public(c.keys / "hq.key")
    report = asyncio.run(verify_store(hq_db, key, held=[("vr07-utrecht", raw)]))
    assert isinstance(report, ChainReport) and report.ok, report.problem
    con = sqlite3.connect(hq_db)
    con.execute("DELETE FROM audit WHERE n > ?", (n - 3,))  # the tail, and hq's own evidence
    con.execute("DELETE FROM audit_checkpoints")
    con.commit()
    con.close()
    alone = asyncio.run(verify_store(hq_db, key))
    assert alone.ok  # the node's own file cannot tell any more
    held = asyncio.run(verify_store(hq_db, key, held=[("vr07-utrecht", raw)]))
    assert held.problem is not None and "the tail is missing" in held.problem
    assert "vr07-utrecht" in held.problem
    out = tmp_path / "report"
    args = ["drill", "report", "--out", str(out), "--roster", str(c.roster_path), "--root",
            str(c.keys / "root.pub"), f"hq={hq_db}", f"vr07-utrecht={held_db}"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "FOUT / BROKEN: audit-keten / audit chain of hq: " in printed
    assert "audit chain of vr07-utrecht: in orde / verified" in printed
    doc = json.loads((out / "report.json").read_text())
    assert not doc["chains"]["hq"]["ok"] and doc["chains"]["vr07-utrecht"]["ok"]
    assert "BROKEN" in (out / "report.html").read_text()
