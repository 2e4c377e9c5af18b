"""Delivery: the outbox's scheduling. What goes out on which link when, what a link's outcome
does to an entry (retry, fail over, done), and the gateway's bridging of messages a node that has
just gone quiet on MQTT may have missed. Pure: time is passed in.

``Delivery`` owns the outbox entries' lifecycle; the engine hands it the tables it reads (the
messages it holds, the peer table, the trust state) and gets actions back. The policy itself is in
relay.engine.routing; the entries and their states in relay.engine.outbox.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable, Mapping

from relay.engine import routing
from relay.engine.config import EngineConfig
from relay.engine.model import HeldMessage
from relay.engine.ops import Action, AuditEvent, DeleteOutbox, Persist, StoreOp, Transmit
from relay.engine.outbox import ANY_LINK, Entry, Outbox, backoff, new_row
from relay.engine.peers import PeerTable
from relay.engine.receipts import LOCAL_LINK
from relay.engine.routing import SHOWN_KINDS
from relay.envelope import Decision, Kind, Precedence
from relay.trust import TrustState
from relay.vocab import Channel, LinkKind

MAX_REFUSAL_KEYS = 64  # distinct (link, what, reason) refusal counters kept; the rest: "other"


def audit(
    tokens: itertools.count[int],
    now: float,
    event: str,
    msg_id: bytes | None,
    link: str | None,
    detail: str | None,
) -> Persist:
    """An audit row on its own (nothing waits for it)."""
    return Persist(next(tokens), (AuditEvent(now, event, msg_id, link, None, detail),))


class Delivery:
    """Schedules the outbox: targets of new messages, the pump, outcomes, revival, bridging."""

    def __init__(
        self,
        *,
        config: EngineConfig,
        net: routing.Net,
        outbox: Outbox,
        msgs: Mapping[bytes, HeldMessage],
        peers: PeerTable,
        trust: TrustState,
        counters: Counter[str],
        tokens: itertools.count[int],
        trusted_now: Callable[[float], float],
        beside: Callable[[bytes, str, int], list[Action]] | None = None,
    ) -> None:
        self.config = config
        self.net = net
        self.outbox = outbox
        self._msgs = msgs
        self._peers = peers
        self._trust = trust
        self.counters = counters
        self._tokens = tokens
        self._trusted_now = trusted_now
        # What goes out right behind a message on a link (the PQ attestation, relay.engine.pq).
        self._beside = beside
        self._rng = random.Random(config.seed)  # noqa: S311 - jitter, not cryptography
        self.refusals: Counter[str] = Counter()  # "link what: reason" -> count (bounded)

    # ------------------------------------------------------------------ routing of new messages

    def targets(
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
                net, d, self._trust.roster, now, peer_grace_s=cfg.peer_grace_s
            ),
            mesh_is_needed=lambda: d is not None and routing.mesh_needed(
                net, d, self._trust.roster, now, arrived_by=self._arrived_by
            ),
            bridge_delay=bridge_delay,
        )  # fmt: skip

    def receipt_targets(
        self, precedence: Precedence, *, arrived: str, now: float
    ) -> tuple[tuple[str, float], ...]:
        """Outbox entries for our receipt of a decision that ``arrived`` by that link."""
        if self.net.kind(arrived) == LinkKind.MQTT:
            # Reply on the link that has just carried the decision: it works. Not "every link"
            # for FLASH (with MQTT healthy no receipt should cost mesh airtime), and not "the
            # best usable link": right after an outage MQTT is held down for a while, and every
            # receipt for the backlog it delivers would go into the mesh. Should MQTT die before
            # the receipt is out, the sender's retry makes us send it again the way it came.
            return ((arrived, 0.0),)
        if precedence == Precedence.FLASH and arrived == LOCAL_LINK:
            return ((ANY_LINK, 0.0),) if self.net.links else ()  # our own: one link is enough
        return tuple(self.targets(precedence, None, origin=True, now=now))

    def _arrived_by(self, msg_id: bytes) -> LinkKind | None:
        m = self._msgs.get(msg_id)
        return None if m is None else m.via_kind

    def mesh_pending(self, m: HeldMessage, now: float) -> set[str]:
        """Recipients of our own message that have not signed and that only the mesh reaches."""
        return routing.mesh_pending(self.net, m.recipients - m.signed, now)

    def retry_useless(self, out: Entry, m: HeldMessage, via: str, now: float) -> bool:
        """A retry of our own message on MQTT that reaches nobody who still has to sign
        (routing.retry_reaches_nobody)."""
        if not (m.origin and out.awaiting_receipts and out.attempts and not out.answer):
            return False
        if self.net.kind(via) != LinkKind.MQTT:
            return False
        return routing.retry_reaches_nobody(self.net, m.recipients - m.signed, now)

    def serves_mesh_only(self, link: str, out: Entry, m: HeldMessage) -> bool:
        """Is this the mesh entry of an own decision (``mesh_targets``, or FLASH's copy for
        every link)? It is retried (and, below FLASH, first sent) only while a recipient that
        only the mesh reaches has not signed: nodes healthy on MQTT cost no airtime."""
        return (
            link != ANY_LINK
            and m.origin
            and out.awaiting_receipts
            and not out.answer
            and m.kind in SHOWN_KINDS
            and self.net.kind(link) == LinkKind.MESH
        )

    def _expired(self, m: HeldMessage, now: float) -> bool:
        return m.expires_at + self._trust.skew_s < self._trusted_now(now)

    # ------------------------------------------------------------------ sending

    def revive(self, now: float) -> None:
        """A link changed state. Entries parked for want of a link go back on the heap; an entry
        that has not been carried yet (or whose last try failed) becomes due at once, so it fails
        over (or back) without waiting out its backoff."""
        for out in self.outbox.entries():
            if out.inflight:
                continue
            fresh = not out.awaiting_receipts or out.attempts == 0
            if out.link != ANY_LINK and not self.net.usable(out.link, now):
                continue
            at = min(out.next_at, now) if fresh else out.next_at
            self.outbox.wait(out, at)

    def pump(self, now: float) -> list[Action]:
        """Hand every due entry to its link (or the best usable one), within the in-flight
        bound; park what no link can carry, drop what has expired or is no longer needed."""
        actions: list[Action] = []
        inflight = self.outbox.inflight
        deferred: list[Entry] = []
        if self._all_full(now):
            return actions  # nothing can go: leave the due entries where they are
        for out in self.outbox.pop_due(now):
            msg_id, link = out.key
            # A mesh link with its own entry for this message (mesh_targets) carries it there.
            skip = {n for n in self.net.links if (msg_id, n) in self.outbox}
            via = routing.best_link(self.net, now, skip) if link == ANY_LINK else link
            if via is None or not self.net.usable(via, now):
                continue  # parked; a link state change (revive) makes it due again
            m = self._msgs.get(msg_id)
            if m is None or self._expired(m, now):
                self.outbox.remove((msg_id, link))
                continue
            if self.retry_useless(out, m, via, now):
                # Everyone who has not signed is cut off from MQTT: a re-publish reaches none
                # of them, but makes every node that has signed send its receipt again (O(N²)
                # at national scale, docs/scale.md). Skip this try, keep the schedule: healing
                # serves them when they are back, and the next try goes out if one is heard.
                self.counters["retries_skipped_quiet"] += 1
                cfg = self.config
                base = (
                    cfg.flash_retry_base_s if m.precedence == Precedence.FLASH else cfg.retry_base_s
                )
                self.outbox.wait(out, now + backoff(base, out.attempts, cfg.retry_max_s))
                continue
            if (
                (out.attempts or m.precedence != Precedence.FLASH)  # FLASH: every link at once
                and self.serves_mesh_only(link, out, m)
                and not self.mesh_pending(m, now)
            ):
                self.outbox.remove((msg_id, link))  # all heard on MQTT meanwhile (or signed)
                actions.append(Persist(next(self._tokens), (DeleteOutbox(msg_id, link),)))
                continue
            if inflight[via] >= self.config.max_inflight_per_link:
                deferred.append(out)
                if self._all_full(now):
                    break  # the rest stays due: walking it would only defer each one again
                continue
            if out.attempts and out.awaiting_receipts:
                self.counters["retries"] += 1
            self.outbox.send(out, via)  # back in transmitted() (or dropped)
            channel = Channel.RCPT if m.kind == Kind.ACK else Channel.MSG
            actions.append(Transmit(via, channel, msg_id, m.raw, int(m.precedence)))
            if self._beside is not None:
                actions += self._beside(msg_id, via, int(m.precedence))
        for out in deferred:
            self.outbox.wait(out, out.next_at)
        return actions

    def _all_full(self, now: float) -> bool:
        """Some link is usable and every usable one has ``max_inflight_per_link`` in flight.

        Then ``pump`` stops: without this it took every due entry out and put it back, on every
        call (47 ms per engine step with 5,000 decisions waiting behind a full link). With no
        link usable it still walks once, parking what waits (a link coming up revives them)."""
        cap = self.config.max_inflight_per_link
        usable = [n for n in self.net.links if self.net.usable(n, now)]
        return bool(usable) and all(self.outbox.inflight[n] >= cap for n in usable)

    def heard_on_mesh(self, link: str, msg_id: bytes) -> Entry | None:
        """A copy was heard on this mesh: another gateway (or the origin) has put it there
        already. Only this mesh: a gateway with radios in two meshes still owes the other one.
        Our bridged copy not sent yet is cancelled and returned (its row is the caller's)."""
        if (heard := self._msgs.get(msg_id)) is not None:
            heard.meshed.add(link)
        out = self.outbox.get((msg_id, link))
        if out is None or not out.suppressible or out.inflight or out.attempts:
            return None
        self.outbox.remove((msg_id, link))
        self.counters["bridge_suppressed"] += 1
        return out

    def resend(self, msg_id: bytes, link: str, now: float) -> list[Action]:
        """Send one of ours (a receipt) again on ``link``, unless it is owed there already."""
        actions: list[Action] = []
        if (msg_id, link) not in self.outbox and (msg_id, ANY_LINK) not in self.outbox:
            out = self.outbox.add(msg_id, link, attempts=0, at=now, awaiting=False)
            out.durable = routing.receipt_needs_row(self.net, link)
            if out.durable:
                row = new_row(msg_id, link, at=now, awaiting=False)
                actions.append(Persist(next(self._tokens), (row,)))
        return actions + self.pump(now)

    # ------------------------------------------------------------------ outcomes

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
        row = audit(self._tokens, now, "refused", msg_id or None, link, detail)
        if not msg_id:
            return [row]
        return [row, *self.transmitted(link, msg_id, False, now, refused=True)]

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
        out = self.outbox.get(key)
        if out is None or not out.inflight:
            key = (msg_id, ANY_LINK)
            out = self.outbox.get(key)
            if out is not None and out.via != link:
                out = None
        m = self._msgs.get(msg_id)
        if out is None or m is None or not out.inflight:
            # A late or repeated report: nothing is in flight, unless its entry was dropped.
            return self._dropped_transmitted(link, msg_id, ok, now, airtime_s) + self.pump(now)
        self.outbox.sent_back(out, link)
        actions: list[Action] = []
        if ok:
            actions.append(self._sent(link, msg_id, now, airtime_s))
        cfg = self.config
        if not ok and refused:
            delay = backoff(cfg.refused_retry_base_s, out.attempts, cfg.refused_retry_max_s)
            self.outbox.wait(out, now + delay)
        elif not ok:
            self.counters["transmit_failed"] += 1
            delay = backoff(cfg.fail_retry_base_s, out.attempts, cfg.fail_retry_max_s)
            if key[1] == ANY_LINK and routing.best_link(self.net, now) not in (None, link):
                delay = 0.0  # another link is usable: fail over now, do not wait
            self.outbox.wait(out, now + delay)
        elif out.awaiting_receipts and (
            self.mesh_pending(m, now)
            if self.serves_mesh_only(key[1], out, m)
            else m.recipients - m.signed
        ):
            self.counters["transmitted"] += 1
            flash = m.precedence == Precedence.FLASH
            base = cfg.flash_retry_base_s if flash else cfg.retry_base_s
            self.outbox.wait(out, now + backoff(base, out.attempts, cfg.retry_max_s))
        else:
            self.counters["transmitted"] += 1
            self.outbox.remove(key)
            if out.durable:
                actions.append(Persist(next(self._tokens), (DeleteOutbox(*key),)))
        return actions + self.pump(now)

    def _sent(self, link: str, msg_id: bytes, now: float, airtime_s: float | None) -> Persist:
        """A send went out: the mesh it reached is noted, and it is audited."""
        if (m := self._msgs.get(msg_id)) is not None and self.net.kind(link) == LinkKind.MESH:
            m.meshed.add(link)
        airtime = None if airtime_s is None else f"airtime_s={airtime_s:.3f}"
        return audit(self._tokens, now, "sent", msg_id, link, airtime)

    def _dropped_transmitted(
        self, link: str, msg_id: bytes, ok: bool, now: float, airtime_s: float | None
    ) -> list[Action]:
        """The outcome of a send whose entry was dropped while it was in flight (``Outbox.drop``).
        A mesh frame is done only when a neighbour relays it, often after the receipt it
        brought has come back; what went on the air is audited like any other send."""
        if not self.outbox.take_dropped(msg_id, link):
            return []
        if not ok:
            return []  # nobody waits for it any more: no retry
        self.counters["transmitted"] += 1
        return [self._sent(link, msg_id, now, airtime_s)]

    # ------------------------------------------------------------------ bridging

    def bridge_missed(self, now: float) -> list[Action]:
        """A node has just gone quiet on MQTT: what came by MQTT shortly before may never have
        reached it (a decision sent in the first seconds of a cut is published to a broker that
        can no longer reach the node). A gateway bridges those it has no receipt of from that
        node into its meshes, taking its turn as for fresh messages."""
        mqtt = self.net.of_kind(LinkKind.MQTT)
        meshes = self.net.of_kind(LinkKind.MESH)
        roster = self._trust.roster
        if not mqtt or not meshes or roster is None:
            return []
        if not any(self.net.usable(n, now) for n in mqtt):
            # Without MQTT ourselves we hear nobody there: that says nothing about the others.
            self._peers.all_quiet()
            return []
        timeout = self.config.peer_timeout_s
        newly = self._peers.newly_quiet(now, timeout)
        if not newly:
            return []
        since = min(self._peers.mqtt[n] for n in newly) - timeout
        ops: list[StoreOp] = []
        for msg_id, m in self._msgs.items():
            if (
                m.received_at < since
                or m.kind == Kind.ACK
                or not (m.origin or m.via_kind == LinkKind.MQTT)
                or self._expired(m, now)
            ):
                continue
            d = m.decision
            missed = routing.missed_by(self.net, d, roster, m.signed, newly)
            if not missed:
                continue
            turn = routing.bridge_turn(self.net, d, now)
            for link in meshes:
                if (msg_id, link) in self.outbox or link in m.meshed:
                    continue
                at = now + turn * self.config.bridge_slot_s
                at += self._rng.uniform(0.0, self.config.trickle_s)
                self.outbox.add(msg_id, link, attempts=0, at=at, awaiting=False).suppressible = True
                ops.append(new_row(msg_id, link, at=at, awaiting=False))
                ops.append(AuditEvent(now, "bridge", msg_id, link, None,
                                      "missed by " + ",".join(sorted(missed))))  # fmt: skip
                self.counters["bridged_missed"] += 1
        return [Persist(next(self._tokens), tuple(ops))] if ops else []
