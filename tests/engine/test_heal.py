"""Partition healing (relay.engine.sync) on virtual time: summaries, answers, bounds."""

from __future__ import annotations

import random
import zlib
from collections import Counter
from collections.abc import Callable

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.engine import sync
from relay.engine.core import LinkInfo
from relay.engine.ops import Rejected, SendSummary, Transmit
from relay.envelope import Kind, Precedence, Reason, Rejection, message_id
from relay.mesh.frames import FrameType, frame_type
from relay.sim.mesh import Mesh
from relay.trust import ReplayWindow, Role
from tests.engine.harness import MemStore, Node, make_node
from tests.mesh_link.simnet import LINK, SimNetwork, SimNode
from tests.sim.hosts import line_mesh
from tests.world import NOW, World, standard_world

HOUR = 3600.0
MESH = (LinkInfo("mesh", "mesh"),)


def no_retry(
    w: World,
    name: str,
    regions: set[str],
    links: tuple[LinkInfo, ...] = (LinkInfo("mqtt", "mqtt"),),
    store: MemStore | None = None,
    seed: int = 1,
) -> Node:
    """A node whose origin retries are out of the picture: what converges, healing carried.
    Its random choices (jitter, whom to ask) are seeded: the tests are repeatable."""
    never = 1e7
    return make_node(w, name, regions, store, links, retry_base_s=never, retry_max_s=never,
                     flash_retry_base_s=never, seed=seed + zlib.crc32(name.encode()))  # fmt: skip


class Bus:
    """MQTT in virtual time. Each node is on the broker of its side; a partition keeps the sides
    apart and healing joins them. Everything a node sends (messages, receipts, summaries)
    reaches every other node on its side; publishes are acknowledged at once. Status heartbeats
    every 5 s make nodes heard, as the daemon's retained status does."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.side = {n.name: 0 for n in nodes}
        self.cursor = {n.name: [0, 0] for n in nodes}
        self.carried: Counter[str] = Counter()
        self.summary_bytes = 0
        self.now = float(NOW)
        self.next_heartbeat = self.now
        self.rounds: Counter[str] = Counter()  # summaries each node has sent
        # Lose a message on its way to a node: (destination, transmission, its summaries sent).
        self.lose: Callable[[str, Transmit, int], bool] = lambda dest, t, rounds: False

    def peers(self, name: str) -> list[Node]:
        return [n for k, n in self.nodes.items() if k != name and self.side[k] == self.side[name]]

    def settle(self) -> None:
        now, busy = self.now, True
        while busy:
            busy = False
            for name, n in self.nodes.items():
                cur = self.cursor[name]
                while cur[0] < len(n.sent) or cur[1] < len(n.other):
                    busy = True
                    if cur[0] < len(n.sent):
                        t = n.sent[cur[0]]
                        cur[0] += 1
                        self.carried[t.channel] += 1
                        for p in self.peers(name):
                            if self.lose(p.name, t, self.rounds[p.name]):
                                continue
                            p.run(p.engine.received(t.link, t.raw, now, channel=t.channel,
                                                    peer=name), now)  # fmt: skip
                        n.run(n.engine.transmitted(t.link, t.id, True, now), now)
                        continue
                    a = n.other[cur[1]]
                    cur[1] += 1
                    if isinstance(a, SendSummary):
                        self.rounds[name] += 1
                        self.carried["sync"] += 1
                        self.summary_bytes += len(a.raw)
                        for p in self.peers(name):
                            p.run(p.engine.received(a.link, a.raw, now, channel="sync",
                                                    peer=name), now)  # fmt: skip

    def run_for(self, seconds: float) -> None:
        until = self.now + seconds
        while True:
            if self.now >= self.next_heartbeat:
                self.next_heartbeat = self.now + 5.0
                for name in self.nodes:
                    for p in self.peers(name):
                        p.engine.peer_heard("mqtt", name, self.now)
            for n in self.nodes.values():
                if n.engine.next_deadline() <= self.now:
                    n.run(n.engine.timer(self.now), self.now)
            self.settle()
            if self.now >= until:
                return
            nxt = min([n.engine.next_deadline() for n in self.nodes.values()])
            self.now = min(max(nxt, self.now + 0.01), self.next_heartbeat, until)


def held(n: Node) -> set[bytes]:
    return set(n.store.messages)


def partitioned_world() -> tuple[World, Bus]:
    w = standard_world()
    w.add("vr05-issuer", Role.ISSUER, "region:VR05")
    w.add("hq", Role.NODE)
    w.add("vr05-almelo", Role.NODE, "region:VR05")
    nodes = [
        no_retry(w, "hq", set()),
        no_retry(w, "vr07-utrecht", {"VR07"}),
        no_retry(w, "vr05-twente", {"VR05"}),
        no_retry(w, "vr05-almelo", {"VR05"}),
    ]
    return w, Bus(nodes)


def away_while_hq_publishes(
    w: World, bus: Bus, count: int, every_s: float
) -> tuple[Node, list[bytes]]:
    """vr05-almelo stops; hq publishes ``count`` decisions, one every ``every_s``; almelo comes
    back, rebuilt from its store with its link going up. Returns it and the decisions' ids."""
    hq = bus.nodes["hq"]
    away = bus.nodes.pop("vr05-almelo")
    bus.side.pop("vr05-almelo")
    ids = []
    for k in range(count):
        raw = w.sign("national", f"tijdens {k}", now=int(bus.now), lifetime=8 * 3600)
        ids.append(message_id(raw))
        hq.run(hq.engine.submit(raw, bus.now, ticket=k), bus.now)
        bus.run_for(every_s)
    back = no_retry(w, "vr05-almelo", {"VR05"}, store=away.store)
    back.run(back.engine.link_state("mqtt", "down", bus.now), bus.now)
    back.run(back.engine.link_state("mqtt", "up", bus.now), bus.now)
    bus.nodes["vr05-almelo"], bus.side["vr05-almelo"] = back, 0
    bus.cursor["vr05-almelo"] = [0, 0]
    return back, ids


