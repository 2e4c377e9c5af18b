"""The audit log as a hash chain (relay.store.chain), its signed checkpoints, pruning; the
queries the daemon, the console and reports make of it. Verification: relay.store.verify.

Every audit row commits to the row before it (docs/store.md, "The audit chain"). The store
computes the hashes inside the group commit, on aiosqlite's thread, so the chain adds no round
trip per event; ``Store.head`` is the head of what is committed. The node signs checkpoints
(``relay.engine.status.seal_checkpoint``: a status whose ``audit`` field is ``{n, head}``) and
keeps them in ``audit_checkpoints``; its heartbeat status carries the same field, and peers keep
the latest they heard in ``peer_checkpoints``.

Pruning removes the oldest rows only up to a checkpoint it signs for the last removed row, after
checking that the removed rows chain; a ``pruned`` row in the chain records it. The checkpoint
anchors what is left, so the log stays verifiable.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from relay.store.chain import GENESIS, ZERO, Head, Walk, extend, row_hash
from relay.store.faults import StoreError, _is_fault, _store_error
from relay.store.readonly import read_only
from relay.store.verify import PAGE, ROW, ChainReport, chain_start, verify_store

# Checkpoints kept besides the oldest (the anchor of a pruned log): the newest this many.
CHECKPOINTS_KEPT = 1000

AUDIT_INSERT = "INSERT INTO audit(at,event,msg_id,link,node,detail) VALUES (?,?,?,?,?,?)"
CHAINED_INSERT = (
    "INSERT INTO audit(n,at,event,msg_id,link,node,detail,hash) VALUES (?,?,?,?,?,?,?,?)"
)
AUDIT_KEYS = ("n", "at", "event", "msg_id", "link", "node", "detail")

# The statements of schema version 2 (the chain), appended to relay.store.MIGRATIONS.
MIGRATION = """
    ALTER TABLE audit ADD COLUMN hash BLOB;
    CREATE TABLE audit_checkpoints(
        n INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        head BLOB NOT NULL,
        raw BLOB NOT NULL
    );
    CREATE TABLE peer_checkpoints(
        node TEXT PRIMARY KEY,
        n INTEGER NOT NULL,
        head BLOB NOT NULL,
        issued_at INTEGER NOT NULL,
        heard_at REAL NOT NULL,
        raw BLOB NOT NULL
    );
