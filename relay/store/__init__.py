"""The durable store: the only module with SQL (aiosqlite).

Durability choice (see docs/store.md): WAL journal with ``synchronous=FULL``. In WAL mode FULL
syncs the WAL on every commit, so a committed transaction survives a power cut; NORMAL would only
protect against application crashes and may lose the last commits on power loss, which would break
"nothing acknowledged is lost". To keep throughput, the daemon group-commits: several engine
batches go into one transaction, and none of their held actions is released before that commit.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from relay.engine.model import Snapshot, StoredMessage
from relay.engine.ops import (
    AuditEvent,
    DeleteMessages,
    DeleteOutbox,
    PruneTombstones,
    PutAttestation,
    PutInbox,
    PutMessage,
    PutOutbox,
    PutPeerCheckpoint,
    PutReceipt,
    PutReplay,
    SetCounter,
    StoreOp,
)
from relay.store import audit
from relay.store.audit import AUDIT_INSERT, AuditLog, ChainBroken
from relay.store.chain import GENESIS, Head, extend
from relay.store.faults import (
    _MOVE_ASIDE,
    MIN_FREE_BYTES,
    StoreError,
    StoreFull,
    _check_place,
    _store_error,
)
from relay.store.readonly import read_only
from relay.store.verify import ChainReport, held_checkpoints, verify_store

__all__ = [
    "MIN_FREE_BYTES",
    "SCHEMA_VERSION",
    "ChainBroken",
    "ChainReport",
    "Head",
    "Store",
    "StoreError",
    "StoreFull",
    "held_checkpoints",
    "integrity_of",
    "plan",
    "read_audit",
    "read_held",
    "read_messages",
    "statements",
    "verify_store",
]

SCHEMA_VERSION = 3

# Each entry migrates from version i to i+1. Never edit a released entry: append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE messages(
        id BLOB PRIMARY KEY,
        raw BLOB NOT NULL,
        kid BLOB NOT NULL,
        signer TEXT NOT NULL,
        seq INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        precedence INTEGER NOT NULL,
        exercise INTEGER NOT NULL,
        audience TEXT NOT NULL,
        issued_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        received_at REAL NOT NULL,
        received_via TEXT NOT NULL,
        origin INTEGER NOT NULL
    );
    CREATE INDEX messages_expiry ON messages(expires_at);
    CREATE TABLE inbox(
        id BLOB PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        delivered_at REAL NOT NULL
    );
    CREATE TABLE outbox(
        id BLOB NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        link TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_at REAL NOT NULL,
        awaiting_receipts INTEGER NOT NULL,
        PRIMARY KEY(id, link)
    );
    CREATE TABLE receipts(
        msg_id BLOB NOT NULL,
        node TEXT NOT NULL,
        receipt_id BLOB NOT NULL,
        signed_at INTEGER NOT NULL,
        received_at REAL NOT NULL,
        via TEXT NOT NULL,
        PRIMARY KEY(msg_id, node)
    );
    CREATE TABLE replay(kid BLOB PRIMARY KEY, high INTEGER NOT NULL, bits BLOB NOT NULL);
    CREATE TABLE tombstones(id BLOB PRIMARY KEY, until REAL NOT NULL);
    CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE audit(
        n INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        event TEXT NOT NULL,
        msg_id BLOB,
        link TEXT,
        node TEXT,
        detail TEXT
    );
    CREATE INDEX audit_msg ON audit(msg_id);
    """,
    audit.MIGRATION,
    # 2 -> 3: post-quantum attestations of stored messages (relay.engine.pq)
    """
    CREATE TABLE attestations(
        msg_id BLOB PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        raw BLOB NOT NULL,
        received_at REAL NOT NULL,
        via TEXT NOT NULL
    );
    """,
)
# Python steps that run inside a migration's transaction, after its statements (by target version).
_AFTER: dict[int, Callable[[sqlite3.Connection, float], object]] = {2: audit.chain_legacy}


