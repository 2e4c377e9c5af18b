"""Verifying a store's audit chain, read-only: every row, every checkpoint's signature, and the
checkpoints other nodes hold (docs/store.md, "The audit chain": the messages it gives)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from relay.engine.status import AuditHead, open_checkpoint
from relay.store.chain import GENESIS, ZERO, Head, Row, Walk, legacy_range
from relay.store.faults import StoreError

PAGE = 5000  # rows per read while verifying
LOOKAHEAD = 64  # rows searched for the other half of a swap
LOCAL = ZoneInfo("Europe/Amsterdam")
ROW = "SELECT n, at, event, msg_id, link, node, detail, hash FROM audit"


@dataclass(slots=True)
class ChainReport:
    """What ``verify`` found. ``problem`` is the first broken link ("NL / EN"), or None."""

    rows: int = 0
    first: int = 0
    last: int = 0
    checkpoints: int = 0
    latest: AuditHead | None = None
    # The rows written before the chain (schema 1, [first, last]), anchored by the genesis
    # checkpoint; None when there were none (or they are pruned).
    legacy: list[int] | None = None
    pruned_to: int = 0
    signatures_checked: bool = True
    problem: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def uncovered(self) -> int:
        """Rows after the newest checkpoint (written since it, or before a crash)."""
        return self.last - self.latest.n if self.latest and self.last > self.latest.n else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "first": self.first,
            "last": self.last,
            "checkpoints": self.checkpoints,
            "latest_checkpoint": None if self.latest is None
            else {"n": self.latest.n, "head": self.latest.head.hex(),
                  "issued_at": self.latest.issued_at},
            "uncovered": self.uncovered,
            "legacy": self.legacy,
            "pruned_to": self.pruned_to,
            "signatures_checked": self.signatures_checked,
            "problem": self.problem,
            "notes": list(self.notes),
        }  # fmt: skip


def chain_start(conn: sqlite3.Connection, first: int) -> Head | None:
    """Where the chain of a log whose first row is ``first`` starts: after the checkpoint of
    row ``first - 1`` (a pruned log), from ``ZERO`` when it is row 1 or the first of the rows
    the upgrade chained (``legacy=A-B`` with A = ``first``), else None (rows were removed)."""
    if first <= 1:
        return GENESIS
    cp = conn.execute("SELECT n, head FROM audit_checkpoints WHERE n=?", (first - 1,)).fetchone()
    if cp is not None:
        return Head(int(cp[0]), cp[1])
    row = conn.execute("SELECT detail FROM audit WHERE event='chain' ORDER BY n LIMIT 1").fetchone()
    if row is not None and legacy_range(row[0])[0] == first:
        return Head(first - 1, ZERO)
    return None


def _checkpoints(
    rows: Sequence[tuple[int, bytes, bytes]], key: Ed25519PublicKey | None, label: str
) -> tuple[list[AuditHead], str | None]:
    """Checkpoints (n, head, raw) whose signature and content verify, or the first bad one."""
    out: list[AuditHead] = []
    for n, head, raw in rows:
        if key is None:
            out.append(AuditHead(int(n), head, 0))
            continue
        got = open_checkpoint(raw, key)
        if isinstance(got, str):
            return out, (f"{label} bij rij {n} is ongeldig / the {label} at row {n} is not "
                         f"valid: {got}")  # fmt: skip
        if got.n != n or got.head != head:
            return out, (f"{label} bij rij {n} is gewijzigd (ondertekend: rij {got.n}) / the "
                         f"{label} at row {n} was changed (it signs row {got.n})")  # fmt: skip
        out.append(got)
    return out, None


def verify_connection(
    conn: sqlite3.Connection,
    key: Ed25519PublicKey | None,
    *,
    held: Sequence[tuple[str, bytes]] = (),
) -> ChainReport:
    """Verify the chain in an open store (one read transaction): every row, every checkpoint
    (signature by ``key``; None: links only), and ``held`` checkpoints (node, raw status)
    that other nodes keep of this one."""
    report = ChainReport(signatures_checked=key is not None)
    conn.execute("BEGIN")  # one snapshot, even while the node writes
    try:
        cps, problem = _checkpoints(
            conn.execute("SELECT n, head, raw FROM audit_checkpoints ORDER BY n").fetchall(),
            key,
            "checkpoint",
        )
        extra: list[tuple[AuditHead, str]] = []
        for label, raw in held:
            if key is None:
                break
            got = open_checkpoint(raw, key)
            if isinstance(got, str):
                report.notes.append(f"{label}: {got}")
            else:
                extra.append((got, f"checkpoint held by {label}"))
        report.checkpoints = len(cps)
        signed = [(c, "checkpoint") for c in cps] + extra
        report.latest = max(cps, key=lambda c: c.n, default=None)
        first_row = conn.execute("SELECT MIN(n), MAX(n), COUNT(*) FROM audit").fetchone()
        first, last, count = (int(first_row[0] or 0), int(first_row[1] or 0), int(first_row[2]))
        report.rows, report.first, report.last = count, first, last
        if problem is not None:
            report.problem = problem
            return report
        # The anchor's checkpoint, when there is one, is among ``cps``: its signature checked.
        start = chain_start(conn, first) if count else GENESIS
        if start is None:
            report.problem = (
                f"rijen 1-{first - 1} ontbreken en geen ondertekend checkpoint verankert rij "
                f"{first} / rows 1-{first - 1} are missing and no signed checkpoint anchors "
                f"row {first} (deleted from the start)"
            )
            return report
        anchors = {c.n: (c.head, lbl) for c, lbl in signed if c.n >= start.n}
        walk = Walk(start, anchors)

        def ahead(n: int) -> list[Row]:
            return conn.execute(f"{ROW} WHERE n > ? ORDER BY n LIMIT ?", (n, LOOKAHEAD)).fetchall()

        for row in _pages(conn, start.n):
            if not walk.step(row, ahead):
                report.problem = walk.problem
                return report
        report.pruned_to = walk.pruned_to
        report.legacy = list(walk.legacy) if walk.legacy != (0, 0) else None
        if first > 1 and walk.pruned_to != first - 1 and walk.legacy[0] != first:
            report.problem = (
                f"rijen t/m {first - 1} zijn verwijderd zonder opschoonregel / rows up to "
                f"{first - 1} were removed without a prune record (the last one says "
                f"n<={walk.pruned_to})"
            )
            return report
        beyond = max(signed, key=lambda s: s[0].n, default=None)
        if beyond is not None and beyond[0].n > walk.head.n:
            cp, label = beyond
            report.problem = (
                f"het einde ontbreekt: het {label} van {_when(cp.issued_at)} dekt rijen t/m "
                f"{cp.n}, het log eindigt bij rij {walk.head.n} / the tail is missing: the "
                f"{label} signed {_when(cp.issued_at)} covers rows up to {cp.n}, the log ends "
                f"at row {walk.head.n} (truncated)"
            )
        return report
    finally:
        conn.execute("ROLLBACK")


def _pages(conn: sqlite3.Connection, after: int) -> Iterator[Row]:
    while page := conn.execute(f"{ROW} WHERE n > ? ORDER BY n LIMIT ?", (after, PAGE)).fetchall():
        yield from page
        after = int(page[-1][0])


def _when(t: float) -> str:
    """Times for people: Europe/Amsterdam, with the date."""
    return datetime.fromtimestamp(t, LOCAL).strftime("%Y-%m-%d %H:%M:%S %Z") if t else "?"


def _verify_file(
    path: Path, key: Ed25519PublicKey | None, held: Sequence[tuple[str, bytes]]
) -> ChainReport:
    if not path.is_file():
        raise StoreError(f"{path}: no such store file")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                               isolation_level=None)  # fmt: skip
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open read-only: {exc}") from exc
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version < 2:
            raise StoreError(f"{path}: schema {version} has no audit chain (start the node once "
                             "with this relay to migrate it)")  # fmt: skip
        return verify_connection(conn, key, held=held)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: unreadable: {exc}") from exc
    finally:
        conn.close()


async def verify_store(
    path: Path, key: Ed25519PublicKey | None, *, held: Sequence[tuple[str, bytes]] = ()
) -> ChainReport:
    """Verify a store file's audit chain, opened read-only (a running node's too: WAL readers
    see the last commit). Raises ``StoreError`` when the file is not a store with a chain."""
    return await asyncio.to_thread(_verify_file, path, key, held)


async def held_checkpoints(path: Path) -> dict[str, bytes]:
    """The latest checkpoint (signed status) a store holds of each other node."""

    def read() -> dict[str, bytes]:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            if int(conn.execute("PRAGMA user_version").fetchone()[0]) < 2:
                return {}
            return dict(conn.execute("SELECT node, raw FROM peer_checkpoints").fetchall())
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: unreadable: {exc}") from exc
        finally:
            conn.close()

    return await asyncio.to_thread(read)
