"""Post-quantum attestations with real processes: mesh first, the attestation later by MQTT.

vr07-gw     MQTT (a real mosquitto) + radio "gw"; the decision and its attestation are
            submitted here with `relay submit` (the attestation beside the .cose file)
vr07-post   radio "post" + MQTT through a fault proxy that is cut at first; [trust] pq =
            "require", so the decision it gets by mesh waits for its quantum-safe signature
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli import main
from relay.sim.broker import Mosquitto
from relay.sim.cluster import Cluster, MeshProcess, NodeSpec
from relay.sim.faultthread import ThreadedFaultProxy
from tests.node.util import ISSUERS, inbox_ids, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.radio, pytest.mark.subprocess]


def relay(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *map(str, args)], capture_output=True, text=True
    )


def add_pq_issuer(c: Cluster) -> None:
    """A PQ-enabled national issuer: `relay keys new --pq`, `relay roster add --pq-pub`."""
    k = c.keys
    assert main(["keys", "new", "pq-national", "--dir", str(k), "--pq"]) == 0
    args = ["roster", "add", str(c.roster_path), "--root-key", str(k / "root.key")]
    args += ["--pub", str(k / "pq-national.pub"), "--name", "pq-national", "--role", "issuer"]
    assert main([*args, "--scope", "all", "--pq-pub", str(k / "pq-national.pq.pub")]) == 0


def test_mesh_first_then_the_attestation_by_mqtt(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Test that a require node shows a decision it got by mesh as "kwantumveilige
    handtekening volgt" until its MQTT link returns and the attestation arrives by MQTT, and
    that `relay send --pq` then carries decision and attestation together."""
    proxy = ThreadedFaultProxy(upstream_port=mosquitto.port)
    proxy.start()
    try:
        proxy.cut()
        with MeshProcess(tmp_path / "mesh", {"VR07": ("gw", "post")}) as mesh:
            c = Cluster(tmp_path / "c")
            c.create(
                [
                    NodeSpec("vr07-gw", ("VR07",), (mosquitto.url,), (mesh.radio("gw"),)),
                    NodeSpec(
                        "vr07-post",
                        ("VR07",),
                        (f"mqtt://127.0.0.1:{proxy.port}",),
                        (mesh.radio("post"),),
                    ),
                ],
                ISSUERS,
            )
            add_pq_issuer(c)
            post_cfg = c.config_path("vr07-post")
            post_cfg.write_text(
                post_cfg.read_text().replace("[trust]\n", '[trust]\npq = "require"\n')
            )
            try:
                run_scenario(c, tmp_path, proxy)
            finally:
                c.stop_all()
    finally:
        proxy.stop()


def run_scenario(c: Cluster, tmp_path: Path, proxy: ThreadedFaultProxy) -> None:
    for n in ("vr07-gw", "vr07-post"):
        c.start(n)
    for n in ("vr07-gw", "vr07-post"):
        c.wait_ready(n, timeout=60)
    wait_until(
        lambda: all(lk["state"] == "up" for lk in c.status("vr07-gw")["links"]),
        60,
        "both links up at vr07-gw",
    )
    out = tmp_path / "d.cose"
    signed = relay("sign", "--key", c.keys / "pq-national.key", "--precedence", "IMMEDIATE",
                   "--to", "region:VR07", "--text", "Besluit: evacuatie wijk Oost", "-o", out,
                   "--pq")  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    assert (tmp_path / "d.cose.pq").stat().st_size == 3799
    submitted = relay("submit", "--config", c.config_path("vr07-gw"), out)
    assert submitted.returncode == 0, submitted.stderr
    msg_id = submitted.stdout.strip()
    assert "attestation submitted" in submitted.stderr
    gw = c.message("vr07-gw", msg_id)
    assert gw["pq"] == "verified" and gw["pq_attestation"]["via"] == "local"

    wait_until(lambda: msg_id in inbox_ids(c, "vr07-post"), 60, "the decision at the post")
    item = next(m for m in c.inbox("vr07-post") if m["id"] == msg_id)
    assert item["received_via"] == "mesh"
    assert (item["pq"], item["verdict"]) == ("pending", "pq-pending")
    shown = relay("status", "--config", c.config_path("vr07-post"), msg_id[:16])
    assert shown.returncode == 0, shown.stderr
    assert "kwantumveilige handtekening volgt / quantum-safe signature pending" in shown.stdout

    proxy.restore()

    def verified() -> bool:
        return bool(c.message("vr07-post", msg_id)["pq"] == "verified")

    wait_until(verified, 60, "the attestation at the post by MQTT")
    msg = c.message("vr07-post", msg_id)
    assert msg["pq_attestation"]["via"] == "mqtt"
    assert msg["pq_attestation"]["size"] == 3799
    item = next(m for m in c.inbox("vr07-post") if m["id"] == msg_id)
    assert item["verdict"] == "valid"
    events = [e for e in c.audit("vr07-post") if e["event"] == "pq-verified"]
    assert [e["msg_id"] for e in events] == [msg_id]
    status = json.loads(relay("status", "--config", c.config_path("vr07-post"), "--json").stdout)
    assert status["engine"]["pq"]["pending"] == 0
    assert status["engine"]["counters"].get("pq_wants_sent", 0) >= 1

    # With MQTT up, `relay send --pq` carries both: the attestation arrives beside the decision.
    sent = relay("send", "--config", c.config_path("vr07-gw"), "--key",
                 c.keys / "pq-national.key", "--precedence", "FLASH", "--to", "region:VR07",
                 "--text", "Besluit: opvang in de sporthal", "--pq")  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    second = sent.stdout.strip()
    wait_until(
        lambda: (
            c.message("vr07-post", second)["pq"] == "verified"
            if second in inbox_ids(c, "vr07-post")
            else False
        ),
        60,
        "the second decision and its attestation at the post",
    )
