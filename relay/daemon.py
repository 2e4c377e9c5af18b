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
import contextlib
import math
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from relay import api, api_node, pq
from relay.airtime import BRIDGE_SLOT_LONG_FAST_S, PRESETS, bridge_slot_s
from relay.api_node import LinkView as LinkView  # re-exported: tests and tools use it
from relay.backoff import equal_jitter
from relay.config import Config
from relay.engine.core import CLOCK_WARN_S, SEQ_COUNTER, Engine, EngineConfig, LinkInfo
from relay.engine.inputs import (
    EngineInput,
    LinkChanged,
    LinkRejected,
    Persisted,
    Received,
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
    Submitted,
    Transmit,
)
from relay.engine.pq import PqConfig
from relay.engine.status import seal_checkpoint, seal_status
from relay.envelope import Precedence
from relay.errors import CannotStart
from relay.housekeeping import Housekeeping
from relay.keys import SequenceCounter, load_private, load_public
from relay.links import LinkDriver
from relay.notify import Notifier
from relay.rosterfile import load_trust
from relay.senders import SenderQueues, run_sender
from relay.store import Store, StoreError, StoreFull
from relay.storewriter import StoreWriter
from relay.vocab import Channel, LinkKind, LinkState

log = structlog.get_logger("relay")

INPUT_QUEUE = 10_000  # engine inputs queued, on top of the MQTT link's window (Node.__init__)
# In an MQTT burst a decision waits up to this long to share its receipt with others that arrive
# meanwhile (relay.engine.receipts; docs/mqtt.md, "Receipts for a burst").
RECEIPT_HOLD_S = 0.005
# In a burst the store commits at most this often; steady traffic commits at once
# (relay.storewriter). Fewer, larger transactions: less CPU per decision in a burst.
COMMIT_INTERVAL_S = 0.010
STATUS_BATCH = 64  # peer statuses verified per engine round at most (a decision waits this long)
STATUS_BATCH_MIN = 8  # and at least, while other inputs keep the engine busy
SENDERS_PER_LINK = 8
LINK_RESTART_MIN_S = 1.0  # backoff after a link crashed, doubling up to the maximum
LINK_RESTART_MAX_S = 60.0


