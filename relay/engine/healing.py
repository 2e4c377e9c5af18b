"""Partition healing, the engine's side: when to summarise (``SyncState``), what goes into our
summary, and which held messages go back through the outbox in answer to a peer's (``Healer``).
Pure. The summary's wire form and comparisons are in relay.engine.sync; triggers, rates and
bounds in docs/failover.md.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from relay.engine import sync
from relay.engine.model import HeldMessage, LinkInfo
from relay.engine.ops import SendSummary
from relay.engine.outbox import Outbox
from relay.engine.routing import SHOWN_KINDS, TRUST_KINDS
from relay.envelope import Kind, Reason, Rejection
from relay.trust import ReplayGuard, Roster
from relay.vocab import LinkKind

MAX_RUNS: Final = sync.MAX_RUNS
MAX_ROUNDS: Final = 64  # healing rounds whose answers can still be withdrawn


@dataclass(frozen=True, slots=True)
class SyncTiming:
    """Triggers, rates and bounds of healing for one kind of link (SyncConfig.mqtt, .mesh)."""

    # First summary after a link comes up (statuses of peers arrive meanwhile), then after
    # healing: again while the last round brought something new (SyncConfig.max_followups).
    first_delay_s: float
    followup_s: float
    # Follow-ups after a round that brought nothing, before healing counts as done. One on MQTT:
    # a round's answers can be lost (a peer's inbound queue overflowing), and a round that
    # brings nothing cannot tell "healed" from "answers lost". None on the mesh, where each
    # summary is a frame of airtime and the periodic summary follows anyway.
    empty_followups: int
    period_s: float  # periodic summary, jittered to 0.5x..1.5x
    pull_delay_s: float  # a peer's summary shows it has what we lack: ask it
    # Pulls and follow-ups wait until nothing new has arrived on the link for this long, so that
    # a second peer is not asked for what the first one's answers are still bringing.
    quiet_s: float
    # Bounds on answering. Messages younger than fresh_s are still being carried the ordinary
    # way: not answered at once (the asker gets our summary later and pulls if still missing).
    fresh_s: float
    max_per_round: int
    peer_gap_s: float  # answer one peer at most this often
    link_gap_s: float  # answer anyone on this link at most this often
    max_bytes: int  # summary size (MQTT inbound: at most max_inbound_bytes too)
    max_runs: int
    # Answers to a summary addressed to anyone start after a random 0..spread and are spaced
    # (mesh: about two LONG_FAST frames), so that a second answering node hears the first one's
    # copies before it sends its own and cancels them (Trickle-style suppression).
    answer_spread_s: float
    answer_spacing_s: float
    # While a round runs on a link (a summary heard lately), duplicates there are answers to it,
    # not a sender retrying: they do not make us re-send our receipt.
    round_s: float


MQTT_TIMING: Final = SyncTiming(
    first_delay_s=1.0,
    followup_s=2.0,
    empty_followups=1,
    period_s=300.0,
    pull_delay_s=1.0,
    quiet_s=1.0,
    fresh_s=5.0,
    max_per_round=2000,
    peer_gap_s=1.0,
    link_gap_s=0.2,
    max_bytes=4096,
    max_runs=MAX_RUNS,
    answer_spread_s=0.0,
    answer_spacing_s=0.002,  # at most 500 answers per second: the links stay live
    round_s=10.0,
)
MESH_TIMING: Final = SyncTiming(
    first_delay_s=30.0,
    followup_s=300.0,
    empty_followups=0,
    period_s=1800.0,
    pull_delay_s=60.0,
    quiet_s=60.0,
    fresh_s=120.0,
    max_per_round=8,
    peer_gap_s=240.0,  # below followup_s: a follow-up is answered
    link_gap_s=60.0,
    max_bytes=229,  # relay.mesh.frames.MAX_SUMMARY: one SUMMARY frame
    max_runs=8,
    answer_spread_s=30.0,
    answer_spacing_s=3.0,
    round_s=600.0,
)


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """Healing on or off, and its timing per kind of link."""

    enabled: bool = True
    max_followups: int = 30  # follow-up rounds after a link or peer comes back, at most
    # When a node comes back on MQTT, about this many of the nodes that hear it send it their
    # summary (the answers go to every subscriber, so they serve all); 0: every node does.
    return_askers: int = 3
    mqtt: SyncTiming = MQTT_TIMING
    mesh: SyncTiming = MESH_TIMING

    def of(self, kind: LinkKind) -> SyncTiming:
        return self.mesh if kind == LinkKind.MESH else self.mqtt


# ----------------------------------------------------------------------------- scheduling


@dataclass(slots=True)
class _LinkSync:
    kind: LinkKind
    due: float = float("inf")
    target: str = ""
    periodic_at: float = float("inf")
    last_sent: float = float("-inf")
    accepted_since: int = 0  # messages accepted on this link since our last summary
    last_accepted: float = float("-inf")
    pull_from: str = ""  # a peer whose summary showed it has what we lack
    pull_at: float = float("inf")
    followups: int = 0  # rounds of healing left: follow up while a round brings news
    empty: int = 0  # follow-ups in a row that brought nothing
    answered_at: float = float("-inf")
    round_at: float = float("-inf")  # a summary was last heard on this link
    heard: dict[str, float] = field(default_factory=dict)  # peers that sent summaries here
    asks: dict[str, float] = field(default_factory=dict)  # peer -> when to send it our summary


class SyncState:
    """When to send summaries, and whom we answered when (rate limits). Pure; the random
    generator (seeded by the caller) only jitters the periodic summaries."""

    def __init__(
        self, config: SyncConfig, links: Mapping[str, LinkKind], rng: random.Random
    ) -> None:
        self.config = config
        self.links = {name: _LinkSync(kind) for name, kind in links.items()}
        self.answered: dict[tuple[str, str], float] = {}  # (link, peer) -> when
        self._rng = rng

    def _timing(self, link: str) -> SyncTiming:
        return self.config.of(self.links[link].kind)

    def link_up(self, link: str, now: float) -> None:
        """A link came (back) up: summarise soon, follow up while that heals something."""
        ls = self.links[link]
        ls.due = min(ls.due, now + self._timing(link).first_delay_s)
        ls.followups, ls.empty = self.config.max_followups, 0
        if ls.periodic_at == float("inf"):
            self._periodic(link, now)

    def peer_returned(self, link: str, peer: str, now: float) -> None:
        """A peer is heard again after a silence (or for the first time): ask it soon."""
        ls = self.links[link]
        at = now + self._timing(link).first_delay_s
        if at < ls.due:
            ls.due, ls.target = at, peer
        ls.followups, ls.empty = self.config.max_followups, 0
        if ls.periodic_at == float("inf"):
            self._periodic(link, now)

    def _periodic(self, link: str, now: float) -> None:
        jitter = 0.5 + self._rng.random()  # 0.5x..1.5x the period
        self.links[link].periodic_at = now + self._timing(link).period_s * jitter

    def accepted(self, link: str, now: float) -> None:
        ls = self.links.get(link)
        if ls is not None:
            ls.accepted_since += 1
            ls.last_accepted = now

    def want_pull(self, link: str, peer: str, now: float) -> None:
        """A peer's summary shows it has what we lack: ask it (soon, once)."""
        ls = self.links[link]
        if not ls.pull_from:  # one at a time: the next one after this round has settled
            ls.pull_from, ls.pull_at = peer, now + self._timing(link).pull_delay_s
        ls.followups = max(ls.followups, 1)

    def ask(self, link: str, peer: str, at: float) -> None:
        """Send our summary to ``peer`` at ``at`` (it will ask back if it still lacks ours)."""
        asks = self.links[link].asks
        asks[peer] = min(asks.get(peer, at), at)
        if len(asks) > 64:  # bounded: the latest asks win
            del asks[max(asks, key=asks.__getitem__)]

    def _quiet_at(self, name: str, ls: _LinkSync) -> float:
        """Pulls and follow-ups wait until what the last round brought has stopped arriving."""
        return ls.last_accepted + self._timing(name).quiet_s

    def _pull_at(self, name: str, ls: _LinkSync) -> float:
        if not ls.pull_from or ls.due != float("inf"):
            return float("inf")
        return max(ls.pull_at, self._quiet_at(name, ls))

    def _followup_at(self, name: str, ls: _LinkSync) -> float:
        pending = ls.due != float("inf")  # a trigger is due first
        if ls.followups <= 0 or pending:
            return float("inf")
        if ls.accepted_since:
            return max(ls.last_sent + self._timing(name).followup_s, self._quiet_at(name, ls))
        if ls.empty < self._timing(name).empty_followups:
            return ls.last_sent + self._timing(name).followup_s
        return float("inf")

    def next_deadline(self) -> float:
        return min(
            (
                min(
                    ls.due,
                    ls.periodic_at,
                    self._followup_at(n, ls),
                    self._pull_at(n, ls),
                    *ls.asks.values(),
                )
                for n, ls in self.links.items()
            ),
            default=float("inf"),
        )

    def due(self, now: float, usable: Iterable[str]) -> list[tuple[str, str, str]]:
        """Summaries due now on usable links: (link, target, why). Resets their triggers."""
        out: list[tuple[str, str, str]] = []
        for name in usable:
            ls = self.links[name]
            asked = False
            for peer in [p for p, at in ls.asks.items() if now >= at]:
                del ls.asks[peer]
                out.append((name, peer, "ask"))
                asked = True
            why, target = "", ls.target
            if now >= ls.due:
                why = "peer-back" if ls.target else "link-up"
            elif now >= self._pull_at(name, ls):
                why, target = "pull", ls.pull_from
            elif (
                ls.due == float("inf")
                and ls.followups
                and now >= ls.last_sent + self._timing(name).followup_s
            ):
                if ls.accepted_since and now >= self._quiet_at(name, ls):
                    why = "follow-up"
                    ls.followups -= 1
                    ls.empty = 0
                elif not ls.accepted_since and ls.empty < self._timing(name).empty_followups:
                    why = "follow-up"  # nothing came: healed, or the answers were lost
                    ls.followups -= 1
                    ls.empty += 1
                elif not ls.accepted_since:
                    ls.followups, ls.empty = 0, 0  # nothing came, again: healed
            if not why and now >= ls.periodic_at:
                why = "periodic"
            if not why:
                continue
            if not (asked and not target and why in ("follow-up", "periodic")):
                out.append((name, target, why))  # (else the summary just asked for does it)
            ls.due, ls.target, ls.pull_from, ls.pull_at = float("inf"), "", "", float("inf")
            ls.last_sent, ls.accepted_since = now, 0
            self._periodic(name, now)
        return out

    def heard(self, link: str, peer: str, now: float) -> None:
        """Any summary on the link (to us or not): a round runs; the peer is in reach."""
        ls = self.links[link]
        ls.round_at = now
        ls.heard[peer] = now
        if len(ls.heard) > 256:  # bounded: forget the longest silent
            del ls.heard[min(ls.heard, key=ls.heard.__getitem__)]

    def healing(self, link: str, now: float) -> bool:
        ls = self.links.get(link)
        return ls is not None and now - ls.round_at < self._timing(link).round_s

    def recent_peer(self, link: str, now: float) -> str:
        """The peer heard summarising on this link most recently (within a period), or ""."""
        ls = self.links[link]
        if not ls.heard:
            return ""
        peer = max(ls.heard, key=ls.heard.__getitem__)
        return peer if now - ls.heard[peer] < self._timing(link).period_s else ""

    def may_answer(self, link: str, peer: str, now: float) -> bool:
        """Rate limits: per peer and per link. Records the answer when allowed."""
        ls = self.links[link]
        if now - ls.answered_at < self._timing(link).link_gap_s:
            return False
        if now - self.answered.get((link, peer), float("-inf")) < self._timing(link).peer_gap_s:
            return False
        ls.answered_at = now
        self.answered[(link, peer)] = now
        if len(self.answered) > 4096:  # bounded: forget the oldest half
            for key, _ in sorted(self.answered.items(), key=lambda kv: kv[1])[:2048]:
                del self.answered[key]
        return True


