"""Partition healing (anti-entropy): compact summaries of what a node has seen. Pure code.

A node describes what it has seen as, per signer key, the highest sequence number and the held /
missing runs below it (its replay window, relay.trust.ReplayWindow, which every accepted message
and receipt passes through). A peer that receives the summary sends back, through the ordinary
outbox, the verified messages it holds that the summary says are missing, unexpired and in scope
for that peer. A summary is a request, never an authority: nothing is deleted, skipped or marked
delivered because of it, and it is not signed, so the worst a forged one can do is make a node
send verified messages it holds -- which the rate limits and the per-round cap bound.

Wire form (CBOR, one array; the layout, triggers, rates and bounds are in docs/failover.md):

    [1, sender, to, complete, [[kid, high, [held, missing, held, ...]], ...]]

* ``sender`` is the roster name of the summarising node, ``to`` the peer asked to answer ("" for
  anyone).
* Runs go downwards from ``high``: the first run counts held sequence numbers (high included),
  then missing ones, alternating. Below the last run nothing is claimed (``low``): a responder
  sends nothing under it (the replay window there calls everything "seen" anyway).
* ``complete`` is ``true`` when the summary lists every signer the sender has seen: a signer
  absent from it was never seen (everything of it is missing). A summary that had to be cut to
  fit (a mesh frame) lists signers in key-id order from its first entry and carries, instead of
  ``true``, the key id where it stops: it speaks for the key ids in the cyclic interval
  [first listed, stop), and the next round continues from ``stop``, so over a few rounds every
  key id, seen or never seen, is covered.
"""

from __future__ import annotations

import io
import itertools
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import cbor2

from relay.envelope import KID_LEN, Kind, Reason, Rejection
from relay.trust import REPLAY_WINDOW, ReplayWindow
from relay.vocab import Channel, LinkKind

SYNC_CHANNEL: Final = Channel.SYNC
SUMMARY_VERSION: Final = 1
MAX_SIGNERS: Final = 512  # more signer keys than any roster we expect; a bound on decoding work
MAX_RUNS: Final = 64  # runs per signer in a summary we accept
MAX_SEQ: Final = (1 << 63) - 1
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# Order in which what a peer lacks is sent: trust first (a new roster admits new signers), then
# what people read, receipts last (a receipt for a decision the peer lacks is worth less).
KIND_ORDER: Final = {Kind.ROSTER: 0, Kind.REVOCATION: 0, Kind.ACK: 2}


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
    mqtt: SyncTiming = MQTT_TIMING
    mesh: SyncTiming = MESH_TIMING

    def of(self, kind: LinkKind) -> SyncTiming:
        return self.mesh if kind == LinkKind.MESH else self.mqtt


# ----------------------------------------------------------------------------- the summary


@dataclass(frozen=True, slots=True)
class SignerSeqs:
    """Sequence numbers of one signer key: ``high`` and alternating held/missing runs below it."""

    kid: bytes
    high: int
    runs: tuple[int, ...]

    @property
    def low(self) -> int:
        return self.high - sum(self.runs) + 1

    def holds(self, seq: int) -> bool | None:
        """True: seen; False: missing; None: below ``low``, nothing claimed."""
        if seq > self.high:
            return False
        pos = self.high
        for i, run in enumerate(self.runs):
            if seq > pos - run:
                return i % 2 == 0
            pos -= run
        return None

    def held_ranges(self) -> list[tuple[int, int]]:
        """(first, last) of every held run."""
        out, pos = [], self.high
        for i, run in enumerate(self.runs):
            if i % 2 == 0:
                out.append((pos - run + 1, pos))
            pos -= run
        return out

    def to_wire(self) -> list[object]:
        return [self.kid, self.high, list(self.runs)]


@dataclass(frozen=True, slots=True)
class Summary:
    sender: str
    to: str
    stop: bytes | None  # None: complete; else coverage ends (exclusive) at this key id
    signers: tuple[SignerSeqs, ...]

    def by_kid(self) -> dict[bytes, SignerSeqs]:
        return {s.kid: s for s in self.signers}

    def covers(self, kid: bytes) -> bool:
        """Whether the summary speaks for key id ``kid`` (listed or not)."""
        if self.stop is None:
            return True
        if not self.signers:
            return False
        first = self.signers[0].kid
        if first < self.stop:
            return first <= kid < self.stop
        return kid >= first or kid < self.stop


def describe(kid: bytes, window: ReplayWindow, *, max_runs: int = MAX_RUNS) -> SignerSeqs | None:
    """The runs of one replay window, down to the window's floor, cut to ``max_runs`` runs."""
    if window.high < 0:
        return None
    span = min(window.size, window.high + 1)
    bits = format(window.bits & ((1 << span) - 1), f"0{span}b")[::-1]  # index i: seq high - i
    if bits[0] != "1":  # cannot happen for a committed window (high is always seen)
        return None
    runs = [len(list(g)) for _, g in itertools.groupby(bits)]
    return SignerSeqs(kid, window.high, tuple(runs[:max_runs]))


def contiguous(kid: bytes, high: int) -> SignerSeqs | None:
    """A signer whose sequence numbers 1..high were all seen (our own receipts).

    Like every signer's entry it speaks only for the replay window below ``high``: one run of
    at most ``REPLAY_WINDOW``, so the entry stays a few bytes and valid however long the history
    (a run of ``high`` was refused by every peer once a node had signed more than 1,024). Below
    it nothing is claimed, and nobody sends anything there (docs/failover.md).
    """
    return SignerSeqs(kid, high, (min(high, REPLAY_WINDOW),)) if high > 0 else None


