"""Post-quantum attestations in the engine (relay.engine.pq), on virtual time.

A PQ-enabled issuer ("national") signs a decision with Ed25519 and an ML-DSA-44 attestation of
its message id. The decision travels on every path; the attestation only over MQTT, beside the
decision or by a ``pq-want`` from a node that got the decision by mesh.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey

from relay import pq
from relay.engine.core import Engine, EngineConfig, LinkInfo, Snapshot
from relay.engine.ops import AuditEvent, Persist, PutAttestation, Rejected, Submitted, Transmit
from relay.engine.pq import PqConfig
from relay.envelope import Envelope, Reason, open_envelope, seal
from relay.keys import raw_public
from relay.trust import Device, Role
from tests.engine.harness import MemStore, Node
from tests.world import NOW, World, standard_world

BOTH = (LinkInfo("mqtt", "mqtt"), LinkInfo("mesh", "mesh"))
MQTT = (LinkInfo("mqtt", "mqtt"),)
PQ_KEY = MLDSA44PrivateKey.generate()


@dataclass
class PqStore(MemStore):
    """MemStore that keeps attestations too (the real store's table, docs/store.md)."""

    attestations: dict[bytes, bytes] = field(default_factory=dict)

    def apply(self, p: Persist) -> None:
        super().apply(p)
        for op in p.ops:
            if isinstance(op, PutAttestation):
                assert op.msg_id in self.messages  # the row it references is stored first
                self.attestations.setdefault(op.msg_id, op.raw)

    def snapshot(self, node: str) -> Snapshot:
        snap = super().snapshot(node)
        snap.attestations = dict(self.attestations)
        return snap


def pq_world() -> World:
    w = standard_world()
    entry = w.roster.by_name("national")
    assert entry is not None
    hashed = pq.key_hash(PQ_KEY.public_key().public_bytes_raw())
    entries = tuple(replace(e, pq_key=hashed) if e is entry else e for e in w.roster.entries)
    w.roster = replace(w.roster, entries=entries, serial=w.roster.serial + 1)
    for name in ("origin", "gw", "mqtt-node"):
        w.add(name, Role.NODE, "region:VR07")
    return w


def node(
    w: World,
    name: str,
    policy: pq.Policy,
    links: tuple[LinkInfo, ...] = MQTT,
    store: PqStore | None = None,
    now: float = NOW,
) -> Node:
    store = store or PqStore()
    engine = Engine(
        EngineConfig(node=name, regions=frozenset({"VR07"}), seed=1, pq=PqConfig(policy=policy)),
        w.trust(),
        w.keys[name],
        list(links),
        store.snapshot(name),
    )
    n = Node(name, engine, store)
    for link in links:
        n.run(engine.link_state(link.name, "up", now), now)
    return n


def decision(w: World) -> tuple[Envelope, bytes]:
    env = open_envelope(w.sign("national", to="region:VR07"))
    assert isinstance(env, Envelope)
    return env, pq.attest(env.id, env.kid, PQ_KEY)


def stored(n: Node) -> dict[bytes, bytes]:
    assert isinstance(n.store, PqStore)
    return n.store.attestations


def state(n: Node, env: Envelope) -> pq.State:
    return n.engine.pq.state(n.engine, env.id, env.kid, env.decision.kind)


def attestations_sent(n: Node, link: str = "mqtt") -> list[Transmit]:
    return [t for t in n.sent if t.link == link and pq.is_attestation(t.raw)]


def rejections(n: Node) -> list[Rejected]:
    return [a for a in n.other if isinstance(a, Rejected)]


def test_round_trip_over_mqtt() -> None:
    """Test that a submitted decision and its attestation go out on MQTT, and a node with
    pq = require shows the decision as verified once both arrived."""
    w = pq_world()
    origin = node(w, "origin", pq.Policy.PREFER)
    peer = node(w, "mqtt-node", pq.Policy.REQUIRE)
    env, att = decision(w)
    origin.run(origin.engine.submit(env.raw, NOW, ticket=1), NOW)
    out = origin.run(origin.engine.submit(att, NOW, ticket=2), NOW)
    assert any(isinstance(a, Submitted) and a.reason is None and a.ticket == 2 for a in out)
    assert [t.raw for t in attestations_sent(origin)] == [att]
    assert stored(origin) == {env.id: att}
    assert state(origin, env) == pq.State.VERIFIED
    for t in origin.sent:
        peer.run(peer.engine.received("mqtt", t.raw, NOW + 1, peer="origin"), NOW + 1)
    assert state(peer, env) == pq.State.VERIFIED
    assert stored(peer) == {env.id: att}
    assert peer.engine.counters["pq_verified"] == 1 and not rejections(peer)


def test_mesh_first_then_attestation_by_mqtt() -> None:
    """Test that a require node that got the decision by mesh shows it pending, asks on MQTT
    with a pq-want, and is verified when the answer (from a node holding it) arrives."""
    w = pq_world()
    holder = node(w, "origin", pq.Policy.PREFER)
    gw = node(w, "gw", pq.Policy.REQUIRE, links=BOTH)
    env, att = decision(w)
    holder.run(holder.engine.submit(env.raw, NOW, ticket=1), NOW)
    holder.run(holder.engine.submit(att, NOW, ticket=2), NOW)
    gw.run(gw.engine.received("mesh", env.raw, NOW), NOW)
    assert state(gw, env) == pq.State.PENDING
    assert not gw.engine.pq.verified(pq.State.PENDING)
    assert gw.engine.next_deadline() <= NOW + PqConfig().want_first_s
    later = NOW + PqConfig().want_first_s
    gw.run(gw.engine.timer(later), later)
    wants = [t for t in gw.sent if pq.is_want(t.raw)]
    assert len(wants) == 1 and wants[0].link == "mqtt"
    answer = holder.run(holder.engine.received("mqtt", wants[0].raw, later, peer="gw"), later)
    answers = [a for a in answer if isinstance(a, Transmit) and pq.is_attestation(a.raw)]
    assert [a.raw for a in answers] == [att]
    gw.run(gw.engine.received("mqtt", answers[0].raw, later + 1, peer="origin"), later + 1)
    assert state(gw, env) == pq.State.VERIFIED
    assert stored(gw) == {env.id: att}
    assert not gw.engine.pq.pending


def test_wants_back_off_while_nobody_answers() -> None:
    """Test that an unanswered want is repeated with doubling intervals, not every tick."""
    w = pq_world()
    gw = node(w, "gw", pq.Policy.REQUIRE, links=BOTH)
    env, _ = decision(w)
    gw.run(gw.engine.received("mesh", env.raw, NOW), NOW)
    times = []
    t: float = NOW
    while t < NOW + 200:
        t = max(t + 0.5, gw.engine.next_deadline())
        before = len(gw.sent)
        gw.run(gw.engine.timer(t), t)
        if any(pq.is_want(x.raw) for x in gw.sent[before:]):
            times.append(t - NOW)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) >= 4
    assert all(b >= 2 * a - 1 for a, b in itertools.pairwise(gaps)), gaps


