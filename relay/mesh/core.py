"""The mesh link's protocol core, sans-I/O: Transmits in, radio frames out, and back again.

Time is always a parameter (``now``, monotonic seconds); nothing here sleeps, reads a clock,
touches a radio or imports asyncio or meshtastic (h11/aioquic style). The driver is a thin pump:

    submit(t)  ──▶ frames (relay.mesh.frames) ──▶ SendQueue by precedence ──▶ poll_transmit()
                                                     │ only what the AirtimeLedger allows
    frame_sent / frame_failed / frame_routed (ACK, NAK) ──▶ Done(ticket, ok) events
    frame_received(payload, sender) ──▶ reassembly, repair ──▶ Received / Refused events
    handle_timer(now) at get_timer(): receipt bundles, NACKs, ACK timeouts

Decisions:

* Everything but NACKs is broadcast with want_ack, so the radio retries until it hears a
  neighbour rebroadcast (an implicit ACK). A Transmit is *done* when every frame it was cut into
  has been ACKed (implicitly or not). "Done" means "on the air and relayed", never "delivered":
  delivery is the engine's signed receipts.
* Any NAK, a missing ACK after ``ack_timeout_s``, a frame waiting longer than ``max_queue_s`` or
  the radio going away fails the whole Transmit at once; its frames still queued are withdrawn,
  so nothing goes on air for a transmission the engine was told failed. The engine keeps the
  message and retries: this core never re-sends anything on its own except NACK repairs of
  fragments the engine handed it (nothing unverified is ever sent).
* Receipts ("rcpt") are held up to ``receipt_hold_s`` to share a RECEIPT_BUNDLE frame; a FLASH
  receipt, a full frame or a full hold flushes at once. A bundle completes all its receipts.
* A DUTY_CYCLE_LIMIT NAK means the radio counts more airtime than our ledger (relays, ACKs,
  retries we do not see): the ledger is charged up to the non-FLASH cap, so ROUTINE..IMMEDIATE
  wait for old airtime to roll out of the hour and the FLASH reserve stays.
* A fragment of a message completed recently (``Repeated``) is the sender retrying because our
  receipt was lost: the message is handed to the host again (from a small cache, at most once per
  ``repeat_interval_s``) so the engine re-sends its receipt.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from relay.airtime import PRESETS
from relay.engine.ops import Rejected, Transmit
from relay.envelope import Reason
from relay.mesh import Precedence
from relay.mesh.events import (
    CoreEvent,
    CoreSettings,
    Done,
    OutFrame,
    Received,
    frame_airtime,
)
from relay.mesh.fragmenter import Fragmenter, Repair
from relay.mesh.frames import (
    MAX_BUNDLE_ITEM,
    MAX_FRAME,
    MAX_MESSAGE,
    MAX_SUMMARY,
    Fragment,
    Malformed,
    MalformedReason,
    Nack,
    ReceiptBundle,
    Single,
    Summary,
    decode_frame,
    encode_summary,
    pack_receipts,
)
from relay.mesh.ledger import AirtimeLedger
from relay.mesh.reassembly import Completed, Reassembler, Refusal, Refused, Repeated
from relay.mesh.routing import BROADCAST, REFUSING_NAKS, RoutingError, routing_name
from relay.mesh.sendqueue import Evicted, PushRefused, QueueItem, Ready, SendQueue

_PEER_FAULTS: Final = frozenset(
    {Refusal.COUNT_MISMATCH, Refusal.CONFLICT, Refusal.LENGTH_MISMATCH, Refusal.DIGEST_MISMATCH}
)


@dataclass(slots=True)
class _Frame:
    tickets: tuple[int, ...]
    to: int
    want_ack: bool
    precedence: Precedence
    sent_at: float | None = None  # handed to the radio
    airtime_s: float = 0.0


@dataclass(slots=True)
class _Ticket:
    frames: set[int] = field(default_factory=set)  # refs not yet ACKed
    held: bool = False  # a receipt still waiting for its bundle


@dataclass(frozen=True, slots=True)
class _HeldReceipt:
    ticket: int
    raw: bytes
    precedence: Precedence
    since: float


class MeshCore:
    """One radio's worth of framing, queueing, airtime and repair state."""

    def __init__(self, settings: CoreSettings | None = None, *, link: str = "mesh") -> None:
        self.settings = s = settings or CoreSettings()
        self.link = link  # the name its Rejected events carry
        self.preset = PRESETS[s.preset]
        self.ledger = AirtimeLedger(
            s.budget_fraction, flash_reserve_fraction=s.flash_reserve_fraction
        )
        self.queue: SendQueue[int] = SendQueue(max_items=s.queue_items, max_bytes=s.queue_bytes)
        self.reassembler = Reassembler(timeout_s=s.partial_timeout_s, nack_delay_s=s.nack_delay_s)
        self.fragmenter = Fragmenter()
        self.counters: Counter[str] = Counter()
        self._refs = itertools.count(1)
        self._tickets_seq = itertools.count(1)
        self._frames: dict[int, _Frame] = {}
        self._tickets: dict[int, _Ticket] = {}
        self._held: list[_HeldReceipt] = []
        self._events: deque[CoreEvent] = deque()
        self._cache: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()
        self._cache_bytes = 0
        self._wake_at: float | None = None  # when the queue said it may send again

    # -- observation ------------------------------------------------------------------------

    def airtime_of(self, frame: bytes) -> float:
        return frame_airtime(len(frame), self.preset)

    def inflight(self) -> int:
        return sum(1 for f in self._frames.values() if f.sent_at is not None)

    def open_tickets(self) -> int:
        return len(self._tickets)

    def budget_ok(self, now: float) -> bool:
        """Whether a full ROUTINE frame may go now (else the link is 'degraded')."""
        return self.ledger.allowed(frame_airtime(MAX_FRAME, self.preset), Precedence.ROUTINE, now)

    def statistics(self, now: float) -> dict[str, object]:
        return {
            "preset": self.preset.name,
            "ack_timeout_s": round(self.settings.ack_timeout_s, 1),
            "nack_delay_s": round(self.settings.nack_delay_s, 1),
            "queue": self.queue.statistics(),
            "airtime_used_s": round(self.ledger.used(now), 3),
            "airtime_budget_s": self.ledger.budget_s,
            "airtime_cap_nonflash_s": self.ledger.cap(Precedence.ROUTINE),
            "airtime_total_s": round(self.ledger.recorded_s, 3),
            "inflight_frames": self.inflight(),
            "open_transmissions": len(self._tickets),
            "held_receipts": len(self._held),
            "reassembly": self.reassembler.statistics(),
            "fragment_cache": {
                "messages": len(self.fragmenter),
                "bytes": self.fragmenter.remembered_bytes,
                **dict(self.fragmenter.counters),
            },
            "counters": dict(self.counters),
        }

    def events(self) -> list[CoreEvent]:
        """Take every event produced since the last call."""
        out = list(self._events)
        self._events.clear()
        return out

    # -- sending ----------------------------------------------------------------------------

    def submit(self, t: Transmit, now: float) -> int:
        """Take one Transmit; return its ticket. Its ``Done`` comes as an event (maybe at once)."""
        ticket = next(self._tickets_seq)
        self.counters["submitted"] += 1
        if len(self._tickets) >= self.settings.max_tickets:
            self._finish_now(ticket, "too many transmissions in progress on this radio")
            return ticket
        prec = Precedence(min(max(t.precedence, Precedence.FLASH), Precedence.ROUTINE))
        if too_large := _size_refusal(t):
            self._finish_now(ticket, too_large, refused="too-large")
            return ticket
        if t.channel == "rcpt":
            if len(self._held) >= self.settings.max_held_receipts:
                self._flush_receipts(now, everything=True)
            self._tickets[ticket] = _Ticket(held=True)
            self._held.append(_HeldReceipt(ticket, t.raw, prec, now))
            self._flush_receipts(now, everything=prec is Precedence.FLASH)
            return ticket
        if t.channel == "sync":
            self._tickets[ticket] = _Ticket()
            self.counters["summaries_sent"] += 1
            self._enqueue((encode_summary(t.raw),), (ticket,), prec, BROADCAST, now)
            return ticket
        self._tickets[ticket] = _Ticket()
        frames = self.fragmenter.fragment(t.raw, now, prec)
        self._enqueue(frames, (ticket,), prec, BROADCAST, now)
        return ticket

    def poll_transmit(self, now: float) -> OutFrame | None:
        """The next frame the radio should send now, or None (see ``get_timer`` for when)."""
        if self.inflight() >= self.settings.max_inflight:
            return None
        result = self.queue.pop_ready(self.ledger, self.airtime_of, now)
        self._evicted(result.evicted, now)
        if not isinstance(result, Ready):
            self._wake_at = result.wake_at
            return None
        self._wake_at = None
        ref = result.item.tag
        frame = self._frames[ref]
        frame.sent_at = now
        frame.airtime_s = result.airtime_s
        self.counters["frames_sent"] += 1
        return OutFrame(
            ref,
            result.item.frame,
            frame.to,
            frame.want_ack,
            frame.precedence,
            result.airtime_s,
        )

    def frame_sent(self, ref: int, now: float) -> None:
        """The radio took the frame. Without want_ack that is all there will be."""
        frame = self._frames.get(ref)
        if frame is not None and not frame.want_ack:
            self._frame_ok(ref)

    def frame_failed(self, ref: int, detail: str, now: float) -> None:
        """The radio did not take the frame (not connected, library error)."""
        self.counters["frames_failed"] += 1
        self._frame_failed(ref, detail, now)

    def frame_routed(self, ref: int, error: int, *, implicit: bool, now: float) -> None:
        """An ACK (``error`` 0, maybe ``implicit``) or a NAK from the radio for frame ``ref``."""
        frame = self._frames.get(ref)
        if frame is None:
            return  # already timed out or failed
        if error == RoutingError.NONE:
            self.counters["acks_implicit" if implicit else "acks"] += 1
            self._frame_ok(ref)
            return
        name = routing_name(error)
        self.counters[f"nak_{name.lower()}"] += 1
        if error == RoutingError.DUTY_CYCLE_LIMIT:
            # The radio counts more airtime than we do: stop non-FLASH traffic until enough of
            # the hour has rolled out, keep the FLASH reserve.
            excess = self.ledger.cap(Precedence.ROUTINE) - self.ledger.used(now)
            if excess > 0:
                self.ledger.record(excess, now)
        elif error == RoutingError.MAX_RETRANSMIT:
            self.ledger.record(2 * frame.airtime_s, now)  # it went out three times
        refused = name if error in REFUSING_NAKS else ""
        self._frame_failed(ref, f"radio NAK {name}", now, refused=refused)

    def link_lost(self, now: float) -> None:
        """The radio went away: every transmission in progress fails (the engine retries)."""
        for ticket in list(self._tickets):
            self._fail_ticket(ticket, "radio disconnected", now)
        for ref in [r for r, f in self._frames.items() if f.sent_at is not None]:
            del self._frames[ref]  # NACKs and repairs in the radio: their ACKs are lost too

    # -- receiving --------------------------------------------------------------------------

    def frame_received(self, payload: bytes, sender: int, now: float) -> None:
        """One payload on our portnum from node ``sender``."""
        self.counters["frames_received"] += 1
        frame = decode_frame(payload)
        match frame:
            case Malformed(reason=reason, detail=detail):
                why = Reason.OVERSIZED if reason is MalformedReason.OVERSIZED else Reason.MALFORMED
                self._reject(why, f"frame from !{sender:08x}: {reason}: {detail}")
            case Single(data=data):
                self._events.append(Received(data, "msg", sender))
            case ReceiptBundle(receipts=receipts):
                self.counters["receipt_bundles_received"] += 1
                self._events.extend(Received(r, "rcpt", sender) for r in receipts)
            case Fragment():
                self._fragment(frame, sender, now)
            case Nack():
                self._nack(frame, now)
            case Summary(data=data):
                self.counters["summaries_received"] += 1
                self._events.append(Received(data, "sync", sender))

    def _fragment(self, fragment: Fragment, sender: int, now: float) -> None:
        result = self.reassembler.feed(fragment, sender, now)
        match result:
            case Completed(message=message):
                self._remember(message, now)
                self._events.append(Received(message, "msg", sender))
            case Repeated(sha256=digest):
                cached = self._cache.get(digest)
                if cached is not None and now - cached[1] >= self.settings.repeat_interval_s:
                    self._cache[digest] = (cached[0], now)
                    self.counters["repeats_handed_up"] += 1
                    self._events.append(Received(cached[0], "msg", sender))
            case Refused(reason=reason) if reason in _PEER_FAULTS:
                self._reject(Reason.MALFORMED, f"fragment from !{sender:08x}: {reason}")
            case _:
                pass  # progress, or a harmless duplicate (counted by the reassembler)

    def _nack(self, nack: Nack, now: float) -> None:
        answer = self.fragmenter.repair(nack, now)
        if isinstance(answer, Repair):
            self.counters["repairs_sent"] += 1
            self._enqueue(answer.frames, (), answer.precedence, BROADCAST, now)

    def _remember(self, message: bytes, now: float) -> None:
        digest = hashlib.sha256(message).digest()
        if digest in self._cache:
            return
        self._cache[digest] = (message, now)
        self._cache_bytes += len(message)
        while len(self._cache) > self.settings.cache_messages or (
            self._cache_bytes > self.settings.cache_bytes and len(self._cache) > 1
        ):
            _, (old, _) = self._cache.popitem(last=False)
            self._cache_bytes -= len(old)

    def _reject(self, reason: Reason, detail: str) -> None:
        self.counters["frames_rejected"] += 1
        self._events.append(Rejected(self.link, reason, detail))

    # -- timers -----------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When ``handle_timer`` (or ``poll_transmit``) next has work; None when idle."""
        times: list[float] = []
        if self._held:
            times.append(min(h.since for h in self._held) + self.settings.receipt_hold_s)
        times += [
            f.sent_at + self.settings.ack_timeout_s
            for f in self._frames.values()
            if f.sent_at is not None
        ]
        nack = self.reassembler.next_timer()
        if nack is not None:
            times.append(nack)
        if self._wake_at is not None and math.isfinite(self._wake_at):
            times.append(self._wake_at)
        return min(times, default=None)

    def handle_timer(self, now: float) -> None:
        """Flush receipt bundles, send due NACKs, time out frames nobody ACKed."""
        self._flush_receipts(now, everything=False)
        for nack in self.reassembler.missing(now):
            self.counters["nacks_sent"] += 1
            self._enqueue((nack.frame,), (), self.settings.nack_precedence, nack.to, now)
        for ref, frame in list(self._frames.items()):
            if frame.sent_at is not None and now >= frame.sent_at + self.settings.ack_timeout_s:
                self.counters["ack_timeouts"] += 1
                self._frame_failed(ref, "no ACK from the radio in time", now)
        if self._wake_at is not None and now >= self._wake_at:
            self._wake_at = None

    # -- internals --------------------------------------------------------------------------

    def _enqueue(
        self,
        frames: Iterable[bytes],
        tickets: tuple[int, ...],
        prec: Precedence,
        to: int,
        now: float,
    ) -> None:
        want_ack = to == BROADCAST
        for payload in frames:
            ref = next(self._refs)
            item = QueueItem(payload, prec, ref, now + self.settings.max_queue_s)
            result = self.queue.push(item, now)
            self._evicted(result.evicted, now)
            if isinstance(result, PushRefused):
                self.counters[f"queue_refused_{result.reason}"] += 1
                for ticket in tickets:
                    self._fail_ticket(ticket, f"send queue: {result.reason}: {result.detail}", now)
                return
            self._frames[ref] = _Frame(tickets, to, want_ack, prec)
            for ticket in tickets:
                self._tickets[ticket].frames.add(ref)

    def _evicted(self, evicted: tuple[Evicted[int], ...], now: float) -> None:
        for ev in evicted:
            frame = self._frames.pop(ev.item.tag, None)
            self.counters[f"queue_evicted_{ev.reason}"] += 1
            if frame is not None:
                for ticket in frame.tickets:
                    self._fail_ticket(ticket, f"frame left the send queue: {ev.reason}", now)

    def _flush_receipts(self, now: float, *, everything: bool) -> None:
        """Pack held receipts into bundles: all of them if ``everything`` or one is due."""
        if not self._held:
            return
        hold = self.settings.receipt_hold_s
        due = everything or any(now >= h.since + hold for h in self._held)
        batches = _pack([h for h in sorted(self._held, key=lambda h: h.precedence)])
        if not due:
            # Only frames that are already full go early; the last, partial one keeps waiting.
            batches = batches[:-1]
        for frame, batch in batches:
            for h in batch:
                self._held.remove(h)
                self._tickets[h.ticket].held = False
            prec = min(h.precedence for h in batch)
            self.counters["receipt_bundles_sent"] += 1
            self._enqueue((frame,), tuple(h.ticket for h in batch), prec, BROADCAST, now)

    def _frame_ok(self, ref: int) -> None:
        frame = self._frames.pop(ref)
        for ticket in frame.tickets:
            state = self._tickets.get(ticket)
            if state is None:
                continue
            state.frames.discard(ref)
            if not state.frames and not state.held:
                del self._tickets[ticket]
                self.counters["done_ok"] += 1
                self._events.append(Done(ticket, True))

    def _frame_failed(self, ref: int, detail: str, now: float, *, refused: str = "") -> None:
        frame = self._frames.pop(ref, None)
        if frame is None:
            return
        for ticket in frame.tickets:
            self._fail_ticket(ticket, detail, now, refused=refused)

    def _fail_ticket(self, ticket: int, detail: str, now: float, *, refused: str = "") -> None:
        state = self._tickets.pop(ticket, None)
        if state is None:
            return
        self.counters["done_failed"] += 1
        self._events.append(Done(ticket, False, detail, refused))
        if state.held:
            self._held = [h for h in self._held if h.ticket != ticket]
        # Withdraw what is still queued for it: nothing goes on air for a failed transmission
        # (frames shared with other receipts stay: the others still need them).
        withdraw = {
            ref
            for ref in state.frames
            if (f := self._frames.get(ref)) is not None
            and f.sent_at is None
            and f.tickets == (ticket,)
        }
        if withdraw:
            kept = [item for item in self.queue.drain() if item.tag not in withdraw]
            for item in kept:
                result = self.queue.push(item, now)
                self._evicted(result.evicted, now)
            for ref in withdraw:
                self._frames.pop(ref, None)
        for ref in state.frames - withdraw:
            frame = self._frames.get(ref)
            if frame is not None:
                frame.tickets = tuple(t for t in frame.tickets if t != ticket)

    def _finish_now(self, ticket: int, detail: str, *, refused: str = "") -> None:
        self.counters["done_failed"] += 1
        self.counters["refused"] += 1
        self._events.append(Done(ticket, False, detail, refused))