class Node:
    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.log = log.bind(node=config.node)
        # The MQTT link hands on up to its window (mqtt.inbound_queue) of messages not yet
        # committed: the queue holds that much on top of the rest, so a window the config allows
        # (up to 65,535) can never overflow it.
        window = config.mqtt.inbound_queue if config.mqtt is not None else 0
        self._inputs: asyncio.Queue[EngineInput] = asyncio.Queue(INPUT_QUEUE + window)
        # Links with peer statuses waiting: taken after the inputs (statuses_waiting).
        self._status_sources: dict[str, Callable[[int], list[tuple[str, bytes]]]] = {}
        self._internal: deque[EngineInput] = deque()
        self._acks: deque[tuple[int, Callable[[], None]]] = deque()  # (receipt serial, ack)
        self._wake = asyncio.Event()
        self._send_queues = SenderQueues(logger=self.log)  # per link, bounded (relay.senders)
        self._tickets: dict[int, asyncio.Future[Submitted]] = {}
        self._next_ticket = 0
        self._audit_tokens = -1  # below the store writer's -1 sentinel: never an engine token
        self._stop = asyncio.Event()
        self.links: dict[str, LinkDriver] = {}
        self.views: dict[str, LinkView] = {}
        self.overload_drops = 0
        self.link_crashes: dict[str, int] = {}
        self.link_changes: dict[str, int] = {}
        self._clock_warned = False
        self.ready = asyncio.Event()
        self.notifier = Notifier()
        self._watchdog_at = 0.0  # monotonic time of the last WATCHDOG=1
        self.engine: Engine
        self._key: Ed25519PrivateKey
        self.store: Store
        self.sequence = SequenceCounter.at(config.sequence_file)
        # Engine batches, and inbound acknowledgements to send once what precedes them commits.
        self.writer = StoreWriter(
            sequence=self.sequence,
            clock=clock,
            log=self.log,
            stop=self._stop,
            persisted=self._persisted,
            min_interval_s=COMMIT_INTERVAL_S,
        )
        self.store_refused = 0  # submissions refused while the store cannot be written
        self.api_stats = api.ApiStats()
        self._roster_raw = b""

    # ------------------------------------------------------------------ wiring

    def add_link(self, driver: LinkDriver) -> None:
        self.links[driver.name] = driver
        self.views[driver.name] = LinkView(driver.kind, since=self.clock())
        self._send_queues.add_link(driver.name)

    def stop(self) -> None:
        self._stop.set()

    @property
    def store_fault(self) -> dict[str, Any] | None:
        """Set while the store cannot be written (disk full): {"reason", "detail", "since"}."""
        return self.writer.fault

    @property
    def acks_released(self) -> int:
        return self.writer.acks_released

    @property
    def send_queues(self) -> SenderQueues:
        return self._send_queues

    @property
    def input_queue_size(self) -> int:
        return self._inputs.qsize()

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
        self.writer.store = self.store
        self.store.signer = lambda n, head, now, state: seal_checkpoint(
            n, head, key, now, state=state
        )
        try:
            if (problem := await self.store.tail_problem()) is not None:
                # The evidence stays as it is; the node carries on and the chain forks here.
                self.log.error("audit_chain_broken", error=problem, hint="run relay audit verify")
            # Rows committed since the last checkpoint (a crash, or the upgrade that started the
            # chain: then this is the genesis checkpoint) are signed for before anything else.
            await self._checkpoint()
            snapshot = await self.store.snapshot()
            snapshot.own_receipts = await self.store.own_receipts(cfg.node)
            snapshot.counters[SEQ_COUNTER] = await self.writer.lease_sequence(
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
                    receipt_hold_s=RECEIPT_HOLD_S,
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
            await self._checkpoint("offline")  # the last commit is in: sign for it
        finally:
            await self.store.close()
            self.log.info("stopped")

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
            writer = tg.create_task(self.writer.run(), name="store-writer")
            workers = [
                tg.create_task(self._engine_loop(), name="engine"),
                tg.create_task(serving, name="api"),
                tg.create_task(self._housekeeping().run(), name="housekeeping"),
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
            # Decisions waiting to share a receipt are stored with it before the writer ends.
            self._dispatch(self.engine.close_receipts(self.clock()))
            self.writer.finish()
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
            self.log.warning("inbound_dropped_overload", link=link, queue=self._inputs.maxsize)
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

    def statuses_waiting(self, link: str, take: Callable[[int], list[tuple[str, bytes]]]) -> None:
        """Peer statuses wait on ``link`` (the newest per peer, held and bounded by the link,
        relay.links.status_mailbox): the engine loop takes them when no other input waits, and
        verifies each (signed by that roster node) before the peer counts as heard."""
        self._status_sources[link] = take
        self._wake.set()

    def _take_statuses(self, n: int) -> None:
        """Hand up to ``n`` waiting peer statuses to the engine, from each link in turn."""
        share = max(1, n // len(self._status_sources))
        for link, take in list(self._status_sources.items()):
            got = take(share)
            if len(got) < share:
                del self._status_sources[link]  # empty: the link says when more wait
            for peer, raw in got:
                self._dispatch(self.engine.handle(StatusHeard(link, peer, raw), self.clock()))

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
            self._release_acks()  # a receipt held for a burst may have been signed
            timeout = max(0.0, min(engine.next_deadline() - now, 1.0))
            # While the store cannot be written, inputs wait in their bounded queue (a link's
            # sender retries what overflows; submissions are refused at the API).
            held = self.store_fault is not None
            idle = not (self._internal or self._status_sources)
            if idle and (held or self._inputs.empty()):
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
                self._dispatch(engine.handle(event, self.clock()))
                if isinstance(event, Received) and event.ack is not None:
                    self._acks.append((engine.receipt_serial, event.ack))
            self._release_acks()
            if self._status_sources:
                # Statuses only after the inputs (decisions, receipts, sync never wait behind a
                # retained burst), and a few even when those used the whole budget.
                self._take_statuses(min(STATUS_BATCH, max(budget, STATUS_BATCH_MIN)))
            self._note_clock()
            await asyncio.sleep(0)

    def _release_acks(self) -> None:
        """Hand the broker's acknowledgements to the store writer, each behind the Persist that
        holds its message (if any) and behind the batch of an earlier copy still being committed
        (a duplicate). A decision of an MQTT burst may wait a few ms in the engine to share its
        receipt (EngineConfig.receipt_hold_s): what came in while that receipt was open waits
        until its Persist is handed over."""
        oldest = self.engine.oldest_open_receipt()
        while self._acks and (oldest is None or self._acks[0][0] < oldest):
            self.writer.put(self._acks.popleft()[1])

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
                    self.writer.put(action)
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

    def _persisted(self, tokens: list[int]) -> None:
        """The store writer has committed these engine batches (relay.storewriter)."""
        self._internal.extend(Persisted(t) for t in tokens)
        self._wake.set()

    # ------------------------------------------------------------------ link senders

    async def _sender(self, name: str, *, flash: bool) -> None:
        queues = self._send_queues.flash if flash else self._send_queues.ordinary
        await run_sender(name, queues[name], self.links[name], self._report, logger=self.log)

    def _report(self, event: EngineInput) -> None:
        """A sender's outcome, for the engine loop."""
        self._internal.append(event)
        self._wake.set()

    def _housekeeping(self) -> Housekeeping:
        """Our status heartbeat and the audit log's pruning (relay.housekeeping)."""
        return Housekeeping(
            regions=self.config.regions,
            links=self.links,
            views=self.views,
            clock=self.clock,
            log=self.log,
            clock_warning=lambda: bool(self.engine.statistics()["clock_warning"]),
            prune=lambda: self.store.prune_audit(self.clock()),
            report=self._report,
            audit_head=lambda: {"n": self.store.head.n, "head": self.store.head.hash.hex()},
            checkpoint=self._checkpoint,
        )

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    async def _checkpoint(self, state: str = "online") -> None:
        """Sign and keep an audit checkpoint if the chain moved since the last one."""
        try:
            if await self.store.checkpoint(self.clock(), state=state):
                self.log.debug("audit_checkpoint", n=self.store.head.n, state=state)
        except StoreFull as exc:  # the next interval tries again; nothing else waits for it
            self.log.error("audit_checkpoint_failed", error=str(exc))

    # ------------------------------------------------------------------ API (relay.api_node)

    async def _api(self, req: dict[str, Any]) -> dict[str, Any]:
        return await api_node.handle(self, req)

    async def status(self) -> dict[str, Any]:
        return await api_node.status(self)

    async def submit(self, raw: bytes) -> Submitted:
        self._next_ticket += 1
        ticket = self._next_ticket
        fut: asyncio.Future[Submitted] = asyncio.get_running_loop().create_future()
        self._tickets[ticket] = fut
        await self._inputs.put(Submit(raw, ticket))
        self._wake.set()
        return await fut

    async def record_audit(self, event: AuditEvent) -> None:
        """Write one audit row; returns once the store writer has committed it (the console
        says "recorded" only of what a crash cannot take back)."""
        self._audit_tokens -= 1
        committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done() -> None:
            if not committed.done():
                committed.set_result(None)

        self.writer.put(Persist(self._audit_tokens, (event,)))
        self.writer.put(done)  # called after everything queued before it has committed
        await committed


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
