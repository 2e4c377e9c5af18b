"""What relay.links.mqtt_client relies on in aiomqtt and paho: these fail when a new aiomqtt or
paho stops routing things the way the overrides and hooks expect (re-read mqtt_client.py then)."""

from __future__ import annotations

import inspect

import aiomqtt
import paho.mqtt.client as paho

from relay.links.mqtt_client import Client, InboundQueue

from .harness import run

PROBE = "crisis/ours/probe"


def _ours(queue: int = 2) -> Client:
    return Client(
        "127.0.0.1",
        1,
        identifier="ours",
        connect_timeout=1.0,
        probe_topic=PROBE,
        max_queued_incoming_messages=queue,
    )


def _message(topic: str, payload: bytes, *, qos: int = 0, mid: int = 1) -> paho.MQTTMessage:
    message = paho.MQTTMessage(mid=mid, topic=topic.encode())
    message.payload = payload
    message.qos = qos
    return message


def test_aiomqtt_still_routes_paho_callbacks_to_the_methods_we_override() -> None:
    """Test that aiomqtt registers its _on_connect/_on_disconnect/_on_publish as paho's
    callbacks with the signatures our overrides share, so the overrides are what paho calls."""

    async def scenario() -> None:
        plain, ours = aiomqtt.Client("127.0.0.1", 1), _ours()
        for name in ("connect", "disconnect", "publish"):
            method = f"_on_{name}"
            assert getattr(plain._client, f"on_{name}").__func__ is getattr(aiomqtt.Client, method)
            assert getattr(ours._client, f"on_{name}").__func__ is getattr(Client, method)
            theirs = inspect.signature(getattr(aiomqtt.Client, method)).parameters
            assert list(inspect.signature(getattr(Client, method)).parameters) == list(theirs)

    run(scenario)


def test_aiomqtt_feeds_messages_through_the_queue_type_hook() -> None:
    """Test that aiomqtt builds its inbound queue with our queue_type factory and puts each
    message with put_nowait: the time of the read is noted and, when full, the message is
    counted as an overflow (topic and size) instead of raising or being logged only."""

    async def scenario() -> None:
        ours = _ours(queue=2)
        assert isinstance(ours.inbound, InboundQueue) and ours.inbound.maxsize == 2
        on_message = ours._client.on_message  # aiomqtt's own, which feeds its queue
        assert on_message is not None
        for i in range(3):
            on_message(ours._client, None, _message("crisis/z/msg", b"m%d" % i))
        assert ours.inbound.qsize() == 2
        assert list(ours.inbound.overflow) == [("crisis/z/msg", 2)]
        assert ours.inbound.overflow_count == 1
        assert ours.inbound.last_read > 0
        assert [ours.inbound.get_nowait().payload for _ in range(2)] == [b"m0", b"m1"]

    run(scenario)


def test_probe_echoes_bypass_the_queue_through_paho_topic_callbacks() -> None:
    """Test that paho hands a message on our probe topic to the probe callback, not to the
    inbound queue, and that one with QoS 1 (not ours) is acknowledged (manual ack is on)."""

    async def scenario() -> None:
        ours = _ours()
        echoes: list[bytes] = []
        ours.on_probe = echoes.append
        acked: list[tuple[int, int]] = []
        ours._client.ack = lambda mid, qos: acked.append((mid, qos))  # type: ignore[method-assign,assignment,return-value]
        ours._client._handle_on_message(_message(PROBE, b"tok:1"))
        ours._client._handle_on_message(_message(PROBE, b"junk", qos=1, mid=7))
        ours._client._handle_on_message(_message("crisis/z/msg", b"not a probe"))
        assert echoes == [b"tok:1", b"junk"]
        assert acked == [(7, 1)]
        assert ours.inbound.qsize() == 1

    run(scenario)