def test_two_sides_cut_off_for_hours_converge_exactly_once() -> None:
    """Test that two sides partitioned for three hours, each with its own decisions and
    receipts, hold the same messages after healing, with each decision delivered once."""
    w, bus = partitioned_world()
    bus.side.update({"vr05-twente": 1, "vr05-almelo": 1})
    bus.run_for(10)
    national: list[bytes] = []
    regional: list[bytes] = []
    for k in range(9):  # one decision per side every 20 minutes, for three hours
        issued = int(bus.now)
        raw = w.sign("national", f"Besluit {k}", now=issued, lifetime=8 * 3600)
        national.append(message_id(raw))
        bus.nodes["hq"].run(bus.nodes["hq"].engine.submit(raw, bus.now, ticket=k), bus.now)
        raw = w.sign("vr05-issuer", f"Regio {k}", to="region:VR05", now=issued, lifetime=8 * 3600)
        regional.append(message_id(raw))
        twente = bus.nodes["vr05-twente"]
        twente.run(twente.engine.submit(raw, bus.now, ticket=k), bus.now)
        bus.run_for(1200)
    a_side = held(bus.nodes["hq"])
    b_side = held(bus.nodes["vr05-twente"])
    assert held(bus.nodes["vr07-utrecht"]) == a_side and held(bus.nodes["vr05-almelo"]) == b_side
    missing = len(a_side - b_side) + len(b_side - a_side)
    before = Counter(bus.carried)

    bus.side = dict.fromkeys(bus.side, 0)  # the bridge between the brokers is back
    bus.run_for(120)

    everything = set().union(*(held(n) for n in bus.nodes.values()))
    for n in bus.nodes.values():
        assert held(n) == everything, n.name
        counts = Counter(d.id for d in n.delivered)
        assert max(counts.values()) == 1, n.name  # exactly once
        wanted = set(national) | (set(regional) if n.name.startswith("vr05") else set())
        assert set(counts) == wanted, n.name
    hq = bus.nodes["hq"].engine
    for msg_id in national:  # the origin learnt every receipt, also from the other side
        who = hq.recipients_of(msg_id)
        assert who is not None and who[0] <= who[1]
    # Summaries, not re-sending everything: what was carried after healing is what was missing
    # (plus receipts newly signed for the decisions it brought), and a few small summaries.
    after = bus.carried - before
    new_receipts = 2 * len(national)  # the vr05 nodes sign the national decisions
    assert after["msg"] + after["rcpt"] <= 2 * (missing + new_receipts)
    assert after["sync"] <= 24 and bus.summary_bytes < 24 * 400
    assert all(n.engine.rejections == Counter() for n in bus.nodes.values())


