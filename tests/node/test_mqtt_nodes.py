"""Relay nodes as real processes over a real mosquitto: delivery, receipts, outages, crashes."""

import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import cbor2
import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from relay import cose
from relay.envelope import Audience, Decision, Envelope, Precedence, open_envelope, seal
from relay.keys import load_private
from relay.sim.broker import Mosquitto
from relay.sim.cluster import Cluster, NodeSpec
from relay.sim.faultthread import ThreadedFaultProxy
from tests.node.util import PRECEDENCES, cluster_of, inbox_ids, three_nodes, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.subprocess]

AUDIENCES = [("national", "all"), ("vr07-rbt", "region:VR07"), ("vr05-rbt", "region:VR05")]


def send_mixed(c: Cluster, n: int, rng: random.Random, via: str = "hq") -> dict[str, str]:
    """Sign and submit n decisions of mixed precedence and audience; returns id -> audience."""
    sent: dict[str, str] = {}
    for i in range(n):
        issuer, audience = rng.choice(AUDIENCES)
        raw = c.sign(issuer, f"Besluit {i}: maatregel voor {audience}", to=audience,
                     precedence=rng.choice(PRECEDENCES))  # fmt: skip
        sent[c.submit(via, raw)] = audience
    return sent


def expect_exact_inboxes(c: Cluster, sent: dict[str, str], timeout: float = 30.0) -> None:
    """Every in-audience node holds each decision exactly once; no other node shows it."""
    for node in c.specs:
        want = {i for i, aud in sent.items() if node in c.recipients(aud)}

        def have(node: str = node, want: set[str] = want) -> bool:
            return want <= set(inbox_ids(c, node))

        wait_until(have, timeout, f"{len(want)} decisions at {node}")
        ids = inbox_ids(c, node)
        assert len(ids) == len(set(ids)), f"duplicates in the inbox of {node}"
        shown = {i for i in ids if i in sent}
        assert shown == want, f"{node} shows decisions outside its audience"


