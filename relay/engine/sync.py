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
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import cbor2

from relay.envelope import KID_LEN, Kind, Reason, Rejection
from relay.trust import REPLAY_WINDOW, ReplayWindow
from relay.vocab import Channel

SYNC_CHANNEL: Final = Channel.SYNC
SUMMARY_VERSION: Final = 1
MAX_SIGNERS: Final = 512  # more signer keys than any roster we expect; a bound on decoding work
MAX_RUNS: Final = 64  # runs per signer in a summary we accept
MAX_SEQ: Final = (1 << 63) - 1
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# Order in which what a peer lacks is sent: trust first (a new roster admits new signers), then
# what people read, receipts last (a receipt for a decision the peer lacks is worth less).
KIND_ORDER: Final = {Kind.ROSTER: 0, Kind.REVOCATION: 0, Kind.ACK: 2}


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
