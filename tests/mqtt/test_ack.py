"""Inbound acknowledgement: PUBACK only when the consumer says so, and the broker holds the rest."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from relay.links.mqtt import Inbound, LinkEvent, MqttLink
from relay.links.mqtt_client import Client
from relay.sim.broker import Mosquitto

from .harness import Recorder, run, running, settings

pytestmark = pytest.mark.broker


async def probe_rounds(link: MqttLink, rounds: int) -> None:
    """Wait until ``rounds`` more liveness probes have come back through the broker (QoS 0,
    so not held by the Receive Maximum): the broker has had that long to send anything."""
    target = int(link.statistics()["probes_answered"]) + rounds  # type: ignore[call-overload]
    # Polling a counter: the link raises no event for an echo.
    while int(link.statistics()["probes_answered"]) < target:  # type: ignore[call-overload]  # noqa: ASYNC110
        await asyncio.sleep(0.02)


def test_aiomqtt_builds_paho_with_automatic_ack_and_our_client_turns_it_off() -> None:
    """Test that aiomqtt still builds its paho client with automatic acknowledgement (the
    reason for our override) and that our client switches paho to manual acknowledgement."""

    async def scenario() -> None:  # aiomqtt clients need a running loop
        plain = aiomqtt.Client("127.0.0.1", 1, identifier="plain")
        ours = Client(
            "127.0.0.1",
            1,
            identifier="ours",
            connect_timeout=1.0,
            probe_topic="crisis/ours/probe",
            max_queued_incoming_messages=10,
        )
        # paho 2.2 keeps the switch in _manual_ack; if either assertion fails, re-read aiomqtt's
        # client construction and paho's _handle_publish before moving the pins.
        assert plain._client._manual_ack is False
        assert ours._client._manual_ack is True

    run(scenario)


def test_unacknowledged_message_is_resent_after_reconnect_and_acknowledged_one_is_not(
    mosquitto: Mosquitto,
) -> None:
    """Test that the broker re-sends an inbound message we did not acknowledge when we
    reconnect, and not one we acknowledged (so nothing is acknowledged before we store it)."""
    sent = Recorder()
    sender = MqttLink(settings("a", mosquitto.url), on_event=sent)

    async def scenario() -> None:
        first = Recorder(ack=False)
        async with running(sender, MqttLink(settings("b", mosquitto.url), on_event=first)):
            await first.state("up")
            await sent.state("up")
            await sender.publish("msg", b"stored")
            await sender.publish("msg", b"not yet stored")
            stored = await first.inbound("msg", b"stored")
            await first.inbound("msg", b"not yet stored")
            stored.ack()
        again = Recorder(ack=False)
        b = MqttLink(settings("b", mosquitto.url), on_event=again)
        async with running(b):
            resent = await again.inbound("msg", b"not yet stored")
            resent.ack()
            await again.state("up")
            await probe_rounds(b, 2)  # after anything the broker re-sent on connect
            payloads = [e.payload for e in again.of_type(Inbound) if e.channel == "msg"]
            assert payloads == [b"not yet stored"]
            assert b.statistics()["acked"] == 1

    run(scenario)


def test_receive_maximum_holds_the_first_window_and_nothing_unacknowledged_is_lost(
    mosquitto: Mosquitto,
) -> None:
    """Test that with MQTT v5 the broker sends no more than inbound_queue messages we have not
    acknowledged, and that everything arrives once we acknowledge, even when (as mosquitto
    2.0.11 does) the broker then sends more than fits and the link must get it re-sent."""
    window, total = 10, 60
    sent = Recorder()
    sender = MqttLink(settings("a", mosquitto.url), on_event=sent)
    rec = Recorder(ack=False)
    acking = False

    def on_event(event: LinkEvent) -> None:
        if isinstance(event, Inbound) and (acking or event.channel != "msg"):
            event.ack()  # (the retained statuses would take up the window too)
        rec(event)

    b = MqttLink(settings("b", mosquitto.url, inbound_queue=window), on_event=on_event)

    def payloads() -> list[bytes]:
        return [e.payload for e in rec.of_type(Inbound) if e.channel == "msg"]

    async def scenario() -> None:
        nonlocal acking
        async with running(sender, b):
            await rec.state("up")
            await sent.state("up")
            for i in range(total):
                await sender.publish("msg", b"m%d" % i)
            while len(payloads()) < window:
                await rec.wait_for(lambda e: isinstance(e, Inbound), since=rec.mark())
            await probe_rounds(b, 2)  # time for the broker to overstep, if it would
            assert payloads() == [b"m%d" % i for i in range(window)]
            acking = True
            for event in rec.of_type(Inbound):
                event.ack()
            want = {b"m%d" % i for i in range(total)}
            while not want <= set(payloads()):
                await rec.wait_for(lambda e: isinstance(e, Inbound), since=rec.mark())
            stats = b.statistics()
            # Every message we dropped unacknowledged came back: dropped ones were re-sent.
            dropped = stats["acks_dropped"]
            assert isinstance(dropped, int)
            msgs = [e for e in rec.of_type(Inbound) if e.channel == "msg"]  # status is QoS 0
            assert stats["acked"] == len(msgs) - dropped

    run(scenario)


@pytest.mark.parametrize("read_ahead", [20_000, 1], ids=["read-ahead", "stops-reading"])
def test_link_hands_on_no_more_than_its_window_when_the_broker_oversteps_it(
    mosquitto: Mosquitto, read_ahead: int
) -> None:
    """Test that a link acknowledging in batches, as the store does, never has more than
    inbound_queue messages handed on unacknowledged, drops none and never reconnects, although
    mosquitto 2.0.11 releases up to a window more on every PUBACK: whether it reads the excess
    ahead or (read-ahead exhausted) stops reading the socket until it has room again."""
    window, total = 10, 300
    sent = Recorder()
    sender = MqttLink(settings("a", mosquitto.url, publish_timeout_s=30.0), on_event=sent)
    rec = Recorder(ack=False)
    held: list[Inbound] = []
    peak = 0
    got: list[bytes] = []
    complete = asyncio.Event()

    def on_event(event: LinkEvent) -> None:
        nonlocal peak
        rec(event)
        if isinstance(event, Inbound) and event.channel == "msg":
            held.append(event)
            got.append(event.payload)
            peak = max(peak, len(held))
            if len(set(got)) == total:
                complete.set()
        elif isinstance(event, Inbound):
            event.ack()

    b = MqttLink(
        settings("b", mosquitto.url, inbound_queue=window, read_ahead=read_ahead),
        on_event=on_event,
    )

    async def commits() -> None:
        """Acknowledge everything held every 10 ms, oldest first (one group commit each)."""
        while True:
            await asyncio.sleep(0.01)  # timer by design: the store's commit cadence
            batch, held[:] = list(held), []
            for event in batch:
                event.ack()

    async def scenario() -> None:
        async with running(sender, b):
            await rec.state("up")
            await sent.state("up")
            committer = asyncio.create_task(commits())
            # The publisher's own window (paho: 20 in flight) would pace the burst; all at once.
            await asyncio.gather(*(sender.publish("msg", b"m%d" % i) for i in range(total)))
            await complete.wait()
            committer.cancel()
            stats = b.statistics()
            assert sorted(got) == sorted(b"m%d" % i for i in range(total))  # each exactly once
            assert peak <= window
            assert stats["rejected_queue_full"] == 0
            assert stats["connects"] == 1

    run(scenario)