Statement = tuple[str, tuple[Any, ...]]

# Tables in the order their rows are written within one run of ops: a message row before the rows
# that reference it (foreign keys), everything else after.
_RANK_MESSAGES, _RANK_REST = 0, 1


def statements(op: StoreOp) -> list[Statement]:
    """The SQL statements that apply one engine op, in order."""
    match op:
        case PutMessage():
            return [
                (
                    "INSERT OR IGNORE INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        op.id, op.raw, op.kid, op.signer, op.seq, op.kind, op.precedence,
                        int(op.exercise), op.audience, op.issued_at, op.expires_at,
                        op.received_at, op.received_via, int(op.origin),
                    ),
                )
            ]  # fmt: skip
        case PutInbox():
            return [("INSERT OR IGNORE INTO inbox VALUES (?,?)", (op.id, op.at))]
        case PutOutbox():
            return [
                (
                    "INSERT OR REPLACE INTO outbox VALUES (?,?,?,?,?)",
                    (op.id, op.link, op.attempts, op.next_at, int(op.awaiting_receipts)),
                )
            ]
        case DeleteOutbox():
            return [("DELETE FROM outbox WHERE id=? AND link=?", (op.id, op.link))]
        case PutReceipt():
            return [
                (
                    "INSERT OR IGNORE INTO receipts VALUES (?,?,?,?,?,?)",
                    (op.msg_id, op.node, op.receipt_id, op.signed_at, op.received_at, op.via),
                )
            ]
        case PutReplay():
            return [("INSERT OR REPLACE INTO replay VALUES (?,?,?)", (op.kid, op.high, op.bits))]
        case SetCounter():
            return [("INSERT OR REPLACE INTO counters VALUES (?,?)", (op.name, op.value))]
        case AuditEvent():  # chained in the transaction (Store.apply)
            return [(AUDIT_INSERT, (op.at, op.event, op.msg_id, op.link, op.node, op.detail))]
        case PutPeerCheckpoint():  # the latest heard: never one with a lower row number
            return [
                (
                    "INSERT INTO peer_checkpoints VALUES (?,?,?,?,?,?) ON CONFLICT(node) DO "
                    "UPDATE SET n=excluded.n, head=excluded.head, issued_at=excluded.issued_at, "
                    "heard_at=excluded.heard_at, raw=excluded.raw WHERE excluded.n >= n",
                    (op.node, op.n, op.head, op.issued_at, op.heard_at, op.raw),
                )
            ]
        case DeleteMessages():
            out: list[Statement] = []
            for msg_id in op.ids:
                if op.tombstone:
                    out.append(
                        (
                            "INSERT OR REPLACE INTO tombstones "
                            "SELECT id, expires_at + 86400 FROM messages WHERE id=?",
                            (msg_id,),
                        )
                    )
                out.append(("DELETE FROM messages WHERE id=?", (msg_id,)))
            return out
        case PruneTombstones():
            return [("DELETE FROM tombstones WHERE until < ?", (op.before,))]
        case PutAttestation():
            return [
                (
                    "INSERT OR IGNORE INTO attestations VALUES (?,?,?,?)",
                    (op.msg_id, op.raw, op.received_at, op.via),
                )
            ]
    raise AssertionError(f"unknown store op {op!r}")


@functools.cache  # a handful of fixed statements: parse each once, not once per row
def _table(sql: str) -> str:
    words = sql.split()
    return words[words.index("INTO" if "INTO" in words else "FROM") + 1].split("(")[0]