def test_node_back_from_a_stop_gets_what_it_missed() -> None:
    """Test that a node rebuilt from its store after hours away receives, through healing,
    every decision published meanwhile, and none it already had a second time."""
    w, bus = partitioned_world()
    bus.run_for(10)
    hq = bus.nodes["hq"]
    first = w.sign("national", "voor", now=int(bus.now), lifetime=8 * 3600)
    hq.run(hq.engine.submit(first, bus.now, ticket=1), bus.now)
    bus.run_for(10)
    back, ids = away_while_hq_publishes(w, bus, 30, every_s=300)
    bus.run_for(60)
    got = Counter(d.id for d in back.delivered)
    assert set(got) == set(ids) and max(got.values()) == 1
    assert message_id(first) in back.store.inbox  # delivered before the stop, not again
    assert held(back) == held(hq)


def test_summary_never_deletes_or_skips() -> None:
    """Test that a summary claiming everything was seen stops no retry of the origin."""
    w = standard_world()
    hq = make_node(w, "hq", set())
    raw = w.sign("national", to="region:VR07")
    hq.run(hq.engine.submit(raw, NOW, ticket=1), NOW)
    t = next(x for x in hq.sent if x.channel == "msg")
    hq.run(hq.engine.transmitted("mqtt", t.id, True, NOW), NOW)
    kids = list(hq.engine.replay.windows)
    liar = sync.SignerSeqs(kids[0], 1 << 40, (1024,))
    claim, _ = sync.encode("vr07-utrecht", "hq", [liar], max_bytes=4096)
    hq.run(hq.engine.received("mqtt", claim, NOW + 1, channel="sync", peer="vr07-utrecht"), NOW + 1)
    hq.engine.peer_heard("mqtt", "vr07-utrecht", NOW + 30)  # its heartbeat: not cut off
    hq.run(hq.engine.timer(NOW + 31), NOW + 31)
    assert [x.id for x in hq.sent if x.channel == "msg"].count(t.id) == 2  # retried anyway
    assert message_id(raw) in hq.store.messages


def _summary(to: str, sender: str = "vr07-utrecht", **fields: object) -> bytes:
    wire = [1, sender, to, True, []]
    for i, key in enumerate(("version", "sender", "to", "cover", "signers")):
        if key in fields:
            wire[i] = fields[key]
    return cbor2.dumps(wire)


@pytest.mark.parametrize(
    ("raw", "reason", "detail"),
    [
        (b"\xff\x00garbage", Reason.MALFORMED, "not CBOR"),
        (cbor2.dumps({"a": 1}), Reason.MALFORMED, "5-item array"),
        (_summary("hq", version=2), Reason.MALFORMED, "version"),
        (_summary("hq", sender="bad name!"), Reason.MALFORMED, "sender"),
        (_summary("hq", cover=False), Reason.MALFORMED, "coverage"),
        (_summary("hq", signers=[[b"abc", 1, [1]]]), Reason.MALFORMED, "key id"),
        (
            _summary("hq", signers=[[b"abcd", 1, [1]], [b"abcd", 2, [1]]]),
            Reason.MALFORMED,
            "twice",
        ),
        (_summary("hq", signers=[[b"abcd", -1, [1]]]), Reason.MALFORMED, "out of range"),
        (_summary("hq", signers=[[b"abcd", 5, [0]]]), Reason.MALFORMED, "runs"),
        (_summary("hq", signers=[[b"abcd", 5, [4, 3]]]), Reason.MALFORMED, "below sequence 0"),
        (_summary("hq", signers=[[b"abcd", 5000, [1] * 65]]), Reason.MALFORMED, "runs"),
        (b"\x85" + b"\x00" * 5000, Reason.OVERSIZED, "exceeds"),
    ],
)
def test_bad_summaries_are_rejected_with_a_reason(raw: bytes, reason: Reason, detail: str) -> None:
    """Test that a malformed or oversized summary is rejected, counted and logged, not answered."""
    w = standard_world()
    hq = make_node(w, "hq", set())
    out = hq.run(hq.engine.received("mqtt", raw, NOW, channel="sync", peer="x"), NOW)
    rejected = [a for a in out if isinstance(a, Rejected)]
    assert len(rejected) == 1 and rejected[0].reason == reason
    assert detail in rejected[0].detail
    assert hq.engine.rejections[str(reason)] == 1
    assert hq.sent == []


