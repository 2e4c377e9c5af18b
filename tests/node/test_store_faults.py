"""A damaged store, a read-only directory, an empty store: the node says so in one line, or
carries on without reusing its own sequence numbers (issue 11.3, docs/store.md "Faults")."""

from __future__ import annotations

import asyncio
import base64
import errno
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from relay import api
from relay.engine.ops import PutMessage
from relay.envelope import message_id
from relay.sim.broker import Mosquitto
from relay.sim.cluster import Cluster, NodeSpec
from relay.store import Store, StoreError, StoreFull
from tests.node.util import ISSUERS, cluster_of, wait_until

DEAD_BROKER = "mqtt://127.0.0.1:9"  # nothing listens: these nodes fail before their links


def _msg(i: int) -> PutMessage:
    return PutMessage(
        id=i.to_bytes(32, "big"), raw=os.urandom(600), kid=b"kid1", signer="national", seq=i,
        kind=0, precedence=2, exercise=False, audience="all", issued_at=1000, expires_at=2000,
        received_at=1000.5, received_via="mqtt", origin=False,
    )  # fmt: skip


def _filled_store(path: Path) -> None:
    """A real relay store of a few dozen pages, closed cleanly (no -wal left)."""

    async def go() -> None:
        store = await Store.open(path)
        await store.apply([tuple(_msg(i) for i in range(1, 200))])
        await store.close()

    asyncio.run(go())


def _truncate(path: Path) -> None:
    _filled_store(path)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _corrupt(path: Path) -> None:
    _filled_store(path)
    data = bytearray(path.read_bytes())
    data[4096 * 3 : 4096 * 6] = bytes(range(256)) * 48  # pages 4-6: b-tree pages with junk
    path.write_bytes(bytes(data))


def _not_sqlite(path: Path) -> None:
    path.write_text("[node]\nname = 'this is a config file, not a store'\n" * 40)


