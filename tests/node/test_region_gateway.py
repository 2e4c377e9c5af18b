"""Issue #10 item 1 with real processes: a region's only gateway serves its radio-only post.

    vr07-gw     region VR07   MQTT (a real mosquitto) + radio "gw"
    vr07-post   region VR07   radio "post" only (one emulated mesh with "gw")

An IMMEDIATE decision to region:VR07 submitted at the gateway used to go by MQTT alone, and the
post waited for minutes: nobody bridged it into the mesh.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from relay.envelope import Precedence
from relay.sim.broker import Mosquitto
from relay.sim.cluster import Cluster, MeshProcess, NodeSpec
from tests.node.util import ISSUERS, inbox_ids, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.radio, pytest.mark.subprocess]


def test_immediate_at_the_only_gateway_reaches_the_radio_only_post_once(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Test that an IMMEDIATE decision submitted at a region's only gateway reaches its
    radio-only post by mesh within 30 s, exactly once, and the post's receipt returns."""
    with MeshProcess(tmp_path / "mesh", {"VR07": ("gw", "post")}) as mesh:
        c = Cluster(tmp_path / "c")
        c.create(
            [
                NodeSpec("vr07-gw", ("VR07",), (mosquitto.url,), (mesh.radio("gw"),)),
                NodeSpec("vr07-post", ("VR07",), (), (mesh.radio("post"),)),
            ],
            ISSUERS,
        )
        try:
            for n in ("vr07-gw", "vr07-post"):
                c.start(n)
            for n in ("vr07-gw", "vr07-post"):
                c.wait_ready(n, timeout=60)

            def gw_links_up() -> bool:
                return all(lk["state"] == "up" for lk in c.status("vr07-gw")["links"])

            wait_until(gw_links_up, 60, "both links up at vr07-gw")
            raw = c.sign("vr07-rbt", "Besluit: evacuatie wijk Oost", to="region:VR07",
                         precedence=Precedence.IMMEDIATE)  # fmt: skip
            sent_at = time.monotonic()
            msg_id = c.submit("vr07-gw", raw)
            wait_until(lambda: msg_id in inbox_ids(c, "vr07-post"), 30, "the decision at the post")
            took = time.monotonic() - sent_at
            assert [m["received_via"] for m in c.inbox("vr07-post") if m["id"] == msg_id] == [
                "mesh"
            ]

            def post_signed() -> bool:
                rows = c.message("vr07-gw", msg_id)["delivery"]
                return any(r["node"] == "vr07-post" and r["signed"] for r in rows)

            wait_until(post_signed, 60, "the post's signed receipt at the gateway")
            row = next(
                r for r in c.message("vr07-gw", msg_id)["delivery"] if r["node"] == "vr07-post"
            )
            assert row["via"] == "mesh"
            delivered = [
                e
                for e in c.audit("vr07-post")
                if e["event"] == "delivered" and e["msg_id"] == msg_id
            ]
            assert len(delivered) == 1 and inbox_ids(c, "vr07-post").count(msg_id) == 1

            def sent() -> list[str]:
                return sorted(e["link"] for e in c.audit("vr07-gw") if e["event"] == "sent"
                              and e["msg_id"] == msg_id)  # fmt: skip

            # A mesh send is done when the post's radio has relayed every frame of it, often
            # after the receipt is back: its audit row comes then.
            wait_until(lambda: "mesh" in sent(), 60, "the gateway's mesh send in its audit log")
            assert sent() == ["mesh", "mqtt"]  # one copy each: no retry was needed
            # The ordinary mesh copy, not a healing answer (those wait out mesh_fresh_s, 120 s).
            assert c.status("vr07-gw")["engine"]["counters"].get("sync_pushed", 0) == 0
            print(f"decision at the post {took:.1f} s after submission")
        finally:
            c.stop_all()