"""

Signer = Callable[[int, bytes, float, str], bytes]  # (n, head, now, state) -> a checkpoint


class ChainBroken(StoreError):
    """The audit chain does not verify (raised when pruning would remove the evidence)."""


def chain_legacy(conn: sqlite3.Connection, now: float) -> int:
    """Chain the rows written before schema version 2 (inside the migration's transaction).

    They are hashed in order, the first (row A, above 1 when the old log was pruned) from
    ``ZERO``, and a ``chain`` row with ``detail = legacy=A-B`` records them; the first
    checkpoint the node signs afterwards (at its next start) is their genesis checkpoint.
    Returns the number of rows chained."""
    first = conn.execute("SELECT MIN(n) FROM audit").fetchone()[0]
    if first is None:
        return 0
    head, count = Head(int(first) - 1, ZERO), 0
    select = "SELECT n, at, event, msg_id, link, node, detail FROM audit WHERE n > ? ORDER BY n"
    while page := conn.execute(f"{select} LIMIT ?", (head.n, PAGE)).fetchall():
        hashed = []
        for n, *content in page:
            h = row_hash(head.hash, n, content)
            hashed.append((h, n))
            head, count = Head(n, h), count + 1
        conn.executemany("UPDATE audit SET hash=? WHERE n=?", hashed)
    detail = f"legacy={first}-{head.n}"
    _, rows = extend(head, [(now, "chain", None, None, None, detail)])
    conn.executemany(CHAINED_INSERT, rows)
    return count


def load_head(conn: sqlite3.Connection) -> Head:
    """The committed head: the last row, or the newest checkpoint when no row is left."""
    row = conn.execute("SELECT n, hash FROM audit ORDER BY n DESC LIMIT 1").fetchone()
    if row is not None and isinstance(row[1], bytes):
        return Head(int(row[0]), row[1])
    cp = conn.execute("SELECT n, head FROM audit_checkpoints ORDER BY n DESC LIMIT 1").fetchone()
    return Head(int(cp[0]), cp[1]) if cp is not None else GENESIS


def past_foreign_rows(conn: sqlite3.Connection, head: Head) -> Head:
    """``head``, or the last row when rows were added behind the store's back (by hand, while
    the node runs): the chain goes on after them rather than the commit failing on a taken row
    number, and ``relay audit verify`` reports them. One indexed lookup per commit."""
    row = conn.execute("SELECT n, hash FROM audit ORDER BY n DESC LIMIT 1").fetchone()
    if row is None or int(row[0]) <= head.n:
        return head
    return Head(int(row[0]), row[1] if isinstance(row[1], bytes) else ZERO)


def audit_dicts(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """Audit rows selected as AUDIT_KEYS, as dicts with the message id in hex."""
    out = [dict(zip(AUDIT_KEYS, r, strict=True)) for r in rows]
    for row in out:
        row["msg_id"] = row["msg_id"].hex() if row["msg_id"] else None
    return out


async def read_audit(path: Path, uri: str, schema: int) -> list[dict[str, Any]]:
    """The whole audit log of a store, opened read-only (a stopped node's, or a copy of it).

    Rows are as ``Store.audit`` gives them. Nothing is created or migrated: a file that is not
    a relay store, or one from a newer version raises ``StoreError``. ``uri``: the file's
    read-only URI.
    """
    rows: list[dict[str, Any]] = []
    async with read_only(path, uri, schema) as db:
        while True:
            async with db.execute(
                "SELECT n, at, event, msg_id, link, node, detail FROM audit WHERE n > ? "
                "ORDER BY n LIMIT 10000",
                (rows[-1]["n"] if rows else 0,),
            ) as cur:
                page = audit_dicts(await cur.fetchall())
            if not page:
                return rows
            rows.extend(page)


# ---------------------------------------------------------------------------- the store's part


class AuditLog:
    """The audit half of ``relay.store.Store``: reading the log, checkpoints, pruning."""

    _db: aiosqlite.Connection
    path: Path
    max_audit_rows: int
    head: Head
    signer: Signer | None  # signs checkpoints (set by the daemon; pruning needs it)

    async def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        async with self._db.execute(sql, args) as cur:
            return list(await cur.fetchall())

    async def _on_thread(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn(conn)`` on aiosqlite's thread: one round trip for a whole transaction."""
        db = self._db

        def call() -> Any:
            conn = db._conn  # the sqlite3 connection: only ever touched on that thread
            try:
                return fn(conn)
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

        try:
            # aiosqlite 0.22 has no public call for "run this function on the connection's
            # thread"; ``_execute`` is what its own methods use. Checked against 0.22.1.
            return await db._execute(call)  # type: ignore[no-untyped-call]
        except sqlite3.Error as exc:
            if _is_fault(exc):  # the file or the disk, not our SQL
                raise _store_error(self.path, exc) from exc
            raise

    async def checkpoint(self, now: float, *, state: str = "online") -> bool:
        """Sign and keep a checkpoint of the committed head, unless the newest one already
        covers it or the chain is empty. True when one was written."""
        signer = self.signer
        if signer is None:
            return False

        def write(conn: sqlite3.Connection) -> bool:
            head = self.head
            newest = conn.execute("SELECT MAX(n) FROM audit_checkpoints").fetchone()[0]
            if head.n == 0 or (newest is not None and int(newest) >= head.n):
                return False
            raw = signer(head.n, head.hash, now, state)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT OR REPLACE INTO audit_checkpoints VALUES (?,?,?,?)",
                         (head.n, now, head.hash, raw))  # fmt: skip
            conn.execute(
                "DELETE FROM audit_checkpoints WHERE n > (SELECT MIN(n) FROM audit_checkpoints) "
                "AND n NOT IN (SELECT n FROM audit_checkpoints ORDER BY n DESC LIMIT ?)",
                (CHECKPOINTS_KEPT,),
            )
            conn.execute("COMMIT")
            return True

        return bool(await self._on_thread(write))

    async def prune_audit(self, now: float) -> int:
        """Keep the audit log within its row bound (oldest rows go first), anchored.

        The rows to remove must chain from the log's anchor (else ``ChainBroken``, and nothing
        is removed: they are evidence); the node signs a checkpoint of the last removed row, and
        a ``pruned`` row records the cut. Without a signer nothing is pruned. Returns the
        number of rows removed."""
        signer = self.signer
        if signer is None:
            return 0

        def prune(conn: sqlite3.Connection) -> int:
            head = self.head
            cut = head.n + 1 - self.max_audit_rows  # the pruned row makes it max_audit_rows
            first = conn.execute("SELECT MIN(n) FROM audit").fetchone()[0]
            if first is None or cut < int(first):
                return 0
            start = chain_start(conn, int(first))
            if start is None:
                raise ChainBroken(f"{self.path}: no checkpoint anchors audit row {first}")
            walk, removed = Walk(start, {}), 0
            page = f"{ROW} WHERE n > ? AND n <= ? ORDER BY n LIMIT {PAGE}"
            while rows := conn.execute(page, (walk.head.n, cut)).fetchall():
                for row in rows:
                    if not walk.step(row, lambda n: []):
                        raise ChainBroken(f"{self.path}: not pruned: {walk.problem}")
                removed += len(rows)
            anchor = walk.head
            raw = signer(anchor.n, anchor.hash, now, "online")
            new_head, chained = extend(head, [(now, "pruned", None, None, None,
                                               f"n<={anchor.n}")])  # fmt: skip
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT OR REPLACE INTO audit_checkpoints VALUES (?,?,?,?)",
                         (anchor.n, now, anchor.hash, raw))  # fmt: skip
            conn.execute("DELETE FROM audit WHERE n <= ?", (anchor.n,))
            conn.execute("DELETE FROM audit_checkpoints WHERE n < ?", (anchor.n,))
            conn.executemany(CHAINED_INSERT, chained)
            conn.execute("COMMIT")
            self.head = new_head
            return removed

        return int(await self._on_thread(prune))

    async def tail_problem(self) -> str | None:
        """A quick look for the daemon at start (not a full verify): does the newest checkpoint
        still match its row? A cut-off tail or rewritten rows are reported at once."""
        rows = await self._all(
            "SELECT c.n, c.head, a.hash FROM audit_checkpoints c LEFT JOIN audit a ON a.n = c.n "
            "ORDER BY c.n DESC LIMIT 1"
        )
        if not rows:
            return None
        n, head, stored = rows[0]
        if stored is None and n > self.head.n:
            return (f"the newest checkpoint covers rows up to {n}, the log ends at row "
                    f"{self.head.n} (truncated)")  # fmt: skip
        if stored is not None and stored != head:
            return f"the newest checkpoint, at row {n}, does not match the chain"
        return None

    async def verify_chain(self, key: Ed25519PublicKey | None) -> ChainReport:
        """Verify this store's chain on a read-only connection of its own."""
        return await verify_store(self.path, key)

    async def audit(self, since: int = 0, limit: int = 10_000) -> list[dict[str, Any]]:
        rows = await self._all(
            "SELECT n, at, event, msg_id, link, node, detail FROM audit WHERE n > ? "
            "ORDER BY n LIMIT ?",
            (since, limit),
        )
        return audit_dicts(rows)

    async def sends(self, msg_id: bytes) -> dict[str, tuple[int, float]]:
        """Per link, how often the audit log records message ``msg_id`` as sent (a transmission
        the link confirmed) and when last. Uses the audit_msg index."""
        rows = await self._all(
            "SELECT link, COUNT(*), MAX(at) FROM audit WHERE msg_id=? AND event='sent' "
            "GROUP BY link",
            (msg_id,),
        )
        return {str(link): (int(n), float(at)) for link, n, at in rows}

    async def rejection_counts(self) -> dict[str, int]:
        rows = await self._all(
            "SELECT substr(detail, 1, instr(detail, ':') - 1), COUNT(*) FROM audit "
            "WHERE event='rejected' GROUP BY 1"
        )
        return {r: c for r, c in rows}

    async def audit_of(self, msg_id: bytes, limit: int = 200) -> list[dict[str, Any]]:
        """The audit rows of one message, oldest first: its path through this node."""
        rows = await self._all(
            "SELECT n, at, event, link, node, detail FROM audit WHERE msg_id=? ORDER BY n LIMIT ?",
            (msg_id, limit),
        )
        keys = ("n", "at", "event", "link", "node", "detail")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def recent_audit(self, event: str, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` audit rows of one event type, newest first."""
        rows = await self._all(
            "SELECT n, at, event, msg_id, link, node, detail FROM audit WHERE event=? "
            "ORDER BY n DESC LIMIT ?",
            (event, limit),
        )
        return audit_dicts(rows)