def test_mesh_answers_are_capped_rate_limited_and_in_scope() -> None:
    """Test that a mesh summary is answered with at most the per-round cap, only with what the
    asking node needs, and that a second summary within the gap is not answered."""
    w = standard_world()
    hq = no_retry(w, "hq", set(), links=MESH)
    vr05 = [w.sign("national", f"vr05 {k}", to="region:VR05") for k in range(12)]
    vr07 = [w.sign("national", f"vr07 {k}", to="region:VR07") for k in range(5)]
    for k, raw in enumerate(vr05 + vr07):
        hq.run(hq.engine.submit(raw, NOW, ticket=k), NOW)
    for t in hq.sent:
        hq.run(hq.engine.transmitted("mesh", t.id, True, NOW), NOW)
    hq.sent.clear()
    T = NOW + 1000  # the decisions are not fresh any more: they are answered
    ask, _ = sync.encode("vr07-utrecht", "", [], max_bytes=229)
    hq.run(hq.engine.received("mesh", ask, T + 10, channel="sync"), T + 10)
    hq.run(hq.engine.timer(T + 60), T + 60)  # after the random start and the spacing
    pushed = {t.id for t in hq.sent if t.channel == "msg"}
    assert pushed == {message_id(r) for r in vr07}  # VR05's decisions are not for it
    hq.sent.clear()
    ask, _ = sync.encode("vr05-twente", "hq", [], max_bytes=229)
    hq.run(hq.engine.received("mesh", ask, T + 20, channel="sync"), T + 20)
    hq.run(hq.engine.timer(T + 60), T + 60)
    assert hq.sent == []  # answered someone on this radio 10 s ago: the link gap holds
    hq.run(hq.engine.received("mesh", ask, T + 100, channel="sync"), T + 100)
    hq.run(hq.engine.timer(T + 200), T + 200)
    assert len({t.id for t in hq.sent if t.channel == "msg"}) == 8  # mesh_max_per_round
    assert hq.engine.counters["sync_rate_limited"] == 1
    assert hq.engine.counters["sync_capped"] == 1


def test_mesh_summary_fits_a_frame_and_rotates_over_every_signer() -> None:
    """Test that with more signers than one SUMMARY frame holds, successive mesh summaries stay
    within 229 B and together speak for every key id, seen or never seen."""
    w = standard_world()
    for k in range(40):
        w.add(f"issuer-{k}", Role.ISSUER, "all")
    hq = make_node(w, "hq", set(), links=MESH)
    for k in range(40):
        raw = w.sign(f"issuer-{k}", seq=1 + k * 7)
        hq.run(hq.engine.received("mesh", raw, NOW, channel="msg"), NOW)
    listed: set[bytes] = set()
    never_seen = [bytes([b, 0, 0, 0]) for b in range(0, 256, 5)]
    covered: set[bytes] = set()
    now = NOW + 100.0
    for _ in range(6):
        hq.engine.sync.link_up("mesh", now)
        now += 40
        out = hq.run(hq.engine.timer(now), now)
        summaries = [a for a in out if isinstance(a, SendSummary)]
        assert len(summaries) == 1 and len(summaries[0].raw) <= 229
        s = sync.decode(summaries[0].raw, max_bytes=229)
        assert isinstance(s, sync.Summary)
        listed |= {x.kid for x in s.signers}
        covered |= {k for k in never_seen if s.covers(k)}
    assert listed >= set(hq.engine.replay.windows)
    assert covered == set(never_seen)


def test_summary_runs_describe_the_replay_window() -> None:
    """Test that a window's runs, encoded and decoded, say held/missing exactly as the window."""
    rng = random.Random(5)
    for _ in range(200):
        w = ReplayWindow()
        for q in rng.sample(range(0, 3000), rng.randint(1, 300)):
            w.commit(q)
        s = sync.describe(b"abcd", w)
        assert s is not None
        raw, n = sync.encode("hq", "", [s], max_bytes=4096)
        got = sync.decode(raw, max_bytes=4096)
        assert isinstance(got, sync.Summary) and n == 1
        (d,) = got.signers
        for q in range(max(0, d.low - 5), w.high + 3):
            claim = d.holds(q)
            if q < d.low:
                assert claim is None
            else:
                assert claim == w.seen(q), q


