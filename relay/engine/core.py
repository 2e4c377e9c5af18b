"""The relay engine: verify -> dedupe -> persist -> deliver -> route -> retry -> expire. Sans-I/O.

Inputs are method calls with the current time, or ``handle(event, now)`` with one of
relay.engine.inputs; outputs are lists of actions (relay.engine.ops). Nothing here reads a clock,
touches a socket or a file, so hours of retries and expiry run in milliseconds in tests.

This module is the pipeline and the delegation; the parts live beside it: the outbox
(relay.engine.outbox), the routing policy (relay.engine.routing), receipts (relay.engine.receipts),
partition healing (relay.engine.healing) and the peer table (relay.engine.peers).

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

from relay.engine import inputs, receipts, routing, sync
from relay.engine.clock import WARN_S, ClockEvidence
from relay.engine.config import EngineConfig as EngineConfig  # re-exported: Engine(...) takes it
from relay.engine.healing import Healer
from relay.engine.health import LinkHealth
from relay.engine.model import HeldMessage
from relay.engine.model import LinkInfo as LinkInfo  # re-exported: Engine(...) takes it
from relay.engine.model import Snapshot as Snapshot
from relay.engine.model import StoredMessage as StoredMessage
from relay.engine.ops import (
    Action,
    AuditEvent,
    DeleteMessages,
    DeleteOutbox,
    Deliver,
    Persist,
    PruneTombstones,
    PutInbox,
    PutMessage,
    PutReplay,
    Rejected,
    SetCounter,
    StoreOp,
    Submitted,
    Transmit,
)
from relay.engine.outbox import ANY_LINK, Entry, Outbox, backoff, new_row
from relay.engine.peers import PeerTable
from relay.engine.pq import PqHook
from relay.engine.receipts import LOCAL_LINK
from relay.engine.routing import SHOWN_KINDS
from relay.engine.status import check_status
from relay.envelope import (
    PAYLOAD_VERSION,
    Decision,
    Envelope,
    Kind,
    Precedence,
    Reason,
    Rejection,
    key_id,
    open_envelope,
)
from relay.trust import Accepted, ReplayGuard, ReplayWindow, Role, TrustState, revoked_kids
from relay.vocab import Channel, LinkKind, LinkState, LinkStateName

ROSTER_FILE = "roster-file"  # "arrived by": the roster file read at start (Engine.roster_file)
SEQ_COUNTER = "own_seq"
CLOCK_WARN_S = WARN_S
TIME_REASONS = frozenset({Reason.EXPIRED, Reason.NOT_YET_VALID, Reason.SIGNER_NOT_VALID})
MAX_REFUSAL_KEYS = 64  # distinct (link, what, reason) refusal counters kept; the rest: "other"


@dataclass(frozen=True, slots=True)
class _Activate:
    """Held until persistence: then the message becomes known and its transmissions due."""

    id: bytes
    msg: HeldMessage
    targets: tuple[tuple[str, float], ...]  # (link or ANY_LINK, delay before the first send)
    awaiting: bool


Held = Action | _Activate


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
        self._rng = random.Random(config.seed)  # noqa: S311 - jitter, not cryptography
        self.replay = ReplayGuard()
        self._msgs: dict[bytes, HeldMessage] = {}
        self._tombstones: dict[bytes, float] = {}
        self._pending_ids: set[bytes] = set()
        self._outbox = Outbox(dropped_bound=4 * config.max_inflight_per_link * len(self.links))
        self._own_receipts: dict[bytes, bytes] = {}
        self._held: dict[int, list[Held]] = {}
        self._evictions: list[DeleteMessages] = []
        self._tokens = itertools.count(1)
        self._seq = 0
        self._next_gc = 0.0
        self.clock = ClockEvidence()
        self._first_now: float | None = None  # the first time we were called (clock_grace_s)
        self._last_now = 0.0  # the latest time we were given (for statistics)
        self._receipts = receipts.Intake(self.counters)
        self.rejections: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()  # "link what: reason" -> count (bounded)
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
        if snapshot is not None:
            self._restore(snapshot)

    # ------------------------------------------------------------------ restore

    def _restore(self, snap: Snapshot) -> None:
        self._seq = snap.counters.get(SEQ_COUNTER, 0)
        for kid, (high, bits) in snap.replay.items():
            self.replay.windows[kid] = ReplayWindow.restore(high, bits)
        self._tombstones = dict(snap.tombstones)
        trust_msgs: list[Envelope] = []
        parsed: list[tuple[Envelope, StoredMessage]] = []
        for sm in snap.messages:
            env = open_envelope(sm.raw, max_bytes=1 << 20)
            if isinstance(env, Rejection):  # stored by us after verification: a bug or corruption
                raise ValueError(f"stored message cannot be parsed: {env.detail}")
            parsed.append((env, sm))
            if env.decision.kind in (Kind.ROSTER, Kind.REVOCATION):
                trust_msgs.append(env)
        for env in sorted(trust_msgs, key=lambda e: e.decision.seq):
            verdict = self.trust.check(env, env.decision.issued_at)
            if isinstance(verdict, Accepted):
                self.trust.apply(verdict)
        for env, sm in parsed:
            d = env.decision
            m = HeldMessage(
                sm.raw, d, sm.received_at, sm.origin, self._kind(sm.received_via), kid=env.kid
            )
            if sm.origin and d.kind in SHOWN_KINDS and self.trust.roster is not None:
                m.recipients = frozenset(self.trust.roster.recipients(d.audience))
            self._msgs[env.id] = m
        for msg_id, node in snap.receipts:
            if msg_id in self._msgs:
                self._msgs[msg_id].signed.add(node)
        self._own_receipts = dict(snap.own_receipts)
        for row in snap.outbox:
            if row.id in self._msgs and (row.link in self.links or row.link == ANY_LINK):
                self._outbox.add(
                    row.id,
                    row.link,
                    attempts=row.attempts,
                    at=row.next_at,
                    awaiting=row.awaiting_receipts,
                )
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
        # make us bridge a roster of many frames into the mesh (_bridge_missed).
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
        """A node was heard on a link (any message or status it published). ``gateway``: its
        status says whether it has a usable mesh link besides MQTT (None: not stated).

        Only nodes on the roster become peers (a topic name is no proof of anything), and the
        table holds at most ``max_peers``: a new one evicts the least recently heard."""
        if not self._peers.admit(node, self.trust.roster):
            return
        self.peers[node] = now
        if self._kind(link) == LinkKind.MQTT:
            before = self._peers.heard_on_mqtt(node, now, gateway=gateway)
            back = before < now - self.config.peer_timeout_s  # new, or back from a partition
            if back and link in self.links and node != self.config.node:
                self.sync.peer_returned(link, node, now)

    def status_received(self, link: str, peer: str, raw: bytes, now: float) -> list[Action]:
        """A status published on ``peer``'s status topic (relay.engine.status): verified, then
        the peer is heard (gateway or not); a forged, unsigned or stale one is rejected."""
        self.counters["statuses"] += 1
        self._saw_time(now)

        def observe(signer: str, issued_at: int) -> None:
            # A verified status is a reading of its signer's clock when it was sent, a point of
            # evidence about ours (relay.engine.clock); noted before the time checks, which
            # would otherwise reject every status while our own clock is far off.
            if signer == peer:
                self.observe_clock(signer, float(issued_at), now)

        before = self.trusted_now(now)
        heard = check_status(
            self.trust,
            peer,
            raw,
            before,
            last_issued=self._peers.status_issued.get(peer, {}),
            max_bytes=self.config.max_inbound_bytes,
            observe=observe,
        )
        if isinstance(heard, Rejection) and heard.reason in TIME_REASONS:
            after = self.trusted_now(now)
            if after != before:
                heard = check_status(
                    self.trust,
                    peer,
                    raw,
                    after,
                    last_issued=self._peers.status_issued.get(peer, {}),
                    max_bytes=self.config.max_inbound_bytes,
                )
        if isinstance(heard, Rejection):
            # Counted and logged, not audited: a broker can hold thousands of retained statuses
            # and hands them all over on every connect.
            self.counters["statuses_rejected"] += 1
            self.rejections[str(heard.reason)] += 1
            return [Rejected(link, heard.reason, f"status: {heard.detail}", None)]
        if not self._peers.admit(
            peer, self.trust.roster
        ):  # checked by the trust rules already; kept for the bound
            return []
        self._peers.status_issued.setdefault(peer, {})[str(heard.fields["state"])] = heard.issued_at
        self.peer_statuses[peer] = {**heard.fields, "heard_at": now}
        if heard.online:
            gateway = heard.fields.get("gateway")
            self.peer_heard(link, peer, now, gateway=gateway if isinstance(gateway, bool) else None)
        else:
            self.peers.setdefault(peer, now)  # keeps the status table inside the same bound
        return []

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
                    out.suppressible = delay > 0
                activated = True
            else:
                actions.append(item)
        return actions + self._pump(now) if activated else actions

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
            self._revive(now)
        return changed + self._pump(now)

    def _audit(
        self, now: float, event: str, msg_id: bytes | None, link: str | None, detail: str | None
    ) -> Persist:
        """An audit row on its own (nothing waits for it)."""
        return Persist(next(self._tokens), (AuditEvent(now, event, msg_id, link, None, detail),))

    def refused(
        self, link: str, msg_id: bytes, target: str, reason: str, now: float
    ) -> list[Action]:
        """The broker or peer refused a transmission (``relay.links.LinkRefused``): audit it with
        what was refused (``target``: a topic, a radio) and the reason, count it, and retry the
        message after a long backoff (``refused_retry_*``). ``msg_id`` empty: not an outbox
        message (a summary, our status), so only the audit and the count."""
        detail = f"{target}: {reason}" if target else reason
        key = f"{link} {detail}"
        if key not in self.refusals and len(self.refusals) >= MAX_REFUSAL_KEYS:
            key = f"{link} other"
        self.refusals[key] += 1
        self.counters["transmit_refused"] += 1
        audit = self._audit(now, "refused", msg_id or None, link, detail)
        if not msg_id:
            return [audit]
        return [audit, *self.transmitted(link, msg_id, False, now, refused=True)]

    def transmitted(
        self,
        link: str,
        msg_id: bytes,
        ok: bool,
        now: float,
        *,
        airtime_s: float | None = None,
        refused: bool = False,
    ) -> list[Action]:
        """A link reports the outcome of a ``Transmit`` (for MQTT: PUBACK received or not;
        for mesh the airtime it cost, when known, goes into the audit row). ``refused``: the
        failure was a refusal (use ``refused()``, which audits and counts it)."""
        key = (msg_id, link)
        out = self._outbox.get(key)
        if out is None or not out.inflight:
            key = (msg_id, ANY_LINK)
            out = self._outbox.get(key)
            if out is not None and out.via != link:
                out = None
        m = self._msgs.get(msg_id)
        if out is None or m is None or not out.inflight:
            # A late or repeated report: nothing is in flight, unless its entry was dropped.
            return self._dropped_transmitted(link, msg_id, ok, now, airtime_s) + self._pump(now)
        self._outbox.sent_back(out, link)
        actions: list[Action] = []
        if ok:
            airtime = None if airtime_s is None else f"airtime_s={airtime_s:.3f}"
            actions.append(self._audit(now, "sent", msg_id, link, airtime))
            if self._kind(link) == LinkKind.MESH:
                m.meshed.add(link)
        cfg = self.config
        if not ok and refused:
            delay = backoff(cfg.refused_retry_base_s, out.attempts, cfg.refused_retry_max_s)
            self._outbox.wait(out, now + delay)
        elif not ok:
            self.counters["transmit_failed"] += 1
            delay = backoff(cfg.fail_retry_base_s, out.attempts, cfg.fail_retry_max_s)
            if key[1] == ANY_LINK and routing.best_link(self.net, now) not in (None, link):
                delay = 0.0  # another link is usable: fail over now, do not wait
            self._outbox.wait(out, now + delay)
        elif out.awaiting_receipts and (
            self._mesh_pending(m, now)
            if self._serves_mesh_only(key[1], out, m)
            else m.recipients - m.signed
        ):
            self.counters["transmitted"] += 1
            flash = m.precedence == Precedence.FLASH
            base = cfg.flash_retry_base_s if flash else cfg.retry_base_s
            self._outbox.wait(out, now + backoff(base, out.attempts, cfg.retry_max_s))
        else:
            self.counters["transmitted"] += 1
            self._outbox.remove(key)
            actions.append(Persist(next(self._tokens), (DeleteOutbox(*key),)))
        return actions + self._pump(now)

    def _dropped_transmitted(
        self, link: str, msg_id: bytes, ok: bool, now: float, airtime_s: float | None
    ) -> list[Action]:
        """The outcome of a send whose entry was dropped while it was in flight (``_drop_key``).
        A mesh frame is done only when a neighbour relays it, often after the receipt it
        brought has come back; what went on the air is audited like any other send."""
        if not self._outbox.take_dropped(msg_id, link):
            return []
        if not ok:
            return []  # nobody waits for it any more: no retry
        self.counters["transmitted"] += 1
        if (m := self._msgs.get(msg_id)) is not None and self._kind(link) == LinkKind.MESH:
            m.meshed.add(link)
        airtime = None if airtime_s is None else f"airtime_s={airtime_s:.3f}"
        return [self._audit(now, "sent", msg_id, link, airtime)]

    def timer(self, now: float) -> list[Action]:
        self._saw_time(now)
        actions: list[Action] = []
        if any([h.tick(now) for h in self.health.values()]):
            self._revive(now)
        if now >= self._next_gc:
            self._next_gc = now + self.config.gc_interval_s
            actions += self._collect(now)
        actions += self._bridge_missed(now)
        actions += self.healer.due(
            now,
            [n for n in self.links if self._usable(n, now)],
            seq=self._seq,
            mqtt_peers=self.mqtt_peers,
        )
        actions += self.pq.timer(self, now)
        return actions + self._pump(now)

    def _bridge_missed(self, now: float) -> list[Action]:
        """A node has just gone quiet on MQTT: what came by MQTT shortly before may never have
        reached it (a decision sent in the first seconds of a cut is published to a broker that
        can no longer reach the node). A gateway bridges those it has no receipt of from that
        node into its meshes, taking its turn as for fresh messages."""
        mqtt = [n for n, info in self.links.items() if info.kind == LinkKind.MQTT]
        meshes = [n for n, info in self.links.items() if info.kind == LinkKind.MESH]
        roster = self.trust.roster
        if not mqtt or not meshes or roster is None:
            return []
        if not any(self.health[n].usable(now) for n in mqtt):
            # Without MQTT ourselves we hear nobody there: that says nothing about the others.
            self._peers.all_quiet()
            return []
        newly = self._peers.newly_quiet(now, self.config.peer_timeout_s)
        if not newly:
            return []
        since = min(self.mqtt_peers[n] for n in newly) - self.config.peer_timeout_s
        ops: list[StoreOp] = []
        for msg_id, m in self._msgs.items():
            if (
                m.received_at < since
                or m.kind == Kind.ACK
                or not (m.origin or m.via_kind == LinkKind.MQTT)
                or m.expires_at + self.trust.skew_s < self.trusted_now(now)
            ):
                continue
            d = m.decision
            missed = routing.missed_by(self.net, d, roster, m.signed, newly)
            if not missed:
                continue
            turn = routing.bridge_turn(self.net, d, now)
            for link in meshes:
                if (msg_id, link) in self._outbox or link in m.meshed:
                    continue
                at = now + turn * self.config.bridge_slot_s
                at += self._rng.uniform(0.0, self.config.trickle_s)
                self._outbox.add(
                    msg_id, link, attempts=0, at=at, awaiting=False
                ).suppressible = True
                ops.append(new_row(msg_id, link, at=at, awaiting=False))
                ops.append(AuditEvent(now, "bridge", msg_id, link, None,
                                      "missed by " + ",".join(sorted(missed))))  # fmt: skip
                self.counters["bridged_missed"] += 1
        return [Persist(next(self._tokens), tuple(ops))] if ops else []

    def next_deadline(self) -> float:
        """When ``timer`` should next be called."""
        deadline = min(self._next_gc, self.sync.next_deadline(), self.pq.next_deadline())
        for h in self.health.values():
            change = h.next_change_at()
            if change is not None:
                deadline = min(deadline, change)
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
        if not self._make_room(d.precedence):
            why = Rejection(Reason.STORE_FULL, "store is full of unexpired FLASH messages")
            return self._reject(link, why, ticket, now, env.id)
        return self._accept(link, verdict, now, ticket)

    def _duplicate(self, link: str, env: Envelope, ticket: int | None, now: float) -> list[Action]:
        self.counters["duplicates"] += 1
        actions: list[Action] = []
        if ticket is not None:
            actions.append(Submitted(ticket, env.id, duplicate=True))
        if self._kind(link) == LinkKind.MESH:
            # Heard on this mesh: another gateway (or the origin) has put it there already.
            # Only this mesh: a gateway with radios in two meshes still owes the other one.
            if (heard := self._msgs.get(env.id)) is not None:
                heard.meshed.add(link)
            out = self._outbox.get((env.id, link))
            if out is not None and out.suppressible and not out.inflight and not out.attempts:
                self._outbox.remove((env.id, link))
                self.counters["bridge_suppressed"] += 1
                actions.append(Persist(next(self._tokens), (DeleteOutbox(env.id, link),)))
                self.healer.drop_answers(out.answer)  # another node answers that summary
        # The sender is retrying, so our receipt may have been lost: send it again, back the way
        # the copy came (a FLASH retry heard on MQTT is no reason to spend airtime on a mesh).
        # Not while a healing round runs on the link: that copy answers someone else's summary.
        rid = self._own_receipts.get(env.id)
        healing = self.sync.healing(link, now)
        if rid is not None and rid in self._msgs and link in self.links and not healing:
            if (rid, link) not in self._outbox and (rid, ANY_LINK) not in self._outbox:
                self._outbox.add(rid, link, attempts=0, at=now, awaiting=False)
                row = new_row(rid, link, at=now, awaiting=False)
                actions.append(Persist(next(self._tokens), (row,)))
            actions += self._pump(now)
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
            PutMessage(
                id=env.id,
                raw=env.raw,
                kid=env.kid,
                signer=verdict.signer,
                seq=d.seq,
                kind=int(d.kind),
                precedence=int(d.precedence),
                exercise=d.exercise,
                audience=str(d.audience),
                issued_at=d.issued_at,
                expires_at=d.expires_at,
                received_at=now,
                received_via=link,
                origin=origin,
            ),
            PutReplay(env.kid, window.high, window.to_bytes()),
            AuditEvent(now, "accepted", env.id, link, verdict.signer, d.kind.name.lower()),
        ]
        held: list[Held] = []
        m = HeldMessage(env.raw, d, now, origin, self._kind(link), kid=env.kid)
        if origin and d.kind in SHOWN_KINDS and self.trust.roster is not None:
            m.recipients = frozenset(self.trust.roster.recipients(d.audience))
        if d.kind in (Kind.ROSTER, Kind.REVOCATION):
            self.trust.apply(verdict)
            if d.kind == Kind.REVOCATION:
                kids = ",".join(k.hex() for k in revoked_kids(d))
                ops.append(AuditEvent(now, "revoked", env.id, link, None, kids))
        if d.kind == Kind.ACK:
            held += self._receipt_in(verdict, link, now, ops)
        held += self.pq.on_accept(self, env, link, now, ops)
        if d.kind in SHOWN_KINDS and d.audience.includes(self.config.node, self.config.regions):
            ops.append(PutInbox(env.id, now))
            shown = d.precedence.name.lower() + (" exercise" if d.exercise else "")
            ops.append(AuditEvent(now, "delivered", env.id, link, self.config.node, shown))
            held.append(Deliver(env.id, verdict.signer, int(d.precedence), d.exercise, link))
            self.counters["delivered"] += 1
            held.append(self._sign_receipt(env, d, now, ops, arrived=link))
            if origin:
                m.signed.add(self.config.node)
        if targets is None:
            targets = tuple(self._targets(d.precedence, d, origin=origin, now=now, arrived=link))
        awaiting = bool(origin and m.recipients - m.signed)
        ops += [new_row(env.id, n, at=now + delay, awaiting=awaiting) for n, delay in targets]
        ops += self._evictions
        self._evictions.clear()
        held.append(_Activate(env.id, m, targets, awaiting))
        if ticket is not None:
            held.append(Submitted(ticket, env.id))
        token = next(self._tokens)
        self._held[token] = held
        return [Persist(token, tuple(ops))]

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
        self, env: Envelope, d: Decision, now: float, ops: list[StoreOp], *, arrived: str
    ) -> _Activate:
        """Sign for a delivered decision with the node key (persisted with the delivery)."""
        self._seq += 1
        version = self.trust.roster.emit_version if self.trust.roster else PAYLOAD_VERSION
        made = receipts.sign(
            env.id, d, now, issued=int(self.trusted_now(now)), seq=self._seq,
            node=self.config.node, key=self._key, kid=self._own_kid, version=version,
        )  # fmt: skip
        self._own_receipts[env.id] = made.id
        self._pending_ids.add(made.id)
        targets = tuple(self._targets(d.precedence, None, origin=True, now=now))
        if self._kind(arrived) == LinkKind.MQTT:
            # Reply on the link that has just carried the decision: it works. Not "every link"
            # for FLASH (with MQTT healthy no receipt should cost mesh airtime), and not "the
            # best usable link": right after an outage MQTT is held down for a while, and every
            # receipt for the backlog it delivers would go into the mesh. Should MQTT die before
            # the receipt is out, the sender's retry makes us send it again the way it came.
            targets = ((arrived, 0.0),)
        elif d.precedence == Precedence.FLASH and arrived == LOCAL_LINK:
            targets = ((ANY_LINK, 0.0),) if self.links else ()  # our own: one link is enough
        ops += [SetCounter(SEQ_COUNTER, self._seq), *made.ops]
        ops += [new_row(made.id, name, at=now, awaiting=False) for name, _ in targets]
        return _Activate(made.id, made.msg, targets, False)

    # ------------------------------------------------------------------ scheduling

    def _kind(self, link: str) -> LinkKind | None:
        return self.net.kind(link)

    def _usable(self, link: str, now: float) -> bool:
        return self.health[link].usable(now)

    def _targets(
        self, precedence: Precedence, d: Decision | None, *, origin: bool, now: float,
        arrived: str | None = None,
    ) -> list[tuple[str, float]]:  # fmt: skip
        """Outbox entries for a new message (relay.engine.routing.targets)."""
        net, cfg = self.net, self.config

        def bridge_delay() -> float:
            assert d is not None
            turn = routing.bridge_turn(net, d, now)
            return turn * cfg.bridge_slot_s + self._rng.uniform(0.0, cfg.trickle_s)

        return routing.targets(
            net, precedence, d, origin=origin, arrived=arrived, now=now,
            mesh_first=lambda: routing.mesh_targets(
                net, d, self.trust.roster, now, peer_grace_s=cfg.peer_grace_s
            ),
            mesh_is_needed=lambda: d is not None and routing.mesh_needed(
                net, d, self.trust.roster, now, arrived_by=self._arrived_by
            ),
            bridge_delay=bridge_delay,
        )  # fmt: skip

    def _arrived_by(self, msg_id: bytes) -> LinkKind | None:
        m = self._msgs.get(msg_id)
        return None if m is None else m.via_kind

    def _mesh_pending(self, m: HeldMessage, now: float) -> set[str]:
        """Recipients of our own message that have not signed and that only the mesh reaches."""
        return routing.mesh_pending(self.net, m.recipients - m.signed, now)

    def _serves_mesh_only(self, link: str, out: Entry, m: HeldMessage) -> bool:
        """Is this the mesh entry of an own decision (``mesh_targets``, or FLASH's copy for
        every link)? It is retried (and, below FLASH, first sent) only while a recipient that
        only the mesh reaches has not signed: nodes healthy on MQTT cost no airtime."""
        return (
            link != ANY_LINK
            and m.origin
            and out.awaiting_receipts
            and not out.answer
            and m.kind in SHOWN_KINDS
            and self._kind(link) == LinkKind.MESH
        )

    def _revive(self, now: float) -> None:
        """A link changed state. Entries parked for want of a link go back on the heap; an entry
        that has not been carried yet (or whose last try failed) becomes due at once, so it fails
        over (or back) without waiting out its backoff."""
        for out in self._outbox.entries():
            if out.inflight:
                continue
            fresh = not out.awaiting_receipts or out.attempts == 0
            if out.link != ANY_LINK and not self._usable(out.link, now):
                continue
            at = min(out.next_at, now) if fresh else out.next_at
            self._outbox.wait(out, at)

    def _pump(self, now: float) -> list[Action]:
        actions: list[Action] = []
        inflight = self._outbox.inflight
        deferred: list[Entry] = []
        for out in self._outbox.pop_due(now):
            msg_id, link = out.key
            # A mesh link with its own entry for this message (_mesh_targets) carries it there.
            skip = {n for n in self.links if (msg_id, n) in self._outbox}
            via = routing.best_link(self.net, now, skip) if link == ANY_LINK else link
            if via is None or not self._usable(via, now):
                continue  # parked; a link state change (_revive) makes it due again
            m = self._msgs.get(msg_id)
            if m is None or m.expires_at + self.trust.skew_s < self.trusted_now(now):
                self._outbox.remove((msg_id, link))
                continue
            if (
                (out.attempts or m.precedence != Precedence.FLASH)  # FLASH: every link at once
                and self._serves_mesh_only(link, out, m)
                and not self._mesh_pending(m, now)
            ):
                self._outbox.remove((msg_id, link))  # all heard on MQTT meanwhile (or signed)
                actions.append(Persist(next(self._tokens), (DeleteOutbox(msg_id, link),)))
                continue
            if inflight[via] >= self.config.max_inflight_per_link:
                deferred.append(out)
                continue
            if out.attempts and out.awaiting_receipts:
                self.counters["retries"] += 1
            self._outbox.send(out, via)  # back in transmitted() (or dropped)
            channel = Channel.RCPT if m.kind == Kind.ACK else Channel.MSG
            actions.append(Transmit(via, channel, msg_id, m.raw, int(m.precedence)))
            actions += self.pq.beside(self, msg_id, via, int(m.precedence))
        for out in deferred:
            self._outbox.wait(out, out.next_at)
        return actions

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
        return self._pump(now) if verdict else []

    # ------------------------------------------------------------------ bounds and expiry

    def _make_room(self, incoming: Precedence) -> bool:
        """Keep the store within max_messages. Evict receipts first (a lost receipt costs a
        retry and a fresh receipt; a lost decision may be lost for good), then the least urgent,
        oldest messages; unexpired FLASH is never evicted, and when only FLASH is left a non-FLASH
        newcomer is refused (its sender keeps it and retries). Evicted ids stay known as
        tombstones until they expire, so a later copy is still a duplicate, never a second
        delivery."""
        excess = len(self._msgs) + len(self._pending_ids) + 1 - self.config.max_messages
        if excess <= 0:
            return True
        candidates = sorted(
            (m.kind != Kind.ACK, -int(m.precedence), m.received_at, msg_id)
            for msg_id, m in self._msgs.items()
            if m.precedence != Precedence.FLASH
        )[:excess]
        if len(candidates) < excess:
            # Only FLASH left: a FLASH newcomer still gets in (FLASH is bounded by its issuers).
            return incoming == Precedence.FLASH
        ids = tuple(c[3] for c in candidates)
        for msg_id in ids:
            m = self._msgs.pop(msg_id)
            self._tombstones[msg_id] = m.expires_at + self.trust.skew_s
            self._own_receipts.pop(msg_id, None)
            for key in self._outbox.keys_of(msg_id, self.links):
                self._outbox.drop(key)
        self.counters["evicted"] += len(ids)
        self.pq.forget(ids)
        self._evictions.append(DeleteMessages(ids, tombstone=True))
        return True

    def _collect(self, now: float) -> list[Action]:
        first = now if self._first_now is None else self._first_now
        if not self.clock.confirmed(now) and now - first < self.config.clock_grace_s:
            self.counters["collect_deferred"] += 1
            return []  # nobody has confirmed our clock yet: do not purge on its word alone
        now = self.trusted_now(now)  # expiry and tombstones are in the messages' time
        horizon = now - self.trust.skew_s
        expired = tuple(i for i, m in self._msgs.items() if m.expires_at < horizon)
        ops: list[StoreOp] = []
        if expired:
            for msg_id in expired:
                del self._msgs[msg_id]
                self._own_receipts.pop(msg_id, None)
                for key in self._outbox.keys_of(msg_id, self.links):
                    self._outbox.drop(key)
            ops.append(DeleteMessages(expired, tombstone=False))
            self.pq.forget(expired)
            self.counters["expired"] += len(expired)
        stale = [i for i, t in self._tombstones.items() if t < now]
        for msg_id in stale:
            del self._tombstones[msg_id]
        if stale:
            ops.append(PruneTombstones(now))
        return [Persist(next(self._tokens), tuple(ops))] if ops else []

    # ------------------------------------------------------------------ introspection

    def clock_offset(self, now: float | None = None) -> float | None:
        """Our clock's offset by the evidence of other clocks (relay.engine.clock), in seconds:
        None until enough independent sources agree."""
        return self.clock.offset(self._last_now if now is None else now)

    def _saw_time(self, now: float) -> None:
        self._last_now = now
        if self._first_now is None:
            self._first_now = now

    def trusted_now(self, now: float) -> float:
        """Our clock, corrected when the evidence agrees that it is wrong (time checks, expiry,
        our receipts' issued-at); retries and timers stay on our own clock."""
        return now + self.clock.correction(now)

    def observe_clock(self, source: str, their_time: float, now: float) -> None:
        """A peer's verified status said its clock read ``their_time`` (roster nodes only)."""
        self._saw_time(now)
        if source != self.config.node and (roster := self.trust.roster) is not None:
            entry = roster.by_name(source)
            if entry is not None and entry.role == Role.NODE:
                self.clock.observe_point(source, their_time, now)

    def _check(self, env: Envelope, now: float) -> Accepted | Rejection:
        """The trust rules on the trusted time; the signer's clock is noted as evidence first
        (when that evidence changes the trusted time, a time rejection is checked again)."""
        self._saw_time(now)
        before = self.trusted_now(now)
        own = self._own_kid == env.kid

        def observe(signer: str, issued_at: int) -> None:
            if not own:
                self.clock.observe_bound(signer, issued_at, now)

        verdict = self.trust.check(env, before, self.replay, observe=observe)
        if isinstance(verdict, Rejection) and verdict.reason in TIME_REASONS:
            after = self.trusted_now(now)
            if after != before:
                verdict = self.trust.check(env, after, self.replay)
        return verdict

    def statistics(self) -> dict[str, object]:
        offset = self.clock_offset()
        return {
            "messages": len(self._msgs),
            "outbox": len(self._outbox),
            "inflight": sum(self._outbox.inflight.values()),
            "counters": dict(self.counters),
            "rejections": dict(self.rejections),
            "refusals": dict(self.refusals),
            "clock_offset_s": offset,
            "clock_warning": offset is not None and abs(offset) > CLOCK_WARN_S,
            "clock_corrected_s": self.clock.correction(self._last_now),
            "clock_sources": len(self.clock.sources(self._last_now)),
            "roster_serial": self.trust.roster.serial if self.trust.roster else None,
            "pq": self.pq.statistics(),
        }

    def link_health(self, now: float) -> dict[str, dict[str, object]]:
        return {
            name: {
                "reported": h.reported,
                "effective": h.effective(now),
                "changed_at": h.changed_at,
                "hold_s": h.current_hold_s,
            }
            for name, h in self.health.items()
        }

    def outbox_depths(self) -> Mapping[str, int]:
        return self._outbox.depths()

    def waiting_for_any_link(self) -> int:
        return self._outbox.waiting_for_any_link()

    def outbox_of(self, msg_id: bytes) -> list[dict[str, object]]:
        """The live outbox entries of one message: link ("*" = the best link at the time),
        attempts so far (failed ones included), next try, in flight and on which link. The
        store's outbox rows keep the attempts of when they were written (0); these are current."""
        return [
            {
                "link": out.link,
                "attempts": out.attempts,
                "next_at": out.next_at,
                "inflight": out.inflight,
                "via": out.via,
                "awaiting_receipts": out.awaiting_receipts,
            }
            for out in self._outbox.of(msg_id, self.links)
        ]

    def recipients_of(self, msg_id: bytes) -> tuple[frozenset[str], set[str]] | None:
        m = self._msgs.get(msg_id)
        return None if m is None else (m.recipients, set(m.signed))
