"""``relay run``: the node daemon. Owns tasks, signals, the clock and the wiring; nothing else.

Shape (one pump, as aioquic's asyncio shell):

    links ──inbound──▶ input queue (bounded) ─▶ engine task ──Persist──▶ store writer
                                                   ▲   │                     │ group commit
                                                   │   └─Transmit─▶ link senders
                                                   └──── persisted / transmitted / link state

* Only the engine task calls the engine; everything else talks to it through queues.
* The store writer drains every pending batch into one transaction, commits (fsync), and only
  then reports the tokens persisted, which releases the held deliveries, receipts and transmits.
* Inbound acknowledgements (MQTT PUBACKs) travel the same way: after the engine has handled an
  inbound message, its ``ack`` joins the store queue behind whatever the engine asked to store,
  and the writer calls it after that commit. So a message is acknowledged to the broker only when
  it is durable -- or was refused, or is a duplicate of something durable or being committed
  (its batch is ahead in the same queue): nothing that the broker counts as delivered can be lost.
* Every task is created under one TaskGroup with a name. A link's own faults are handled inside
  the link with backoff; an unexpected exception anywhere ends the TaskGroup, the process exits
  non-zero and systemd restarts it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay import api, pq
from relay.airtime import BRIDGE_SLOT_LONG_FAST_S, PRESETS, bridge_slot_s
from relay.api_console import CONSOLE_OPS, console_op
from relay.backoff import equal_jitter, exponential
from relay.config import Config
from relay.engine.core import CLOCK_WARN_S, SEQ_COUNTER, Engine, EngineConfig, LinkInfo
from relay.engine.inputs import (
    EngineInput,
    LinkChanged,
    LinkRejected,
    Persisted,
    Received,
    Refused,
    StatusHeard,
    Submit,
    Transmitted,
)
from relay.engine.ops import (
    Action,
    AuditEvent,
    Deliver,
    DeliveredAt,
    Persist,
    Rejected,
    SendSummary,
    SetCounter,
    StoreOp,
    Submitted,
    Transmit,
)
from relay.engine.pq import PqConfig
from relay.engine.status import seal_status
from relay.envelope import Envelope, Precedence, Reason, Rejection, open_envelope
from relay.errors import CannotStart
from relay.keys import KeyError_, SequenceCounter, load_private, load_public
from relay.links import LinkDriver, LinkRefused, LinkUnavailable
from relay.notify import Notifier
from relay.render import as_json
from relay.rosterfile import load_trust
from relay.senders import SenderQueues, run_sender
from relay.store import Store, StoreError, StoreFull
from relay.vocab import Channel, LinkKind, LinkState

log = structlog.get_logger("relay")

INPUT_QUEUE = 10_000
SENDERS_PER_LINK = 8
LINK_RESTART_MIN_S = 1.0  # backoff after a link crashed, doubling up to the maximum
LINK_RESTART_MAX_S = 60.0
STATUS_INTERVAL_S = 5.0  # status heartbeat: peers count us cut off after 15 s of silence
PRUNE_INTERVAL_S = 300.0
# The node's own signing counter is leased ahead in its file (docs/store.md): one durable write
# per this many receipts, and a restart skips at most this many numbers (well inside a peer's
# 1024-number replay window).
SEQ_LEASE = 100
MAX_INBOX_LIMIT = 100_000  # `inbox` answers at most this many messages
MAX_SQLITE_INT = 2**63 - 1
STORE_RETRY_S = 1.0  # while the disk is full: how often the store writer tries again
STORE_FAULT_LOG_S = 60.0  # and how often it says so again in the log
STATUS_REFUSED_MIN_S = 60.0  # after a broker refused our status: pause it, doubling up to 15 min
STATUS_REFUSED_MAX_S = 900.0


@dataclass
class LinkView:
    """What the daemon knows about a link's health, for `relay status`."""

    kind: str
    state: str = "down"
    since: float = field(default_factory=time.time)  # the daemon passes its own clock's time
    detail: str = ""