def encode(
    sender: str, to: str, signers: Sequence[SignerSeqs], *, max_bytes: int
) -> tuple[bytes, int]:
    """The summary bytes and how many of ``signers`` (in order) fit into ``max_bytes``.

    ``signers`` must be in cyclic key-id order; when not all fit, the summary stops at the key
    id of the first one left out."""
    fixed = len(cbor2.dumps([SUMMARY_VERSION, sender, to, b"\0" * KID_LEN, []]))
    count, size = len(signers), fixed + 2  # 2: the array header may grow
    for i, s in enumerate(signers):
        size += len(cbor2.dumps(s.to_wire()))
        if size > max_bytes:
            count = i
            break
    while True:
        stop: bytes | bool = True if count == len(signers) else signers[count].kid
        raw = cbor2.dumps(
            [SUMMARY_VERSION, sender, to, stop, [s.to_wire() for s in signers[:count]]]
        )
        if len(raw) <= max_bytes:
            return raw, count
        if count == 0:
            raise ValueError(f"a summary from {sender!r} cannot fit {max_bytes} bytes")
        count -= 1


def _bad(detail: str) -> Rejection:
    return Rejection(Reason.MALFORMED, f"summary: {detail}")


def decode(raw: bytes, *, max_bytes: int) -> Summary | Rejection:
    """Parse a peer's summary; every fault is a specific Rejection, never an exception."""
    if len(raw) > max_bytes:
        return Rejection(Reason.OVERSIZED, f"summary of {len(raw)} B exceeds {max_bytes} B")
    fp = io.BytesIO(raw)
    try:
        top = cbor2.CBORDecoder(fp).decode()
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        return _bad(f"not CBOR ({exc.__class__.__name__})")
    if fp.tell() != len(raw):
        return _bad(f"{len(raw) - fp.tell()} bytes after the summary")
    if not isinstance(top, list) or len(top) != 5:
        return _bad("not a 5-item array")
    version, sender, to, cover, items = top
    if type(version) is not int or version != SUMMARY_VERSION:
        return _bad(f"unsupported version {version!r}")
    if not isinstance(sender, str) or not _NAME_RE.fullmatch(sender):
        return _bad("sender is not a node name")
    if not isinstance(to, str) or (to and not _NAME_RE.fullmatch(to)):
        return _bad("addressee is not a node name")
    if cover is not True and not (isinstance(cover, bytes) and len(cover) == KID_LEN):
        return _bad(f"coverage must be true or a {KID_LEN}-byte key id")
    if not isinstance(items, list) or len(items) > MAX_SIGNERS:
        return _bad(f"signers must be a list of at most {MAX_SIGNERS}")
    signers: list[SignerSeqs] = []
    seen: set[bytes] = set()
    for item in items:
        if not isinstance(item, list) or len(item) != 3:
            return _bad("a signer entry is not [kid, high, runs]")
        kid, high, runs = item
        if not isinstance(kid, bytes) or len(kid) != KID_LEN:
            return _bad(f"key id must be {KID_LEN} bytes")
        if kid in seen:
            return _bad(f"key id {kid.hex()} listed twice")
        seen.add(kid)
        if type(high) is not int or not 0 <= high <= MAX_SEQ:
            return _bad(f"highest sequence of {kid.hex()} out of range")
        if not isinstance(runs, list) or not 1 <= len(runs) <= MAX_RUNS:
            return _bad(f"runs of {kid.hex()}: 1..{MAX_RUNS} required")
        if not all(type(r) is int and 1 <= r <= REPLAY_WINDOW for r in runs):
            return _bad(f"runs of {kid.hex()} must be 1..{REPLAY_WINDOW}")
        if sum(runs) > min(REPLAY_WINDOW, high + 1):
            return _bad(f"runs of {kid.hex()} reach below sequence 0 or past the window")
        signers.append(SignerSeqs(kid, high, tuple(runs)))
    return Summary(sender, to, None if cover is True else cover, tuple(signers))


# ----------------------------------------------------------------------------- comparing


@dataclass(frozen=True, slots=True)
class Held:
    """What the responder needs to know of one stored message."""

    id: bytes
    kid: bytes
    seq: int
    kind: Kind
    precedence: int
    received_at: float


def missing_at(summary: Summary, held: Iterable[Held]) -> list[Held]:
    """The held messages the summary says its sender has not seen, in sending order."""
    signers = summary.by_kid()
    out: list[Held] = []
    for h in held:
        s = signers.get(h.kid)
        if s is None:
            if summary.covers(h.kid):
                out.append(h)
        elif s.holds(h.seq) is False:
            out.append(h)
    out.sort(key=lambda h: (KIND_ORDER.get(h.kind, 1), h.precedence, h.kid, h.seq))
    return out


def peer_has_more(summary: Summary, seen: dict[bytes, ReplayWindow], own: bytes) -> bool:
    """Does the summary's sender claim sequence numbers we have not seen? (Then ask it.)"""
    for s in summary.signers:
        if s.kid == own:
            continue
        w = seen.get(s.kid)
        if w is None or s.high > w.high:
            return True
        for first, last in s.held_ranges():
            if any(not w.seen(q) for q in range(max(first, 0), last + 1)):
                return True
    return False


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
