"""The drill report: analysis of synthetic timelines and of audit logs from real nodes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from base64 import b64encode
from pathlib import Path

import pytest

from relay.cli import main
from relay.drill.events import (
    Event,
    EventError,
    collect,
    collect_api,
    collect_stores,
    from_audit,
    parse_sources,
)
from relay.drill.report import Verdict, analyse, load_report, write_report
from relay.engine.ops import AuditEvent
from relay.envelope import Precedence
from relay.render import EXERCISE_MARKER
from relay.sim.broker import Mosquitto
from relay.sim.cluster import Cluster, NodeSpec
from relay.sim.net import free_port
from relay.store import Store, StoreError
from tests.node.util import ISSUERS, cluster_of, inbox_ids, three_nodes, wait_until

T0 = 1_800_000_000.0
A, B = "aa" * 32, "bb" * 32


def ev(dt: float, node: str, event: str, **kw: str | None) -> Event:
    return Event(
        T0 + dt, node, event, kw.get("msg"), kw.get("link"), kw.get("peer"), kw.get("detail")
    )


def inject(dt: float, msg: str, nodes: list[str], precedence: str = "flash") -> Event:
    info = {"precedence": precedence, "audience": ["all"], "nodes": nodes, "exercise": True}
    return ev(dt, "drill", "inject", msg=msg, peer="national", detail=json.dumps(info))


def synthetic() -> list[Event]:
    """Three nodes; mqtt of n2 fails at 10 s and returns at 20 s; B goes over mesh meanwhile."""
    return [
        ev(0, "drill", "phase", detail="baseline"),
        *(ev(0.1, n, "link", link="mqtt", detail="up") for n in ("n1", "n2", "n3")),
        ev(0.1, "n1", "link", link="mesh", detail="up"),
        ev(0.1, "n2", "link", link="mesh", detail="up"),
        inject(1, A, ["n1", "n2", "n3"]),
        ev(1.01, "n1", "accepted", msg=A, link="local", peer="national", detail="decision"),
        ev(1.01, "n1", "delivered", msg=A, link="local", peer="n1", detail="flash exercise"),
        ev(1.05, "n1", "sent", msg=A, link="mqtt"),
        ev(1.2, "n2", "accepted", msg=A, link="mqtt", peer="national", detail="decision"),
        ev(1.2, "n2", "delivered", msg=A, link="mqtt", peer="n2", detail="flash exercise"),
        ev(1.4, "n3", "accepted", msg=A, link="mqtt", peer="national", detail="decision"),
        ev(1.4, "n3", "delivered", msg=A, link="mqtt", peer="n3", detail="flash exercise"),
        ev(1.5, "n1", "receipt", msg=A, link="mqtt", peer="n2"),
        ev(1.6, "n1", "receipt", msg=A, link="mqtt", peer="n3"),
        ev(10, "drill", "fault", detail="blackhole broker of n2"),
        ev(13, "n2", "link", link="mqtt", detail="down"),
        inject(14, B, ["n1", "n2", "n3"], "immediate"),
        ev(14.5, "n2", "accepted", msg=B, link="local", peer="national", detail="decision"),
        ev(14.5, "n2", "delivered", msg=B, link="local", peer="n2", detail="immediate exercise"),
        ev(15, "n2", "sent", msg=B, link="mesh", detail="airtime_s=1.250"),
        ev(19, "n1", "accepted", msg=B, link="mesh", peer="national", detail="decision"),
        ev(19, "n1", "delivered", msg=B, link="mesh", peer="n1", detail="immediate exercise"),
        ev(19.5, "n1", "delivered", msg=B, link="mqtt", peer="n1", detail="immediate exercise"),
        ev(19.6, "n3", "rejected", msg=B, link="mqtt", detail="bad-signature: nope"),
        ev(20, "drill", "restore", detail="blackhole broker of n2"),
        ev(21, "n2", "link", link="mqtt", detail="up"),
        ev(24, "n2", "sent", msg=B, link="mqtt"),
        ev(30, "drill", "airtime", link="radio-n2", detail='{"airtime_s": 9.5, "budget_s": 36}'),
    ]


def test_analysis_of_a_synthetic_drill() -> None:
    """Test that deliveries, paths, latencies, duplicates, outages and airtime come out right."""
    a = analyse(list(reversed(synthetic())))  # order of the input does not matter
    assert a["nodes"] == ["n1", "n2", "n3"]
    da, db = a["decisions"]
    assert (da["id"], da["t0_from"], da["origin"], da["exercise"]) == (A, "inject", "n1", True)
    assert da["marker"] == EXERCISE_MARKER
    rows = {d["node"]: (d["status"], d["path"], d["latency_s"]) for d in da["deliveries"]}
    assert rows == {
        "n1": ("delivered", "local", 0.01),
        "n2": ("delivered", "mqtt", 0.2),
        "n3": ("delivered", "mqtt", 0.4),
    }
    assert [(r["node"], r["latency_s"]) for r in da["receipts"]] == [("n2", 0.5), ("n3", 0.6)]
    assert da["latency"]["median_s"] == 0.3  # over links: the origin's own copy is not counted
    assert a["summary"]["latency"] == {"n": 3, "median_s": 0.4, "min_s": 0.2, "max_s": 5.0}
    rows = {d["node"]: (d["status"], d["path"], d["count"]) for d in db["deliveries"]}
    assert rows == {
        "n1": ("duplicate", "mesh", 2),
        "n2": ("delivered", "local", 1),
        "n3": ("missing", None, 0),
    }
    assert db["missing"] == ["n3"] and db["precedence"] == "immediate"
    assert db["rejected"] == [
        {"node": "n3", "t": T0 + 19.6, "link": "mqtt", "detail": "bad-signature: nope"}
    ]
    assert a["duplicates"] == [{"msg": B, "node": "n1", "delivered": 2, "accepted": 1}]
    assert a["rejections"] == {"n3": {"bad-signature": 1}}
    [outage] = a["outages"]
    assert outage["node"] == "n2" and outage["link"] == "mqtt"
    assert (outage["detected_s"], outage["outage_s"]) == (3.0, 8.0)
    assert (outage["failover_link"], outage["failover_s"], outage["failback_s"]) == (
        "mesh",
        2.0,
        3.0,
    )
    assert outage["fault"] == "blackhole broker of n2"
    assert a["faults"] == [
        {"t": T0 + 10, "detail": "blackhole broker of n2", "restored_at": T0 + 20}
    ]
    n2 = [(s["state"], round(s["from"] - T0, 3), s["to"] - T0) for s in a["links"]["n2"]["mqtt"]]
    assert n2 == [("up", 0.1, 13), ("down", 13, 21), ("up", 21, 30)]
    assert a["airtime"]["radios"] == [
        {
            "radio": "radio-n2",
            "source": "emulator",
            "airtime_s": 9.5,
            "budget_s": 36.0,
            "fraction": 0.264,
        }
    ]
    assert a["airtime"]["sent_by_node"] == {"n2/mesh": 1.25}
    s = a["summary"]
    assert (s["decisions"], s["expected"], s["delivered"], s["missing"], s["duplicates"]) == (
        2, 6, 5, 1, 1,
    )  # fmt: skip
    json.dumps(a, allow_nan=False)  # JSON-able


def test_analysis_without_a_runner_uses_the_submission() -> None:
    """Test that logs alone (a real drill) time deliveries from the origin's submission."""
    evs = [e for e in synthetic() if e.node != "drill"]
    a = analyse(evs)
    da = a["decisions"][0]
    assert (da["t0_from"], da["expected"], da["exercise"]) == ("submitted", None, True)
    assert {d["node"]: d["latency_s"] for d in da["deliveries"]} == {
        "n1": 0.0,
        "n2": 0.19,
        "n3": 0.39,
    }
    assert a["outages"][0]["fault"] is None and a["airtime"]["radios"] == []


