"""The store writer's group commit (relay.storewriter) on a real SQLite store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from relay.engine.ops import Persist, SetCounter
from relay.keys import SequenceCounter
from relay.store import Store
from relay.storewriter import BURST_OPS, StoreWriter


class Commits:
    """What the writer reported persisted, one list of tokens per commit."""

    def __init__(self) -> None:
        self.seen: list[list[int]] = []
        self._changed = asyncio.Event()

    def __call__(self, tokens: list[int]) -> None:
        self.seen.append(tokens)
        self._changed.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.seen) < count:
                self._changed.clear()
                await self._changed.wait()


async def _writer(tmp_path: Path, interval: float) -> tuple[StoreWriter, Commits]:
    commits = Commits()
    writer = StoreWriter(
        sequence=SequenceCounter.at(tmp_path / "node.seq"),
        clock=lambda: 1_700_000_000.0,
        log=structlog.get_logger(),
        stop=asyncio.Event(),
        persisted=commits,
        min_interval_s=interval,
    )
    writer.store = await Store.open(tmp_path / "relay.db")
    return writer, commits


def _batch(token: int, ops: int = 1) -> Persist:
    return Persist(token, tuple(SetCounter(f"c{token}.{i}", token) for i in range(ops)))


def test_batches_soon_after_a_burst_commit_share_the_next_one(tmp_path: Path) -> None:
    """Test that batches soon after a commit of BURST_OPS ops wait and share the next commit."""

    async def main() -> tuple[list[list[int]], int, dict[str, int]]:
        writer, persisted = await _writer(tmp_path, interval=60.0)
        task = asyncio.create_task(writer.run())
        writer.put(_batch(1, ops=BURST_OPS))
        await persisted.wait_for(1)  # not after 60 s: at once
        writer.put(_batch(2))
        await asyncio.sleep(0.2)
        waiting = list(persisted.seen)
        writer.put(_batch(3))
        writer.finish()  # flushes now instead of after the interval
        await asyncio.wait_for(task, 10)
        counters = (await writer.store.snapshot()).counters
        await writer.store.close()
        assert waiting == [[1]]
        return persisted.seen, writer.store.commits, counters

    persisted, commits, counters = asyncio.run(main())
    assert persisted == [[1], [2, 3]]
    assert commits == 2
    assert len(counters) == BURST_OPS + 2 and counters["c3.0"] == 3


def test_steady_small_commits_never_wait(tmp_path: Path) -> None:
    """Test that after a commit of fewer than BURST_OPS ops the next batch commits at once."""

    async def main() -> list[list[int]]:
        writer, persisted = await _writer(tmp_path, interval=60.0)
        task = asyncio.create_task(writer.run())
        for token in (1, 2):
            writer.put(_batch(token))
            await persisted.wait_for(token)
        writer.finish()
        await asyncio.wait_for(task, 10)
        await writer.store.close()
        return persisted.seen

    assert asyncio.run(main()) == [[1], [2]]
