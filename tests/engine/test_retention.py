"""The held messages' eviction index (relay.engine.retention.HeldMessages)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.engine.model import HeldMessage
from relay.engine.retention import HeldMessages, eviction_key
from relay.envelope import Kind, Precedence, Rejection, open_envelope
from tests.engine.harness import make_node
from tests.world import NOW, standard_world

W = standard_world()
KINDS = (Kind.DECISION, Kind.ACK)


def _held(precedence: Precedence, kind: Kind, at: float) -> HeldMessage:
    refs = (b"r" * 32,) if kind == Kind.ACK else ()
    decision = W.decision("national", precedence=precedence, kind=kind, refs=refs)
    return HeldMessage(b"", decision, at, origin=False)


def _expected(msgs: HeldMessages) -> list[tuple[bool, int, float, bytes]]:
    """The eviction order by a full sort of the contents (what make_room once did each time)."""
    return sorted(eviction_key(i, m) for i, m in msgs.items() if m.precedence != Precedence.FLASH)


OPS = st.lists(
    st.tuples(
        st.sampled_from(["set", "pop", "del", "popitem", "setdefault", "update", "clear"]),
        st.integers(0, 7),  # which id
        st.sampled_from(list(Precedence)),
        st.sampled_from(KINDS),
        st.floats(0, 100, allow_nan=False),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_the_index_follows_every_way_a_dict_changes(
    ops: list[tuple[str, int, Precedence, Kind, float]],
) -> None:
    """Test that HeldMessages' eviction index equals a full sort after any sequence of changes."""
    msgs = HeldMessages()
    plain: dict[bytes, HeldMessage] = {}
    for op, n, precedence, kind, at in ops:
        msg_id, m = bytes([n]) * 32, _held(precedence, kind, at)
        match op:
            case "set":
                msgs[msg_id] = plain[msg_id] = m
            case "pop":
                assert msgs.pop(msg_id, None) is plain.pop(msg_id, None)
            case "del" if msg_id in plain:
                del msgs[msg_id], plain[msg_id]
            case "popitem" if plain:
                assert msgs.popitem() == plain.popitem()
            case "setdefault":
                assert msgs.setdefault(msg_id, m) is plain.setdefault(msg_id, m)
            case "update":
                msgs.update({msg_id: m})
                plain.update({msg_id: m})
            case "clear":
                msgs.clear()
                plain.clear()
        assert dict(msgs) == plain
        assert list(msgs.evictable) == _expected(msgs)


def test_a_full_store_evicts_the_least_urgent_oldest_first() -> None:
    """Test that a full store of ROUTINE and PRIORITY decisions evicts the 30 oldest ROUTINE."""
    w = standard_world()
    node = make_node(w, "vr05-twente", {"VR05"}, max_messages=50)  # carries VR07 traffic
    at = float(NOW)
    routine: list[bytes] = []
    for i in range(80):
        precedence = Precedence.ROUTINE if i % 2 else Precedence.PRIORITY
        raw = w.sign("vr07-issuer", f"besluit {i}", to="region:VR07", precedence=precedence)
        env = open_envelope(raw)
        assert not isinstance(env, Rejection)
        if precedence == Precedence.ROUTINE:
            routine.append(env.id)
        at += 1
        node.run(node.engine.received("mqtt", raw, at, channel="msg"), at)
    held = node.engine._msgs  # the index under test
    assert isinstance(held, HeldMessages)
    assert len(held) == 50 and node.engine.counters["evicted"] == 30
    assert not set(routine[:30]) & set(held) and set(routine[30:]) <= set(held)
    assert list(held.evictable) == _expected(held)
