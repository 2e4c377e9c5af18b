"""The daemon's store writer: group commit of the engine's ``Persist`` batches, the inbound
acknowledgements that wait for them, the lease on the node's signing counter, and the store's
fault state while the disk is full (docs/store.md).

One task (``run``) drains every pending batch into one transaction, commits (fsync), and only
then reports the tokens persisted, which releases the held deliveries, receipts and transmits.
An acknowledgement queued behind a batch is called after that batch commits.

In a burst, commits start at most every ``min_interval_s`` (like PostgreSQL's ``commit_delay``):
when the previous commit carried at least ``BURST_OPS`` store ops, a batch that comes sooner after
its start waits the rest of that interval and goes with whatever else came meanwhile. Steady
traffic makes small commits (a decision is 1 to 8 ops; 100 decisions/s never reach 16), so it
waits nothing; a burst gets fewer, larger transactions and the store's CPU per decision falls
(bench/mqtt_throughput.py, docs/store.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Callable
from typing import Any

from relay.engine.core import SEQ_COUNTER
from relay.engine.ops import Persist, SetCounter, StoreOp
from relay.envelope import Reason
from relay.errors import CannotStart
from relay.keys import KeyError_, SequenceCounter
from relay.store import Store, StoreError, StoreFull

# The node's own signing counter is leased ahead in its file (docs/store.md): one durable write
# per this many receipts, and a restart skips at most this many numbers (well inside a peer's
# 1024-number replay window).
SEQ_LEASE = 100
STORE_RETRY_S = 1.0  # while the disk is full: how often the store writer tries again
STORE_FAULT_LOG_S = 60.0  # and how often it says so again in the log
FINISH = -1  # the token of the sentinel batch: flush and finish
BURST_OPS = 16  # a commit of at least this many ops means a burst: the next one may wait

Item = Persist | Callable[[], None]  # an engine batch, or an acknowledgement to send after it


class StoreWriter:
    """Group commit for one node. ``put`` never blocks; ``run`` is the writer task."""

    def __init__(
        self,
        *,
        sequence: SequenceCounter,
        clock: Callable[[], float],
        log: Any,  # structlog's bound logger
        stop: asyncio.Event,
        persisted: Callable[[list[int]], None],
        min_interval_s: float = 0.0,
    ) -> None:
        self.store: Store  # set once the store is open
        self.sequence = sequence
        self.clock = clock
        self.log = log
        self._stop = stop
        self._persisted = persisted
        self._items: deque[Item] = deque()
        self._wake = asyncio.Event()
        self.seq_lease = 0  # the node's counter file says at least this
        # Set while the store cannot be written (disk full): {"reason", "detail", "since"}.
        self.fault: dict[str, Any] | None = None
        self.acks_released = 0
        self._last_fault_log = 0.0
        self.min_interval_s = min_interval_s
        self._commit_started = -math.inf  # the event loop's clock
        self._burst = False  # the previous commit carried at least BURST_OPS ops
        self._flush_now = asyncio.Event()  # set by finish: no more waiting for company

    def put(self, item: Item) -> None:
        self._items.append(item)
        self._wake.set()

    def finish(self) -> None:
        """Flush what is queued (at once, not after ``min_interval_s``), then end ``run``."""
        self._flush_now.set()
        self.put(Persist(FINISH, ()))

    async def lease_sequence(self, stored: int) -> int:
        """Where the node's own signing counter starts: above every number it may have used.

        The store's counter can be behind (a store lost, emptied or restored from a backup); the
        counter file beside it is not, because the writer extends its lease before it commits a
        higher number (``_commit``). Returns the counter's current value.
        """
        path = self.sequence.path
        try:
            held = self.sequence.last()
        except KeyError_ as exc:
            raise CannotStart(str(exc)) from exc
        except OSError as exc:
            raise CannotStart(f"{path}: cannot read the node's signing counter: {exc}") from exc
        start = max(stored, held)
        if self.store.was_empty:
            self.log.warning(
                "store_was_empty",
                store=str(self.store.path),
                own_seq=start,
                hint="the store file had 0 bytes and starts empty; restore it from a backup "
                "if it held messages (the signing counter continues from its own file)",
            )
        if held > stored:
            self.log.warning("own_seq_from_counter_file", file=str(path), stored=stored, held=held)
        try:
            self.seq_lease = await asyncio.to_thread(self.sequence.reserve, start + SEQ_LEASE - 1)
        except OSError as exc:
            raise CannotStart(
                f"{path}: cannot write the node's signing counter ({exc.strerror or exc}): "
                f"fix the permissions of {path.parent} or free space (set node.sequence to move it)"
            ) from exc
        return start

    async def run(self) -> None:
        """Group commit: one transaction for everything queued, then release the tokens and
        send the inbound acknowledgements that waited for it.

        While the disk is full the batches stay here, nothing of them is released, and the
        writer tries again every ``STORE_RETRY_S`` with whatever has queued up meanwhile.
        Acknowledgements wait with them: the broker keeps those messages meanwhile.
        """
        batches: list[Persist] = []
        acks: list[Callable[[], None]] = []
        finished = False
        loop = asyncio.get_running_loop()
        while True:
            if not self._items and not batches:
                self._wake.clear()
                await self._wake.wait()
            wait = self._commit_started + self.min_interval_s - loop.time()
            if self._burst and wait > 0:
                # In a burst: what comes meanwhile goes into this commit too.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._flush_now.wait()
            while self._items:
                item = self._items.popleft()
                if not isinstance(item, Persist):
                    acks.append(item)
                elif item.token == FINISH:
                    finished = True
                else:
                    batches.append(item)
            if batches:
                self._commit_started = loop.time()
                self._burst = sum(len(b.ops) for b in batches) >= BURST_OPS
                try:
                    await self._commit(batches)
                except StoreFull as exc:
                    self._set_fault(exc)
                    if finished:  # stopping: nothing of these was acknowledged or released
                        self.log.error("stopped_with_unstored", batches=len(batches))
                        return
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(STORE_RETRY_S):
                            await self._stop.wait()
                    continue
                self._persisted([b.token for b in batches])
                batches = []
                self._clear_fault()
            # Everything queued before these acks is committed now (this transaction or an
            # earlier one: the queue is first in, first out).
            for ack in acks:
                ack()
            self.acks_released += len(acks)
            acks = []
            if finished:
                return

    async def _commit(self, batches: list[Persist]) -> None:
        ops: list[tuple[StoreOp, ...]] = [b.ops for b in batches]
        top = max(
            (
                op.value
                for b in batches
                for op in b.ops
                if isinstance(op, SetCounter) and op.name == SEQ_COUNTER
            ),
            default=0,
        )
        if top > self.seq_lease:
            # The counter file must be ahead of the store before a higher number is committed
            # (and so before any message signed with it goes out).
            try:
                self.seq_lease = await asyncio.to_thread(self.sequence.reserve, top + SEQ_LEASE - 1)
            except OSError as exc:
                raise StoreFull(f"{self.sequence.path}: cannot extend the counter: {exc}") from exc
        await self.store.apply(ops)

    def _set_fault(self, exc: StoreError) -> None:
        now = self.clock()
        fault = self.fault
        if fault is None:
            self.fault = {"reason": str(Reason.DISK_FULL), "detail": str(exc), "since": now}
            self._last_fault_log = now
            self.log.error("store_full", error=str(exc), hint="submissions are refused until "
                           "there is space; stored messages are still served")  # fmt: skip
        elif now - self._last_fault_log >= STORE_FAULT_LOG_S:
            self._last_fault_log = now
            self.log.error("store_still_full", error=str(exc), since=fault["since"])

    def _clear_fault(self) -> None:
        if self.fault is not None:
            since = self.fault["since"]
            self.fault = None
            self.log.warning("store_writable_again", full_for_s=round(self.clock() - since, 1))
