"""The relay engine: verify -> dedupe -> persist -> deliver -> route -> retry -> expire. Sans-I/O.

Inputs are method calls with the current time, or ``handle(event, now)`` with one of
relay.engine.inputs; outputs are lists of actions (relay.engine.ops). Nothing here reads a clock,
touches a socket or a file, so hours of retries and expiry run in milliseconds in tests.

This module is the pipeline and the delegation; the parts live beside it, each an object with
the tables it needs handed in: the outbox's scheduling, outcomes and bridging
(relay.engine.delivery, over relay.engine.outbox and the policy in relay.engine.routing), bounds
and expiry (relay.engine.retention), held messages and restore (relay.engine.held), receipts
(relay.engine.receipts), partition healing (relay.engine.healing), peers and their statuses
(relay.engine.hearing, relay.engine.peers), our clock (relay.engine.clock) and what the engine
shows about itself (relay.engine.introspect).

Ordering guarantee (invariant 1): every action that shows, acknowledges or forwards a message is
held back until the ``Persist`` that stores it has been reported durable through ``persisted``.

Routing (docs/failover.md; the policy's functions are in relay.engine.routing):

* FLASH goes out on every link at once (one outbox entry per link).
* Everything else gets one outbox entry for "the best usable link" (``ANY_LINK``): MQTT before
  mesh, ``up`` before ``degraded``. The link is chosen when the entry is sent, so a message that is
  waiting fails over to the mesh the moment MQTT is declared down, and back when it returns.
* A gateway (a node with both kinds of link) bridges: what arrives fresh from the mesh goes to MQTT
  while MQTT is usable; what arrives by MQTT goes into the mesh only when a node that needs it has
  not been heard on MQTT lately, after a random delay that is cancelled when the message is heard
  on the mesh meanwhile (Trickle-style suppression, RFC 6206), so several gateways do not all
  transmit it.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.engine import held, inputs, introspect, receipts, routing, sync
from relay.engine.clock import WARN_S, TrustedTime
from relay.engine.config import EngineConfig as EngineConfig  # re-exported: Engine(...) takes it
from relay.engine.delivery import MAX_REFUSAL_KEYS as MAX_REFUSAL_KEYS
from relay.engine.delivery import Delivery, audit
from relay.engine.healing import Healer
from relay.engine.health import LinkHealth
from relay.engine.hearing import Hearing
from relay.engine.model import HeldMessage
from relay.engine.model import LinkInfo as LinkInfo  # re-exported: Engine(...) takes it
from relay.engine.model import Snapshot as Snapshot
from relay.engine.model import StoredMessage as StoredMessage
from relay.engine.ops import (
    Action,
    AuditEvent,
    DeleteOutbox,
    Deliver,
    Persist,
    PutInbox,
    PutReplay,
    Rejected,
    SetCounter,
    StoreOp,
    Submitted,
)
from relay.engine.outbox import Outbox, new_row
from relay.engine.peers import PeerTable
from relay.engine.pq import PqHook
from relay.engine.receipts import LOCAL_LINK
from relay.engine.retention import HeldMessages, Retention
from relay.engine.routing import SHOWN_KINDS
from relay.envelope import (
    PAYLOAD_VERSION,
    Decision,
    Envelope,
    Kind,
    Reason,
    Rejection,
    key_id,
    open_envelope,
)
from relay.trust import Accepted, ReplayGuard, Role, TrustState, revoked_kids
from relay.vocab import Channel, LinkKind, LinkState, LinkStateName

ROSTER_FILE = "roster-file"  # "arrived by": the roster file read at start (Engine.roster_file)
SEQ_COUNTER = "own_seq"
CLOCK_WARN_S = WARN_S


@dataclass(frozen=True, slots=True)
class _Activate:
    """Held until persistence: then the message becomes known and its transmissions due."""

    id: bytes
    msg: HeldMessage
    targets: tuple[tuple[str, float], ...]  # (link or ANY_LINK, delay before the first send)
    awaiting: bool
    durable: bool = True  # its outbox entries have store rows (relay.engine.delivery)


Held = Action | _Activate


@dataclass(slots=True)
class _OpenReceipt:
    """Accepted decisions waiting for the receipt they will share, with what their Persist holds."""

    serial: int
    due: float  # signed by then at the latest
    items: list[tuple[bytes, Decision]]
    ops: list[StoreOp]
    later: list[Held]


class Engine:
    def __init__(
        self,
        config: EngineConfig,
        trust: TrustState,
        node_key: Ed25519PrivateKey,
        links: Iterable[LinkInfo],
        snapshot: Snapshot | None = None,
    ) -> None:
        self.config = config
        self.trust = trust
        self._key = node_key
        self.links = {link.name: link for link in links}
        self.health = {
            name: LinkHealth(hold_s=config.link_hold_s, current_hold_s=config.link_hold_s)
            for name in self.links
        }
        self.counters: Counter[str] = Counter()
        self._peers = PeerTable(max_peers=config.max_peers, counters=self.counters)
        # The peer tables by their old names (the daemon's status shows them).
        self.peers, self.peer_statuses = self._peers.heard, self._peers.statuses
        self.mqtt_peers, self.gateway_peers = self._peers.mqtt, self._peers.gateways
        self.mesh_peers = self._peers.mesh
        self.net = routing.Net(
            node=config.node,
            links=self.links,
            health=self.health,
            mqtt_peers=self.mqtt_peers,
            gateway_peers=self.gateway_peers,
            mesh_peers=self.mesh_peers,
            peer_timeout_s=config.peer_timeout_s,
        )
        self.replay = ReplayGuard()
        self._msgs = HeldMessages()
        self._pending_ids: set[bytes] = set()
        self._outbox = Outbox(dropped_bound=4 * config.max_inflight_per_link * len(self.links))
        self._own_receipts: dict[bytes, bytes] = {}
        self._held: dict[int, list[Held]] = {}
        # Decisions from an MQTT burst waiting to share one receipt, by (arrived by, precedence,
        # exercise); their store rows wait with them (receipt_hold_s).
        self._open: dict[tuple[str, int, bool], _OpenReceipt] = {}
        self._last_delivered: dict[str, float] = {}  # MQTT link -> when one last came by it
        self._open_serials = itertools.count(1)
        self.receipt_serial = 0  # the newest open receipt's serial (hold_acks)
        self._tokens = itertools.count(1)
        self._seq = 0
        self.time = TrustedTime()
        self.clock = self.time.evidence  # the evidence of other clocks (the daemon shows it)
        self._receipts = receipts.Intake(self.counters)
        self.rejections: Counter[str] = Counter()
        self._own_kid = key_id(node_key.public_key().public_bytes_raw())
        self.healer = Healer(
            node=config.node,
            config=config.heal,
            max_inbound_bytes=config.max_inbound_bytes,
            peer_timeout_s=config.peer_timeout_s,
            links=self.links,
            msgs=self._msgs,
            replay=self.replay,
            own_kid=self._own_kid,
            outbox=self._outbox,
            counters=self.counters,
            tokens=self._tokens,
            # Its own stream: summaries' jitter does not shift the gateways' bridge delays.
            rng=random.Random(config.seed),  # noqa: S311 - jitter, not cryptography
        )
        self.sync = self.healer.state  # when to summarise (tests look at it)
        self.pq = PqHook(config.pq)  # post-quantum attestations (relay.engine.pq)
        self.delivery = Delivery(
            config=config,
            net=self.net,
            outbox=self._outbox,
            msgs=self._msgs,
            peers=self._peers,
            trust=trust,
            counters=self.counters,
            tokens=self._tokens,
            trusted_now=self.trusted_now,
            beside=lambda msg_id, via, prec: self.pq.beside(self, msg_id, via, prec),
        )
        self.hearing = Hearing(
            config=config,
            trust=trust,
            peers=self._peers,
            net=self.net,
            links=self.links,
            sync=self.sync,
            time=self.time,
            counters=self.counters,
            rejections=self.rejections,
            tokens=self._tokens,
        )
        self.refusals = self.delivery.refusals  # "link what: reason" -> count (bounded)
        self.retention = Retention(
            config=config,
            msgs=self._msgs,
            pending=self._pending_ids,
            own_receipts=self._own_receipts,
            outbox=self._outbox,
            links=self.links,
            trust=trust,
            time=self.time,
            counters=self.counters,
            tokens=self._tokens,
            on_forget=self.pq.forget,
        )
        self._tombstones = self.retention.tombstones
        if snapshot is not None:
            self._restore(snapshot)

    # ------------------------------------------------------------------ restore

    def _restore(self, snap: Snapshot) -> None:
        self._seq = snap.counters.get(SEQ_COUNTER, 0)
        held.restore(
            snap, trust=self.trust, replay=self.replay, net=self.net, msgs=self._msgs,
            tombstones=self._tombstones, own_receipts=self._own_receipts, outbox=self._outbox,
        )  # fmt: skip
        self.pq.restore(self, snap.attestations)

    # ------------------------------------------------------------------ inputs

    def handle(self, event: inputs.EngineInput, now: float) -> list[Action]:
        """One input from the daemon (relay.engine.inputs), dispatched on its class."""
        match event:
            case inputs.Received(link, raw, channel, peer):
                return self.received(link, raw, now, channel=channel, peer=peer)
            case inputs.StatusHeard(link, peer, raw):
                return self.status_received(link, peer, raw, now)
            case inputs.Submit(raw, ticket):
                return self.submit(raw, now, ticket=ticket)
            case inputs.Persisted(token):
                return self.persisted(token, now)
            case inputs.Transmitted(link, msg_id, ok):
                return self.transmitted(link, msg_id, ok, now)
            case inputs.Refused(link, msg_id, target, reason):
                return self.refused(link, msg_id, target, reason, now)
            case inputs.LinkChanged(link, state):
                return self.link_state(link, state, now)
            case inputs.LinkRejected(link, reason, detail):
                return self.rejected_by_link(link, reason, detail, now)

    def submit(self, raw: bytes, now: float, *, ticket: int) -> list[Action]:
        """A message signed by a local operator; answered by ``Submitted(ticket, …)``, which is
        released only once the message is durable."""
        return self._ingest(LOCAL_LINK, raw, now, channel=None, ticket=ticket)

    def roster_file(self, raw: bytes, now: float) -> list[Action]:
        """The roster file this node loaded at start. When it is the current roster (newer than
        every stored one) and not yet stored, it is taken as if submitted here: stored and sent
        on like a FLASH message, so the network converges on the highest serial without anyone
        touching the other nodes. An older or already stored file changes nothing."""
        env = open_envelope(raw, max_bytes=1 << 20)
        roster = self.trust.roster
        if isinstance(env, Rejection) or env.decision.kind != Kind.ROSTER or roster is None:
            return []
        if env.decision.seq != roster.serial or self._known(env.id):
            return []
        # Checked afresh, against the root alone (our trust state holds this roster already).
        fresh = TrustState(root_public=self.trust.root_public, skew_s=self.trust.skew_s)
        verdict = fresh.check(env, now)
        if isinstance(verdict, Rejection):
            return self._reject(LOCAL_LINK, verdict, None, now, env.id)
        self.counters["roster_file_sent"] += 1
        # Every node first started with the same file does this too: on MQTT those copies are
        # cheap duplicates, on a mesh they would cost every node's airtime for nothing. There
        # the healing summaries carry it (a peer lacking the root's sequence number asks for
        # it, rosters first), and gateways bridge it from MQTT to nodes not heard there. Not
        # "submitted here" (LOCAL_LINK) either: a node going quiet soon after our start would
        # make us bridge a roster of many frames into the mesh (Delivery.bridge_missed).
        targets = tuple((n, 0.0) for n, info in self.links.items() if info.kind == LinkKind.MQTT)
        return self._accept(ROSTER_FILE, verdict, now, None, targets=targets)

    def _known(self, msg_id: bytes) -> bool:
        return msg_id in self._msgs or msg_id in self._pending_ids or msg_id in self._tombstones

    def received(
        self,
        link: str,
        raw: bytes,
        now: float,
        *,
        channel: Channel | str | None = None,  # a link's own spelling (our bug if unknown)
        peer: str = "",
    ) -> list[Action]:
        channel = None if channel is None else Channel(channel)
        if peer:
            self.peer_heard(link, peer, now)
        if channel == sync.SYNC_CHANNEL:
            return self._sync_in(link, raw, now)
        return self._ingest(link, raw, now, channel=channel, ticket=None)

    def peer_heard(self, link: str, node: str, now: float, *, gateway: bool | None = None) -> None:
        """A node was heard on a link (relay.engine.hearing)."""
        self.hearing.peer_heard(link, node, now, gateway=gateway)

    def status_received(self, link: str, peer: str, raw: bytes, now: float) -> list[Action]:
        """A status published on ``peer``'s status topic (relay.engine.hearing)."""
        return self.hearing.status_received(link, peer, raw, now)

    def rejected_by_link(self, link: str, reason: Reason, detail: str, now: float) -> list[Action]:
        """A link refused input before it reached the engine (e.g. oversized): count it too."""
        self.counters["received"] += 1
        return self._reject(link, Rejection(reason, detail), None, now, None)

    def persisted(self, token: int, now: float) -> list[Action]:
        actions: list[Action] = []
        activated = False
        for item in self._held.pop(token, []):
            if isinstance(item, _Activate):
                self._msgs[item.id] = item.msg
                self._pending_ids.discard(item.id)
                item.msg.signed |= self._receipts.take_early(item.id)
                for name, delay in item.targets:
                    out = self._outbox.add(
                        item.id, name, attempts=0, at=now + delay, awaiting=item.awaiting
                    )
                    out.suppressible, out.durable = delay > 0, item.durable
                activated = True
            else:
                actions.append(item)
        return actions + self.delivery.pump(now) if activated else actions

    def link_state(
        self, link: str, reported: LinkState | LinkStateName | bool, now: float
    ) -> list[Action]:
        """The link's own measurement: up, degraded or down (True/False accepted)."""
        self._saw_time(now)
        if isinstance(reported, bool):
            state = LinkState.UP if reported else LinkState.DOWN
        else:
            state = LinkState(reported)
        health = self.health[link]
        changed = [] if state == health.reported else [self._audit(now, "link", None, link, state)]
        if health.reported == LinkState.DOWN and state != LinkState.DOWN:
            self.sync.link_up(link, now)  # (back) up: summarise soon (partition healing)
        if health.report(state, now):
            self.delivery.revive(now)
        return changed + self.delivery.pump(now)

    def _audit(
        self, now: float, event: str, msg_id: bytes | None, link: str | None, detail: str | None
    ) -> Persist:
        """An audit row on its own (nothing waits for it)."""
        return audit(self._tokens, now, event, msg_id, link, detail)

    def refused(
        self, link: str, msg_id: bytes, target: str, reason: str, now: float
    ) -> list[Action]:
        """The broker or peer refused a transmission (relay.engine.delivery)."""
        return self.delivery.refused(link, msg_id, target, reason, now)

    def transmitted(
        self, link: str, msg_id: bytes, ok: bool, now: float, *,
        airtime_s: float | None = None, refused: bool = False,
    ) -> list[Action]:  # fmt: skip
        """A link reports the outcome of a ``Transmit`` (relay.engine.delivery)."""
        return self.delivery.transmitted(
            link, msg_id, ok, now, airtime_s=airtime_s, refused=refused
        )

    def timer(self, now: float) -> list[Action]:
        self._saw_time(now)
        actions: list[Action] = []
        for key in [k for k, g in self._open.items() if g.due <= now]:
            actions += self._close_receipt(key, now)
        if any([h.tick(now) for h in self.health.values()]):
            self.delivery.revive(now)
        actions += self.retention.timer(now)
        actions += self.delivery.bridge_missed(now)
        actions += self.healer.due(
            now,
            [n for n in self.links if self._usable(n, now)],
            seq=self._seq,
            mqtt_peers=self.mqtt_peers,
        )
        actions += self.pq.timer(self, now)
        return actions + self.delivery.pump(now)

    def next_deadline(self) -> float:
        """When ``timer`` should next be called."""
        deadline = min(self.retention.next_gc, self.sync.next_deadline(), self.pq.next_deadline())
        for h in self.health.values():
            change = h.next_change_at()
            if change is not None:
                deadline = min(deadline, change)
        for group in self._open.values():
            deadline = min(deadline, group.due)
        due = self._outbox.next_at()
        return deadline if due is None else min(due, deadline)

    # ------------------------------------------------------------------ the pipeline

    def _reject(
        self, link: str, why: Rejection, ticket: int | None, now: float, msg_id: bytes | None
    ) -> list[Action]:
        self.rejections[str(why.reason)] += 1
        audit = AuditEvent(now, "rejected", msg_id, link, None, f"{why.reason}: {why.detail}")
        actions: list[Action] = [
            Rejected(link, why.reason, why.detail, msg_id),
            Persist(next(self._tokens), (audit,)),
        ]
        if ticket is not None:
            actions.append(Submitted(ticket, msg_id, why.reason, why.detail))
        return actions

    def _ingest(
        self, link: str, raw: bytes, now: float, *, channel: Channel | None, ticket: int | None
    ) -> list[Action]:
        if (handled := self.pq.ingest(self, link, raw, now, ticket)) is not None:
            return handled  # an ML-DSA attestation or a request for one
        self.counters["received"] += 1
        env = open_envelope(raw, max_bytes=self.config.max_inbound_bytes)
        if isinstance(env, Rejection):
            return self._reject(link, env, ticket, now, None)
        if env.id in self._msgs or env.id in self._pending_ids or env.id in self._tombstones:
            return self._duplicate(link, env, ticket, now)
        d = env.decision
        if channel is not None and (channel == Channel.RCPT) != (d.kind == Kind.ACK):
            why = Rejection(Reason.WRONG_TOPIC, f"{d.kind.name} message on the {channel} topic")
            return self._reject(link, why, ticket, now, env.id)
        verdict = self._check(env, now)
        if isinstance(verdict, Rejection):
            return self._reject(link, verdict, ticket, now, env.id)
        if verdict.role == Role.NODE and d.kind == Kind.STATUS:
            # A node's heartbeat belongs on its status topic; replayed as a message it would
            # be stored and forwarded (relay.engine.status).
            why = Rejection(Reason.WRONG_TOPIC, "a node's status is not a message")
            return self._reject(link, why, ticket, now, env.id)
        window = self.config.drill_window
        if d.exercise and window is not None and not window[0] <= now <= window[1]:
            span = "..".join(datetime.fromtimestamp(t, UTC).isoformat() for t in window)
            why = Rejection(Reason.DRILL_WINDOW, f"exercise traffic outside the window {span}")
            return self._reject(link, why, ticket, now, env.id)
        if not self.retention.make_room(d.precedence):
            why = Rejection(Reason.STORE_FULL, "store is full of unexpired FLASH messages")
            return self._reject(link, why, ticket, now, env.id)
        return self._accept(link, verdict, now, ticket)

    def _duplicate(self, link: str, env: Envelope, ticket: int | None, now: float) -> list[Action]:
        self.counters["duplicates"] += 1
        actions: list[Action] = []
        if ticket is not None:
            actions.append(Submitted(ticket, env.id, duplicate=True))
        if self._kind(link) == LinkKind.MESH:
            cancelled = self.delivery.heard_on_mesh(link, env.id)
            if cancelled is not None:
                actions.append(Persist(next(self._tokens), (DeleteOutbox(env.id, link),)))
                self.healer.drop_answers(cancelled.answer)  # another node answers that summary
        # The sender is retrying, so our receipt may have been lost: send it again, back the way
        # the copy came (a FLASH retry heard on MQTT is no reason to spend airtime on a mesh).
        # Not while a healing round runs on the link: that copy answers someone else's summary.
        rid = self._own_receipts.get(env.id)
        healing = self.sync.healing(link, now)
        if rid is not None and rid in self._msgs and link in self.links and not healing:
            actions += self.delivery.resend(rid, link, now)
        return actions

    def _accept(
        self,
        link: str,
        verdict: Accepted,
        now: float,
        ticket: int | None,
        *,
        targets: tuple[tuple[str, float], ...] | None = None,
    ) -> list[Action]:
        env, d = verdict.envelope, verdict.envelope.decision
        origin = link == LOCAL_LINK
        window = self.replay.commit(env.kid, d.seq)
        self._pending_ids.add(env.id)
        self.counters["accepted"] += 1
        self.sync.accepted(link, now)
        if verdict.role == Role.NODE and self._kind(link) == LinkKind.MESH:
            self.mesh_peers[verdict.signer] = now  # bounded: roster nodes only
        ops: list[StoreOp] = [
            held.row(verdict, now, link=link, origin=origin),
            PutReplay(env.kid, window.high, window.to_bytes()),
            AuditEvent(now, "accepted", env.id, link, verdict.signer, d.kind.name.lower()),
        ]
        later: list[Held] = []
        m = held.hold(env, d, now, origin=origin, via=self._kind(link), roster=self.trust.roster)
        if d.kind in (Kind.ROSTER, Kind.REVOCATION):
            self.trust.apply(verdict)
            if d.kind == Kind.REVOCATION:
                kids = ",".join(k.hex() for k in revoked_kids(d))
                ops.append(AuditEvent(now, "revoked", env.id, link, None, kids))
        if d.kind == Kind.ACK:
            later += self._receipt_in(verdict, link, now, ops)
        later += self.pq.on_accept(self, env, link, now, ops)
        shared = False  # our receipt shares one with others that came in this batch
        if d.kind in SHOWN_KINDS and d.audience.includes(self.config.node, self.config.regions):
            ops.append(PutInbox(env.id, now))
            shown = d.precedence.name.lower() + (" exercise" if d.exercise else "")
            ops.append(AuditEvent(now, "delivered", env.id, link, self.config.node, shown))
            later.append(Deliver(env.id, verdict.signer, int(d.precedence), d.exercise, link))
            self.counters["delivered"] += 1
            shared = self._in_burst(link, now)
            if not shared:
                later.append(self._sign_receipt([(env.id, d)], now, ops, arrived=link))
            if origin:
                m.signed.add(self.config.node)
        if targets is None:
            targets = tuple(
                self.delivery.targets(d.precedence, d, origin=origin, now=now, arrived=link)
            )
        awaiting = bool(origin and m.recipients - m.signed)
        ops += [new_row(env.id, n, at=now + delay, awaiting=awaiting) for n, delay in targets]
        ops += self.retention.take_evictions()
        later.append(_Activate(env.id, m, targets, awaiting))
        if ticket is not None:
            later.append(Submitted(ticket, env.id))
        if shared:
            return self._share_receipt(link, env.id, d, ops, later, now)
        token = next(self._tokens)
        self._held[token] = later
        return [Persist(token, tuple(ops))]

    # ------------------------------------------------------------------ receipts for a burst

    def _in_burst(self, link: str, now: float) -> bool:
        """Does a decision delivered from ``link`` now wait to share its receipt? Only on MQTT,
        and only in a burst: another one came by the link within ``receipt_hold_s`` (at a
        steady 100 a second nothing waits)."""
        hold = self.config.receipt_hold_s
        if hold <= 0 or self._kind(link) != LinkKind.MQTT:
            return False
        last = self._last_delivered.get(link)
        self._last_delivered[link] = now
        return last is not None and now - last <= hold

    def close_receipts(self, now: float) -> list[Action]:
        """Sign every receipt still open now (the node is stopping)."""
        actions: list[Action] = []
        for key in list(self._open):
            actions += self._close_receipt(key, now)
        return actions

    def oldest_open_receipt(self) -> int | None:
        """The serial of the oldest receipt still open (None: none). Whatever the daemon took in
        while ``receipt_serial`` was ``n`` is in a Persist handed over once this is above ``n``
        (or None): only then may the broker be told it arrived."""
        return min((g.serial for g in self._open.values()), default=None)

    def _share_receipt(
        self, link: str, msg_id: bytes, d: Decision, ops: list[StoreOp], later: list[Held],
        now: float,
    ) -> list[Action]:  # fmt: skip
        key = (link, int(d.precedence), d.exercise)
        group = self._open.get(key)
        if group is None:
            self.receipt_serial = next(self._open_serials)
            due = now + self.config.receipt_hold_s
            group = self._open[key] = _OpenReceipt(self.receipt_serial, due, [], [], [])
        group.items.append((msg_id, d))
        group.ops += ops
        group.later += later
        if len(group.items) < receipts.MAX_REFS_PER_RECEIPT:
            return []
        return self._close_receipt(key, now)

    def _close_receipt(self, key: tuple[str, int, bool], now: float) -> list[Action]:
        group = self._open.pop(key)
        if len(group.items) > 1:
            self.counters["receipts_shared"] += len(group.items)
        group.later.append(self._sign_receipt(group.items, now, group.ops, arrived=key[0]))
        token = next(self._tokens)
        self._held[token] = group.later
        return [Persist(token, tuple(group.ops))]

    def _receipt_in(
        self, verdict: Accepted, link: str, now: float, ops: list[StoreOp]
    ) -> list[Held]:
        told, complete = self._receipts.receive(
            verdict, link, now, msgs=self._msgs, pending=self._pending_ids, ops=ops
        )
        for ref in complete:  # every recipient has signed: no more retries
            for key in self._outbox.keys_of(ref, self.links):
                self._outbox.drop(key)
                ops.append(DeleteOutbox(*key))
        return list(told)

    def _sign_receipt(
        self, items: list[tuple[bytes, Decision]], now: float, ops: list[StoreOp], *,
        arrived: str,
    ) -> _Activate:  # fmt: skip
        """Sign for delivered decisions with the node key (persisted with their delivery)."""
        self._seq += 1
        version = self.trust.roster.emit_version if self.trust.roster else PAYLOAD_VERSION
        made = receipts.sign(
            items, now, issued=int(self.trusted_now(now)), seq=self._seq,
            node=self.config.node, key=self._key, kid=self._own_kid, version=version,
        )  # fmt: skip
        for msg_id, _ in items:
            self._own_receipts[msg_id] = made.id
        self._pending_ids.add(made.id)
        precedence = items[0][1].precedence
        targets = self.delivery.receipt_targets(precedence, arrived=arrived, now=now)
        ops += [SetCounter(SEQ_COUNTER, self._seq), *made.ops]
        durable = routing.receipt_needs_row(self.net, arrived)
        if durable:
            ops += [new_row(made.id, name, at=now, awaiting=False) for name, _ in targets]
        return _Activate(made.id, made.msg, targets, False, durable)

    # ------------------------------------------------------------------ scheduling

    def _kind(self, link: str) -> LinkKind | None:
        return self.net.kind(link)

    def _usable(self, link: str, now: float) -> bool:
        return self.health[link].usable(now)

    # ------------------------------------------------------------------ healing (docs/failover.md)

    def _sync_in(self, link: str, raw: bytes, now: float) -> list[Action]:
        """A peer's summary: what it lacks goes back through the outbox (relay.engine.healing)."""
        verdict = self.healer.summary_in(
            link,
            raw,
            now,
            horizon=lambda: self.trusted_now(now) - self.trust.skew_s,
            roster=self.trust.roster,
        )
        if isinstance(verdict, Rejection):
            return self._reject(link, verdict, None, now, None)
        return self.delivery.pump(now) if verdict else []

    # ------------------------------------------------------------------ introspection

    def clock_offset(self, now: float | None = None) -> float | None:
        """Our clock's offset by the evidence of other clocks (relay.engine.clock)."""
        return self.time.offset(now)

    def _saw_time(self, now: float) -> None:
        self.time.saw(now)

    def trusted_now(self, now: float) -> float:
        """Our clock, corrected when the evidence agrees that it is wrong (relay.engine.clock)."""
        return self.time.trusted(now)

    def observe_clock(self, source: str, their_time: float, now: float) -> None:
        """A peer's verified status said its clock read ``their_time`` (roster nodes only)."""
        self.hearing.observe_clock(source, their_time, now)

    def _check(self, env: Envelope, now: float) -> Accepted | Rejection:
        """The trust rules on the trusted time; the signer's clock is noted as evidence first
        (when that evidence changes the trusted time, a time rejection is checked again)."""
        self._saw_time(now)
        own = self._own_kid == env.kid

        def observe(signer: str, issued_at: int) -> None:
            if not own:
                self.clock.observe_bound(signer, issued_at, now)

        return self.time.check(
            now,
            lambda at, first: self.trust.check(
                env, at, self.replay, observe=observe if first else None
            ),
        )

    def statistics(self) -> dict[str, object]:
        return introspect.statistics(
            msgs=len(self._msgs), outbox=self._outbox, counters=self.counters,
            rejections=self.rejections, refusals=self.refusals, time=self.time,
            roster=self.trust.roster, pq=self.pq.statistics(),
        )  # fmt: skip

    def link_health(self, now: float) -> dict[str, dict[str, object]]:
        return introspect.link_health(self.health, now)

    def outbox_depths(self) -> Mapping[str, int]:
        return self._outbox.depths()

    def waiting_for_any_link(self) -> int:
        return self._outbox.waiting_for_any_link()

    def outbox_of(self, msg_id: bytes) -> list[dict[str, object]]:
        """The live outbox entries of one message (relay.engine.introspect.outbox_of)."""
        return introspect.outbox_of(self._outbox, msg_id, self.links)

    def recipients_of(self, msg_id: bytes) -> tuple[frozenset[str], set[str]] | None:
        return introspect.recipients_of(self._msgs, msg_id)
