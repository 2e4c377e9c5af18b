"""The pure engine: ordering against persistence, dedupe, receipts, retries, bounds, expiry."""

from relay.engine.ops import (
    Action,
    DeliveredAt,
    Persist,
    PutInbox,
    PutMessage,
    Rejected,
    Submitted,
    Transmit,
)
from relay.envelope import Envelope, Kind, Precedence, Reason, open_envelope
from relay.trust import Accepted
from tests.engine.harness import make_node
from tests.world import NOW, standard_world


def test_nothing_is_shown_or_sent_before_it_is_persisted() -> None:
    """Test that a received decision yields only a Persist until that Persist is reported done."""
    w = standard_world()
    node = make_node(w, "vr07-utrecht", {"VR07"})
    raw = w.sign("national", to="all")
    first = node.engine.received("mqtt", raw, NOW, channel="msg")
    assert [type(a) for a in first] == [Persist]
    assert any(isinstance(op, PutInbox) for op in first[0].ops)  # type: ignore[union-attr]
    released = node.engine.persisted(first[0].token, NOW)  # type: ignore[union-attr]
    kinds = {type(a).__name__ for a in released}
    assert "Deliver" in kinds and "Transmit" in kinds  # shown, and our receipt goes out


def test_duplicate_is_delivered_once() -> None:
    """Test that the same signed bytes arriving twice land in the inbox once."""
    w = standard_world()
    node = make_node(w, "vr07-utrecht", {"VR07"})
    raw = w.sign("national")
    node.run(node.engine.received("mqtt", raw, NOW, channel="msg"), NOW)
    node.run(node.engine.received("mqtt", raw, NOW + 1, channel="msg"), NOW + 1)
    assert len(node.delivered) == 1
    assert len(node.store.inbox) == 1
    assert node.engine.counters["duplicates"] == 1


def test_out_of_audience_is_stored_but_not_delivered() -> None:
    """Test that a node outside the audience keeps the message but shows nothing."""
    w = standard_world()
    node = make_node(w, "vr05-twente", {"VR05"})
    node.run(node.engine.received("mqtt", w.sign("vr07-issuer", to="region:VR07"), NOW,
                                  channel="msg"), NOW)  # fmt: skip
    assert node.delivered == [] and len(node.store.messages) == 1


def test_sender_retries_until_every_recipient_signs() -> None:
    """Test that the origin re-sends with backoff and stops once all receipts are in."""
    w = standard_world()
    sender = make_node(w, "hq", set())
    a = make_node(w, "vr07-utrecht", {"VR07"})
    raw = w.sign("vr07-issuer", to="region:VR07")
    acts = sender.run(sender.engine.submit(raw, NOW, ticket=1), NOW)
    assert any(isinstance(x, Submitted) and x.reason is None for x in acts)
    sends = [t for t in sender.sent if t.channel == "msg"]
    assert len(sends) == 1
    sender.run(sender.engine.transmitted("mqtt", sends[0].id, True, NOW), NOW)
    # No receipt yet: the timer re-sends after the first backoff (30 s), not before.
    sender.run(sender.engine.timer(NOW + 29), NOW + 29)
    assert len(sender.sent) == 1
    sender.run(sender.engine.timer(NOW + 31), NOW + 31)
    assert len(sender.sent) == 2
    # The recipient gets it and signs; its receipt reaches the sender; retries stop.
    a.run(a.engine.received("mqtt", raw, NOW + 31, channel="msg"), NOW + 31)
    receipt = next(t for t in a.sent if t.channel == "rcpt")
    out = sender.run(sender.engine.received("mqtt", receipt.raw, NOW + 32, channel="rcpt"),
                     NOW + 32)  # fmt: skip
    assert any(isinstance(x, DeliveredAt) and x.node == "vr07-utrecht" for x in out)
    sender.run(sender.engine.transmitted("mqtt", sends[0].id, True, NOW + 32), NOW + 32)
    sender.run(sender.engine.timer(NOW + 10_000), NOW + 10_000)
    assert len([t for t in sender.sent if t.channel == "msg"]) == 2
    assert not [k for k in sender.store.outbox if k[0] == sends[0].id]


def test_retransmission_makes_the_recipient_resend_its_receipt() -> None:
    """Test that a duplicate from a retrying sender triggers our stored receipt again."""
    w = standard_world()
    a = make_node(w, "vr07-utrecht", {"VR07"})
    raw = w.sign("national")
    a.run(a.engine.received("mqtt", raw, NOW, channel="msg"), NOW)
    rcpt = [t for t in a.sent if t.channel == "rcpt"]
    a.run(a.engine.transmitted("mqtt", rcpt[0].id, True, NOW), NOW)
    a.run(a.engine.received("mqtt", raw, NOW + 60, channel="msg"), NOW + 60)
    again = [t for t in a.sent if t.channel == "rcpt"]
    assert len(again) == 2 and again[0].raw == again[1].raw


