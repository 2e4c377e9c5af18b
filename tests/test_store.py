"""The SQLite store: migrations, group commit, snapshot round trip, bounds."""

import asyncio
import sqlite3
from pathlib import Path

import pytest

from relay.engine.ops import AuditEvent, DeleteMessages, PutInbox, PutMessage, PutOutbox, PutReplay
from relay.store import SCHEMA_VERSION, Store, StoreError


def _msg(i: int, precedence: int = 2) -> PutMessage:
    return PutMessage(
        id=bytes([i]) * 32, raw=b"raw%d" % i, kid=b"kid1", signer="national", seq=i, kind=0,
        precedence=precedence, exercise=False, audience="all", issued_at=1000, expires_at=2000,
        received_at=1000.5, received_via="mqtt", origin=False,
    )  # fmt: skip


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_schema_is_created_and_versioned(tmp_path: Path) -> None:
    """Test that a new store gets the current schema version and WAL + synchronous FULL."""

    async def go() -> None:
        store = await Store.open(tmp_path / "r.db")
        assert await store.integrity_check() == "ok"
        await store.close()

    run(go())
    con = sqlite3.connect(tmp_path / "r.db")
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """Test that a database from a newer relay version is refused with a clear error."""
    con = sqlite3.connect(tmp_path / "r.db")
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(StoreError, match="schema version"):
        run(Store.open(tmp_path / "r.db"))


def test_batches_round_trip_through_a_snapshot(tmp_path: Path) -> None:
    """Test that committed batches come back in the snapshot after reopening."""

    async def go() -> None:
        store = await Store.open(tmp_path / "r.db")
        await store.apply(
            [
                (_msg(1), PutInbox(_msg(1).id, 1001.0), PutReplay(b"kid1", 1, b"\x01" * 128)),
                (_msg(2), PutOutbox(_msg(2).id, "mqtt", 0, 1002.0, True)),
                (AuditEvent(1003.0, "rejected", None, "mqtt", None, "malformed: junk"),),
            ]
        )
        await store.close()
        store = await Store.open(tmp_path / "r.db")
        snap = await store.snapshot()
        assert [m.raw for m in snap.messages] == [b"raw1", b"raw2"]
        assert snap.replay[b"kid1"] == (1, b"\x01" * 128)
        assert snap.outbox[0].link == "mqtt" and snap.outbox[0].awaiting_receipts
        assert await store.rejection_counts() == {"malformed": 1}
        assert len(await store.inbox()) == 1
        await store.close()

    run(go())


def test_failed_batch_rolls_back_whole(tmp_path: Path) -> None:
    """Test that an error inside a group commit leaves none of its batches applied."""

    async def go() -> None:
        store = await Store.open(tmp_path / "r.db")
        with pytest.raises(sqlite3.IntegrityError):
            # An outbox row for a message that does not exist violates the foreign key.
            await store.apply([(_msg(1),), (PutOutbox(b"\x09" * 32, "mqtt", 0, 1.0, False),)])
        assert (await store.stats())["messages"] == 0
        await store.close()

    run(go())


def test_evicted_messages_leave_tombstones(tmp_path: Path) -> None:
    """Test that evicted ids are remembered as tombstones and expired ones are not."""

    async def go() -> None:
        store = await Store.open(tmp_path / "r.db")
        await store.apply([(_msg(1), _msg(2))])
        await store.apply([(DeleteMessages((_msg(1).id,), tombstone=True),
                            DeleteMessages((_msg(2).id,), tombstone=False))])  # fmt: skip
        snap = await store.snapshot()
        assert list(snap.tombstones) == [_msg(1).id] and snap.messages == []
        await store.close()

    run(go())


def test_audit_log_is_bounded(tmp_path: Path) -> None:
    """Test that pruning keeps the audit log within its configured row bound."""

    async def go() -> None:
        store = await Store.open(tmp_path / "r.db", max_audit_rows=10)
        await store.apply([tuple(AuditEvent(float(i), "x") for i in range(50))])
        await store.prune_audit()
        assert (await store.stats())["audit"] == 10
        await store.close()

    run(go())
