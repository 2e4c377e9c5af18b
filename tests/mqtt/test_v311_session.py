"""MQTT v3.1.1 mode: a resumed session subscribes its QoS 0 channels again (RabbitMQ drops them)."""

from __future__ import annotations

import pytest

from relay.links.mqtt import Inbound, MqttLink
from relay.sim.broker import Mosquitto

from .harness import Recorder, run, running, settings

pytestmark = pytest.mark.broker


@pytest.mark.parametrize(("protocol", "again"), [("v311", True), ("v5", False)])
def test_a_resumed_v311_session_subscribes_status_and_probe_again(
    mosquitto: Mosquitto, protocol: str, again: bool
) -> None:
    """Test that on v3.1.1 a resumed session subscribes status again (the retained one comes
    again), while v5 keeps the session's own subscriptions."""
    rec_a, rec_b = Recorder(), Recorder()
    a = MqttLink(settings("a", mosquitto.url, protocol=protocol), on_event=rec_a)

    def status_from_a(since: int) -> list[Inbound]:
        return [e for e in rec_b.of_type(Inbound)[since:]
                if e.channel == "status" and e.payload == b"a is here"]  # fmt: skip

    async def scenario() -> None:
        async with running(a):
            await rec_a.state("up")
            await a.set_status(b"a is here")
            b1 = MqttLink(settings("b", mosquitto.url, protocol=protocol), on_event=rec_b)
            async with running(b1):
                first = await rec_b.state("up")
                await rec_b.inbound("status", b"a is here")
            assert not first.session_present
            mark, seen = rec_b.mark(), len(rec_b.of_type(Inbound))
            b2 = MqttLink(settings("b", mosquitto.url, protocol=protocol), on_event=rec_b)
            async with running(b2):
                resumed = await rec_b.state("up", since=mark)
                assert resumed.session_present
                await a.publish("msg", b"after the resume")
                # mosquitto sends retained messages right after the SUBACK, so by this later
                # message a re-subscription has brought a's status again.
                await rec_b.inbound("msg", b"after the resume", since=mark)
            assert bool(status_from_a(seen)) is again

    run(scenario)