def test_tampered_attestation_is_rejected_with_its_reason() -> None:
    """Test that a tampered attestation over MQTT is rejected (pq-bad-signature), counted and
    audited, and the decision stays pending."""
    w = pq_world()
    gw = node(w, "gw", pq.Policy.REQUIRE, links=BOTH)
    env, att = decision(w)
    gw.run(gw.engine.received("mesh", env.raw, NOW), NOW)
    bad = bytearray(att)
    bad[-1] ^= 0x80
    out = gw.run(gw.engine.received("mqtt", bytes(bad), NOW + 1), NOW + 1)
    assert [r.reason for r in rejections(gw)] == [Reason.PQ_BAD_SIGNATURE]
    assert gw.engine.rejections["pq-bad-signature"] == 1
    audits = [op for a in out if isinstance(a, Persist) for op in a.ops]
    assert any(isinstance(op, AuditEvent) and op.event == "rejected" for op in audits)
    assert state(gw, env) == pq.State.PENDING and not stored(gw)


def test_attestation_for_the_wrong_id_does_not_verify() -> None:
    """Test that another decision's attestation leaves this one pending, and one naming this
    decision under another signer's key id is rejected as pq-wrong-message."""
    w = pq_world()
    gw = node(w, "gw", pq.Policy.REQUIRE, links=BOTH)
    env_x, _ = decision(w)
    _, att_y = decision(w)
    gw.run(gw.engine.received("mesh", env_x.raw, NOW), NOW)
    gw.run(gw.engine.received("mqtt", att_y, NOW + 1), NOW + 1)
    assert state(gw, env_x) == pq.State.PENDING and not stored(gw)
    other = open_envelope(w.sign("vr07-issuer", to="region:VR07"))
    assert isinstance(other, Envelope)
    forged = pq.attest(env_x.id, other.kid, PQ_KEY)
    gw.run(gw.engine.received("mqtt", forged, NOW + 2), NOW + 2)
    assert [r.reason for r in rejections(gw)] == [Reason.PQ_WRONG_MESSAGE]
    assert state(gw, env_x) == pq.State.PENDING