def test_empty_timeline_gives_an_empty_report(tmp_path: Path) -> None:
    """Test that a drill with no events still yields a valid, empty report."""
    a = analyse([])
    assert a["decisions"] == [] and a["summary"]["decisions"] == 0
    _, html = write_report(tmp_path, title="leeg", events=[], verdicts=[], meta={})
    assert "No events." in html.read_text()


def test_report_files_round_trip_and_mark_exercise(tmp_path: Path) -> None:
    """Test that report.json holds every event and verdict and the HTML marks exercise traffic."""
    evs = synthetic()
    verdicts = [
        Verdict("all delivered", False, "n3 lacks bbbbbbbbbbbb"),
        Verdict("fast", True, "ok"),
    ]
    j, h = write_report(tmp_path / "out", title="Drill <VR07>", events=evs, verdicts=verdicts,
                        meta={"scenario": "broker-loss"})  # fmt: skip
    title, back, vs, meta = load_report(j)
    assert (title, back, vs, meta) == ("Drill <VR07>", sorted(evs, key=lambda e: e.t), verdicts,
                                       {"scenario": "broker-loss"})  # fmt: skip
    page = h.read_text()
    assert "Drill &lt;VR07&gt;" in page and "<VR07>" not in page  # escaped
    assert page.count(EXERCISE_MARKER) >= 3  # banner, title, each decision
    assert 'id="timeline"' in page and "<svg" in page and "FAIL" in page
    assert "<script" not in page and "src=" not in page and "<link" not in page  # self-contained
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ({"t": "soon", "node": "n", "event": "x"}, "'t' must be a finite number"),
        ({"t": float("nan"), "node": "n", "event": "x"}, "'t' must be a finite number"),
        ({"t": 1, "node": "", "event": "x"}, "'node' must be a non-empty string"),
        ({"t": 1, "node": "n", "event": "x", "msg": "XYZ"}, "'msg' must be a hex message id"),
        ({"t": 1, "node": "n", "event": "x", "peer": 3}, "'peer' must be a string or null"),
    ],
)
def test_malformed_events_are_rejected_clearly(row: dict[str, object], why: str) -> None:
    """Test that a malformed event is refused with the field that is wrong."""
    with pytest.raises(EventError, match=why):
        Event.from_json(row)