def test_roster_goes_before_what_it_admits() -> None:
    """Test that answers send trust messages first, then decisions, receipts last."""
    held = [
        sync.Held(b"r", b"kid1", 1, Kind.ACK, 0, 0.0),
        sync.Held(b"d", b"kid2", 1, Kind.DECISION, 3, 0.0),
        sync.Held(b"f", b"kid2", 2, Kind.DECISION, int(Precedence.FLASH), 0.0),
        sync.Held(b"o", b"root", 9, Kind.ROSTER, 0, 0.0),
    ]
    empty = sync.Summary("x", "", None, ())
    assert [h.id for h in sync.missing_at(empty, held)] == [b"o", b"f", b"d", b"r"]


class HealNet(SimNetwork):
    """SimNetwork (engines + MeshCores + the emulator's channel model, virtual time) whose
    engines do not retry and whose summaries go on the air as SUMMARY frames."""

    def __init__(self, world: World, mesh: Mesh, seed: int = 1) -> None:
        super().__init__(world, mesh)
        for name, n in self.nodes.items():
            n.node = no_retry(world, name, {"VR07"}, links=(LinkInfo(LINK, "mesh"),), seed=seed)
        self.summaries_handled = dict.fromkeys(self.nodes, 0)

    def _step(self, n: SimNode, now: float) -> bool:
        done = self.summaries_handled[n.node.name]
        new = [a for a in n.node.other if isinstance(a, SendSummary)][done:]
        for a in new:  # as the daemon does: a Transmit on the "sync" channel, without an id
            n.node.sent.append(Transmit(a.link, "sync", b"", a.raw, 3))
        self.summaries_handled[n.node.name] = done + len(new)
        return super()._step(n, now)


def frames_of(net: HealNet, name: str, kind: FrameType, since: float = 0.0) -> list[float]:
    """Airtime of the frames of one type (a bare signed message is a SINGLE) a radio sent."""
    return [
        f.airtime_s
        for f in net.nodes[name].radio.sent[int(since) :]
        if frame_type(f.payload) == kind
    ]


def test_mesh_node_out_of_range_heals_within_the_airtime_budget() -> None:
    """Test that a radio that was out of range while 20 decisions went out gets all of them
    through SUMMARY frames and capped answers, each delivered once, within the duty cycle."""
    w = World()
    w.add("national", Role.ISSUER, "all")
    mesh = line_mesh(3, seed=4)  # n1 - n2 - n3; n1 is cut off
    net = HealNet(w, mesh)
    net.run_until(5.0)
    mesh.cut_link("n1", "n2")
    ids = []
    for k in range(20):
        raw = w.sign("national", f"Besluit {k}: opvang in sporthal {k}.", now=NOW,
                     lifetime=24 * 3600, precedence=Precedence.ROUTINE)  # fmt: skip
        ids.append(message_id(raw))
        net.submit("n2", raw)
    net.run_until(1800.0)
    assert all(net.deliveries("n3", i) == 1 for i in ids)
    assert not any(net.deliveries("n1", i) for i in ids)
    sent_before = {name: len(n.radio.sent) for name, n in net.nodes.items()}
    tx_before = {name: len(n.node.sent) for name, n in net.nodes.items()}
    mesh.set_link("n1", "n2", 0.0)
    n1 = net.nodes["n1"].node  # its radio comes back: the link goes down and up
    n1.run(n1.engine.link_state(LINK, "down", NOW + net.now), NOW + net.now)
    n1.run(n1.engine.link_state(LINK, "up", NOW + net.now), NOW + net.now)
    net.run_until(net.now + 3 * 3600.0, stop=lambda: all(net.deliveries("n1", i) for i in ids))

    assert all(net.deliveries("n1", i) == 1 for i in ids)
    assert all(net.deliveries(name, i) == 1 for name in ("n2", "n3") for i in ids)
    summaries = sum(len(frames_of(net, nm, FrameType.SUMMARY, sent_before[nm])) for nm in net.nodes)
    assert 3 <= summaries <= 16  # 20 missing, at most 8 per round
    # What was answered: the 20 (plus the odd copy of a second answering node; a radio's
    # failed tries are repeated by the link, not counted here), not everything the others hold.
    answers = {
        (nm, t.id) for nm, n in net.nodes.items() for t in n.node.sent[tx_before[nm] :]
        if t.channel == "msg"
    }  # fmt: skip
    assert 20 <= len(answers) <= 2 * 20
    for name, used in net.max_airtime_last_hour.items():
        assert used <= net.mesh.radios[name].settings.duty_cycle * HOUR, name
    assert net.rejections() == []