def test_own_receipt_is_stored_under_the_id_and_key_id_its_bytes_carry() -> None:
    """Test that the receipt we sign is recorded with the id and key id that parsing it gives."""
    w = standard_world()
    a = make_node(w, "vr07-utrecht", {"VR07"})
    first = a.engine.received("mqtt", w.sign("national"), NOW, channel="msg")
    puts = [op for op in first[0].ops if isinstance(op, PutMessage)]  # type: ignore[union-attr]
    receipt = next(op for op in puts if op.kind == Kind.ACK)
    env = open_envelope(receipt.raw)
    assert isinstance(env, Envelope)
    assert (receipt.id, receipt.kid) == (env.id, env.kid)
    verdict = a.engine.trust.check(env, NOW)
    assert isinstance(verdict, Accepted) and verdict.signer == "vr07-utrecht"
    a.run(first, NOW)
    assert [t.id for t in a.sent if t.channel == "rcpt"] == [env.id]


def test_link_down_holds_and_link_up_flushes() -> None:
    """Test that transmissions wait while the link is down and go as soon as it is up."""
    w = standard_world()
    sender = make_node(w, "hq", set())
    sender.run(sender.engine.link_state("mqtt", False, NOW), NOW)
    sender.run(sender.engine.submit(w.sign("national"), NOW, ticket=1), NOW)
    sender.run(sender.engine.timer(NOW + 100), NOW + 100)
    assert sender.sent == []
    sender.run(sender.engine.link_state("mqtt", True, NOW + 200), NOW + 200)
    assert sender.sent == []  # a link back from an outage is held down for 2 s first
    assert sender.engine.next_deadline() <= NOW + 202  # the timer is due when the hold ends
    sender.run(sender.engine.timer(NOW + 202), NOW + 202)
    # The decision, and this node's own receipt (it is in the audience "all").
    assert sorted(t.channel for t in sender.sent) == ["msg", "rcpt"]


def test_failed_transmission_is_retried_soon() -> None:
    """Test that a failed publish (no PUBACK) is retried after the short failure backoff."""
    w = standard_world()
    sender = make_node(w, "hq", set())
    sender.run(sender.engine.submit(w.sign("national"), NOW, ticket=1), NOW)
    t = next(x for x in sender.sent if x.channel == "msg")
    sender.run(sender.engine.transmitted("mqtt", t.id, False, NOW), NOW)
    sender.run(sender.engine.timer(NOW + 1.5), NOW + 1.5)
    assert [x.id for x in sender.sent].count(t.id) == 1
    sender.run(sender.engine.timer(NOW + 2.5), NOW + 2.5)
    assert [x.id for x in sender.sent].count(t.id) == 2


def test_restart_keeps_inbox_and_dedupe_and_replay_state() -> None:
    """Test that an engine rebuilt from the store neither re-delivers nor accepts replays."""
    w = standard_world()
    a = make_node(w, "vr07-utrecht", {"VR07"})
    raw = w.sign("national", seq=7)
    a.run(a.engine.received("mqtt", raw, NOW, channel="msg"), NOW)
    b = make_node(w, "vr07-utrecht", {"VR07"}, store=a.store)
    b.run(b.engine.received("mqtt", raw, NOW + 5, channel="msg"), NOW + 5)
    assert b.delivered == []
    replayed = w.sign("national", "other text", seq=7)
    out = b.run(b.engine.received("mqtt", replayed, NOW + 6, channel="msg"), NOW + 6)
    assert any(isinstance(x, Rejected) and x.reason == Reason.REPLAY for x in out)
    # The node's own receipt sequence continues where it stopped.
    b.run(b.engine.received("mqtt", w.sign("national"), NOW + 7, channel="msg"), NOW + 7)
    assert b.store.counters["own_seq"] == 2


def test_wrong_topic_is_rejected() -> None:
    """Test that a decision published on the receipt topic is rejected as wrong-topic."""
    w = standard_world()
    a = make_node(w, "vr07-utrecht", {"VR07"})
    out = a.run(a.engine.received("mqtt", w.sign("national"), NOW, channel="rcpt"), NOW)
    assert any(isinstance(x, Rejected) and x.reason == Reason.WRONG_TOPIC for x in out)


