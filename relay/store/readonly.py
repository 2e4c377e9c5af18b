"""Opening a store read-only (a stopped node's, or a copy of it): nothing created or migrated."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from relay.store.faults import StoreError


@asynccontextmanager
async def read_only(path: Path, uri: str, schema: int) -> AsyncIterator[aiosqlite.Connection]:
    """The store at ``path`` (its read-only ``uri``), once its schema version is one this code
    reads (1..``schema``); a file that is not a relay store, one from a newer version, or one
    SQLite cannot read raises ``StoreError``."""
    try:
        db = await aiosqlite.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open read-only: {exc}") from exc
    try:
        async with db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version == 0 or version > schema:
            raise StoreError(f"{path}: not a relay store this version reads (schema {version})")
        yield db
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: unreadable: {exc}") from exc
    finally:
        await db.close()