def _size_refusal(t: Transmit) -> str:
    """Why ``t`` is too large (or empty) for the frames of its channel; empty when it fits."""
    size = len(t.raw)
    if t.channel == "rcpt":
        return f"receipt of {size} B exceeds {MAX_BUNDLE_ITEM}" if size > MAX_BUNDLE_ITEM else ""
    if t.channel == "sync":
        return f"summary of {size} B exceeds {MAX_SUMMARY}" if size > MAX_SUMMARY else ""
    if not 1 <= size <= MAX_MESSAGE:
        return f"message of {size} B; the mesh carries 1..{MAX_MESSAGE}"
    return ""


def _pack(held: list[_HeldReceipt]) -> list[tuple[bytes, list[_HeldReceipt]]]:
    """The RECEIPT_BUNDLE frames ``frames.pack_receipts`` makes of ``held`` (greedy, order
    kept), each with the held receipts it carries."""
    out: list[tuple[bytes, list[_HeldReceipt]]] = []
    start = 0
    for frame in pack_receipts([h.raw for h in held]):
        bundle = decode_frame(frame)
        if not isinstance(bundle, ReceiptBundle):  # our own encoder's output: a bug
            raise AssertionError(f"pack_receipts made {bundle!r}")
        count = len(bundle.receipts)
        out.append((frame, held[start : start + count]))
        start += count
    return out
