"""The tamper-evident audit log: hash chain, signed checkpoints, pruning, migration, verify."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.cli import main
from relay.engine.ops import AuditEvent
from relay.engine.status import open_checkpoint, seal_checkpoint
from relay.keys import write_keypair
from relay.store import MIGRATIONS, ChainReport, Store, verify_store
from relay.store.audit import CHAINED_INSERT
from relay.store.chain import GENESIS, extend, row_hash
from relay.store.verify import verify_connection

_KEY = Ed25519PrivateKey.generate()


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def _events(count: int, start: int = 0) -> tuple[AuditEvent, ...]:
    return tuple(
        AuditEvent(1000.0 + i, "sent", bytes([i % 256]) * 32, "mqtt", None, f"airtime_s={i}")
        for i in range(start, start + count)
    )


async def _store(path: Path, key: Ed25519PrivateKey, *, max_rows: int = 200_000) -> Store:
    store = await Store.open(path, max_audit_rows=max_rows, clock=lambda: 5000.0)
    store.signer = lambda n, head, now, state: seal_checkpoint(n, head, key, now, state=state)
    return store


def _write(path: Path, key: Ed25519PrivateKey, rows: int = 20, *, checkpoint: bool = True) -> None:
    async def go() -> None:
        store = await _store(path, key)
        for i in range(0, rows, 5):  # several group commits
            await store.apply([_events(min(5, rows - i), i)])
        if checkpoint:
            assert await store.checkpoint(2000.0)
        await store.close()

    run(go())


def _verify(path: Path, key: Ed25519PrivateKey) -> ChainReport:
    report = run(verify_store(path, key.public_key()))
    assert isinstance(report, ChainReport)
    return report


def _sql(path: Path, *statements: str) -> None:
    con = sqlite3.connect(path)
    for sql in statements:
        con.execute(sql)
    con.commit()
    con.close()


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_an_untouched_chain_verifies(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Test that rows written in group commits and a checkpoint verify, hash by hash."""
    db = tmp_path / "r.db"
    _write(db, key)
    report = _verify(db, key)
    assert report.ok, report.problem
    assert (report.rows, report.first, report.last, report.checkpoints) == (20, 1, 20, 1)
    assert report.latest is not None and report.latest.n == 20 and report.uncovered == 0
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT n, at, event, msg_id, link, node, detail, hash FROM audit"
    ).fetchall()
    prev = GENESIS.hash
    for n, *content, stored in rows:  # the definition in docs/store.md, recomputed here
        assert stored == row_hash(prev, n, content)
        prev = stored
    raw = con.execute("SELECT raw FROM audit_checkpoints").fetchone()[0]
    got = open_checkpoint(raw, key.public_key())
    assert not isinstance(got, str) and (got.n, got.head) == (20, prev)


