"""The engine's side of post-quantum attestations (relay.pq, docs/wire-format.md section 9).

Sans-I/O like the rest of the engine; ``Engine`` calls in at five places (ingest, accept, pump,
timer, restore) and everything else lives here:

* An attestation arrives on an MQTT link (or is submitted locally after its decision). It is
  parsed, checked against the roster entry of its key id (ML-DSA key hash) and, when the decision
  is held, against that decision; then stored (``PutAttestation``) and the decision counts as
  verified quantum-safe. A wrong one is a rejection with its reason, logged, counted, audited.
  One that arrives before its decision waits in a small bounded pool (``max_orphans``).
* Attestations never go onto a mesh link: one arriving there is refused as ``wrong-topic``.
* Forwarding: each time the engine transmits a decision on an MQTT link, its attestation goes
  right behind it on the same link (same precedence, so the same queue); a local submit also
  publishes it at once.
* Healing: a node holding decisions of PQ-enabled issuers without their attestation (they came
  by mesh) sends a ``pq-want`` listing up to 16 of their ids on an MQTT link, soon after such a
  decision arrives and then with doubling backoff; nodes holding those attestations answer.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from relay import pq
from relay.engine.ops import (
    Action,
    AuditEvent,
    Persist,
    PutAttestation,
    StoreOp,
    Submitted,
    Transmit,
)
from relay.envelope import Envelope, Kind, Precedence, Reason, Rejection
from relay.trust import TrustState

LOCAL_LINK = "local"
SHOWN_KINDS = frozenset({Kind.DECISION, Kind.NOTICE, Kind.CANCEL, Kind.SUPERSEDE})


class _Held(Protocol):
    """What of a held message this module reads."""

    @property
    def kid(self) -> bytes: ...
    @property
    def kind(self) -> Kind: ...
    @property
    def precedence(self) -> Precedence: ...
    @property
    def received_at(self) -> float: ...


class _Link(Protocol):
    @property
    def kind(self) -> str: ...


class _Named(Protocol):
    @property
    def node(self) -> str: ...


class Engine(Protocol):
    """The engine as this module sees it (relay.engine.core.Engine is one): named here so that
    the hook does not import the engine that calls it."""

    @property
    def trust(self) -> TrustState: ...
    @property
    def config(self) -> _Named: ...
    @property
    def links(self) -> Mapping[str, _Link]: ...
    @property
    def counters(self) -> Counter[str]: ...
    @property
    def rejections(self) -> Counter[str]: ...
    @property
    def _msgs(self) -> Mapping[bytes, _Held]: ...
    @property
    def _tombstones(self) -> Mapping[bytes, float]: ...
    @property
    def _tokens(self) -> Iterator[int]: ...
    @property
    def _held(self) -> dict[int, list[Any]]: ...
    def _kind(self, link: str) -> str | None: ...
    def _usable(self, link: str, now: float) -> bool: ...
    def _known(self, msg_id: bytes) -> bool: ...
    def _reject(
        self, link: str, why: Rejection, ticket: int | None, now: float, msg_id: bytes | None
    ) -> list[Action]: ...


@dataclass(frozen=True, slots=True)
class PqConfig:
    policy: pq.Policy = pq.Policy.PREFER
    want_first_s: float = 5.0  # after a decision without attestation: its own may be under way
    want_max_s: float = 600.0  # the backoff between wants doubles up to this
    want_gap_s: float = 1.0  # answer wants on one link at most this often
    max_orphans: int = 64  # attestations waiting for their decision (memory only)
    max_answers: int = 16  # attestations sent for one want


@dataclass(slots=True)
class _Pending:
    kid: bytes
    precedence: int
    since: float


class PqHook:
    def __init__(self, config: PqConfig) -> None:
        self.config = config
        self.attested: dict[bytes, bytes] = {}  # msg id -> attestation bytes (stored)
        self.pending: dict[bytes, _Pending] = {}  # PQ decisions held without attestation
        self._orphans: OrderedDict[bytes, pq.Attestation] = OrderedDict()
        self._next_want = float("inf")
        self._want_delay = config.want_first_s
        self._mqtt_usable = False
        self._answered: dict[str, float] = {}
        self._roster_serial: int | None = None  # the roster the pending set was computed for

    @property
    def policy(self) -> pq.Policy:
        return self.config.policy

    # ------------------------------------------------------------------ queries

    def _pq_key(self, eng: Engine, kid: bytes) -> bytes | None:
        entry = eng.trust.entry_for(kid)
        return entry.pq_key if entry is not None else None

    def needs(self, eng: Engine, kid: bytes, kind: Kind) -> bool:
        """Is this a shown message of a PQ-enabled issuer, on a node that cares?"""
        return (
            self.policy != pq.Policy.OFF
            and kind in SHOWN_KINDS
            and self._pq_key(eng, kid) is not None
        )

    def state(self, eng: Engine, msg_id: bytes, kid: bytes, kind: Kind) -> pq.State:
        if self.policy == pq.Policy.OFF:
            return pq.State.NONE
        if msg_id in self.attested:
            return pq.State.VERIFIED
        return pq.State.PENDING if self.needs(eng, kid, kind) else pq.State.NONE

    def verified(self, state: pq.State) -> bool:
        """Whether a held decision may be shown as verified: with ``require`` not while its
        quantum-safe signature is pending."""
        return not (self.policy == pq.Policy.REQUIRE and state == pq.State.PENDING)

    def statistics(self) -> dict[str, object]:
        return {
            "policy": str(self.policy),
            "attested": len(self.attested),
            "pending": len(self.pending),
            "orphans": len(self._orphans),
        }

    # ------------------------------------------------------------------ engine hooks

    def restore(self, eng: Engine, attestations: Mapping[bytes, bytes]) -> None:
        self.attested = dict(attestations)
        self._rescan(eng)

    def _rescan(self, eng: Engine) -> None:
        """Which held decisions wait for an attestation: at start, and when a new roster came
        (one that gives an issuer an ML-DSA key marks the decisions held from it too)."""
        roster = eng.trust.roster
        self._roster_serial = roster.serial if roster is not None else None
        persisting = {i: p for i, p in self.pending.items() if i not in eng._msgs}
        self.pending = persisting | {
            msg_id: self.pending.get(msg_id) or _Pending(m.kid, int(m.precedence), m.received_at)
            for msg_id, m in eng._msgs.items()
            if msg_id not in self.attested and self.needs(eng, m.kid, m.kind)
        }
        if self.pending:
            self._next_want = float("-inf")  # ask as soon as an MQTT link is usable

    def ingest(
        self, eng: Engine, link: str, raw: bytes, now: float, ticket: int | None
    ) -> list[Action] | None:
        """An attestation or a want: handled here. Anything else: ``None`` (the engine's)."""
        if pq.is_want(raw):
            return self._want_in(eng, link, raw, now, ticket)
        if not pq.is_attestation(raw):
            return None
        eng.counters["pq_attestations_received"] += 1
        if eng._kind(link) == "mesh":
            why = Rejection(Reason.WRONG_TOPIC, "attestations travel on the IP path only")
            return eng._reject(link, why, ticket, now, None)
        if self.policy == pq.Policy.OFF:
            eng.counters["pq_ignored"] += 1
            if ticket is None:
                return []
            detail = "[trust] pq is off on this node: attestation not kept"
            return [Submitted(ticket, None, Reason.PQ_NOT_ENABLED, detail)]
        att = pq.open_attestation(raw)
        if isinstance(att, Rejection):
            return eng._reject(link, att, ticket, now, None)
        if att.msg_id in self.attested or att.msg_id in self._orphans:
            eng.counters["pq_duplicates"] += 1
            return [] if ticket is None else [Submitted(ticket, att.id, duplicate=True)]
        entry = eng.trust.entry_for(att.kid)
        if entry is None:
            unknown = Rejection(
                Reason.UNKNOWN_SIGNER, f"attestation key id {att.kid.hex()} is not on the roster"
            )
            return eng._reject(link, unknown, ticket, now, att.msg_id)
        held = self.pending.get(att.msg_id)
        m = eng._msgs.get(att.msg_id)
        decision_kid = held.kid if held is not None else (m.kid if m is not None else None)
        bad = pq.check(
            att,
            kid=att.kid if decision_kid is None else decision_kid,
            pq_key_hash=entry.pq_key,
            msg_id=att.msg_id,
        )
        if bad is not None:
            return eng._reject(link, bad, ticket, now, att.msg_id)
        if decision_kid is None:
            return self._orphan(eng, att, link, now, ticket)
        precedence = held.precedence if held is not None else int(Precedence.ROUTINE)
        return self._store(eng, att, entry.name, link, now, ticket, precedence)

    def on_accept(
        self, eng: Engine, env: Envelope, link: str, now: float, ops: list[StoreOp]
    ) -> list[Action]:
        """A message was accepted (its Persist is being built): note whether it waits for an
        attestation, or adopt one that came first. Returns actions to release with it."""
        d = env.decision
        if not self.needs(eng, env.kid, d.kind):
            return []
        orphan = self._orphans.pop(env.id, None)
        if orphan is None:
            self.pending[env.id] = _Pending(env.kid, int(d.precedence), now)
            self._want_delay = self.config.want_first_s
            self._next_want = min(self._next_want, now + self.config.want_first_s)
            return []
        why = pq.check(orphan, kid=env.kid, pq_key_hash=self._pq_key(eng, env.kid), msg_id=env.id)
        if why is not None:
            eng.rejections[str(why.reason)] += 1
            detail = f"{why.reason}: {why.detail}"
            ops.append(AuditEvent(now, "rejected", env.id, link, None, detail))
            return []
        self.attested[env.id] = orphan.raw
        eng.counters["pq_verified"] += 1
        ops.append(PutAttestation(env.id, orphan.raw, now, link))
        ops.append(AuditEvent(now, "pq-verified", env.id, link, None, None))
        return []

    def beside(self, eng: Engine, msg_id: bytes, via: str, precedence: int) -> list[Action]:
        """The decision ``msg_id`` goes out on ``via``: its attestation follows on MQTT."""
        raw = self.attested.get(msg_id)
        if raw is None or eng._kind(via) != "mqtt":
            return []
        eng.counters["pq_attestations_sent"] += 1
        return [Transmit(via, "msg", hashlib.sha256(raw).digest(), raw, precedence)]

    def timer(self, eng: Engine, now: float) -> list[Action]:
        """Forget what the engine no longer holds; send a want when one is due."""
        if self.policy == pq.Policy.OFF:
            return []
        roster = eng.trust.roster
        if (roster.serial if roster is not None else None) != self._roster_serial:
            self._rescan(eng)
        for msg_id in [i for i in self.pending if not eng._known(i)]:
            del self.pending[msg_id]
        mqtt = [n for n, i in eng.links.items() if i.kind == "mqtt" and eng._usable(n, now)]
        if not mqtt:
            self._mqtt_usable = False
            return []
        if not self._mqtt_usable:  # (back) up: ask soon
            self._mqtt_usable = True
            self._want_delay = self.config.want_first_s
            self._next_want = min(self._next_want, now + 1.0)
        if not self.pending or now < self._next_want:
            return []
        oldest = sorted(self.pending, key=lambda i: self.pending[i].since)
        raw = pq.encode_want(eng.config.node, oldest[: pq.MAX_WANT_IDS])
        eng.counters["pq_wants_sent"] += 1
        self._next_want = now + self._want_delay
        self._want_delay = min(2 * self._want_delay, self.config.want_max_s)
        return [Transmit(mqtt[0], "msg", b"", raw, int(Precedence.ROUTINE))]

    def next_deadline(self) -> float:
        if self.policy == pq.Policy.OFF or not self.pending:
            return float("inf")
        return self._next_want

    def forget(self, msg_ids: tuple[bytes, ...]) -> None:
        """Messages deleted (expiry, eviction): the store cascades, memory follows."""
        for msg_id in msg_ids:
            self.attested.pop(msg_id, None)
            self.pending.pop(msg_id, None)

    # ------------------------------------------------------------------ internals

    def _store(
        self,
        eng: Engine,
        att: pq.Attestation,
        signer: str,
        link: str,
        now: float,
        ticket: int | None,
        precedence: int,
    ) -> list[Action]:
        self.attested[att.msg_id] = att.raw
        self.pending.pop(att.msg_id, None)
        eng.counters["pq_verified"] += 1
        ops = (
            PutAttestation(att.msg_id, att.raw, now, link),
            AuditEvent(now, "pq-verified", att.msg_id, link, signer, None),
        )
        held: list[Action] = []
        if link == LOCAL_LINK:  # ours: publish it now (it also follows each send of the decision)
            for name, info in eng.links.items():
                if info.kind == "mqtt" and eng._usable(name, now):
                    held.append(Transmit(name, "msg", att.id, att.raw, precedence))
                    eng.counters["pq_attestations_sent"] += 1
        if ticket is not None:
            held.append(Submitted(ticket, att.id))
        token = next(eng._tokens)
        eng._held[token] = list(held)
        return [Persist(token, ops)]

    def _orphan(
        self, eng: Engine, att: pq.Attestation, link: str, now: float, ticket: int | None
    ) -> list[Action]:
        if ticket is not None:
            why = Rejection(
                Reason.PQ_WRONG_MESSAGE,
                f"no message {att.msg_id.hex()[:16]} on this node: submit the decision first",
            )
            return eng._reject(link, why, ticket, now, att.msg_id)
        if att.msg_id in eng._tombstones:
            eng.counters["pq_late"] += 1  # its decision expired or was evicted here
            return []
        self._orphans[att.msg_id] = att
        eng.counters["pq_orphans"] += 1
        while len(self._orphans) > self.config.max_orphans:
            self._orphans.popitem(last=False)
            eng.counters["pq_orphans_dropped"] += 1  # a want brings it again later
        return []

    def _want_in(
        self, eng: Engine, link: str, raw: bytes, now: float, ticket: int | None
    ) -> list[Action]:
        eng.counters["pq_wants_received"] += 1
        if ticket is not None or eng._kind(link) != "mqtt":
            why = Rejection(Reason.WRONG_TOPIC, "a pq-want belongs on an MQTT link")
            return eng._reject(link, why, ticket, now, None)
        want = pq.decode_want(raw)
        if isinstance(want, Rejection):
            return eng._reject(link, want, None, now, None)
        if want.sender == eng.config.node or self.policy == pq.Policy.OFF:
            return []
        if now - self._answered.get(link, float("-inf")) < self.config.want_gap_s:
            eng.counters["pq_wants_rate_limited"] += 1
            return []
        self._answered[link] = now
        answers: list[Action] = []
        for msg_id in want.ids:
            att = self.attested.get(msg_id)
            if att is not None and len(answers) < self.config.max_answers:
                m = eng._msgs.get(msg_id)
                precedence = int(m.precedence) if m is not None else int(Precedence.ROUTINE)
                answers.append(Transmit(link, "msg", hashlib.sha256(att).digest(), att, precedence))
        eng.counters["pq_answers_sent"] += len(answers)
        return answers