def test_size_bound_evicts_routine_first_and_never_flash() -> None:
    """Test that a full store evicts ROUTINE first, keeps FLASH, and refuses when all is FLASH."""
    w = standard_world()
    a = make_node(w, "vr05-twente", {"VR05"}, max_messages=3)  # VR07 traffic: stored, not shown

    def feed(text: str, precedence: Precedence, at: float) -> list[Action]:
        raw = w.sign("vr07-issuer", text, to="region:VR07", precedence=precedence)
        return a.run(a.engine.received("mqtt", raw, at, channel="msg"), at)

    feed("flash 1", Precedence.FLASH, NOW)
    feed("routine", Precedence.ROUTINE, NOW + 1)
    feed("flash 2", Precedence.FLASH, NOW + 2)
    feed("priority", Precedence.PRIORITY, NOW + 3)  # full: the ROUTINE one goes
    assert a.engine.counters["evicted"] == 1
    assert sorted(m.precedence for m in a.store.messages.values()) == [0, 0, 2]
    feed("flash 3", Precedence.FLASH, NOW + 4)  # the PRIORITY one goes, never a FLASH
    assert sorted(m.precedence for m in a.store.messages.values()) == [0, 0, 0]
    out = feed("routine 2", Precedence.ROUTINE, NOW + 5)
    assert any(isinstance(x, Rejected) and x.reason == Reason.STORE_FULL for x in out)
    # An evicted message arriving again is a duplicate, not a second delivery.
    assert a.engine.counters["duplicates"] == 0


def test_size_bound_evicts_receipts_before_decisions() -> None:
    """Test that a full store gives up the oldest receipts it carries before any decision."""
    w = standard_world()
    recipient = make_node(w, "vr07-utrecht", {"VR07"})
    relay = make_node(w, "vr05-twente", {"VR05"}, max_messages=4)  # carries VR07 traffic
    at = float(NOW)
    for i in range(3):
        raw = w.sign("vr07-issuer", f"besluit {i}", to="region:VR07", precedence=Precedence.ROUTINE)
        sent = recipient.run(recipient.engine.received("mqtt", raw, at, channel="msg"), at)
        (receipt,) = {t.raw for t in sent if isinstance(t, Transmit) and t.channel == "rcpt"}
        for message, channel in ((raw, "msg"), (receipt, "rcpt")):
            at += 1
            relay.run(relay.engine.received("mqtt", message, at, channel=channel), at)
    kinds = sorted(m.kind for m in relay.store.messages.values())
    assert relay.engine.counters["evicted"] == 2
    assert kinds == [Kind.DECISION] * 3 + [Kind.ACK]


def test_expired_messages_are_collected() -> None:
    """Test that messages past expiry plus the skew window are removed by the timer."""
    w = standard_world()
    a = make_node(w, "vr07-utrecht", {"VR07"})
    a.run(a.engine.received("mqtt", w.sign("national", lifetime=600), NOW, channel="msg"), NOW)
    assert a.engine.statistics()["messages"] == 2  # the decision and our receipt
    later = NOW + 600 + a.engine.trust.skew_s + 1
    a.run(a.engine.timer(later), later)
    assert a.engine.statistics()["messages"] == 0
    assert a.store.messages == {}


def test_submission_is_answered_only_after_persistence() -> None:
    """Test that `Submitted` for a local message is held until its Persist completes."""
    w = standard_world()
    sender = make_node(w, "hq", set())
    acts = sender.engine.submit(w.sign("national"), NOW, ticket=9)
    assert not any(isinstance(x, Submitted) for x in acts)
    released = sender.engine.persisted(acts[0].token, NOW)  # type: ignore[union-attr]
    assert any(isinstance(x, Submitted) and x.ticket == 9 for x in released)
    assert any(isinstance(x, Transmit) for x in released)


def test_late_copy_of_a_held_message_is_a_duplicate_not_a_replay() -> None:
    """Test that a message whose id the node holds counts as a duplicate even when its sequence
    number has fallen out of the replay window (1,100 newer ones since), also after a restart
    and while its first copy is still being committed."""
    w = standard_world()
    a = make_node(w, "vr07-utrecht", {"VR07"})
    late = w.sign("national", "Besluit 0: eerst", seq=1)
    a.run(a.engine.received("mqtt", late, NOW, channel="msg"), NOW)
    for seq in range(2, 1102):
        a.run(a.engine.received("mqtt", w.sign("national", f"B {seq}", seq=seq), NOW), NOW)
    assert len(a.delivered) == 1101
    stranger = w.sign("national", "never seen, as old", seq=1)
    out = a.run(a.engine.received("mqtt", stranger, NOW + 1, channel="msg"), NOW + 1)
    assert any(isinstance(x, Rejected) and x.reason == Reason.REPLAY for x in out)
    for node in (a, make_node(w, "vr07-utrecht", {"VR07"}, store=a.store)):
        before = node.engine.counters["duplicates"]
        out = node.run(node.engine.received("mqtt", late, NOW + 2, channel="msg"), NOW + 2)
        assert not any(isinstance(x, Rejected) for x in out)
        assert node.engine.counters["duplicates"] == before + 1
    # A copy arriving while the first is between Persist and persisted (a broker re-send).
    b = make_node(w, "vr07-utrecht", {"VR07"})
    fresh = w.sign("national", "onderweg", seq=5000)
    first = b.engine.received("mqtt", fresh, NOW, channel="msg")
    again = b.engine.received("mqtt", fresh, NOW, channel="msg")
    assert not any(isinstance(x, Rejected) for x in again)
    assert b.engine.counters["duplicates"] == 1
    b.run(first, NOW)
    assert len(b.delivered) == 1