def test_an_edited_row_is_detected(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Test that one row edited with sqlite3 is reported as that row changed."""
    db = tmp_path / "r.db"
    _write(db, key)
    _sql(db, "UPDATE audit SET detail='airtime_s=0.1' WHERE n=7")
    report = _verify(db, key)
    assert not report.ok
    assert report.problem is not None and "row 7 was changed" in report.problem


def test_a_deleted_row_is_detected(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Test that one row deleted from the middle is reported as missing."""
    db = tmp_path / "r.db"
    _write(db, key)
    _sql(db, "DELETE FROM audit WHERE n=12")
    report = _verify(db, key)
    assert report.problem is not None and "row(s) 12 are missing (deleted)" in report.problem


def test_two_reordered_rows_are_detected(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Test that two rows swapped (their numbers, or their contents) are reported as reordered."""
    db = tmp_path / "r.db"
    _write(db, key)
    _sql(db, "UPDATE audit SET n=-1 WHERE n=5", "UPDATE audit SET n=5 WHERE n=9",
         "UPDATE audit SET n=9 WHERE n=-1")  # fmt: skip
    report = _verify(db, key)
    assert report.problem is not None and "rows 5 and 9 are out of order" in report.problem
    db2 = tmp_path / "r2.db"
    _write(db2, key)
    swap = (
        "UPDATE audit SET (at, event, msg_id, link, node, detail) = (SELECT at, event, "
        "msg_id, link, node, detail FROM t WHERE t.n = ?) WHERE n = ?"
    )
    con = sqlite3.connect(db2)
    con.execute("CREATE TABLE t AS SELECT * FROM audit WHERE n IN (3, 4)")
    con.execute(swap, (4, 3))
    con.execute(swap, (3, 4))
    con.commit()
    con.close()
    report = _verify(db2, key)
    assert report.problem is not None and "rows 3 and 4 are out of order" in report.problem


def test_a_truncated_tail_is_detected_by_the_checkpoint(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """Test that deleting the newest rows is caught by the latest signed checkpoint."""
    db = tmp_path / "r.db"
    _write(db, key)
    _sql(db, "DELETE FROM audit WHERE n > 16")
    report = _verify(db, key)
    assert report.problem is not None and "the tail is missing" in report.problem
    assert "covers rows up to 20, the log ends at row 16 (truncated)" in report.problem

    async def reopen() -> str | None:  # what the daemon looks at when it starts
        store = await _store(db, key)
        try:
            return await store.tail_problem()
        finally:
            await store.close()

    assert (
        run(reopen()) == "the newest checkpoint covers rows up to 20, the log ends at row 16 "
        "(truncated)"
    )


def test_rehashed_rows_do_not_match_the_signed_checkpoint(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """Test that an edit whose hashes were all recomputed still fails the signed checkpoint."""
    db = tmp_path / "r.db"
    _write(db, key)
    con = sqlite3.connect(db)
    con.execute("UPDATE audit SET detail='forged' WHERE n=3")
    prev = GENESIS.hash
    for n, *content in con.execute(
        "SELECT n, at, event, msg_id, link, node, detail FROM audit ORDER BY n"
    ).fetchall():
        prev = row_hash(prev, n, content)
        con.execute("UPDATE audit SET hash=? WHERE n=?", (prev, n))
    con.commit()
    con.close()
    report = _verify(db, key)
    assert report.problem is not None
    assert "the checkpoint at row 20 does not match the chain" in report.problem


def test_a_forged_or_altered_checkpoint_is_detected(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Test that a checkpoint signed by another key, or with its row changed, is refused."""
    db = tmp_path / "r.db"
    _write(db, key)
    other = Ed25519PrivateKey.generate()
    forged = seal_checkpoint(20, b"\x01" * 32, other, 2000.0)
    con = sqlite3.connect(db)
    con.execute("UPDATE audit_checkpoints SET raw=?", (forged,))
    con.commit()
    con.close()
    report = _verify(db, key)
    assert report.problem is not None and "the checkpoint at row 20 is not valid" in report.problem
    _sql(db, "UPDATE audit_checkpoints SET raw='text'")  # the wrong type: refused, no crash
    assert "is not valid: not a signed message (str)" in str(_verify(db, key).problem)
    _write(tmp_path / "r2.db", key)
    _sql(tmp_path / "r2.db", "UPDATE audit_checkpoints SET n=25")
    report = _verify(tmp_path / "r2.db", key)
    assert report.problem is not None and "was changed (it signs row 20)" in report.problem


def test_rows_after_the_last_checkpoint_verify_and_are_counted(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """Test that committed rows not yet checkpointed (a crash) verify and are counted."""
    db = tmp_path / "r.db"
    _write(db, key, rows=10)

    async def more() -> None:
        store = await _store(db, key)
        assert await store.tail_problem() is None
        await store.apply([_events(5, 10)])
        await store.close()

    run(more())
    report = _verify(db, key)
    assert report.ok and report.uncovered == 5 and report.last == 15


def test_pruning_keeps_the_chain_verifiable(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Test that pruning to its row bound leaves an anchored chain that verifies, and that
    deleting further from the start (or without the prune record) is still detected."""
    db = tmp_path / "r.db"

    async def go() -> None:
        store = await _store(db, key, max_rows=8)
        await store.apply([_events(20)])
        assert await store.prune_audit(3000.0) == 13
        await store.apply([_events(10, 20)])
        assert await store.prune_audit(3100.0) == 11  # 14-24: 7 + the prune row + 3
        assert (await store.stats())["audit"] == 8
        assert await store.checkpoint(3200.0)
        await store.close()

    run(go())
    report = _verify(db, key)
    assert report.ok, report.problem
    assert report.first == report.pruned_to + 1 and report.rows == 8
    con = sqlite3.connect(db)
    con.execute("DELETE FROM audit WHERE n = (SELECT MIN(n) FROM audit)")
    con.commit()
    con.close()
    report = _verify(db, key)
    assert report.problem is not None and "no signed checkpoint anchors" in report.problem


def test_rows_removed_up_to_a_checkpoint_without_pruning_are_detected(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """Test that deleting the oldest rows exactly up to a signed checkpoint, as pruning would
    but without its prune record, is still reported."""
    db = tmp_path / "r.db"
    _write(db, key, rows=10)
    _write(db, key, rows=10)  # rows 11-20, and a second checkpoint
    _sql(db, "DELETE FROM audit WHERE n <= 10")
    report = _verify(db, key)
    assert report.problem is not None
    assert "rows up to 10 were removed without a prune record" in report.problem


def test_a_row_inserted_by_hand_while_the_node_runs_is_reported_not_fatal(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """Test that the store goes on writing after a row inserted behind its back, and that
    verification names that row."""
    db = tmp_path / "r.db"

    async def go() -> None:
        store = await _store(db, key)
        await store.apply([_events(5)])
        _sql(db, "INSERT INTO audit(at, event) VALUES (1.0, 'forged')")
        await store.apply([_events(5, 5)])
        assert store.head.n == 11
        await store.close()

    run(go())
    report = _verify(db, key)
    assert report.problem is not None and "row 6 has no hash" in report.problem


def test_pruning_refuses_to_remove_a_broken_chain(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Test that pruning does not delete rows that fail to verify (they are evidence)."""
    from relay.store import ChainBroken

    db = tmp_path / "r.db"
    _write(db, key)
    _sql(db, "UPDATE audit SET event='accepted' WHERE n=2")

    async def go() -> None:
        store = await _store(db, key, max_rows=5)
        with pytest.raises(ChainBroken, match="row 2 was changed"):
            await store.prune_audit(3000.0)
        assert (await store.stats())["audit"] == 20
        await store.close()

    run(go())


def _schema_1(db: Path, rows: int, *, pruned: int = 0) -> None:
    """A store as the relay before the chain left it (rows 1..pruned removed by its pruning)."""
    con = sqlite3.connect(db)
    con.executescript(MIGRATIONS[0])
    con.executemany(
        "INSERT INTO audit(at,event,msg_id,link,node,detail) VALUES (?,?,?,?,?,?)",
        [(900.0 + i, "accepted", None, "mqtt", "national", "decision") for i in range(rows)],
    )
    con.execute("DELETE FROM audit WHERE n <= ?", (pruned,))
    con.execute("PRAGMA user_version=1")
    con.commit()
    con.close()


@pytest.mark.parametrize("pruned", [0, 3])
def test_a_schema_1_store_is_migrated_and_anchored(
    tmp_path: Path, key: Ed25519PrivateKey, pruned: int
) -> None:
    """Test that a store from before the chain (also one its old pruning had cut) gets its rows
    chained at the upgrade with a `chain` row recording them, that the genesis checkpoint then
    anchors them, and that a later change or removal of them is found."""
    db = tmp_path / "old.db"
    _schema_1(db, 6 + pruned, pruned=pruned)
    last_old = 6 + pruned

    async def go() -> None:
        store = await _store(db, key)  # migrates
        assert store.head.n == last_old + 1  # the old rows and the chain row
        assert await store.checkpoint(5001.0)  # what the daemon does first: the genesis
        await store.apply([_events(3)])
        await store.checkpoint(5002.0)
        await store.close()

    run(go())
    report = _verify(db, key)
    assert report.ok, report.problem
    assert report.legacy == [pruned + 1, last_old] and report.last == last_old + 4
    con = sqlite3.connect(db)
    row = con.execute("SELECT event, detail, at FROM audit WHERE n=?", (last_old + 1,)).fetchone()
    assert row == ("chain", f"legacy={pruned + 1}-{last_old}", 5000.0)
    con.close()
    _sql(db, f"UPDATE audit SET detail='receipt' WHERE n={pruned + 2}")  # noqa: S608 - a number
    assert f"row {pruned + 2} was changed" in str(_verify(db, key).problem)
    _sql(db, f"DELETE FROM audit WHERE n={pruned + 1}")  # noqa: S608 - a number
    assert "deleted from the start" in str(_verify(db, key).problem)


def test_a_pruned_schema_1_store_prunes_on(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Test that the chain of an upgraded store whose old log started above row 1 is anchored
    for pruning too, so its log stays bounded."""
    db = tmp_path / "old.db"
    _schema_1(db, 20, pruned=5)

    async def go() -> None:
        store = await _store(db, key, max_rows=6)
        assert await store.prune_audit(6000.0) == 11  # rows 6-16 of 6-21 (the chain row)
        assert (await store.stats())["audit"] == 6
        await store.close()

    run(go())
    assert _verify(db, key).ok


def test_relay_audit_verify_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Test that `relay audit verify --store DB --pub NODE.pub` exits 0 when ok and 1 with the
    first broken link, and refuses a missing key argument."""
    _, pub, node_key = write_keypair(tmp_path / "keys", "vr07-utrecht")
    db = tmp_path / "r.db"
    _write(db, node_key)
    cmd = [sys.executable, "-m", "relay", "audit", "verify", "--store", str(db), "--pub", str(pub)]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("in orde / ok:") and "20 rijen / rows (1-20)" in ok.stdout
    _sql(db, "DELETE FROM audit WHERE n=4")
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1
    assert bad.stdout.startswith("FOUT / BROKEN:") and "row(s) 4 are missing" in bad.stdout
    assert main(["audit", "verify", "--store", str(db)]) == 2  # in-process: no second start-up
    assert "--store DB --pub NODE.pub" in capsys.readouterr().err


_TAMPER = st.one_of(
    st.tuples(
        st.just("edit"), st.sampled_from(["at", "event", "msg_id", "link", "node", "detail"])
    ),
    st.tuples(st.just("delete"), st.just("")),
    st.tuples(st.just("swap"), st.just("")),
    st.tuples(st.just("cut"), st.just("")),
)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(2, 40),
    st.data(),
    _TAMPER,
)
def test_any_single_tampering_is_detected(
    rows: int, data: st.DataObject, tamper: tuple[str, str]
) -> None:
    """Test that one edited column, deleted row, swapped pair or cut tail anywhere in a signed
    chain is never reported as ok."""
    key = _KEY
    con = sqlite3.connect(":memory:", isolation_level=None)
    for script in MIGRATIONS:
        con.executescript(script)
    head, chained = extend(GENESIS, [
        (1000.0 + i, "sent", bytes([i]) * 32, "mqtt", f"n{i}", f"d{i}") for i in range(rows)
    ])  # fmt: skip
    con.executemany(CHAINED_INSERT, chained)
    raw = seal_checkpoint(head.n, head.hash, key, 2000.0)
    con.execute("INSERT INTO audit_checkpoints VALUES (?,?,?,?)", (head.n, 2000.0, head.hash, raw))
    assert verify_connection(con, key.public_key()).ok
    what, column = tamper
    n = data.draw(st.integers(1, rows - 1))
    if what == "edit":
        value = {"at": 1.5, "event": "x", "msg_id": b"\x00", "link": "mesh", "node": "z",
                 "detail": "changed"}[column]  # fmt: skip
        con.execute(f"UPDATE audit SET {column}=? WHERE n=?", (value, n))  # noqa: S608 - fixed names
    elif what == "delete":
        con.execute("DELETE FROM audit WHERE n=?", (n,))
    elif what == "swap":
        m = data.draw(st.integers(n + 1, rows))
        con.execute("UPDATE audit SET n=-1 WHERE n=?", (n,))
        con.execute("UPDATE audit SET n=? WHERE n=?", (n, m))
        con.execute("UPDATE audit SET n=? WHERE n=-1", (m,))
    else:
        con.execute("DELETE FROM audit WHERE n>=?", (n + 1,))
    assert not verify_connection(con, key.public_key()).ok
