"""A node whose clock is far off (a Pi without RTC or NTP), on virtual time: the evidence of other
clocks, the warning, the corrected time checks, and no purge on the word of a wrong clock."""

import pytest

from relay.engine.clock import ClockEvidence
from relay.engine.core import Engine, EngineConfig, LinkInfo
from relay.engine.ops import Rejected
from relay.envelope import Envelope, open_envelope
from relay.trust import Role
from tests.engine.harness import MemStore, Node, make_node
from tests.world import NOW, World, standard_world

DAY = 86400.0
PEERS = ("hq", "vr05-twente", "vr05-almelo")


def world() -> World:
    w = standard_world()
    w.add("hq", Role.NODE)
    w.add("vr05-almelo", Role.NODE, "region:VR05")
    return w


def restarted(w: World, name: str, regions: set[str], store: MemStore, now: float) -> Node:
    """A node rebuilt from its store, as the daemon starts it: its first input comes at ``now``
    by its own clock (the link reported down, then up)."""
    engine = Engine(EngineConfig(node=name, regions=frozenset(regions)), w.trust(), w.keys[name],
                    [LinkInfo("mqtt", "mqtt")], store.snapshot(name))  # fmt: skip
    n = Node(name, engine, store)
    for state in ("down", "up"):
        n.run(engine.link_state("mqtt", state, now), now)
    return n


def hear_peers(n: Node, now: float, *, times: tuple[float, ...] = (NOW, NOW, NOW)) -> None:
    """Status heartbeats of the three peer nodes, saying their clocks read ``times``."""
    for peer, t in zip(PEERS, times, strict=True):
        n.engine.observe_clock(peer, t, now)


def test_estimate_needs_three_agreeing_sources_and_ignores_a_single_liar() -> None:
    """Test that the offset needs three supporting sources, is not moved by one liar, gives
    nothing when the sources disagree, and that late messages never make our clock look fast."""
    ev = ClockEvidence()
    ev.observe_point("a", NOW + 100, NOW)
    ev.observe_point("b", NOW + 110, NOW)
    assert ev.offset(NOW) is None
    ev.observe_point("liar", NOW + 30 * DAY, NOW)
    assert ev.offset(NOW) is None  # two against one liar: not enough to say anything
    ev.observe_point("c", NOW + 125, NOW + 20)  # offset 105
    assert ev.offset(NOW + 20) == pytest.approx(105)  # the liar moves nothing
    assert ev.correction(NOW + 20) == 0.0  # within the warning threshold: no correction
    split = ClockEvidence()
    for name, off in (("a", 0), ("b", 10 * DAY), ("c", 20 * DAY)):
        split.observe_point(name, NOW + off, NOW)
    assert split.offset(NOW) is None  # no three agree
    healed = ClockEvidence()  # after a long partition: old messages of many signers arrive
    for name in ("i1", "i2", "i3", "i4"):
        healed.observe_bound(name, NOW - 2 * DAY, NOW)
    healed.observe_point("peer", NOW, NOW)
    assert healed.offset(NOW) is None
    slow = ClockEvidence()  # messages from the future: only a slow clock explains them
    for name in ("i1", "i2", "i3"):
        slow.observe_bound(name, NOW - 5 * DAY, NOW)  # an old one, arriving late
        slow.observe_bound(name, NOW + 30 * DAY - 2, NOW)  # ... and one just signed
    assert slow.offset(NOW) == pytest.approx(30 * DAY, abs=5)
    for i in range(1000):
        slow.observe_point(f"s{i}", NOW, NOW)
    assert len(slow.sources(NOW)) <= 64


@pytest.mark.parametrize("skew", [30 * DAY, -30 * DAY])
def test_fresh_decision_is_accepted_and_warned_when_the_evidence_shows_our_clock_is_off(
    skew: float,
) -> None:
    """Test that a node whose clock is 30 days off accepts a fresh decision (not expired, not
    not-yet-valid) once three peers' statuses agree on the offset, warns, and signs its receipt
    with the corrected time."""
    w = world()
    n = make_node(w, "vr07-utrecht", {"VR07"})
    local = NOW + skew
    for state in ("down", "up"):  # the link came up by our clock (held 2 s, then usable)
        n.run(n.engine.link_state("mqtt", state, local - 3), local - 3)
    hear_peers(n, local)
    actions = n.run(n.engine.received("mqtt", w.sign("national"), local, channel="msg"), local)
    assert not [a for a in actions if isinstance(a, Rejected)]
    assert len(n.delivered) == 1
    stats = n.engine.statistics()
    assert stats["clock_warning"] is True
    assert stats["clock_offset_s"] == pytest.approx(-skew, abs=1)
    receipt = next(t for t in n.sent if t.channel == "rcpt")
    env = open_envelope(receipt.raw)
    assert isinstance(env, Envelope) and abs(env.decision.issued_at - NOW) <= 1


def test_without_agreeing_evidence_the_local_clock_is_used() -> None:
    """Test that with one peer lying about the time nothing is corrected: a decision that is
    expired by our (right) clock stays rejected, and there is no warning."""
    w = world()
    n = make_node(w, "vr07-utrecht", {"VR07"})
    hear_peers(n, NOW, times=(NOW, NOW, NOW - 30 * DAY))
    old = w.sign("national", now=int(NOW - 30 * DAY), lifetime=3600)
    actions = n.run(n.engine.received("mqtt", old, NOW, channel="msg"), NOW)
    assert [str(a.reason) for a in actions if isinstance(a, Rejected)] == ["expired"]
    assert n.engine.statistics()["clock_warning"] is False


def test_restart_with_a_clock_30_days_fast_purges_nothing() -> None:
    """Test that a node restarted with its clock 30 days fast keeps every stored decision: no
    collection before other clocks confirm ours, and once they show it is fast, collection runs
    on the corrected time; a truly expired message goes once the evidence confirms it."""
    w = world()
    store = MemStore()
    n = make_node(w, "vr07-utrecht", {"VR07"}, store)
    n.run(n.engine.received("mqtt", w.sign("national", lifetime=6 * 3600), NOW, channel="msg"),
          NOW)  # fmt: skip
    short = w.sign("national", "kort", lifetime=600)
    n.run(n.engine.received("mqtt", short, NOW, channel="msg"), NOW)
    held = len(store.messages)
    assert held == 4  # two decisions and our receipts
    fast = NOW + 30 * DAY
    again = restarted(w, "vr07-utrecht", {"VR07"}, store, fast)
    again.run(again.engine.timer(fast), fast)  # the first collection, at start
    assert len(store.messages) == held
    hear_peers(again, fast)
    fresh = w.sign("national", "nieuw", now=NOW + 60)
    again.run(again.engine.received("mqtt", fresh, fast + 60, channel="msg"), fast + 60)
    assert again.engine.statistics()["clock_warning"] is True
    later = fast + 61 + again.engine.config.gc_interval_s
    again.run(again.engine.timer(later), later)
    assert len(store.messages) == held + 2  # nothing purged; the new one and its receipt added
    # 7 h later by the corrected clock: the 10-minute one is past expiry and skew, and goes.
    much_later = later + 7 * 3600
    hear_peers(again, much_later, times=(much_later - 30 * DAY,) * 3)
    again.run(again.engine.timer(much_later), much_later)
    assert len(store.messages) < held + 2
    assert not any(m.raw == short for m in store.messages.values())
