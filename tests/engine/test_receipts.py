"""Receipts on their own (relay.engine.receipts): signing ours, taking in the peers'."""

from __future__ import annotations

from collections import Counter

from relay.engine import receipts
from relay.engine.model import HeldMessage
from relay.engine.ops import DeliveredAt, PutMessage, PutReceipt, StoreOp
from relay.envelope import PAYLOAD_VERSION, Envelope, Kind, key_id, open_envelope
from relay.trust import Accepted, Role
from tests.world import NOW, standard_world

ME = "vr07-utrecht"


def test_our_receipt_refers_to_the_decision_and_lives_in_whole_minutes() -> None:
    """Test that our receipt is an ACK signed with the node key for the decision, expiring with
    it (at least a minute after issue, in whole minutes), with its message and receipt rows."""
    w = standard_world()
    d = w.decision("national", lifetime=30 * 60)
    key = w.keys[ME]
    kid = key_id(key.public_key().public_bytes_raw())
    for issued, expires in ((NOW, NOW + 30 * 60), (NOW + 29 * 60 + 30, NOW + 29 * 60 + 90)):
        made = receipts.sign([(b"d" * 32, d)], float(NOW), issued=issued, seq=7, node=ME, key=key,
                             kid=kid, version=PAYLOAD_VERSION)  # fmt: skip
        env = open_envelope(made.msg.raw)
        assert isinstance(env, Envelope) and env.id == made.id and env.kid == kid
        r = env.decision
        assert (r.kind, r.refs, r.seq, r.issued_at) == (Kind.ACK, (b"d" * 32,), 7, issued)
        assert r.expires_at == expires and (r.expires_at - issued) % 60 == 0
        put, row = made.ops
        assert isinstance(put, PutMessage) and put.id == made.id and put.origin
        assert isinstance(row, PutReceipt) and (row.msg_id, row.node) == (b"d" * 32, ME)


def test_intake_tells_the_origin_once_and_reports_completion() -> None:
    """Test that a receipt for our own message is told once, completes it when every recipient
    has signed, and is held back for a message still being persisted."""
    w = standard_world()
    ours = w.decision(ME)
    held = HeldMessage(b"raw", ours, float(NOW), True, recipients=frozenset({"vr05-twente"}))
    pending_id = b"p" * 32
    msgs = {b"m" * 32: held}
    raw = w.sign("vr05-twente", kind=Kind.ACK, refs=(b"m" * 32, pending_id))
    env = open_envelope(raw)
    assert isinstance(env, Envelope)
    verdict = Accepted(envelope=env, signer="vr05-twente", role=Role.NODE)
    intake = receipts.Intake(Counter())
    ops: list[StoreOp] = []
    told, done = intake.receive(
        verdict, "mqtt", float(NOW), msgs=msgs, pending={pending_id}, ops=ops
    )
    assert told == [DeliveredAt(b"m" * 32, "vr05-twente", "mqtt")] and done == [b"m" * 32]
    assert (
        intake.take_early(pending_id) == {"vr05-twente"} and intake.take_early(pending_id) == set()
    )
    again, _ = intake.receive(verdict, "mqtt", float(NOW), msgs=msgs, pending=set(), ops=ops)
    assert again == [] and intake.counters["receipts"] == 1
