"""The store's attestations table (added in schema version 3): migration, round trip, cascade."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from relay.engine.ops import DeleteMessages, PutAttestation, PutMessage
from relay.store import MIGRATIONS, SCHEMA_VERSION, Store


def _msg(i: int) -> PutMessage:
    return PutMessage(
        id=bytes([i]) * 32, raw=b"raw%d" % i, kid=b"kid1", signer="national", seq=i, kind=0,
        precedence=2, exercise=False, audience="all", issued_at=1000, expires_at=2000,
        received_at=1000.5, received_via="mesh", origin=False,
    )  # fmt: skip


def test_a_version_1_store_migrates_and_keeps_attestations(tmp_path: Path) -> None:
    """Test that a store of schema 1 with a message migrates to the current schema, stores
    an attestation, returns it in the snapshot and drops it with its message."""
    path = tmp_path / "r.db"
    con = sqlite3.connect(path)
    con.executescript(MIGRATIONS[0])
    con.execute("PRAGMA user_version=1")
    con.close()

    async def go() -> None:
        store = await Store.open(path)
        await store.apply([(_msg(1),)])  # a message from before the upgrade
        await store.apply([(PutAttestation(_msg(1).id, b"att", 1005.0, "mqtt"),)])
        await store.close()
        store = await Store.open(path)
        snap = await store.snapshot()
        assert snap.attestations == {_msg(1).id: b"att"}
        assert await store.attestation_of(_msg(1).id) == {
            "received_at": 1005.0,
            "via": "mqtt",
            "size": 3,
        }
        await store.apply([(DeleteMessages((_msg(1).id,), tombstone=False),)])
        assert (await store.snapshot()).attestations == {}
        assert await store.attestation_of(_msg(1).id) is None
        await store.close()

    asyncio.run(go())
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_an_attestation_and_its_message_in_one_batch(tmp_path: Path) -> None:
    """Test that an attestation adopted with its decision (one batch, listed first) commits."""

    async def go() -> None:
        store = await Store.open(tmp_path / "r.db")
        await store.apply([(PutAttestation(_msg(2).id, b"att", 1.0, "mqtt"), _msg(2))])
        assert (await store.snapshot()).attestations == {_msg(2).id: b"att"}
        await store.close()

    asyncio.run(go())
