"""MeshCore on its own: receipt bundles, rejections, NAK handling, link loss. Time is a number."""

from __future__ import annotations

from relay.engine.ops import Rejected, Transmit
from relay.envelope import Reason
from relay.mesh import Precedence
from relay.mesh.core import MeshCore
from relay.mesh.events import CoreSettings, Done, OutFrame, Received
from relay.mesh.frames import ReceiptBundle, decode_frame, encode_message
from relay.mesh.routing import RoutingError
from relay.vocab import OutboundChannelName

SENDER = 0x5E1A0002


def tx(raw: bytes, channel: OutboundChannelName = "msg", precedence: int = 2) -> Transmit:
    return Transmit("mesh", channel, raw[:8], raw, precedence)


def drain(core: MeshCore, now: float) -> list[OutFrame]:
    out = []
    while (frame := core.poll_transmit(now)) is not None:
        out.append(frame)
        core.frame_sent(frame.ref, now)
    return out


def test_receipts_wait_for_the_hold_window_and_share_one_bundle() -> None:
    """Test that three ROUTINE receipts are held, then leave together in one RECEIPT_BUNDLE."""
    core = MeshCore(CoreSettings(receipt_hold_s=3.0))
    tickets = [core.submit(tx(bytes([i]) * 60, "rcpt", 3), now=float(i)) for i in range(3)]
    assert drain(core, 2.5) == []
    assert core.get_timer() == 3.0
    core.handle_timer(3.0)
    frames = drain(core, 3.0)
    assert len(frames) == 1
    bundle = decode_frame(frames[0].payload)
    assert isinstance(bundle, ReceiptBundle) and len(bundle.receipts) == 3
    core.frame_routed(frames[0].ref, 0, implicit=True, now=5.0)
    assert {e.ticket for e in core.events() if isinstance(e, Done) and e.ok} == set(tickets)


def test_a_flash_receipt_goes_at_once_and_takes_the_held_ones_along() -> None:
    """Test that a FLASH receipt flushes the bundle immediately, with earlier held receipts."""
    core = MeshCore()
    core.submit(tx(b"r" * 90, "rcpt", 3), now=0.0)
    core.submit(tx(b"f" * 90, "rcpt", 0), now=0.5)
    frames = drain(core, 0.5)
    assert len(frames) == 1 and frames[0].precedence is Precedence.FLASH
    bundle = decode_frame(frames[0].payload)
    assert isinstance(bundle, ReceiptBundle)
    assert bundle.receipts == (b"f" * 90, b"r" * 90)


def test_garbled_and_oversized_frames_are_rejected_with_a_reason() -> None:
    """Test that undecodable frames become Rejected events (MALFORMED, OVERSIZED) and counts."""
    core = MeshCore()
    core.frame_received(b"\xff\x00garbage", SENDER, 0.0)
    core.frame_received(b"\x40" + b"x" * 240, SENDER, 0.0)
    core.frame_received(b"\x40signed", SENDER, 0.0)
    events = core.events()
    assert [e.reason for e in events if isinstance(e, Rejected)] == [
        Reason.MALFORMED,
        Reason.OVERSIZED,
    ]
    assert Received(b"signed", "msg", SENDER) in events
    assert core.counters["frames_rejected"] == 2


def test_fragments_reassemble_and_a_repeat_is_handed_up_again_later() -> None:
    """Test that fragments in any order make one message, and a retry later re-offers it."""
    core = MeshCore(CoreSettings(repeat_interval_s=60.0))
    message = bytes(range(256)) * 2
    frames = encode_message(message)
    for frame in reversed(frames):
        core.frame_received(frame, SENDER, 1.0)
    assert core.events() == [Received(message, "msg", SENDER)]
    core.frame_received(frames[0], SENDER, 10.0)
    assert core.events() == []  # too soon: a duplicate on the air, not a retry
    core.frame_received(frames[0], SENDER, 100.0)
    assert core.events() == [Received(message, "msg", SENDER)]


def test_duty_cycle_nak_fails_the_send_and_holds_back_all_but_flash() -> None:
    """Test that a DUTY_CYCLE_LIMIT NAK fails the Transmit, and the ledger then keeps
    non-FLASH traffic back while FLASH still goes."""
    core = MeshCore()
    ticket = core.submit(tx(b"\xd2" * 100), now=0.0)
    (frame,) = drain(core, 0.0)
    core.frame_routed(frame.ref, RoutingError.DUTY_CYCLE_LIMIT, implicit=False, now=1.0)
    (done,) = core.events()
    assert isinstance(done, Done) and done.ticket == ticket and not done.ok
    assert "DUTY_CYCLE_LIMIT" in done.detail
    assert not core.budget_ok(2.0)
    core.submit(tx(b"r" * 100, precedence=3), now=2.0)
    core.submit(tx(b"f" * 100, precedence=0), now=2.0)
    sent = drain(core, 2.0)
    assert [f.precedence for f in sent] == [Precedence.FLASH]


def test_link_loss_fails_transmissions_and_withdraws_their_queued_frames() -> None:
    """Test that losing the radio fails every open Transmit and leaves none of its frames queued."""
    core = MeshCore(CoreSettings(max_inflight=1))
    core.submit(tx(bytes(600)), now=0.0)  # three fragments; one goes, two wait
    assert len(drain(core, 0.0)) == 1
    assert len(core.queue) == 2
    core.link_lost(1.0)
    assert [e.ok for e in core.events() if isinstance(e, Done)] == [False]
    assert len(core.queue) == 0 and core.inflight() == 0 and core.open_tickets() == 0


def test_missing_ack_times_out_the_transmission() -> None:
    """Test that a frame the radio never ACKs fails its Transmit after ack_timeout_s."""
    core = MeshCore(CoreSettings(ack_timeout_s=100.0))
    core.submit(tx(b"\xd2" * 50), now=0.0)
    drain(core, 0.0)
    assert core.get_timer() == 100.0
    core.handle_timer(100.0)
    (done,) = core.events()
    assert isinstance(done, Done) and not done.ok and "no ACK" in done.detail


def test_transmissions_the_mesh_will_never_carry_end_as_refused_not_broken() -> None:
    """Test that a message too big for the mesh and a NAK TOO_LARGE end as refused (Done with a
    reason), while a NAK for a duty-cycle limit ends as a plain failure worth retrying soon."""
    core = MeshCore()
    big = core.submit(tx(b"m" * 70_000), now=0.0)
    nak = core.submit(tx(b"x" * 100), now=0.0)
    busy = core.submit(tx(b"y" * 100), now=0.0)
    frames = drain(core, 0.0)
    core.frame_routed(frames[0].ref, 7, implicit=False, now=1.0)  # TOO_LARGE
    core.frame_routed(frames[1].ref, RoutingError.DUTY_CYCLE_LIMIT, implicit=False, now=1.0)
    done = {e.ticket: e for e in core.events() if isinstance(e, Done)}
    assert (done[big].ok, done[big].refused) == (False, "too-large")
    assert (done[nak].ok, done[nak].refused) == (False, "TOO_LARGE")
    assert (done[busy].ok, done[busy].refused) == (False, "")
