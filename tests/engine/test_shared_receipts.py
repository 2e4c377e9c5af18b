"""Receipts for a burst: decisions that arrive together by MQTT share one signed receipt."""

from __future__ import annotations

import pytest

from relay.engine import receipts
from relay.engine.model import LinkInfo
from relay.engine.ops import (
    Action,
    DeleteOutbox,
    Persist,
    PutInbox,
    PutMessage,
    PutReceipt,
    Transmit,
)
from relay.envelope import (
    PAYLOAD_VERSIONS,
    Envelope,
    Kind,
    Precedence,
    key_id,
    message_id,
    open_envelope,
)
from relay.mesh.frames import MAX_BUNDLE_ITEM
from relay.vocab import Channel
from tests.engine.harness import Node, make_node
from tests.world import NOW, World, standard_world

ME = "vr07-utrecht"
ORIGIN = "vr05-twente"


def receipts_sent(node: Node) -> list[Transmit]:
    return [t for t in node.sent if t.channel == Channel.RCPT]


def refs_of(t: Transmit) -> tuple[bytes, ...]:
    env = open_envelope(t.raw)
    assert isinstance(env, Envelope) and env.decision.kind == Kind.ACK
    return env.decision.refs


def burst(w: World, n: int, **kw: object) -> list[bytes]:
    kw.setdefault("to", "region:VR07")
    return [w.sign("national", f"Besluit {i}", **kw) for i in range(n)]


HOLD = 0.005  # the daemon's RECEIPT_HOLD_S
MS = 0.001


def take(node: Node, link: str, raws: list[bytes], start: float, step: float) -> list[Action]:
    """The raws from ``link``, ``step`` apart from ``start``, carried out; what came back."""
    out: list[Action] = []
    for i, raw in enumerate(raws):
        now = start + i * step
        out += node.run(node.engine.received(link, raw, now, peer="hq"), now)
    return out


def test_a_burst_from_mqtt_shares_receipts_and_persists_with_them() -> None:
    """Test that eight decisions 1 ms apart from MQTT get four receipts (1 + 3 + 3 + 1 refs:
    the first is no burst yet, the last waits out the hold), that no decision is stored before
    a receipt for it is signed, and that each is delivered once with our receipt on record."""
    w = standard_world()
    node = make_node(w, ME, {"VR07"}, receipt_hold_s=HOLD)
    raws = burst(w, 8)
    out = take(node, "mqtt", raws, float(NOW), MS)
    for p in (a for a in out if isinstance(a, Persist)):
        if any(isinstance(op, PutInbox) for op in p.ops):  # a decision's rows: with a receipt
            assert any(isinstance(op, PutReceipt) and op.node == ME for op in p.ops)
    assert node.engine.oldest_open_receipt() == node.engine.receipt_serial
    last = float(NOW) + 7 * MS
    assert node.engine.next_deadline() <= last + HOLD
    node.run(node.engine.timer(last + HOLD / 2), last + HOLD / 2)
    assert message_id(raws[-1]) not in node.store.inbox  # still waiting for its receipt
    node.run(node.engine.timer(last + HOLD), last + HOLD)
    assert node.engine.oldest_open_receipt() is None
    sent = receipts_sent(node)
    assert [len(refs_of(t)) for t in sent] == [1, 3, 3, 1]
    ids = [message_id(r) for r in raws]
    assert [ref for t in sent for ref in refs_of(t)] == ids
    assert [d.id for d in node.delivered] == ids
    assert all(node.store.receipts[(i, ME)] for i in ids) and set(node.store.inbox) == set(ids)
    assert node.engine.counters["receipts_shared"] == 6


def test_steady_traffic_and_the_default_sign_every_receipt_at_once() -> None:
    """Test that decisions 10 ms apart (no burst for a 5 ms hold), and any burst without a
    hold configured, each get their own receipt at once."""
    w = standard_world()
    steady = make_node(w, ME, {"VR07"}, receipt_hold_s=HOLD)
    take(steady, "mqtt", burst(w, 4), float(NOW), 10 * MS)
    default = make_node(w, "vr05-twente", {"VR05"})
    take(default, "mqtt", burst(w, 4, to="all"), float(NOW), 0.0)
    for node in (steady, default):
        assert [len(refs_of(t)) for t in receipts_sent(node)] == [1, 1, 1, 1]
        assert node.engine.oldest_open_receipt() is None


def test_only_one_precedence_exercise_and_link_share_a_receipt() -> None:
    """Test that in a burst, decisions of another precedence, of an exercise, or from another
    MQTT link do not share a receipt with the rest."""
    w = standard_world()
    links = (LinkInfo("mqtt", "mqtt"), LinkInfo("mqtt2", "mqtt"))
    node = make_node(w, ME, {"VR07"}, links=links, receipt_hold_s=HOLD)
    raws = [
        *burst(w, 2),
        *burst(w, 1, precedence=Precedence.IMMEDIATE),
        *burst(w, 1, exercise=True),
    ]
    take(node, "mqtt", raws, float(NOW), MS)
    take(node, "mqtt2", burst(w, 2), float(NOW) + 4 * MS, MS)
    node.run(node.engine.timer(float(NOW) + 1), float(NOW) + 1)
    sent = receipts_sent(node)
    # mqtt: the first alone, the second waits; IMMEDIATE and the exercise each on their own.
    # mqtt2: its first alone (no burst on that link yet), its second waits.
    assert sorted((t.link, len(refs_of(t))) for t in sent) == [
        ("mqtt", 1), ("mqtt", 1), ("mqtt", 1), ("mqtt", 1), ("mqtt2", 1), ("mqtt2", 1),
    ]  # fmt: skip
    ex = next(t for t in sent if refs_of(t) == (message_id(raws[3]),))
    ex_env = open_envelope(ex.raw)
    assert isinstance(ex_env, Envelope) and ex_env.decision.exercise
    assert node.engine.counters["receipts_shared"] == 0  # every group held one decision