# ----------------------------------------------------------------------------- answering


class Healer:
    """Our summaries and our answers to the peers' summaries. The engine owns the tables this
    reads (``msgs``, ``replay``) and the outbox it schedules answers in."""

    def __init__(
        self,
        *,
        node: str,
        config: SyncConfig,
        max_inbound_bytes: int,
        peer_timeout_s: float,
        links: Mapping[str, LinkInfo],
        msgs: Mapping[bytes, HeldMessage],
        replay: ReplayGuard,
        own_kid: bytes,
        outbox: Outbox,
        counters: Counter[str],
        tokens: Iterator[int],
        rng: random.Random,
    ) -> None:
        self.node, self.config = node, config
        self._max_inbound = max_inbound_bytes
        self._peer_timeout_s = peer_timeout_s
        self._links, self._msgs, self._replay = links, msgs, replay
        self._own_kid, self._outbox, self.counters = own_kid, outbox, counters
        self._tokens, self._rng = tokens, rng
        self.state = SyncState(config, {n: i.kind for n, i in links.items()}, rng)
        self._rotate: dict[str, bytes] = {}
        self._answers: dict[int, list[tuple[bytes, str]]] = {}  # healing round -> its entries

    def due(
        self, now: float, usable: list[str], *, seq: int, mqtt_peers: Mapping[str, float]
    ) -> list[SendSummary]:
        """Summaries that are due (link up, follow-up, pull, periodic) on usable links.
        ``seq``: our own last sequence number."""
        if not self.config.enabled:
            return []
        actions: list[SendSummary] = []
        for link, target, why in self.state.due(now, usable):
            if not target:
                mqtt = self._links[link].kind == LinkKind.MQTT
                target = self._ask_whom(now, mqtt_peers) if mqtt else ""
                target = target or self.state.recent_peer(link, now)
            raw = self._summary(link, target, seq)
            self.counters["sync_summaries_sent"] += 1
            self.counters["sync_summary_bytes"] += len(raw)
            self.counters[f"sync_summaries_{why}"] += 1
            actions.append(SendSummary(link, raw))
        return actions

    def _ask_whom(self, now: float, mqtt_peers: Mapping[str, float]) -> str:
        """Whom to ask on MQTT: a node heard there lately (random), or anyone."""
        cutoff = now - self._peer_timeout_s
        alive = sorted(n for n, t in mqtt_peers.items() if t >= cutoff and n != self.node)
        return self._rng.choice(alive) if alive else ""

    def _summary(self, link: str, to: str, seq: int) -> bytes:
        kind = self._links[link].kind
        max_runs = self.config.of(kind).max_runs
        signers = [
            s
            for kid, w in self._replay.windows.items()
            if kid != self._own_kid and (s := sync.describe(kid, w, max_runs=max_runs))
        ]
        if (own := sync.contiguous(self._own_kid, seq)) is not None:
            signers.append(own)
        signers.sort(key=lambda s: s.kid)
        # A summary cut to fit starts where the last one stopped (cyclic key-id order).
        start = self._rotate.get(link, b"")
        signers = [s for s in signers if s.kid >= start] + [s for s in signers if s.kid < start]
        raw, count = sync.encode(self.node, to, signers, max_bytes=self.max_bytes(kind))
        self._rotate[link] = signers[count].kid if count < len(signers) else b""
        return raw

    def max_bytes(self, kind: LinkKind) -> int:
        """Summary size bound: the link kind's, and never above what an MQTT link accepts."""
        limit = self.config.of(kind).max_bytes
        return limit if kind == LinkKind.MESH else min(limit, self._max_inbound)

    def summary_in(
        self,
        link: str,
        raw: bytes,
        now: float,
        *,
        horizon: Callable[[], float],
        roster: Roster | None,
    ) -> Rejection | bool:
        """A peer's summary: schedule what it lacks, unexpired (``horizon()``: expiry older than
        this is gone) and in scope. Returns a rejection, or whether answers may be due now."""
        self.counters["sync_summaries_received"] += 1
        if link not in self._links:
            return Rejection(Reason.WRONG_TOPIC, f"summary on {link!r}, which is not a link")
        kind = self._links[link].kind
        timing = self.config.of(kind)
        summary = sync.decode(raw, max_bytes=self.max_bytes(kind))
        if isinstance(summary, Rejection):
            return summary
        if not self.config.enabled or summary.sender == self.node:
            return False
        self.state.heard(link, summary.sender, now)
        if summary.to not in ("", self.node):
            return False  # another node was asked
        if sync.peer_has_more(summary, self._replay.windows, self._own_kid):
            self.state.want_pull(link, summary.sender, now)
        if not self.state.may_answer(link, summary.sender, now):
            self.counters["sync_rate_limited"] += 1
            return False
        oldest = horizon()
        held = (
            sync.Held(i, m.kid, m.seq, m.kind, int(m.precedence), m.received_at)
            for i, m in self._msgs.items()
            if m.seq >= 0 and m.expires_at >= oldest
        )
        # On the mesh several nodes may answer one summary addressed to anyone: each starts at
        # a random moment and spaces its answers, so the first copy heard cancels the others'.
        spread = timing.answer_spread_s if not summary.to else 0.0
        start = now + (self._rng.uniform(0.0, spread) if spread else 0.0)
        round_id = next(self._tokens)
        keys = self._answers[round_id] = []
        while len(self._answers) > MAX_ROUNDS:  # old rounds are done or no longer cancelled
            del self._answers[next(iter(self._answers))]
        pushed, young = 0, False
        for h in sync.missing_at(summary, held):
            if (h.id, link) in self._outbox:
                continue  # already on its way there
            if now - h.received_at < timing.fresh_s:
                young = True  # still carried the ordinary way, maybe: ask again later
                continue
            if kind == LinkKind.MESH and not self.mesh_scope(h.id, summary.sender, roster):
                continue
            if pushed >= timing.max_per_round:
                self.counters["sync_capped"] += 1
                break
            at = start + pushed * timing.answer_spacing_s
            out = self._outbox.add(h.id, link, attempts=0, at=at, awaiting=False)
            out.suppressible, out.answer = kind == LinkKind.MESH, round_id
            keys.append((h.id, link))
            pushed += 1
        self.counters["sync_pushed"] += pushed
        if young:  # our summary makes the peer ask again, if it still lacks them then
            self.state.ask(link, summary.sender, now + timing.fresh_s)
        return True

    def drop_answers(self, round_id: int) -> None:
        """Someone else's answer to the same summary was heard: withdraw what of ours waits."""
        for key in self._answers.pop(round_id, []) if round_id else []:
            out = self._outbox.get(key)
            if out is not None and out.answer == round_id and not out.inflight:
                self._outbox.remove(key)
                self.counters["sync_answers_withdrawn"] += 1

    def mesh_scope(self, msg_id: bytes, peer: str, roster: Roster | None, depth: int = 0) -> bool:
        """Does a mesh node need this message? Trust always; decisions for it; receipts for
        what came from the mesh (its origin there waits for them). Not every node's receipt
        for a decision that is for it: a radio post does not retry those, and a national
        decision has thousands (docs/scale.md). (MQTT nodes keep everything: no filter.)"""
        m = self._msgs.get(msg_id)
        if m is None:
            return False
        if m.kind in TRUST_KINDS:
            return True
        d = m.decision
        if d.kind == Kind.ACK:
            return depth == 0 and any(
                (r := self._msgs.get(ref)) is not None and r.via_kind == LinkKind.MESH
                for ref in d.refs
            )
        regions = roster.node_regions().get(peer, frozenset()) if roster else frozenset()
        return d.kind in SHOWN_KINDS and d.audience.includes(peer, regions)