def test_attestation_before_its_decision_is_adopted() -> None:
    """Test that an attestation arriving before its decision is kept and adopted with it."""
    w = pq_world()
    peer = node(w, "mqtt-node", pq.Policy.REQUIRE)
    env, att = decision(w)
    peer.run(peer.engine.received("mqtt", att, NOW), NOW)
    assert not stored(peer)
    peer.run(peer.engine.received("mqtt", env.raw, NOW + 1), NOW + 1)
    assert state(peer, env) == pq.State.VERIFIED
    assert stored(peer) == {env.id: att}


def test_attestations_never_go_onto_the_mesh() -> None:
    """Test that an attestation heard on a mesh link is refused as wrong-topic, and that a
    gateway forwarding the decision into the mesh sends no attestation there."""
    w = pq_world()
    gw = node(w, "gw", pq.Policy.REQUIRE, links=BOTH)
    env, att = decision(w)
    gw.run(gw.engine.received("mesh", att, NOW), NOW)
    assert [r.reason for r in rejections(gw)] == [Reason.WRONG_TOPIC]
    gw.run(gw.engine.received("mqtt", env.raw, NOW), NOW)
    gw.run(gw.engine.received("mqtt", att, NOW), NOW)
    gw.run(gw.engine.timer(NOW + 60), NOW + 60)
    assert not attestations_sent(gw, "mesh")


def test_attestation_follows_the_decision_when_mqtt_returns() -> None:
    """Test that an origin whose MQTT was down sends the attestation right behind the decision
    once MQTT is usable again."""
    w = pq_world()
    origin = node(w, "origin", pq.Policy.PREFER)
    origin.run(origin.engine.link_state("mqtt", "down", NOW), NOW)
    env, att = decision(w)
    origin.run(origin.engine.submit(env.raw, NOW, ticket=1), NOW)
    origin.run(origin.engine.submit(att, NOW, ticket=2), NOW)
    assert not origin.sent
    later = NOW + 30
    origin.run(origin.engine.link_state("mqtt", "up", later), later)
    origin.run(origin.engine.timer(later + 5), later + 5)
    raws = [t.raw for t in origin.sent]
    assert env.raw in raws
    assert raws[raws.index(env.raw) + 1] == att


def test_restart_keeps_verified_and_pending() -> None:
    """Test that after a restart the stored attestation still verifies its decision, and a
    pending one is asked for again once MQTT is usable."""
    w = pq_world()
    store = PqStore()
    gw = node(w, "gw", pq.Policy.REQUIRE, links=BOTH, store=store)
    env_a, att_a = decision(w)
    env_b, _ = decision(w)
    gw.run(gw.engine.received("mesh", env_a.raw, NOW), NOW)
    gw.run(gw.engine.received("mesh", env_b.raw, NOW), NOW)
    gw.run(gw.engine.received("mqtt", att_a, NOW + 1), NOW + 1)
    again = node(w, "gw", pq.Policy.REQUIRE, links=BOTH, store=store, now=NOW + 10)
    assert state(again, env_a) == pq.State.VERIFIED
    assert state(again, env_b) == pq.State.PENDING
    again.run(again.engine.timer(NOW + 12), NOW + 12)
    wants = [pq.decode_want(t.raw) for t in again.sent if pq.is_want(t.raw)]
    assert len(wants) == 1 and isinstance(wants[0], pq.Want) and wants[0].ids == (env_b.id,)