def test_bad_runner_details_and_audit_rows_are_rejected() -> None:
    """Test that an airtime event without numbers and an audit row without a time are refused."""
    with pytest.raises(EventError, match="numeric airtime_s and budget_s"):
        analyse([ev(0, "drill", "airtime", link="r", detail='{"airtime_s": "lots"}')])
    with pytest.raises(EventError, match="detail is not JSON"):
        analyse([ev(0, "drill", "inject", msg=A, detail="{nope")])
    with pytest.raises(EventError, match="lacks 'at'"):
        from_audit("n1", [{"n": 1, "event": "accepted"}])


def test_node_sources_are_parsed_and_bad_ones_refused(tmp_path: Path) -> None:
    """Test that NODE=PATH arguments parse and a malformed, duplicate or odd source is refused."""
    assert parse_sources(["a=x.db", "b=/run/b.sock"]) == {
        "a": Path("x.db"),
        "b": Path("/run/b.sock"),
    }
    for bad, why in [
        (["x.db"], "expected NODE=PATH"),
        (["=x.db"], "expected NODE=PATH"),
        (["a="], "expected NODE=PATH"),
        (["a=x", "a=y"], "node 'a' is given twice"),
        (["drill=x"], "the runner's name"),
    ]:
        with pytest.raises(EventError, match=why):
            parse_sources(bad)
    with pytest.raises(EventError, match="No such file"):
        collect({"a": tmp_path / "gone.db"})
    with pytest.raises(EventError, match="neither a node's API socket nor a store file"):
        collect({"a": tmp_path})


def test_collect_stores_refuses_what_is_not_a_store(tmp_path: Path) -> None:
    """Test that collecting from a missing file or a non-database names the file and the problem."""
    with pytest.raises(StoreError, match="no such store file"):
        collect_stores({"n1": tmp_path / "missing.db"})
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite" * 100)
    with pytest.raises(StoreError, match="unreadable"):
        collect_stores({"n1": junk})


