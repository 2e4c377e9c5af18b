"""Audit chain cost in the group commit: ``Store.apply`` (rows hashed into the chain inside the
transaction) against the same transactions with the rows inserted unchained (the code before
the chain) into a second store file beside it, interleaved, in one run.

Each commit holds what accepting and delivering messages writes: per message a PutMessage, a
PutInbox and two audit rows (accepted, delivered). Prints medians per commit and the cost per
audit row, and the hashing alone (``extend``) per row. ``--json`` for machine-readable output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from relay.engine.ops import AuditEvent, PutInbox, PutMessage, StoreOp
from relay.store import Store, plan
from relay.store.chain import GENESIS, extend


def _ops(start: int, count: int) -> list[StoreOp]:
    out: list[StoreOp] = []
    for i in range(start, start + count):
        mid = i.to_bytes(32, "big")
        out += [
            PutMessage(mid, b"x" * 150, b"kid1", "national", i, 0, 2, False, "all", 1000, 9000,
                       1000.5, "mqtt", False),
            PutInbox(mid, 1000.6),
            AuditEvent(1000.5, "accepted", mid, "mqtt", "national", "decision"),
            AuditEvent(1000.6, "delivered", mid, "mqtt", "hq", "priority"),
        ]  # fmt: skip
    return out


async def _unchained(store: Store, ops: list[StoreOp]) -> None:
    """The transaction as ``Store.apply`` ran it before the chain: same plan, same thread."""
    steps = plan(ops)

    def transaction(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        for sql, rows in steps:
            conn.executemany(sql, rows)
        conn.execute("COMMIT")

    await store._on_thread(transaction)


async def measure(directory: Path, commits: int, per_commit: int) -> dict[str, Any]:
    store = await Store.open(directory / "chained.db")
    before = await Store.open(directory / "unchained.db")
    chained: list[float] = []
    plain: list[float] = []
    n = 0
    try:
        for i in range(commits):
            for kind in ("chained", "plain") if i % 2 else ("plain", "chained"):
                ops = _ops(n, per_commit)
                n += per_commit
                t0 = time.perf_counter()
                if kind == "chained":
                    await store.apply([ops])
                else:
                    await _unchained(before, ops)
                (chained if kind == "chained" else plain).append(time.perf_counter() - t0)
    finally:
        await store.close()
        await before.close()
    rows = [(1000.5, "accepted", i.to_bytes(32, "big"), "mqtt", "national", "decision")
            for i in range(10_000)]  # fmt: skip
    t0, c0 = time.perf_counter(), time.process_time()
    extend(GENESIS, rows)
    hash_us = (time.perf_counter() - t0) / len(rows) * 1e6
    hash_cpu_us = (time.process_time() - c0) / len(rows) * 1e6  # less sensitive to a busy host
    audit_rows = 2 * per_commit
    c, p = statistics.median(chained), statistics.median(plain)
    return {
        "commits": commits,
        "messages_per_commit": per_commit,
        "audit_rows_per_commit": audit_rows,
        "median_commit_ms_chained": round(c * 1e3, 3),
        "median_commit_ms_unchained": round(p * 1e3, 3),
        "ratio": round(c / p, 3),
        "extra_us_per_audit_row": round((c - p) / audit_rows * 1e6, 2),
        "hash_us_per_row": round(hash_us, 2),
        "hash_cpu_us_per_row": round(hash_cpu_us, 2),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--commits", type=int, default=100, help="commits of each kind")
    ap.add_argument("--per-commit", type=int, default=20, help="messages per commit")
    ap.add_argument("--dir", type=Path, help="where the store goes (default: a temporary dir)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        r = asyncio.run(measure(Path(tmp), args.commits, args.per_commit))
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"Audit chain in the group commit: {r['commits']} commits of each kind, "
          f"{r['messages_per_commit']} messages ({r['audit_rows_per_commit']} audit rows) "
          "each")  # fmt: skip
    print(f"{'':24} {'median ms/commit':>17}")
    print(f"{'unchained (before)':24} {r['median_commit_ms_unchained']:>17.3f}")
    print(f"{'chained (Store.apply)':24} {r['median_commit_ms_chained']:>17.3f}")
    print(f"ratio {r['ratio']}x; {r['extra_us_per_audit_row']} µs more per audit row "
          f"(hashing alone {r['hash_us_per_row']} µs per row, {r['hash_cpu_us_per_row']} µs "
          f"CPU); load {r['loadavg_1m']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