DAMAGE = {
    "truncated": (_truncate, "the store is damaged (database disk image is malformed)"),
    "corrupted": (_corrupt, "the store is damaged ("),
    "not-sqlite": (_not_sqlite, "not a relay store (not an SQLite database)"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_store_is_refused_with_advice(tmp_path: Path, damage: str) -> None:
    """Test that Store.open refuses a truncated, corrupted or foreign file with what to do."""
    make, what = DAMAGE[damage]
    path = tmp_path / "relay.db"
    make(path)
    with pytest.raises(StoreError) as info:
        asyncio.run(Store.open(path))
    text = str(info.value)
    assert text.startswith(f"{path}: ") and what in text, text
    assert "restore it from a backup, or move it aside" in text and "\n" not in text


@contextmanager
def _mount_tmpfs(where: Path, *options: str) -> Iterator[Path]:
    """A real tmpfs at ``where`` (root only here); unmounted after."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextmanager
def read_only_dir(where: Path, *, with_store: bool) -> Iterator[Path]:
    """A directory this process cannot write in: chmod 0555 for a normal user; for root (who
    ignores modes) a real read-only tmpfs."""
    if os.geteuid() != 0:
        where.mkdir()
        if with_store:
            _filled_store(where / "relay.db")
        where.chmod(0o555)
        try:
            yield where
        finally:
            where.chmod(0o755)
        return
    with _mount_tmpfs(where, "size=4m", "mode=0755") as mnt:
        if with_store:
            _filled_store(mnt / "relay.db")
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        yield mnt


@pytest.mark.parametrize("with_store", [False, True], ids=["new", "existing"])
def test_read_only_directory_is_refused_with_advice(tmp_path: Path, with_store: bool) -> None:
    """Test that a store in a read-only directory is refused with 'fix its permissions'."""
    with (
        read_only_dir(tmp_path / "ro", with_store=with_store) as d,
        pytest.raises(StoreError) as info,
    ):
        asyncio.run(Store.open(d / "relay.db"))
    assert str(info.value) == (
        f"{d / 'relay.db'}: the directory {d} is read-only for this user: fix its permissions "
        "(the node writes the store and its -wal/-shm files there)"
    )


def _move_store(c: Cluster, name: str, store: Path, sequence: Path | None = None) -> None:
    cfg = c.config_path(name)
    old = f'store = "{c.node_dir(name) / "relay.db"}"'
    text = cfg.read_text()
    assert old in text
    new = f'store = "{store}"' + (f'\nsequence = "{sequence}"' if sequence else "")
    cfg.write_text(text.replace(old, new))


def _one_node(tmp_path: Path, store: Path) -> Cluster:
    c = Cluster(tmp_path / "cluster")
    c.create([NodeSpec("vr07-utrecht", ("VR07",), (DEAD_BROKER,))], ISSUERS)
    _move_store(c, "vr07-utrecht", store, tmp_path / "node.seq")
    return c


def _relay_run(c: Cluster, name: str = "vr07-utrecht") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", "run", "--config", str(c.config_path(name))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _assert_one_line(done: subprocess.CompletedProcess[str], store: Path, what: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"relay: the node cannot start: {store}: "), lines[0]
    assert what in lines[0], lines[0]


@pytest.mark.subprocess
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_relay_run_on_a_damaged_store_says_one_line(tmp_path: Path, damage: str) -> None:
    """Test that `relay run` on a damaged store exits non-zero with one line, no traceback."""
    make, what = DAMAGE[damage]
    store = tmp_path / "store" / "relay.db"
    store.parent.mkdir()
    make(store)
    before = store.read_bytes()
    done = _relay_run(_one_node(tmp_path, store))
    _assert_one_line(done, store, what)
    assert store.read_bytes() == before, "the damaged store must be left as it was"


@pytest.mark.subprocess
def test_relay_run_in_a_read_only_directory_says_one_line(tmp_path: Path) -> None:
    """Test that `relay run` with its store in a read-only directory says so in one line."""
    with read_only_dir(tmp_path / "ro", with_store=True) as d:
        done = _relay_run(_one_node(tmp_path, d / "relay.db"))
        _assert_one_line(done, d / "relay.db", "read-only for this user: fix its permissions")


def _seq_rejections(c: Cluster, node: str) -> int:
    return int(c.status(node)["rejections"].get("replay", 0))


@pytest.mark.broker
@pytest.mark.subprocess
def test_empty_store_does_not_reset_the_signing_counter(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Test that a node restarted on a 0-byte store signs receipts peers still accept."""
    nodes = [
        NodeSpec("hq", (), (mosquitto.url,)),
        NodeSpec("vr07-utrecht", ("VR07",), (mosquitto.url,)),
    ]

    def signed_by_vr07(c: Cluster, ids: list[str]) -> bool:
        return all(
            any(r["node"] == "vr07-utrecht" and r["signed"] for r in c.message("hq", i)["delivery"])
            for i in ids
        )

    with cluster_of(tmp_path, nodes) as c:
        before = [c.submit("hq", c.sign("national", f"Besluit {i}")) for i in range(4)]
        wait_until(lambda: signed_by_vr07(c, before), 30, "vr07's receipts for the first four")
        assert c.stop("vr07-utrecht") == 0
        store = c.node_dir("vr07-utrecht") / "relay.db"
        store.write_bytes(b"")  # what the trial found: the store file emptied
        c.start("vr07-utrecht")
        c.wait_ready("vr07-utrecht")
        after = [c.submit("hq", c.sign("national", f"Besluit na {i}")) for i in range(4)]
        wait_until(lambda: signed_by_vr07(c, after), 30, "vr07's receipts after the restart")
        assert _seq_rejections(c, "hq") == 0
        assert "store_was_empty" in c.log("vr07-utrecht", tail=100_000)
        con = sqlite3.connect(store)
        seqs = [s for (s,) in con.execute("SELECT seq FROM messages WHERE origin=1")]
        con.close()
        assert min(seqs) > 4, f"own sequence numbers reused: {sorted(seqs)}"


def _fill(disk: Path) -> Path:
    """Write a ballast file until the file system says ENOSPC; returns it (delete to free)."""
    ballast = disk / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1 << 9):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return ballast


def _try_submit(c: Cluster, node: str, raw: bytes) -> dict[str, Any]:
    req = {"op": "submit", "raw": base64.b64encode(raw).decode()}
    try:
        return api.call(c.socket_path(node), req, timeout=3.0)
    except api.ApiError as exc:  # the submission caught in the failed commit waits for space
        return {"ok": False, "error": str(exc), "reason": "timeout"}


@pytest.mark.broker
@pytest.mark.subprocess
def test_disk_full_refuses_submissions_serves_the_store_and_resumes(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Test that a full disk (real tmpfs) refuses submissions as disk-full and then resumes."""
    nodes = [
        NodeSpec("hq", (), (mosquitto.url,)),
        NodeSpec("vr07-utrecht", ("VR07",), (mosquitto.url,)),
    ]
    c = Cluster(tmp_path / "cluster")
    c.create(nodes, ISSUERS)
    with _mount_tmpfs(tmp_path / "disk", "size=6m") as disk:
        _move_store(c, "hq", disk / "relay.db")
        try:
            for spec in nodes:
                c.start(spec.name)
                c.wait_ready(spec.name)
            stored = [c.submit("hq", c.sign("national", f"Besluit {i}")) for i in range(5)]
            ballast = _fill(disk)
            answers, held = [], []
            for i in range(200):  # the WAL may still have room for a few commits
                raw = c.sign("national", f"Vol {i}")
                answers.append(_try_submit(c, "hq", raw))
                if answers[-1].get("reason") == "timeout":
                    held.append(message_id(raw).hex())  # caught in the failing commit
                if answers[-1].get("reason") == "disk-full":
                    break
            refused = answers[-1]
            assert refused["ok"] is False and refused["reason"] == "disk-full", answers[-3:]
            assert refused["error"].startswith("refused: disk-full: the store cannot be written")
            st = c.status("hq")
            assert st["store_fault"]["reason"] == "disk-full" and st["store_refused"] >= 1
            assert "database or disk is full" in st["store_fault"]["detail"]
            assert set(stored) <= {m["id"] for m in c.inbox("hq")}, "stored ones still served"
            shown = subprocess.run(
                [sys.executable, "-m", "relay", "status", "--config", str(c.config_path("hq"))],
                capture_output=True, text=True, timeout=30, check=True,
            )  # fmt: skip
            assert "FOUT / ERROR: opslag niet schrijfbaar" in shown.stdout
            assert '"event": "store_full", "level": "error"' in c.log("hq", tail=100_000)
            assert c.procs["hq"].poll() is None, "the node must keep running"

            ballast.unlink()
            wait_until(lambda: c.status("hq")["store_fault"] is None, 30, "hq writable again")
            again = c.submit("hq", c.sign("national", "Besluit na de volle schijf"))
            want = {again, *held}
            wait_until(lambda: want <= {m["id"] for m in c.inbox("vr07-utrecht")}, 30, "those")
            assert "store_writable_again" in c.log("hq", tail=100_000)

            assert c.stop("hq") == 0
            ballast = _fill(disk)
            done = _relay_run(c, "hq")
            _assert_one_line(done, disk / "relay.db", "the disk is full (")
            assert "free space, then start the node again" in done.stderr
        finally:
            c.stop_all()


def test_full_database_raises_store_full_and_stays_usable(tmp_path: Path) -> None:
    """Test that SQLITE_FULL in a group commit is StoreFull, rolled back, and retryable."""

    async def go() -> None:
        store = await Store.open(tmp_path / "relay.db")
        await store.apply([(_msg(1),)])
        db = store._db  # the page limit is this test's stand-in for a full disk (no root needed)
        pages = (await (await db.execute("PRAGMA page_count")).fetchone() or (0,))[0]
        await db.execute(f"PRAGMA max_page_count={pages + 2}")
        batch = [tuple(_msg(i) for i in range(2, 60))]
        with pytest.raises(StoreFull, match="the disk is full \\(database or disk is full\\)"):
            await store.apply(batch)
        assert not db.in_transaction and (await store.stats())["messages"] == 1
        await db.execute("PRAGMA max_page_count=1073741823")
        await store.apply(batch)  # the same batches, once there is room
        assert (await store.stats())["messages"] == 59
        await store.close()

    asyncio.run(go())