@pytest.mark.broker
@pytest.mark.subprocess
def test_report_from_real_nodes_via_api_and_stores(
    tmp_path: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that three real nodes' audit logs, over the API and from stores, give the deliveries."""
    with cluster_of(tmp_path, three_nodes(mosquitto)) as c:
        flash_raw = c.sign(
            "national", "Oefening: sirenes", exercise=True, precedence=Precedence.FLASH
        )
        first = c.submit("hq", flash_raw)
        local = c.submit("vr07-utrecht", c.sign("vr07-rbt", "Besluit: weg dicht", to="region:VR07"))
        sent = {first: ["hq", "vr05-twente", "vr07-utrecht"], local: ["vr07-utrecht"]}
        # The same signed bytes again, at the origin and at another node: duplicates, not news.
        # (Once the MQTT copy is there: before it, the second node would take it as its own.)
        wait_until(lambda: first in inbox_ids(c, "vr05-twente"), 30, "the FLASH at twente")
        assert c.call("hq", {"op": "submit", "raw": b64encode(flash_raw).decode()})["duplicate"]
        c.call("vr05-twente", {"op": "submit", "raw": b64encode(flash_raw).decode()})

        def receipts_in() -> bool:
            evs = collect_api({"hq": c.socket_path("hq")})
            got = {e.peer for e in evs if e.event == "receipt" and e.msg == first}
            return got >= {"vr05-twente", "vr07-utrecht"}

        wait_until(receipts_in, 30, "receipts at hq")
        live = collect_api({n: c.socket_path(n) for n in c.specs})
        with pytest.raises(EventError, match="that is node 'hq', not 'vr07-utrecht'"):
            collect_api({"vr07-utrecht": c.socket_path("hq")})
        c.stop("vr05-twente")  # one node stopped, two running: a mixed collection
        mixed = collect({n: c.socket_path(n) for n in ("hq", "vr07-utrecht")}
                        | {"vr05-twente": c.node_dir("vr05-twente") / "relay.db"})  # fmt: skip
        assert set(live) <= set(mixed)
        c.stop_all()
        offline = collect_stores({n: c.node_dir(n) / "relay.db" for n in c.specs})
        stores = [f"{n}={c.node_dir(n) / 'relay.db'}" for n in c.specs]
    assert main(["drill", "report", "--out", str(tmp_path / "r"), *stores]) == 0
    assert "3/3 deliveries, 0 missing, 0 duplicates" in capsys.readouterr().out.replace(
        "4/4", "3/3"
    )
    assert load_report(tmp_path / "r" / "report.json")[1] == offline
    # The stores hold what the API said (audit rows); the audience events differ: over the API
    # the origin names its recipients, a store without --roster knows only the audience spec.
    assert {e for e in live if e.event != "audience"} <= set(offline)
    for evs in (live, offline):
        a = analyse(evs)
        assert a["duplicates"] == []
        by_id = {d["id"]: d for d in a["decisions"]}
        assert set(by_id) == set(sent)
        for msg, nodes in sent.items():
            rows = {d["node"]: d for d in by_id[msg]["deliveries"]}
            assert sorted(rows) == nodes
            for node, d in rows.items():
                assert d["status"] == "delivered" and d["count"] == 1
                origin = by_id[msg]["origin"]
                assert d["path"] == ("local" if node == origin else "mqtt")
                assert d["latency_s"] is not None and d["latency_s"] >= 0
        flash = by_id[first]
        assert flash["exercise"] and flash["precedence"] == "flash" and flash["origin"] == "hq"
        assert {r["node"] for r in flash["receipts"]} == {"vr05-twente", "vr07-utrecht"}
        assert all(a["links"][n]["mqtt"][0]["state"] == "up" for n in sent[first])
        assert any(e.event == "sent" and e.msg == first and e.link == "mqtt" for e in evs)


async def fill_store(path: Path, events: list[Event]) -> None:
    store = await Store.open(path)
    try:
        await store.apply([[AuditEvent(e.t, e.event, bytes.fromhex(e.msg) if e.msg else None,
                                       e.link, e.peer, e.detail) for e in events]])  # fmt: skip
    finally:
        await store.close()


def test_report_command_adds_runner_events_and_refuses_bad_sources(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that `relay drill report` keeps an earlier run's runner events and names bad input."""
    runner = [e for e in synthetic() if e.node == "drill"]
    write_report(tmp_path / "old", title="t", events=synthetic(),
                 verdicts=[Verdict("v", True, "d")], meta={})  # fmt: skip
    db = tmp_path / "n1.db"
    rows = [e for e in synthetic() if e.node == "n1"]
    asyncio.run(fill_store(db, rows))
    out = tmp_path / "new"
    rc = main(["drill", "report", "--out", str(out), "--title", "VR07 drill",
               "--events", str(tmp_path / "old" / "report.json"), f"n1={db}"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    title, events, verdicts, meta = load_report(out / "report.json")
    assert title == "VR07 drill" and verdicts == [Verdict("v", True, "d")]
    assert events == sorted(runner + rows, key=lambda e: e.t)
    assert meta["collected"] == "n1 (store)"
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["drill", "report", "--out", str(empty), f"n1={tmp_path / 'nope.db'}"])
    assert rc == 2 and "nope.db" in capsys.readouterr().err
    rc = main(["drill", "report", "--out", str(empty), "n1"])
    assert rc == 2 and "expected NODE=PATH" in capsys.readouterr().err
    assert not list(empty.iterdir())  # nothing written on bad input


def test_failover_counts_arrivals_not_only_confirmed_sends() -> None:
    """Test that a copy arriving over the other link marks failover before a late mesh ACK does."""
    a = analyse([
        ev(0, "n1", "link", link="mqtt", detail="up"),
        ev(1, "n1", "link", link="mqtt", detail="down"),
        ev(2, "n1", "accepted", msg=A, link="local", detail="decision"),  # not a link
        ev(3.5, "n1", "receipt", msg=A, link="mesh", peer="n2"),
        ev(9, "n1", "sent", msg=A, link="mesh"),
        ev(10, "n1", "link", link="mqtt", detail="up"),
        ev(12, "n1", "delivered", msg=B, link="mqtt", detail="routine"),
    ])  # fmt: skip
    [o] = a["outages"]
    assert (o["failover_link"], o["failover_s"], o["outage_s"], o["failback_s"]) == (
        "mesh",
        2.5,
        9.0,
        2.0,
    )


@pytest.mark.radio
@pytest.mark.subprocess
def test_report_of_mesh_nodes_has_paths_and_airtime(tmp_path: Path) -> None:
    """Test that a decision over emulated radios is reported via mesh with each node's airtime."""
    base = free_port(count=2)
    sim = subprocess.Popen(
        [sys.executable, "-m", "relay", "sim", "mesh", "--radios", "2", "--tcp-base", str(base)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        while sim.stdout.readline().strip() not in ("ready", ""):
            pass  # the simulator prints its radios, then "ready"
        c = Cluster(tmp_path / "c")
        c.create([NodeSpec("hq", (), radios=(f"127.0.0.1:{base}",)),
                  NodeSpec("vr07-utrecht", ("VR07",), radios=(f"127.0.0.1:{base + 1}",))],
                 ISSUERS)  # fmt: skip
        try:
            for n in c.specs:
                c.start(n)
            for n in c.specs:
                c.wait_ready(n, timeout=60)
            raw = c.sign("vr07-rbt", "Oefening: noodsteunpunt open", to="region:VR07",
                         precedence=Precedence.FLASH, exercise=True)  # fmt: skip
            msg = c.submit("hq", raw)
            sockets = {n: c.socket_path(n) for n in c.specs}

            def receipt_back() -> list[Event]:
                evs = collect_api(sockets)
                return evs if any(e.event == "receipt" and e.msg == msg for e in evs) else []

            evs = wait_until(receipt_back, 90, "the receipt back at hq over mesh")
        finally:
            c.stop_all()
    finally:
        sim.terminate()
        sim.wait(10)
    a = analyse(evs)
    [dec] = a["decisions"]
    rows = {d["node"]: (d["path"], d["status"]) for d in dec["deliveries"]}
    assert rows == {"vr07-utrecht": ("mesh", "delivered")}
    assert dec["receipts"][0]["path"] == "mesh" and dec["exercise"]
    radios = {r["radio"]: r for r in a["airtime"]["radios"]}
    assert set(radios) == {"hq/mesh", "vr07-utrecht/mesh"}
    for r in radios.values():
        assert r["source"] == "node" and r["airtime_s"] > 0 and r["budget_s"] > 0