class Node:
    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.log = log.bind(node=config.node)
        self._inputs: asyncio.Queue[EngineInput] = asyncio.Queue(INPUT_QUEUE)
        self._internal: deque[EngineInput] = deque()
        self._wake = asyncio.Event()
        # Engine batches, and inbound acknowledgements to send once what precedes them commits.
        self._store_batches: deque[Persist | Callable[[], None]] = deque()
        self._store_wake = asyncio.Event()
        self._send_queues = SenderQueues(logger=self.log)  # per link, bounded (relay.senders)
        self._tickets: dict[int, asyncio.Future[Submitted]] = {}
        self._next_ticket = 0
        self._audit_tokens = -1  # below the store writer's -1 sentinel: never an engine token
        self._stop = asyncio.Event()
        self.links: dict[str, LinkDriver] = {}
        self.views: dict[str, LinkView] = {}
        self.overload_drops = 0
        self.acks_released = 0
        self.link_crashes: dict[str, int] = {}
        self.link_changes: dict[str, int] = {}
        # Per link: (refusals in a row, time before which we do not publish our status again).
        self._status_refused: dict[str, tuple[int, float]] = {}
        self._clock_warned = False
        self.ready = asyncio.Event()
        self.notifier = Notifier()
        self._watchdog_at = 0.0  # monotonic time of the last WATCHDOG=1
        self.engine: Engine
        self._key: Ed25519PrivateKey
        self.store: Store
        self.sequence = SequenceCounter.at(config.sequence_file)
        self._seq_lease = 0  # the node's counter file says at least this
        # Set while the store cannot be written (disk full): {"reason", "detail", "since"}.
        self.store_fault: dict[str, Any] | None = None
        self.store_refused = 0  # submissions refused because of it
        self._last_fault_log = 0.0
        self.api_stats = api.ApiStats()
        self._roster_raw = b""

    # ------------------------------------------------------------------ wiring

    def add_link(self, driver: LinkDriver) -> None:
        self.links[driver.name] = driver
        self.views[driver.name] = LinkView(driver.kind, since=self.clock())
        self._send_queues.add_link(driver.name)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        cfg = self.config
        key: Ed25519PrivateKey = load_private(cfg.key)
        self._key = key
        trust = load_trust(cfg.roster, load_public(cfg.root))
        trust.skew_s = cfg.skew_s
        self._roster_raw = cfg.roster.read_bytes()  # verified just now; sent on if newest
        if trust.roster is not None and trust.roster.by_name(cfg.node) is None:
            self.log.warning("node_not_on_roster", hint="receipts from this node will be rejected")
        try:
            self.store = await Store.open(cfg.store)
        except StoreError as exc:
            raise CannotStart(str(exc)) from exc
        try:
            snapshot = await self.store.snapshot()
            snapshot.own_receipts = await self.store.own_receipts(cfg.node)
            snapshot.counters[SEQ_COUNTER] = await self._lease_sequence(
                snapshot.counters.get(SEQ_COUNTER, 0)
            )
            self._build_links()
            self.engine = Engine(
                EngineConfig(
                    node=cfg.node,
                    regions=cfg.regions,
                    max_messages=cfg.max_messages,
                    max_inbound_bytes=cfg.max_inbound_bytes,
                    drill_window=cfg.drill_window,
                    pq=PqConfig(policy=pq.Policy(cfg.pq)),
                    # Gateways' bridging turns cover one full frame at the slowest mesh's preset.
                    bridge_slot_s=max(
                        (bridge_slot_s(PRESETS[r.preset]) for r in cfg.radios),
                        default=BRIDGE_SLOT_LONG_FAST_S,
                    ),
                ),
                trust,
                key,
                [LinkInfo(n, LinkKind(d.kind)) for n, d in self.links.items()],
                snapshot,
            )
            self.log.info(
                "started",
                messages=len(snapshot.messages),
                outbox=len(snapshot.outbox),
                links=list(self.links),
                roster_serial=trust.roster.serial if trust.roster else None,
                store=str(cfg.store),  # relative paths: docs/config.md, Paths
                presets={r.name: r.preset for r in cfg.radios},
                own_seq=snapshot.counters[SEQ_COUNTER],
            )
            await self._run_tasks()
        finally:
            await self.store.close()
            self.log.info("stopped")

    async def _lease_sequence(self, stored: int) -> int:
        """Where the node's own signing counter starts: above every number it may have used.

        The store's counter can be behind (a store lost, emptied or restored from a backup); the
        counter file beside it is not, because the store writer extends its lease before it
        commits a higher number (``_store_writer``). Returns the counter's current value.
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
            self._seq_lease = await asyncio.to_thread(self.sequence.reserve, start + SEQ_LEASE - 1)
        except OSError as exc:
            raise CannotStart(
                f"{path}: cannot write the node's signing counter ({exc.strerror or exc}): "
                f"fix the permissions of {path.parent} or free space (set node.sequence to move it)"
            ) from exc
        return start

    def _build_links(self) -> None:
        if self.config.mqtt is not None:
            from relay.links.mqtt_driver import MqttDriver

            self.add_link(MqttDriver(self, self.config))
        if self.config.radios:
            from relay.links.mesh_driver import MeshDriver

            for radio in self.config.radios:
                self.add_link(MeshDriver(self, radio))

    async def _run_tasks(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        api_ready = asyncio.Event()
        path = self.config.api_socket
        try:
            sock = api.bind_socket(path)
        except api.SocketPathTooLong as exc:
            raise CannotStart(
                f"{path}: cannot create the API socket ({exc}): set api.socket to a shorter path"
            ) from exc
        except OSError as exc:
            raise CannotStart(
                f"{path}: cannot create the API socket ({exc.strerror or exc}): fix the "
                f"permissions of {path.parent} or set api.socket"
            ) from exc
        serving = api.serve(path, self._api, api_ready, sock=sock, stats=self.api_stats)
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(self._store_writer(), name="store-writer")
            workers = [
                tg.create_task(self._engine_loop(), name="engine"),
                tg.create_task(serving, name="api"),
                tg.create_task(self._housekeeping(), name="housekeeping"),
            ]
            if self.config.metrics_listen is not None:
                from relay import metrics

                host, port = self.config.metrics_listen
                workers.append(
                    tg.create_task(metrics.serve(host, port, self.status), name="metrics")
                )
            for name, driver in self.links.items():
                workers.append(
                    tg.create_task(self._supervise_link(name, driver), name=f"link-{name}")
                )
                workers += [
                    tg.create_task(self._sender(name, flash=False), name=f"send-{name}-{i}")
                    for i in range(SENDERS_PER_LINK)
                ]
                workers.append(tg.create_task(self._sender(name, flash=True), name=f"flash-{name}"))
            await api_ready.wait()
            self.ready.set()
            # systemd (Type=notify): the links' tasks are started and the API answers.
            self.notifier.ready(f"links {', '.join(self.links)}")
            await self._stop.wait()
            self.log.info("stopping")
            self.notifier.stopping()
            for task in workers:
                task.cancel()
            self._store_batches.append(Persist(-1, ()))  # sentinel: flush and finish
            self._store_wake.set()
            await writer

    async def _supervise_link(self, name: str, driver: LinkDriver) -> None:
        """Run one link; when it crashes (raises, or returns while the node runs), log the error
        with its traceback, count it, report the link down and restart it with jittered backoff.

        Links supervise their own connections; this catches bugs in a link, so one bad frame
        path cannot silently leave a node without its link while the rest keeps running.
        """
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            began = loop.time()
            try:
                await driver.run()
                error = "the link's run() returned"
            except Exception as exc:  # a link's bug must not end the node
                error = f"{type(exc).__name__}: {exc}"
                self.log.error("link_crashed", link=name, error=error, exc_info=exc)
            else:
                self.log.error("link_crashed", link=name, error=error)
            self.link_crashes[name] = self.link_crashes.get(name, 0) + 1
            self.link_state(name, "down", f"crashed: {error}")
            if loop.time() - began > LINK_RESTART_MAX_S:
                attempt = 0  # it ran well for a while: start backoff afresh
            await asyncio.sleep(
                equal_jitter(attempt, base=LINK_RESTART_MIN_S, cap=LINK_RESTART_MAX_S)
            )
            attempt += 1

    # ------------------------------------------------------------------ inputs from links

    def link_received(
        self,
        link: str,
        raw: bytes,
        *,
        channel: str,
        peer: str,
        ack: Callable[[], None] | None = None,
    ) -> None:
        """Called by a link driver on the event loop. Never blocks: drops and counts when the
        engine is this far behind. A dropped message is not acknowledged: an MQTT broker keeps
        it for us; a mesh sender retries until our receipt arrives."""
        try:
            self._inputs.put_nowait(Received(link, raw, Channel(channel), peer, ack))
        except asyncio.QueueFull:
            self.overload_drops += 1
            self.log.warning("inbound_dropped_overload", link=link, queue=INPUT_QUEUE)
        self._wake.set()

    def link_rejected(self, link: str, reason: Any, detail: str) -> None:
        self._internal.append(LinkRejected(link, reason, detail))
        self._wake.set()

    def link_state(self, link: str, state: str, detail: str = "") -> None:
        view = self.views[link]
        if view.state != state:
            self.log.info("link_state", link=link, state=state, was=view.state, detail=detail)
            self.link_changes[link] = self.link_changes.get(link, 0) + 1
            view.state, view.since, view.detail = state, self.clock(), detail
        self._internal.append(LinkChanged(link, LinkState(state)))
        self._wake.set()

    def peer_status(self, peer: str, raw: bytes, *, link: str = "mqtt") -> None:
        """A status from ``peer``'s status topic: the engine verifies it (signed by that roster
        node) before the peer counts as heard. Bounded like any other input."""
        try:
            self._inputs.put_nowait(StatusHeard(link, peer, raw))
        except asyncio.QueueFull:
            self.overload_drops += 1
            self.log.warning("inbound_dropped_overload", link=link, queue=INPUT_QUEUE)
        self._wake.set()

    def sign_status(self, status: dict[str, Any]) -> bytes:
        """Our status signed with the node key (relay.engine.status), with our clock's time."""
        return seal_status({"time": self.clock(), **status}, self._key, self.clock())

    @property
    def peers(self) -> dict[str, dict[str, Any]]:
        """Accepted statuses by node (bounded by the engine's peer table)."""
        return self.engine.peer_statuses

    # ------------------------------------------------------------------ the engine task

    async def _engine_loop(self) -> None:
        engine = self.engine
        for name in self.links:
            self._dispatch(engine.link_state(name, LinkState.DOWN, self.clock()))
        self._dispatch(engine.roster_file(self._roster_raw, self.clock()))
        while True:
            self._pet_watchdog()
            now = self.clock()
            self._dispatch(engine.timer(now))
            timeout = max(0.0, min(engine.next_deadline() - now, 1.0))
            # While the store cannot be written, inputs wait in their bounded queue (a link's
            # sender retries what overflows; submissions are refused at the API).
            held = self.store_fault is not None
            if not self._internal and (held or self._inputs.empty()):
                self._wake.clear()
                # asyncio.timeout rather than wait_for: no task is created for every wait.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
            # Internal feedback first: it releases held work and never grows without bound.
            budget = 256
            while (self._internal or not (held or self._inputs.empty())) and budget:
                budget -= 1
                event = self._internal.popleft() if self._internal else self._inputs.get_nowait()
                self._dispatch(self.engine.handle(event, self.clock()))
                if isinstance(event, Received) and event.ack is not None:
                    # Behind the Persist the engine has just asked for (if any), and behind
                    # the batch of an earlier copy still being committed (a duplicate).
                    self._store_batches.append(event.ack)
                    self._store_wake.set()
            self._note_clock()
            await asyncio.sleep(0)

    def _note_clock(self) -> None:
        """Log as soon as the evidence of other clocks says ours is wrong (or right again)."""
        now = self.clock()
        offset = self.engine.clock_offset(now)
        wrong = offset is not None and abs(offset) > CLOCK_WARN_S
        if wrong == self._clock_warned:
            return
        self._clock_warned = wrong
        if wrong:
            self.log.warning(
                "clock_wrong",
                offset_s=offset,
                corrected_s=self.engine.clock.correction(now),
                hint="set the clock (NTP, RTC); time checks use the corrected time meanwhile",
            )
        else:
            self.log.info("clock_agrees", offset_s=offset)

    def _pet_watchdog(self) -> None:
        """WATCHDOG=1 from the engine loop (it wakes at least once a second), at half the
        interval systemd gave: a hung engine stops the pings and systemd restarts the node."""
        interval = self.notifier.watchdog_s
        if interval is None:
            return
        mono = time.monotonic()
        if mono - self._watchdog_at >= interval / 2:
            self._watchdog_at = mono
            self.notifier.watchdog()

    def _dispatch(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Persist():
                    self._store_batches.append(action)
                    self._store_wake.set()
                case Transmit():
                    if not self._send_queues.put(action):
                        # Not sent: it stays in the outbox, and is tried again after a backoff.
                        self._internal.append(Transmitted(action.link, action.id, False))
                case SendSummary(link=link, raw=raw):
                    # A summary has no message id and no outbox row: it goes once, as ROUTINE.
                    summary = Transmit(link, "sync", b"", raw, int(Precedence.ROUTINE))
                    self._send_queues.put(summary)  # (when full: counted; the next round)
                case Deliver():
                    self.log.info(
                        "delivered",
                        msg_id=action.id.hex(),
                        signer=action.signer,
                        precedence=action.precedence,
                        exercise=action.exercise,
                        link=action.via,
                    )
                case DeliveredAt():
                    self.log.info(
                        "receipt", msg_id=action.id.hex(), recipient=action.node, link=action.via
                    )
                case Rejected():
                    self.log.warning(
                        "rejected",
                        link=action.link,
                        reason=str(action.reason),
                        detail=action.detail,
                        msg_id=action.id.hex() if action.id else None,
                    )
                case Submitted():
                    fut = self._tickets.pop(action.ticket, None)
                    if fut is not None and not fut.done():
                        fut.set_result(action)

    # ------------------------------------------------------------------ store writer

    async def _store_writer(self) -> None:
        """Group commit: one transaction for everything queued, then release the tokens and
        send the inbound acknowledgements that waited for it.

        While the disk is full the batches stay here, nothing of them is released, and the
        writer tries again every ``STORE_RETRY_S`` with whatever has queued up meanwhile.
        Acknowledgements wait with them: the broker keeps those messages meanwhile.
        """
        batches: list[Persist] = []
        acks: list[Callable[[], None]] = []
        finished = False
        while True:
            if not self._store_batches and not batches:
                self._store_wake.clear()
                await self._store_wake.wait()
            while self._store_batches:
                batch = self._store_batches.popleft()
                if not isinstance(batch, Persist):
                    acks.append(batch)
                elif batch.token == -1:
                    finished = True
                else:
                    batches.append(batch)
            if batches:
                try:
                    await self._commit(batches)
                except StoreFull as exc:
                    self._set_store_fault(exc)
                    if finished:  # stopping: nothing of these was acknowledged or released
                        self.log.error("stopped_with_unstored", batches=len(batches))
                        return
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(STORE_RETRY_S):
                            await self._stop.wait()
                    continue
                for b in batches:
                    self._internal.append(Persisted(b.token))
                batches = []
                self._clear_store_fault()
                self._wake.set()
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
        if top > self._seq_lease:
            # The counter file must be ahead of the store before a higher number is committed
            # (and so before any message signed with it goes out).
            try:
                self._seq_lease = await asyncio.to_thread(
                    self.sequence.reserve, top + SEQ_LEASE - 1
                )
            except OSError as exc:
                raise StoreFull(f"{self.sequence.path}: cannot extend the counter: {exc}") from exc
        await self.store.apply(ops)

    def _set_store_fault(self, exc: StoreError) -> None:
        now = self.clock()
        fault = self.store_fault
        if fault is None:
            self.store_fault = {"reason": str(Reason.DISK_FULL), "detail": str(exc), "since": now}
            self._last_fault_log = now
            self.log.error("store_full", error=str(exc), hint="submissions are refused until "
                           "there is space; stored messages are still served")  # fmt: skip
        elif now - self._last_fault_log >= STORE_FAULT_LOG_S:
            self._last_fault_log = now
            self.log.error("store_still_full", error=str(exc), since=fault["since"])

    def _clear_store_fault(self) -> None:
        if self.store_fault is not None:
            since = self.store_fault["since"]
            self.store_fault = None
            self.log.warning("store_writable_again", full_for_s=round(self.clock() - since, 1))

    # ------------------------------------------------------------------ link senders

    async def _sender(self, name: str, *, flash: bool) -> None:
        queues = self._send_queues.flash if flash else self._send_queues.ordinary
        await run_sender(name, queues[name], self.links[name], self._report, logger=self.log)

    def _report(self, event: EngineInput) -> None:
        """A sender's outcome, for the engine loop."""
        self._internal.append(event)
        self._wake.set()

    async def _publish_status(self, name: str, driver: LinkDriver, status: dict[str, Any]) -> None:
        """Publish our status on one link. Broken: the next heartbeat tries again. Refused (an
        ACL that does not let us write our status topic): audit, count, warn, and pause the
        status on that link with a doubling backoff; the link carries everything else."""
        now = self.clock()
        refused, until = self._status_refused.get(name, (0, 0.0))
        if now < until:
            return
        try:
            await driver.publish_status(status)
        except LinkUnavailable as exc:
            self.log.debug("status_publish_failed", link=name, error=str(exc))
            return
        except LinkRefused as exc:
            refused += 1
            pause = exponential(refused - 1, base=STATUS_REFUSED_MIN_S, cap=STATUS_REFUSED_MAX_S)
            self._status_refused[name] = (refused, self.clock() + pause)
            self.log.warning(
                "status_refused",
                link=name,
                target=exc.target,
                reason=exc.reason,
                retry_in_s=pause,
                error=str(exc),
            )
            self._internal.append(Refused(name, b"", exc.target, exc.reason))
            self._wake.set()
            return
        self._status_refused.pop(name, None)

    # ------------------------------------------------------------------ housekeeping

    async def _housekeeping(self) -> None:
        """Publish our status (peers use it to tell who is reachable) and prune the audit log."""
        last_prune = self.clock()
        while True:
            stats = self.engine.statistics()
            status = {
                "state": "online",
                "time": self.clock(),
                "regions": sorted(self.config.regions),
                "links": {n: v.state for n, v in self.views.items()},
                # A gateway: MQTT and a usable mesh link. Other gateways use this to take turns
                # bridging into the mesh (EngineConfig.bridge_slot_s).
                "gateway": "mqtt" in {v.kind for v in self.views.values()}
                and any(v.kind == "mesh" and v.state != "down" for v in self.views.values()),
                "clock_warning": bool(stats["clock_warning"]),
            }
            for name, driver in self.links.items():
                await self._publish_status(name, driver, status)
            if self.clock() - last_prune > PRUNE_INTERVAL_S:
                last_prune = self.clock()
                try:
                    await self.store.prune_audit()
                except StoreFull as exc:
                    self.log.error("audit_prune_failed", error=str(exc))
            await asyncio.sleep(STATUS_INTERVAL_S)

    # ------------------------------------------------------------------ operator API

    async def submit(self, raw: bytes) -> Submitted:
        self._next_ticket += 1
        ticket = self._next_ticket
        fut: asyncio.Future[Submitted] = asyncio.get_running_loop().create_future()
        self._tickets[ticket] = fut
        await self._inputs.put(Submit(raw, ticket))
        self._wake.set()
        return await fut

    def record_audit(self, event: AuditEvent) -> None:
        """Queue one audit row for the store writer (nothing waits for it)."""
        self._audit_tokens -= 1
        self._store_batches.append(Persist(self._audit_tokens, (event,)))
        self._store_wake.set()

    async def _api(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op in CONSOLE_OPS:
            return await console_op(self, req)
        try:
            match op:
                case "submit":
                    raw = base64.b64decode(api.text(req, "raw"), validate=True)
                    if (fault := self.store_fault) is not None:
                        self.store_refused += 1
                        self.log.warning("submit_refused", reason=fault["reason"])
                        return {
                            "ok": False,
                            "error": f"refused: {fault['reason']}: the store cannot be written "
                            f"({fault['detail']}); stored messages are still served",
                            "reason": fault["reason"],
                        }
                    result = await self.submit(raw)
                    if result.reason is not None:
                        return {
                            "ok": False,
                            "error": f"rejected: {result.reason}: {result.detail}",
                            "reason": str(result.reason),
                        }
                    assert result.id is not None
                    return {"ok": True, "id": result.id.hex(), "duplicate": result.duplicate}
                case "inbox":
                    limit = api.integer(req, "limit", default=1000, lo=1, hi=MAX_INBOX_LIMIT)
                    return {"ok": True, "messages": await self._inbox(limit)}
                case "status":
                    return {"ok": True, **await self.status()}
                case "message":
                    return await self._message(api.text(req, "id", max_len=64))
                case "audit":
                    since = api.integer(req, "since", default=0, lo=0, hi=MAX_SQLITE_INT)
                    events = await self.store.audit(since)
                    return {"ok": True, "node": self.config.node, "events": events}
        except (ValueError, TypeError) as exc:
            return {"ok": False, "error": f"bad request: {exc}"}
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def _inbox(self, limit: int) -> list[dict[str, Any]]:
        out = []
        for row in await self.store.inbox(limit):
            env = open_envelope(row["raw"], max_bytes=1 << 20)
            if isinstance(env, Rejection):  # stored only after verification: corruption
                raise AssertionError(f"stored message {row['id'].hex()} no longer parses")
            item = as_json(env.decision, row["signer"], env.id)
            item.update(received_via=row["via"], received_at=row["received_at"], verdict="valid")
            item.update(self._pq_fields(env))
            out.append(item)
        return out

    def _pq_fields(self, env: Envelope) -> dict[str, Any]:
        """The decision's quantum-safe signature (relay.engine.pq): with ``[trust] pq =
        "require"`` a PQ-enabled issuer's decision is not "valid" until its attestation came."""
        hook = self.engine.pq
        state = hook.state(self.engine, env.id, env.kid, env.decision.kind)
        fields: dict[str, Any] = {
            "pq": str(state),
            "pq_label": pq.label(state, "nl"),
            "pq_label_en": pq.label(state, "en"),
        }
        if not hook.verified(state):
            fields["verdict"] = "pq-pending"
        return fields

    async def _message(self, ident: str) -> dict[str, Any]:
        ids = await self.store.find_ids(ident.lower())
        if len(ids) != 1:
            return {"ok": False, "error": f"{len(ids)} messages match id {ident!r}"}
        info = await self.store.message(ids[0])
        assert info is not None
        env = open_envelope(info.pop("raw"), max_bytes=1 << 20)
        assert not isinstance(env, Rejection)
        expected = self.engine.recipients_of(env.id)
        recipients = sorted(expected[0]) if expected else []
        signed = {r["node"]: r for r in info["receipts"]}
        matrix = [
            {"node": n, "signed": n in signed, **({k: v for k, v in signed[n].items()
                                                    if k != "node"} if n in signed else {})}
            for n in sorted(set(recipients) | set(signed))
        ]  # fmt: skip
        # Attempts per link: the sends the audit log records (they survive restarts and the
        # outbox row's deletion), and the live outbox entries with their current attempt counts
        # (failed transmissions included), in place of the store rows written with 0.
        sends = await self.store.sends(env.id)
        live = self.engine.outbox_of(env.id)
        attempts = [
            {"link": name, "sent": n, "last_sent_at": at} for name, (n, at) in sorted(sends.items())
        ]
        return {
            "ok": True,
            "message": {
                **as_json(env.decision, info["signer"], env.id),
                **{k: v for k, v in info.items() if k not in ("receipts", "outbox")},
                **self._pq_fields(env),
                "pq_attestation": await self.store.attestation_of(env.id),
                "outbox": live,
                "attempts": attempts,
                "recipients": recipients,
                "delivery": matrix,
            },
        }

    async def status(self) -> dict[str, Any]:
        stats = self.engine.statistics()
        depths = self.engine.outbox_depths()
        health = self.engine.link_health(self.clock())
        links = [
            {
                "name": name,
                "kind": view.kind,
                "state": view.state,
                "since": view.since,
                "routing": health[name]["effective"],
                "routing_since": health[name]["changed_at"],
                "detail": view.detail,
                "outbox": depths.get(name, 0),
                **self._send_queues.statistics(name),
                **self.links[name].describe(),
            }
            for name, view in self.views.items()
        ]
        return {
            "node": self.config.node,
            "regions": sorted(self.config.regions),
            "links": links,
            "engine": stats,
            "rejections": stats["rejections"],
            "refusals": stats["refusals"],
            "clock_warning": stats["clock_warning"],
            "store": await self.store.stats(),
            "store_fault": self.store_fault,
            "store_refused": self.store_refused,
            "api": self.api_stats.as_dict(),
            "input_queue": self._inputs.qsize(),
            "overload_drops": self.overload_drops,
            "acks_released": self.acks_released,
            "link_crashes": self.link_crashes,
            "link_changes": self.link_changes,
            "store_bytes": sum(
                p.stat().st_size
                for p in (
                    self.config.store,
                    self.config.store.with_name(self.config.store.name + "-wal"),
                )
                if p.exists()
            ),
            "peers": self.peers,
            "engine_peers": dict(self.engine.peers),
            "gateway_peers": dict(self.engine.gateway_peers),
            "bridge_slot_s": round(self.engine.config.bridge_slot_s, 3),  # from the mesh preset
            "mesh_peers": dict(self.engine.mesh_peers),  # nodes heard signing on a mesh link
            "time": self.clock(),
        }


CLOCK_SKEW_ENV = "RELAY_CLOCK_SKEW_S"


def skewed_clock(environ: Mapping[str, str]) -> Callable[[], float]:
    """The wall clock, shifted by ``RELAY_CLOCK_SKEW_S`` seconds when that is set.

    Drills and tests use it to play a node whose clock is wrong (a Pi without RTC or NTP); a real
    node leaves it unset. A value that is not a finite number is refused rather than ignored.
    """
    raw = environ.get(CLOCK_SKEW_ENV, "").strip()
    if not raw:
        return time.time
    try:
        skew = float(raw)
    except ValueError:
        raise ValueError(f"{CLOCK_SKEW_ENV}={raw!r} is not a number of seconds") from None
    if not math.isfinite(skew):
        raise ValueError(f"{CLOCK_SKEW_ENV}={raw!r} is not a finite number of seconds")
    return lambda: time.time() + skew


def run_node(config: Config, *, clock: Callable[[], float] = time.time) -> int:
    async def main() -> None:
        await Node(config, clock=clock).run()

    asyncio.run(main())
    return 0
