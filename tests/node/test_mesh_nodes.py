"""Relay nodes as real processes over emulated radios only: the mesh path end to end."""

import subprocess
import sys
from pathlib import Path

import pytest

from relay.envelope import Precedence
from relay.sim.cluster import Cluster, NodeSpec
from relay.sim.net import free_port
from tests.node.util import ISSUERS, wait_until

pytestmark = [pytest.mark.radio, pytest.mark.subprocess]


def test_two_nodes_exchange_a_decision_and_receipt_by_mesh_only(tmp_path: Path) -> None:
    """Test that a decision reaches a mesh-only node through `relay run` and its receipt returns."""
    base = free_port(count=2)
    mesh = subprocess.Popen(
        [sys.executable, "-m", "relay", "sim", "mesh", "--radios", "2", "--tcp-base", str(base)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        out = mesh.stdout
        assert out is not None
        while out.readline().strip() not in ("ready", ""):
            pass  # the simulator prints its radios, then "ready"
        c = Cluster(tmp_path / "c")
        c.create(
            [
                NodeSpec("hq", (), radios=(f"127.0.0.1:{base}",)),
                NodeSpec("vr07-utrecht", ("VR07",), radios=(f"127.0.0.1:{base + 1}",)),
            ],
            ISSUERS,
        )
        try:
            for n in ("hq", "vr07-utrecht"):
                c.start(n)
            for n in ("hq", "vr07-utrecht"):
                c.wait_ready(n, timeout=60)
            raw = c.sign("vr07-rbt", "Besluit: noodsteunpunt open", to="region:VR07",
                         precedence=Precedence.FLASH)  # fmt: skip
            msg_id = c.submit("hq", raw)
            wait_until(lambda: [m["id"] for m in c.inbox("vr07-utrecht")] == [msg_id], 90,
                       "the decision at vr07-utrecht")  # fmt: skip
            inbox = c.inbox("vr07-utrecht")
            assert inbox[0]["received_via"] == "mesh"

            def signed() -> bool:
                rows = c.message("hq", msg_id)["delivery"]
                return any(r["node"] == "vr07-utrecht" and r["signed"] for r in rows)

            wait_until(signed, 90, "the receipt back at hq")
        finally:
            c.stop_all()
    finally:
        mesh.terminate()
        mesh.wait(10)