def test_young_messages_are_asked_for_again_not_answered_at_once() -> None:
    """Test that messages still in ordinary flight are not answered, but that the asker gets our
    summary once they are older, so that it pulls them if it still lacks them."""
    w = standard_world()
    hq = no_retry(w, "hq", set())
    raw = w.sign("national")
    hq.run(hq.engine.submit(raw, NOW, ticket=1), NOW)
    for t in hq.sent:
        hq.run(hq.engine.transmitted("mqtt", t.id, True, NOW), NOW)
    hq.sent.clear()
    ask, _ = sync.encode("vr07-utrecht", "hq", [], max_bytes=4096)
    hq.run(hq.engine.received("mqtt", ask, NOW + 1, channel="sync"), NOW + 1)
    hq.run(hq.engine.timer(NOW + 2), NOW + 2)
    assert hq.sent == []  # not answered yet
    before = len([a for a in hq.other if isinstance(a, SendSummary)])  # its link-up summary
    hq.run(hq.engine.timer(NOW + 6.5), NOW + 6.5)
    ours = [a for a in hq.other if isinstance(a, SendSummary)][before:]
    assert len(ours) == 1
    s = sync.decode(ours[0].raw, max_bytes=4096)
    assert isinstance(s, sync.Summary) and s.to == "vr07-utrecht"
    hq.run(hq.engine.received("mqtt", ask, NOW + 8, channel="sync"), NOW + 8)  # it pulls
    hq.run(hq.engine.timer(NOW + 8), NOW + 8)
    assert [t.id for t in hq.sent if t.channel == "msg"] == [message_id(raw)]


def test_summary_decoder_whole_cut_and_with_trailing_bytes() -> None:
    """Test that a summary decodes whole, and that every truncation and any trailing byte is a
    specific rejection, never an exception."""
    s = sync.SignerSeqs(b"abcd", 700, (300, 20, 100, 5, 1))
    raw, n = sync.encode("vr07-utrecht", "hq", [s, sync.SignerSeqs(b"bcde", 3, (3,))],
                         max_bytes=4096)  # fmt: skip
    assert n == 2
    whole = sync.decode(raw, max_bytes=4096)
    assert isinstance(whole, sync.Summary) and whole.signers[0] == s and whole.stop is None
    for cut in range(len(raw)):
        assert isinstance(sync.decode(raw[:cut], max_bytes=4096), Rejection), cut
    for extra in (b"\x00", b"\xff", raw):
        bad = sync.decode(raw + extra, max_bytes=4096)
        assert isinstance(bad, Rejection) and "after the summary" in bad.detail


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_summary_decoder_never_raises(data: bytes) -> None:
    """Test that arbitrary bytes decode to a summary or a rejection, never an exception."""
    assert isinstance(sync.decode(data, max_bytes=4096), sync.Summary | Rejection)


def test_round_whose_answers_were_lost_is_followed_up() -> None:
    """Test that a node whose healing answers were lost in transit (an overflowing inbound
    queue) asks again, rather than waiting for the periodic summary minutes later."""
    w, bus = partitioned_world()
    bus.run_for(10)
    back, ids = away_while_hq_publishes(w, bus, 20, every_s=30)
    # Its first round brings half the answers; every answer to its second round is lost.
    bus.rounds["vr05-almelo"] = 0
    bus.lose = lambda dest, t, rounds: (
        dest == "vr05-almelo"
        and t.channel == "msg"
        and rounds <= 2
        and (rounds == 2 or t.id[0] % 2 == 0)
    )
    bus.run_for(30)  # far below the periodic summary (300 s × 0.5..1.5)
    got = Counter(d.id for d in back.delivered)
    assert set(got) == set(ids) and max(got.values()) == 1
    assert bus.rounds["vr05-almelo"] >= 3
