"""Engines and mesh cores on five emulated radios in a line, on virtual time (no sockets)."""

from __future__ import annotations

import dataclasses

from relay.envelope import Precedence, message_id
from relay.mesh import Precedence as MeshPrecedence
from relay.mesh.events import CoreSettings
from relay.mesh.frames import fragment_count
from relay.trust import Role
from tests.mesh_link.simnet import SimNetwork
from tests.mesh_link.test_driver_emulator import long_text
from tests.sim.hosts import line_mesh
from tests.world import World

NODES = ("n1", "n2", "n3", "n4", "n5")
HOUR = 3600.0


def world() -> World:
    w = World()
    w.add("national", Role.ISSUER, "all")
    return w


def test_five_radios_in_a_line_with_loss_deliver_once_and_return_receipts() -> None:
    """Test that decisions from one end of a 5-radio line with 10 % loss reach every node exactly
    once, every node's receipt returns to the sender, and no radio exceeds its duty cycle."""
    w = world()
    net = SimNetwork(w, line_mesh(5, loss=0.1, seed=3))
    now = int(w.decision("national").issued_at)
    decisions = [
        w.sign("national", "Besluit: sluit de dijk bij Kampen.", precedence=Precedence.FLASH),
        w.sign("national", "Opvang in sporthal De Wijk.", precedence=Precedence.ROUTINE),
        w.sign("national", long_text(3), precedence=Precedence.PRIORITY, now=now),
    ]
    assert fragment_count(len(decisions[2])) == 3
    ids = [message_id(raw) for raw in decisions]
    net.run_until(5.0)  # links settle (engine hold-down)
    for raw in decisions:
        net.submit("n1", raw)

    def complete() -> bool:
        return all(net.receipts("n1", i) >= set(NODES[1:]) for i in ids)

    net.run_until(2 * HOUR, stop=complete)

    assert complete(), {i.hex()[:8]: sorted(net.receipts("n1", i)) for i in ids}
    for name in NODES:
        for i in ids:
            assert net.deliveries(name, i) == 1, (name, i.hex()[:8])
    for name, used in net.max_airtime_last_hour.items():
        budget = net.mesh.radios[name].settings.duty_cycle * HOUR
        assert used <= budget, (name, used)
        assert net.nodes[name].core.ledger.used(net.now) <= net.nodes[name].core.ledger.budget_s
    assert net.rejections() == []
    # Loss really happened and was repaired or retried.
    assert sum(net.mesh.radios[n].stats.drops["loss"] for n in NODES) > 0


def test_flash_goes_first_after_duty_cycle_exhaustion_and_nothing_is_lost() -> None:
    """Test that with the airtime budget spent and a ROUTINE backlog queued, a FLASH decision
    submitted later is the first frame on air once airtime returns, and every decision arrives."""
    w = world()
    settings = dataclasses.replace(CoreSettings(), max_queue_s=2 * HOUR)
    net = SimNetwork(w, line_mesh(2, seed=5), settings=settings)
    net.run_until(5.0)
    sender = net.nodes["n1"]
    sender.core.ledger.record(sender.core.ledger.budget_s, net.now)  # the hour is spent
    routine = [
        w.sign("national", f"Routine bericht {i}", precedence=Precedence.ROUTINE, lifetime=4 * 3600)
        for i in range(5)
    ]
    for raw in routine:
        net.submit("n1", raw)
    net.run_until(60.0)
    assert sender.radio.sent == []  # nothing may go: the budget is spent
    assert len(sender.core.queue) >= 5  # the decisions, and bundles of n1's own receipts
    flash = w.sign("national", "FLASH: evacueer nu", precedence=Precedence.FLASH, lifetime=4 * 3600)
    net.submit("n1", flash)
    ids = [message_id(raw) for raw in [*routine, flash]]

    net.run_until(3 * HOUR, stop=lambda: all(net.deliveries("n2", i) == 1 for i in ids))

    sent = [frame.payload for frame in sender.radio.sent]  # a signed SINGLE goes bare
    assert sender.radio.sent[0].precedence is MeshPrecedence.FLASH  # the decision or its receipt
    first_routine = min(sent.index(raw) for raw in routine)
    assert sent.index(flash) < first_routine
    assert all(net.deliveries("n2", i) == 1 for i in ids)
    assert net.now >= HOUR  # it did wait for the hour to roll over
    assert sender.node.engine.counters["evicted"] == 0