def test_decisions_from_the_mesh_keep_one_receipt_each() -> None:
    """Test that a gateway's decisions heard on the mesh in a burst each get their own receipt
    at once: the radio origin waits for its own, airtime-sized one."""
    w = standard_world()
    links = (LinkInfo("mqtt", "mqtt"), LinkInfo("mesh", "mesh"))
    gw = make_node(w, ME, {"VR07"}, links=links, receipt_hold_s=HOLD)
    take(gw, "mesh", burst(w, 3), float(NOW), MS)
    assert gw.engine.oldest_open_receipt() is None
    ours = [m for m in gw.store.messages.values() if m.kind == int(Kind.ACK) and m.origin]
    assert len(ours) == 3


def test_a_duplicate_after_restart_resends_the_shared_receipt() -> None:
    """Test that after a restart, a retried copy of any decision in a shared receipt brings the
    shared receipt back on the link it came by."""
    w = standard_world()
    node = make_node(w, ME, {"VR07"}, receipt_hold_s=HOLD)
    raws = burst(w, 4)
    take(node, "mqtt", raws, float(NOW), MS)  # 1 alone, then 3 together
    shared = receipts_sent(node)[-1]
    assert len(refs_of(shared)) == 3
    for t in node.sent:
        node.run(node.engine.transmitted(t.link, t.id, True, float(NOW)), float(NOW))
    again = make_node(w, ME, {"VR07"}, store=node.store, receipt_hold_s=HOLD)
    later = float(NOW + 30)
    again.run(again.engine.received("mqtt", raws[2], later, peer="hq"), later)
    assert [t.id for t in receipts_sent(again)] == [shared.id]
    assert again.engine.counters["duplicates"] == 1


@pytest.mark.parametrize("version", PAYLOAD_VERSIONS)
def test_the_largest_shared_receipt_fits_one_mesh_bundle_item(version: int) -> None:
    """Test that a receipt for MAX_REFS_PER_RECEIPT decisions, with the largest counters and
    times a node will use, still fits one mesh receipt-bundle item (a gateway can bridge it)."""
    w = standard_world()
    key = w.keys[ME]
    kid = key_id(key.public_key().public_bytes_raw())
    far = 2**32 - 1  # 2106: the times stay 4-byte CBOR integers
    d = w.decision("national", now=far - 7 * 24 * 3600, lifetime=7 * 24 * 3600, exercise=True)
    items = [(bytes([i]) * 32, d) for i in range(receipts.MAX_REFS_PER_RECEIPT)]
    made = receipts.sign(items, float(NOW), issued=far - 60, seq=2**32 - 1, node=ME, key=key,
                         kid=kid, version=version)  # fmt: skip
    assert len(made.msg.raw) <= MAX_BUNDLE_ITEM
    put = made.ops[0]
    assert isinstance(put, PutMessage) and put.expires_at >= d.expires_at
    with pytest.raises(ValueError, match=r"1\.\.3"):
        receipts.sign([*items, items[0]], float(NOW), issued=NOW, seq=1, node=ME, key=key,
                      kid=kid, version=version)  # fmt: skip


def test_our_receipt_on_mqtt_has_no_outbox_row_and_comes_back_with_a_retry() -> None:
    """Test that our receipt going back by MQTT writes no outbox row (made or sent), and that
    after a crash before its PUBACK the sender's retried copy brings it out again."""
    w = standard_world()
    node = make_node(w, ME, {"VR07"})
    raw = burst(w, 1)[0]
    out = node.engine.received("mqtt", raw, float(NOW), peer="hq")
    node.run(out, float(NOW))
    (receipt,) = receipts_sent(node)
    assert all(op.id != receipt.id for op in node.store.outbox.values())
    after = node.run(node.engine.transmitted("mqtt", receipt.id, True, float(NOW)), float(NOW))
    rows = [op for a in after if isinstance(a, Persist) for op in a.ops]
    assert rows and not any(isinstance(op, DeleteOutbox) for op in rows)  # the audit row only
    # A crash after the commit, before the PUBACK: the restarted node owes nothing...
    crashed = make_node(w, ME, {"VR07"}, store=node.store)
    crashed.run(crashed.engine.timer(float(NOW + 5)), float(NOW + 5))
    assert receipts_sent(crashed) == []
    # ...until the sender retries: the duplicate sends the receipt again, still without a row.
    crashed.run(crashed.engine.received("mqtt", raw, float(NOW + 30), peer="hq"), float(NOW + 30))
    assert [t.id for t in receipts_sent(crashed)] == [receipt.id]
    assert all(op.id != receipt.id for op in crashed.store.outbox.values())


def test_our_receipt_for_the_mesh_keeps_its_outbox_row() -> None:
    """Test that a receipt owed to the mesh is still written to the outbox (airtime is scarce,
    a radio origin retries slowly: a restart must not forget it)."""
    w = standard_world()
    gw = make_node(w, ME, {"VR07"}, links=(LinkInfo("mqtt", "mqtt"), LinkInfo("mesh", "mesh")))
    gw.run(gw.engine.received("mesh", burst(w, 1)[0], float(NOW)), float(NOW))
    ours = [m.id for m in gw.store.messages.values() if m.kind == int(Kind.ACK) and m.origin]
    assert len(ours) == 1 and any(key[0] == ours[0] for key in gw.store.outbox)
