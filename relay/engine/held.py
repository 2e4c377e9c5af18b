"""The messages the engine holds: one built from a verified envelope, its store row, and the
engine's tables rebuilt from the store's snapshot at start. Pure: the snapshot is data.

A stored message is parsed once, at restore; rosters and revocations are applied in their order
first, so that the recipients of our own messages are those of the current roster.
"""

from __future__ import annotations

from relay.engine.model import HeldMessage, Snapshot, StoredMessage
from relay.engine.ops import PutMessage
from relay.engine.outbox import ANY_LINK, Outbox
from relay.engine.routing import SHOWN_KINDS, Net
from relay.envelope import Decision, Envelope, Kind, Rejection, open_envelope
from relay.trust import Accepted, ReplayGuard, ReplayWindow, Roster, TrustState
from relay.vocab import LinkKind


def hold(
    env: Envelope, d: Decision, at: float, *, origin: bool, via: LinkKind | None,
    roster: Roster | None,
) -> HeldMessage:  # fmt: skip
    """A message as the engine holds it; our own shown ones know who must sign for them."""
    m = HeldMessage(env.raw, d, at, origin, via, kid=env.kid)
    if origin and d.kind in SHOWN_KINDS and roster is not None:
        m.recipients = frozenset(roster.recipients(d.audience))
    return m


def row(verdict: Accepted, now: float, *, link: str, origin: bool) -> PutMessage:
    """The store row of an accepted message."""
    env, d = verdict.envelope, verdict.envelope.decision
    return PutMessage(
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
    )


def restore(
    snap: Snapshot,
    *,
    trust: TrustState,
    replay: ReplayGuard,
    net: Net,
    msgs: dict[bytes, HeldMessage],
    tombstones: dict[bytes, float],
    own_receipts: dict[bytes, bytes],
    outbox: Outbox,
) -> None:
    """Fill the engine's (empty) tables from ``snap``; a stored message that cannot be parsed
    (stored by us after verification: a bug or corruption) raises ValueError."""
    for kid, (high, bits) in snap.replay.items():
        replay.windows[kid] = ReplayWindow.restore(high, bits)
    tombstones.update(snap.tombstones)
    trust_msgs: list[Envelope] = []
    parsed: list[tuple[Envelope, StoredMessage]] = []
    for sm in snap.messages:
        env = open_envelope(sm.raw, max_bytes=1 << 20)
        if isinstance(env, Rejection):
            raise ValueError(f"stored message cannot be parsed: {env.detail}")
        parsed.append((env, sm))
        if env.decision.kind in (Kind.ROSTER, Kind.REVOCATION):
            trust_msgs.append(env)
    for env in sorted(trust_msgs, key=lambda e: e.decision.seq):
        verdict = trust.check(env, env.decision.issued_at)
        if isinstance(verdict, Accepted):
            trust.apply(verdict)
    for env, sm in parsed:
        via = net.kind(sm.received_via)
        msgs[env.id] = hold(
            env, env.decision, sm.received_at, origin=sm.origin, via=via, roster=trust.roster
        )
    for msg_id, node in snap.receipts:
        if msg_id in msgs:
            msgs[msg_id].signed.add(node)
    own_receipts.update(snap.own_receipts)
    for row in snap.outbox:
        if row.id in msgs and (row.link in net.links or row.link == ANY_LINK):
            outbox.add(
                row.id, row.link, attempts=row.attempts, at=row.next_at,
                awaiting=row.awaiting_receipts,
            )  # fmt: skip