def test_three_nodes_hundred_decisions_exactly_once_with_receipts(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Test that 100 mixed decisions land once in every in-audience inbox and receipts return."""
    with cluster_of(tmp_path, three_nodes(mosquitto)) as c:
        sent = send_mixed(c, 100, random.Random(1))
        expect_exact_inboxes(c, sent)
        for msg_id, audience in sent.items():
            want = set(c.recipients(audience))

            def all_signed(msg_id: str = msg_id, want: set[str] = want) -> bool:
                rows = c.message("hq", msg_id)["delivery"]
                return {r["node"] for r in rows if r["signed"]} >= want

            wait_until(all_signed, 30, f"receipts for {msg_id[:12]}")
        assert c.status("hq")["rejections"] == {}


def test_stopped_node_receives_what_was_sent_meanwhile(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Test that a node stopped for a while gets everything sent meanwhile when it returns."""
    with cluster_of(tmp_path, three_nodes(mosquitto)) as c:
        c.stop("vr07-utrecht")
        sent = send_mixed(c, 20, random.Random(2))
        time.sleep(0.5)
        c.start("vr07-utrecht")
        c.wait_ready("vr07-utrecht")
        expect_exact_inboxes(c, sent)


def test_broker_restart_loses_nothing(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    """Test that nodes ride out a broker restart (persistent broker) and nothing is lost."""
    broker = mosquitto_factory(persistence=True)
    with cluster_of(tmp_path, three_nodes(broker)) as c:
        before = send_mixed(c, 10, random.Random(3))
        broker.restart()
        after = send_mixed(c, 10, random.Random(4))
        for node in c.specs:
            c.wait_ready(node)
        expect_exact_inboxes(c, {**before, **after})


def test_blackholed_broker_is_detected_and_recovers(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Test that a silently dropped broker path is reported down (well before the keepalive
    would notice) and recovers with nothing lost; times: bench/failover.py."""
    with ThreadedFaultProxy(upstream_port=mosquitto.port) as proxy:
        specs = three_nodes(mosquitto)
        specs[1] = NodeSpec("vr07-utrecht", ("VR07",), (f"mqtt://127.0.0.1:{proxy.port}",))
        with cluster_of(tmp_path, specs) as c:
            proxy.blackhole()

            def down() -> bool:
                links = c.status("vr07-utrecht")["links"]
                return any(lk["kind"] == "mqtt" and lk["state"] == "down" for lk in links)

            wait_until(down, 10, "the link reported down")  # keepalive alone: 30-60 s
            sent = send_mixed(c, 10, random.Random(5))
            proxy.restore()
            c.wait_ready("vr07-utrecht", timeout=30)
            expect_exact_inboxes(c, sent, timeout=60)


def _kill_mid_burst(tmp_path: Path, mosquitto: Mosquitto, rounds: int) -> None:
    rng = random.Random(6)
    with cluster_of(tmp_path, three_nodes(mosquitto)) as c:
        sent: dict[str, str] = {}
        for _ in range(rounds):
            victim = "vr07-utrecht"
            burst = send_mixed(c, 15, rng)
            sent.update(burst)
            time.sleep(rng.uniform(0.0, 0.15))  # somewhere inside the burst's processing
            c.kill(victim)
            c.start(victim)
            c.wait_ready(victim)
        expect_exact_inboxes(c, sent, timeout=90)
        c.stop("vr07-utrecht")
        db = c.node_dir("vr07-utrecht") / "relay.db"
        con = sqlite3.connect(db)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = [r[0] for r in con.execute("SELECT id FROM inbox")]
        assert len(ids) == len(set(ids))
        con.close()


def test_sigkill_during_burst_loses_and_doubles_nothing(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Test that SIGKILL of a receiver mid-burst (3 times) loses nothing and doubles nothing."""
    _kill_mid_burst(tmp_path, mosquitto, rounds=3)


@pytest.mark.slow
def test_sigkill_during_burst_50_times(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Test that 50 SIGKILLs of a receiver mid-burst lose nothing and double nothing."""
    _kill_mid_burst(tmp_path, mosquitto, rounds=50)


def test_bad_input_is_rejected_with_reasons_and_counted(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Test that garbage, forgeries, replays and the like are rejected, counted, and harmless."""
    with cluster_of(tmp_path, three_nodes(mosquitto)) as c:
        good = c.sign("national", "Geldig besluit", to="all")
        env = open_envelope(good)
        assert isinstance(env, Envelope)
        now = int(time.time())
        forged = cose.sign1(env.sign1.payload, Ed25519PrivateKey.generate(), kid=env.kid)
        c.submit("hq", good)
        wait_until(lambda: len(c.inbox("vr07-utrecht")) == 1, 20, "the good decision")
        # The same issuer sequence number with different content:
        replay_of_seq = seal(
            Decision(now, now + 3600, Precedence.FLASH, Audience.all(), env.decision.seq, "Vals"),
            load_private(c.keys / "national.key"),
        )
        expired = c.sign("national", "Oud besluit", to="all", now=now - 2 * 86400,
                         lifetime_s=3600)  # fmt: skip
        stranger = seal(Decision(now, now + 3600, Precedence.FLASH, Audience.all(), 1, "x"),
                        Ed25519PrivateKey.generate())  # fmt: skip
        bad = [
            ("msg", b"\x00garbage\xff", "malformed"),
            ("msg", good[: len(good) // 2], "malformed"),
            ("msg", b"\xd2" + b"\x00" * 5000, "oversized"),
            ("msg", forged, "bad-signature"),
            ("msg", replay_of_seq, "replay"),
            ("msg", expired, "expired"),
            ("msg", stranger, "unknown-signer"),
            ("rcpt", c.sign("national", "besluit op het verkeerde topic"), "wrong-topic"),
            ("msg", cbor2.dumps({"not": "cose"}), "malformed"),
        ]
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="attacker")
        client.connect("127.0.0.1", mosquitto.port)
        client.loop_start()
        try:
            for channel, payload, _ in bad:
                client.publish(f"crisis/attacker/{channel}", payload, qos=1).wait_for_publish(5)
        finally:
            client.loop_stop()
            client.disconnect()
        want = Counter(reason for _, _, reason in bad)

        def counted() -> bool:
            got = c.status("vr07-utrecht")["rejections"]
            return all(got.get(r, 0) >= n for r, n in want.items())

        wait_until(counted, 20, f"rejections {dict(want)}")
        # Still working, and nothing already stored was lost.
        c.submit("hq", c.sign("national", "Na de aanval", to="all"))
        wait_until(lambda: len(c.inbox("vr07-utrecht")) == 2, 20, "a decision after the attack")
        assert [m["text"] for m in c.inbox("vr07-utrecht")][-1] == "Geldig besluit"


def test_clock_skew_env_shifts_the_node_clock_and_refuses_garbage() -> None:
    """Test that RELAY_CLOCK_SKEW_S shifts the daemon's clock and a non-number is refused."""
    import math
    import time

    from relay.daemon import skewed_clock

    assert skewed_clock({}) is time.time
    shifted = skewed_clock({"RELAY_CLOCK_SKEW_S": "-10800"})
    assert math.isclose(time.time() - shifted(), 10800, abs_tol=5)
    for bad in ("three hours", "nan", "inf"):
        with pytest.raises(ValueError, match="RELAY_CLOCK_SKEW_S"):
            skewed_clock({"RELAY_CLOCK_SKEW_S": bad})