def test_policy_off_and_prefer() -> None:
    """Test that with pq = off attestations are ignored and nothing is pending, and that with
    prefer a pending decision still counts as verified."""
    w = pq_world()
    off = node(w, "mqtt-node", pq.Policy.OFF)
    env, att = decision(w)
    off.run(off.engine.received("mqtt", env.raw, NOW), NOW)
    off.run(off.engine.received("mqtt", att, NOW), NOW)
    assert state(off, env) == pq.State.NONE and not stored(off)
    assert off.engine.counters["pq_ignored"] == 1
    prefer = node(w, "gw", pq.Policy.PREFER, links=BOTH)
    prefer.run(prefer.engine.received("mesh", env.raw, NOW), NOW)
    assert state(prefer, env) == pq.State.PENDING
    assert prefer.engine.pq.verified(pq.State.PENDING)


def test_submitting_an_attestation_without_its_decision_is_refused() -> None:
    """Test that a local submit of an attestation whose decision is unknown is refused."""
    w = pq_world()
    origin = node(w, "origin", pq.Policy.PREFER)
    _, att = decision(w)
    out = origin.run(origin.engine.submit(att, NOW, ticket=7), NOW)
    done = [a for a in out if isinstance(a, Submitted)]
    assert done and done[0].reason == Reason.PQ_WRONG_MESSAGE


def test_a_roster_that_enables_pq_marks_held_decisions_pending() -> None:
    """Test that decisions held from an issuer before a roster gave it an ML-DSA key become
    pending (and are asked for) once that roster is accepted."""
    w = pq_world()
    plain = replace(w.roster, entries=tuple(replace(e, pq_key=None) for e in w.roster.entries))
    enabled, w.roster = w.roster, plain
    gw = node(w, "gw", pq.Policy.REQUIRE, links=BOTH)
    env, _ = decision(w)
    gw.run(gw.engine.received("mesh", env.raw, NOW), NOW)
    assert state(gw, env) == pq.State.NONE and not gw.engine.pq.pending
    w.roster = replace(enabled, serial=plain.serial + 1)
    gw.run(gw.engine.received("mqtt", w.roster_bytes(), NOW + 1), NOW + 1)
    gw.run(gw.engine.timer(NOW + 2), NOW + 2)
    assert state(gw, env) == pq.State.PENDING and env.id in gw.engine.pq.pending
    wants = [pq.decode_want(t.raw) for t in gw.sent if pq.is_want(t.raw)]
    assert [w_.ids for w_ in wants if isinstance(w_, pq.Want)] == [(env.id,)]


def test_a_device_key_attests_with_the_entrys_ml_dsa_key() -> None:
    """Test that a decision signed by a device key of a PQ-enabled issuer is verified by an
    attestation under the entry's ML-DSA key."""
    w = pq_world()
    laptop = Ed25519PrivateKey.generate()
    device = Device(raw_public(laptop.public_key()), "laptop2")
    w.roster = w.roster.with_device("national", device, w.roster.serial + 1)
    peer = node(w, "mqtt-node", pq.Policy.REQUIRE)
    raw = seal(w.decision("national", to="region:VR07", seq=1), laptop)
    env = open_envelope(raw)
    assert isinstance(env, Envelope)
    peer.run(peer.engine.received("mqtt", raw, NOW), NOW)
    assert state(peer, env) == pq.State.PENDING
    peer.run(peer.engine.received("mqtt", pq.attest(env.id, env.kid, PQ_KEY), NOW), NOW)
    assert state(peer, env) == pq.State.VERIFIED