def plan(ops: Iterable[StoreOp]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Group ops into as few ``executemany`` calls as keep the result of applying them in order.

    Deletions of messages (expiry, the size bound) are barriers: ops before and after one never mix.
    Between barriers, message rows go first (what references them needs them), then each other
    table's statements in their original order; runs of the same statement become one call. Rows of
    different tables do not depend on each other, and within a table the order is kept, so the
    transaction commits the same rows as one statement per op in order (tested).
    """
    out: list[tuple[str, list[tuple[Any, ...]]]] = []
    segment: list[tuple[int, str, int, Statement]] = []

    def flush() -> None:
        tables: dict[str, int] = {}  # each table in the order it first appears
        for _, table, _, _ in segment:
            tables.setdefault(table, len(tables))
        segment.sort(key=lambda item: (item[0], tables[item[1]], item[2]))
        for _, _, _, (sql, params) in segment:
            if out and out[-1][0] == sql:
                out[-1][1].append(params)
            else:
                out.append((sql, [params]))
        segment.clear()

    n = 0
    for op in ops:
        if isinstance(op, DeleteMessages | PruneTombstones):
            flush()
            for sql, params in statements(op):
                out.append((sql, [params]))
            continue
        for sql, params in statements(op):
            table = _table(sql)
            rank = _RANK_MESSAGES if table == "messages" else _RANK_REST
            segment.append((rank, table, n, (sql, params)))
            n += 1
    flush()
    return out


class Store(AuditLog):
    def __init__(self, db: aiosqlite.Connection, path: Path, max_audit_rows: int) -> None:
        self._db = db
        self.path = path
        self.max_audit_rows = max_audit_rows
        self.commits = 0
        self.was_empty = False
        self.head = GENESIS  # of the audit chain, as committed (relay.store.audit)
        self.signer: audit.Signer | None = None

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        max_audit_rows: int = 200_000,
        clock: Callable[[], float] = time.time,
    ) -> Store:
        """Open (or create) the store; every fault of the file or its place is a ``StoreError``
        whose message says what is wrong and what to do (``StoreFull`` for a full disk).

        A store that exists with 0 bytes is taken as empty (SQLite's rule) and ``was_empty`` is
        set, so the daemon can say so; the node's signing counter does not live here.
        """
        was_empty = _check_place(path)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise _store_error(path, exc) from exc
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=5000")
            store = cls(db, path, max_audit_rows)
            store.was_empty = was_empty
            problem = await store.integrity_check(quick=True)
            if problem != "ok":
                first = problem.splitlines()[0][:120]
                raise StoreError(f"{path}: the store is damaged ({first}): {_MOVE_ASIDE}")
            await store._migrate(clock)
            store.head = await store._on_thread(audit.load_head)
        except sqlite3.Error as exc:
            await db.close()
            raise _store_error(path, exc) from exc
        except BaseException:
            await db.close()
            raise
        return store

    async def _migrate(self, clock: Callable[[], float]) -> None:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}; this relay knows {SCHEMA_VERSION}"
            )
        for target in range(version, SCHEMA_VERSION):
            # executescript() would commit on its own: run the statements in one transaction.
            def migrate(conn: sqlite3.Connection, target: int = target) -> None:
                conn.execute("BEGIN IMMEDIATE")
                for stmt in filter(str.strip, MIGRATIONS[target].split(";")):
                    conn.execute(stmt)
                if (step := _AFTER.get(target + 1)) is not None:
                    step(conn, clock())
                conn.execute(f"PRAGMA user_version={target + 1}")
                conn.execute("COMMIT")

            await self._on_thread(migrate)

    async def close(self) -> None:
        await self._db.close()

    # ------------------------------------------------------------------ writing

    async def apply(self, batches: Sequence[Iterable[StoreOp]]) -> None:
        """Apply several engine batches in ONE transaction (group commit), durably.

        The ops become a few ``executemany`` calls (see ``plan``), and the whole transaction runs
        as ONE function on aiosqlite's thread: each call through aiosqlite is a round trip to that
        thread, which cost more than the SQL itself. Audit rows are chained there too
        (relay.store.audit); ``head`` moves only once the commit succeeded.
        """
        steps = plan(op for ops in batches for op in ops)

        def transaction(conn: sqlite3.Connection) -> None:  # runs on aiosqlite's thread
            # A failure rolls back (``_on_thread``); SQLite may have rolled back already after
            # some errors (SQLITE_FULL during COMMIT), which ``_on_thread`` allows for.
            head = self.head
            conn.execute("BEGIN IMMEDIATE")
            for sql, rows in steps:
                if sql == AUDIT_INSERT:
                    head = audit.past_foreign_rows(conn, head)
                    head, rows = extend(head, rows)
                    sql = audit.CHAINED_INSERT
                conn.executemany(sql, rows)
            conn.execute("COMMIT")
            self.head = head

        await self._on_thread(transaction)
        self.commits += 1

    # ------------------------------------------------------------------ reading

    async def snapshot(self) -> Snapshot:
        snap = Snapshot()
        for raw, via, at, origin, signer in await self._all(
            "SELECT raw, received_via, received_at, origin, signer FROM messages ORDER BY rowid"
        ):
            snap.messages.append(StoredMessage(raw, via, at, bool(origin), signer))
        snap.tombstones = dict(await self._all("SELECT id, until FROM tombstones"))
        for kid, high, bits in await self._all("SELECT kid, high, bits FROM replay"):
            snap.replay[kid] = (high, bits)
        for msg_id, link, attempts, next_at, awaiting in await self._all(
            "SELECT id, link, attempts, next_at, awaiting_receipts FROM outbox"
        ):
            snap.outbox.append(PutOutbox(msg_id, link, attempts, next_at, bool(awaiting)))
        snap.receipts = [tuple(r) for r in await self._all("SELECT msg_id, node FROM receipts")]
        snap.counters = dict(await self._all("SELECT name, value FROM counters"))
        snap.attestations = dict(await self._all("SELECT msg_id, raw FROM attestations"))
        return snap

    async def own_receipts(self, node: str) -> dict[bytes, bytes]:
        rows = await self._all("SELECT msg_id, receipt_id FROM receipts WHERE node=?", (node,))
        return {m: r for m, r in rows}

    async def inbox(self, limit: int = 1000) -> list[dict[str, Any]]:
        rows = await self._all(
            "SELECT m.id, m.raw, m.signer, m.precedence, m.exercise, m.received_at, "
            "m.received_via, i.delivered_at FROM inbox i JOIN messages m ON m.id = i.id "
            "ORDER BY i.delivered_at DESC LIMIT ?",
            (limit,),
        )
        keys = ("id", "raw", "signer", "precedence", "exercise", "received_at", "via", "at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def message(self, msg_id: bytes) -> dict[str, Any] | None:
        rows = await self._all(
            "SELECT raw, signer, received_at, received_via, origin FROM messages WHERE id=?",
            (msg_id,),
        )
        if not rows:
            return None
        raw, signer, at, via, origin = rows[0]
        receipts = await self._all(
            "SELECT node, signed_at, received_at, via FROM receipts WHERE msg_id=? ORDER BY node",
            (msg_id,),
        )
        outbox = await self._all(
            "SELECT link, attempts, next_at, awaiting_receipts FROM outbox WHERE id=?", (msg_id,)
        )
        return {
            "raw": raw,
            "signer": signer,
            "received_at": at,
            "received_via": via,
            "origin": bool(origin),
            "receipts": [
                {"node": n, "signed_at": s, "received_at": r, "via": v} for n, s, r, v in receipts
            ],
            "outbox": [
                {"link": lk, "attempts": a, "next_at": t, "awaiting_receipts": bool(w)}
                for lk, a, t, w in outbox
            ],
        }

    async def attestation_of(self, msg_id: bytes) -> dict[str, Any] | None:
        """When and how the message's ML-DSA attestation arrived (relay.engine.pq), if it did."""
        rows = await self._all(
            "SELECT received_at, via, length(raw) FROM attestations WHERE msg_id=?", (msg_id,)
        )
        return {"received_at": rows[0][0], "via": rows[0][1], "size": rows[0][2]} if rows else None

    async def find_ids(self, prefix: str) -> list[bytes]:
        """Message ids whose hex starts with ``prefix`` (operators type short ids)."""
        if not prefix or len(prefix) > 64 or any(c not in "0123456789abcdef" for c in prefix):
            return []
        lo = bytes.fromhex(prefix.ljust(64, "0"))
        hi = bytes.fromhex(prefix.ljust(64, "f"))
        return [r[0] for r in await self._all(
            "SELECT id FROM messages WHERE id BETWEEN ? AND ? LIMIT 5", (lo, hi)
        )]  # fmt: skip

    # -- for the web console (relay.api_console) --------------------------------------------

    async def sent_ids(self, kinds: Sequence[int], limit: int = 100) -> list[bytes]:
        """Ids of the messages of ``kinds`` submitted at this node, newest first."""
        marks = ",".join("?" * len(kinds))
        rows = await self._all(
            f"SELECT id FROM messages WHERE origin=1 AND kind IN ({marks}) "  # noqa: S608 - marks
            "ORDER BY received_at DESC LIMIT ?",
            (*kinds, limit),
        )
        return [r[0] for r in rows]

    async def integrity_check(self, *, quick: bool = False) -> str:
        """ "ok", or SQLite's description of the first problem (``quick``: without checking that
        indexes match their tables, linear in the file size)."""
        rows = await self._all("PRAGMA quick_check(1)" if quick else "PRAGMA integrity_check")
        return str(rows[0][0]) if rows else "no answer"

    async def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for table in ("messages", "inbox", "outbox", "receipts", "tombstones", "audit"):
            rows = await self._all(f"SELECT COUNT(*) FROM {table}")  # noqa: S608 - fixed names
            out[table] = int(rows[0][0])
        return out


async def read_audit(path: Path) -> list[dict[str, Any]]:
    """The whole audit log of a store, opened read-only (relay.store.audit.read_audit)."""
    return await audit.read_audit(path, _read_only_uri(path), SCHEMA_VERSION)


async def _select_read_only(path: Path, sql: str) -> list[Any]:
    """The rows of one SELECT on a store opened read-only, after checking its schema version."""
    uri = _read_only_uri(path)
    async with read_only(path, uri, SCHEMA_VERSION) as db, db.execute(sql) as cur:
        return list(await cur.fetchall())


async def read_messages(path: Path) -> list[dict[str, Any]]:
    """The messages a store holds, opened read-only like ``read_audit``: id (hex), kind (int),
    audience (as stored, e.g. ``region:VR07``), origin (submitted at this node) and received_at.
    Only verified messages are ever stored, so these need no second check for reporting."""
    rows = await _select_read_only(
        path, "SELECT id, kind, audience, origin, received_at FROM messages ORDER BY received_at"
    )
    return [
        {"id": i.hex(), "kind": int(k), "audience": str(a), "origin": bool(o),
         "received_at": float(t)}
        for i, k, a, o, t in rows
    ]  # fmt: skip


def _read_only_uri(path: Path) -> str:
    if not path.is_file():
        raise StoreError(f"{path}: no such store file")
    return f"{path.resolve().as_uri()}?mode=ro"


async def integrity_of(path: Path) -> str:
    """``PRAGMA integrity_check`` of a store file, opened read-only (``"ok"`` when healthy)."""
    try:
        db = await aiosqlite.connect(_read_only_uri(path), uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open read-only: {exc}") from exc
    try:
        async with db.execute("PRAGMA integrity_check") as cur:
            rows = await cur.fetchall()
        return "; ".join(str(r[0]) for r in rows) or "no answer"
    except sqlite3.DatabaseError as exc:
        return f"unreadable: {exc}"
    finally:
        await db.close()


async def read_held(path: Path) -> list[tuple[bytes, bytes, str]]:
    """``(id, raw, signer)`` of every message a store holds, opened read-only like
    ``read_audit`` (``relay cap`` resolves CAP references and exports from these)."""
    rows = await _select_read_only(path, "SELECT id, raw, signer FROM messages ORDER BY rowid")
    return [(bytes(i), bytes(r), str(s)) for i, r, s in rows]
