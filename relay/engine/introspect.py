"""What the engine shows about itself (the daemon's status, the API, tests). Pure reads."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from relay.engine.clock import WARN_S, TrustedTime
from relay.engine.health import LinkHealth
from relay.engine.model import HeldMessage
from relay.engine.outbox import Outbox
from relay.trust import Roster


def statistics(
    *,
    msgs: int,
    outbox: Outbox,
    counters: Counter[str],
    rejections: Counter[str],
    refusals: Counter[str],
    time: TrustedTime,
    roster: Roster | None,
    pq: Mapping[str, object] | None = None,
) -> dict[str, object]:
    offset = time.offset()
    return {
        "messages": msgs,
        "outbox": len(outbox),
        "inflight": sum(outbox.inflight.values()),
        "counters": dict(counters),
        "rejections": dict(rejections),
        "refusals": dict(refusals),
        "clock_offset_s": offset,
        "clock_warning": offset is not None and abs(offset) > WARN_S,
        "clock_corrected_s": time.evidence.correction(time.last),
        "clock_sources": len(time.evidence.sources(time.last)),
        "roster_serial": roster.serial if roster else None,
        "pq": dict(pq or {}),
    }


def link_health(health: Mapping[str, LinkHealth], now: float) -> dict[str, dict[str, object]]:
    return {
        name: {
            "reported": h.reported,
            "effective": h.effective(now),
            "changed_at": h.changed_at,
            "hold_s": h.current_hold_s,
        }
        for name, h in health.items()
    }


def outbox_of(outbox: Outbox, msg_id: bytes, links: Iterable[str]) -> list[dict[str, object]]:
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
        for out in outbox.of(msg_id, links)
    ]


def recipients_of(
    msgs: Mapping[bytes, HeldMessage], msg_id: bytes
) -> tuple[frozenset[str], set[str]] | None:
    m = msgs.get(msg_id)
    return None if m is None else (m.recipients, set(m.signed))
