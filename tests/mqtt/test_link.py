"""The MQTT link against real mosquitto processes on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from relay.links.mqtt import (
    BrokerConfig,
    ConnectFailed,
    Inbound,
    InboundRejected,
    LinkEvent,
    LinkStateChanged,
    LinkUnavailable,
    MqttLink,
    PublishRejected,
)
from relay.sim.broker import NODE_ACL, BridgeConfig, Mosquitto, TlsListener
from relay.sim.faultproxy import FaultProxy
from relay.sim.pki import generate_pki

from .harness import Recorder, raw_publish, run, running, settings

pytestmark = pytest.mark.broker

Factory = Callable[..., Mosquitto]


def test_roundtrip_between_two_links(mosquitto: Mosquitto) -> None:
    """Test that a message published by one link arrives at the other; its own sender gets back
    its status (MQTT v5 No Local spares it its msg, rcpt and sync publications)."""
    rec_a, rec_b = Recorder(), Recorder()
    a = MqttLink(settings("a", mosquitto.url), on_event=rec_a)
    b = MqttLink(settings("b", mosquitto.url), on_event=rec_b)

    async def scenario() -> None:
        async with running(a, b):
            await rec_a.state("up")
            await rec_b.state("up")
            for channel in ("msg", "rcpt", "sync"):
                await a.publish(channel, f"hello {channel}".encode())
            for channel in ("msg", "rcpt", "sync"):
                got = await rec_b.inbound(channel, f"hello {channel}".encode())
                assert got.sender_node == "a" and got.broker_url == mosquitto.url
            mark = rec_a.mark()
            await a.set_status({"queue": 3})
            status = await rec_b.inbound("status", b'{"queue":3,"state":"online"}')
            assert status.sender_node == "a"
            # The broker sends a its own status back after anything it would have echoed first.
            await rec_a.inbound("status", b'{"queue":3,"state":"online"}', since=mark)
            own = [e for e in rec_a.of_type(Inbound) if e.sender_node == "a"]
            assert {e.channel for e in own} == {"status"}
            assert a.statistics()["published"] == 4

    run(scenario)


def test_signed_status_will_and_goodbye_come_from_the_signer(mosquitto: Mosquitto) -> None:
    """Test that with a signing callback no status goes out before set_status, the status is
    the given bytes, and the goodbye (and Will) is what the callback signs."""
    rec_a, rec_b = Recorder(), Recorder()
    signed = iter(range(1000))
    a = MqttLink(
        settings("a", mosquitto.url),
        on_event=rec_a,
        sign_offline=lambda: b"signed offline %d" % next(signed),
    )
    b = MqttLink(settings("b", mosquitto.url), on_event=rec_b)

    async def scenario() -> None:
        async with running(b):
            await rec_b.state("up")
            async with running(a):
                await rec_a.state("up")
                await a.publish("msg", b"after connect")
                await rec_b.inbound("msg", b"after connect")
                statuses = [e for e in rec_b.of_type(Inbound) if e.channel == "status"]
                assert not [e for e in statuses if e.sender_node == "a"]
                await a.set_status(b"signed online")
                await rec_b.inbound("status", b"signed online")
            goodbye = await rec_b.wait_for(
                lambda e: isinstance(e, Inbound) and e.payload.startswith(b"signed offline")
            )
            assert isinstance(goodbye, Inbound) and goodbye.sender_node == "a"

    run(scenario)


@pytest.mark.parametrize("protocol", ["v5", "v311"])
def test_offline_node_receives_messages_sent_while_away(
    mosquitto: Mosquitto, protocol: str
) -> None:
    """Test that QoS 1 messages published while a node was offline reach it on reconnect."""
    rec_a, rec_b = Recorder(), Recorder()
    a = MqttLink(settings("a", mosquitto.url, protocol=protocol), on_event=rec_a)

    async def scenario() -> None:
        b1 = MqttLink(settings("b", mosquitto.url, protocol=protocol), on_event=rec_b)
        async with running(b1):  # creates b's persistent session and subscriptions
            first = await rec_b.state("up")
        assert not first.session_present
        async with running(a):
            await rec_a.state("up")
            for i in range(3):
                await a.publish("msg", b"while away %d" % i)
        mark = rec_b.mark()
        b2 = MqttLink(settings("b", mosquitto.url, protocol=protocol), on_event=rec_b)
        async with running(b2):
            again = await rec_b.state("up", since=mark)
            assert again.session_present, "the reconnect must resume the session"
            for i in range(3):
                await rec_b.inbound("msg", b"while away %d" % i, since=mark)

    run(scenario)


def test_link_recovers_from_broker_restart_with_persistence(mosquitto_factory: Factory) -> None:
    """Test that a link survives a broker restart and an offline node's queue survives it too."""
    broker = mosquitto_factory(persistence=True)
    rec_a, rec_b = Recorder(), Recorder()
    a = MqttLink(settings("a", broker.url), on_event=rec_a)

    async def scenario() -> None:
        async with running(MqttLink(settings("b", broker.url), on_event=rec_b)):
            await rec_b.state("up")
        async with running(a):
            await rec_a.state("up")
            await a.publish("msg", b"queued for b")
            mark = rec_a.mark()
            await broker.arestart()
            await rec_a.state("down", since=mark)
            back = await rec_a.state("up", since=mark)
            assert back.session_present
            await a.publish("msg", b"after restart")  # PUBACKed (No Local: no echo to a)
        mark = rec_b.mark()
        async with running(MqttLink(settings("b", broker.url), on_event=rec_b)):
            assert (await rec_b.state("up", since=mark)).session_present
            await rec_b.inbound("msg", b"queued for b", since=mark)
            await rec_b.inbound("msg", b"after restart", since=mark)

    run(scenario)


def test_blackholed_broker_is_reported_down_by_the_probe_and_recovers(
    mosquitto: Mosquitto,
) -> None:
    """Test that a silently dropping path is reported down by the liveness probe (not the 30 s
    keepalive), that publishing then fails at once, and that the link recovers. How fast:
    tests/mqtt/test_core.py on virtual time, bench/mqtt_liveness.py on loopback."""
    rec = Recorder()

    async def scenario() -> None:
        async with FaultProxy(upstream_port=mosquitto.port) as proxy:
            url = f"mqtt://127.0.0.1:{proxy.port}"
            link = MqttLink(settings("a", url, connect_timeout_s=2.0), on_event=rec)
            async with running(link):
                await rec.state("up")
                await rec.wait_for(lambda e: isinstance(e, Inbound) and e.channel == "status")
                mark = rec.mark()
                proxy.blackhole()
                down = await rec.state("down", since=mark)
                assert down.reason.startswith("no probe echo for ")
                assert link.statistics()["probe_timeouts"] == 1
                with pytest.raises(LinkUnavailable):
                    await link.publish("msg", b"nobody hears this")
                mark = rec.mark()
                proxy.restore()
                await rec.state("up", since=mark, within=15.0)
                await link.publish("msg", b"back")

    run(scenario)


def test_pending_publish_is_woken_when_the_link_goes_down(mosquitto: Mosquitto) -> None:
    """Test that a publish waiting for its PUBACK fails as soon as the link is declared down."""
    rec = Recorder()

    async def scenario() -> None:
        async with FaultProxy(upstream_port=mosquitto.port) as proxy:
            link = MqttLink(
                settings("a", f"mqtt://127.0.0.1:{proxy.port}", publish_timeout_s=30.0),
                on_event=rec,
            )
            async with running(link):
                await rec.state("up")
                proxy.blackhole()
                # Woken by the link going down, not by its 30 s publish timeout ("no PUBACK").
                with pytest.raises(LinkUnavailable, match="went down"):
                    await link.publish("msg", b"lost in the void")

    run(scenario)


def test_failover_to_second_broker_and_failback(mosquitto_factory: Factory) -> None:
    """Test that the link moves to the next broker when the first is cut and returns later."""
    first, second = mosquitto_factory(), mosquitto_factory()
    rec = Recorder()

    async def scenario() -> None:
        async with FaultProxy(upstream_port=first.port) as proxy:
            preferred = f"mqtt://127.0.0.1:{proxy.port}"
            link = MqttLink(
                settings("a", preferred, second.url, failback_interval_s=1.0), on_event=rec
            )
            async with running(link):
                await rec.state("up", preferred)
                mark = rec.mark()
                proxy.cut()
                await rec.state("up", second.url, since=mark)
                await link.publish("msg", b"via second")
                mark = rec.mark()
                proxy.restore()
                back = await rec.state("up", preferred, since=mark)
                assert back.session_present
                assert not [e for e in rec.events[mark:] if getattr(e, "state", "") == "down"]
                assert link.statistics()["failbacks"] == 1
                await link.publish("msg", b"via first again")

    run(scenario)


def _tls_broker(factory: Factory, tmp_path: Path, *clients: str) -> tuple[Mosquitto, Path]:
    pki = generate_pki(tmp_path / "pki", clients=clients)
    broker = factory(
        tls=TlsListener(ca=pki.ca, cert=pki.server.cert, key=pki.server.key), acl=NODE_ACL
    )
    return broker, pki.ca


def _tls_config(url: str, ca: Path, name: str | None) -> BrokerConfig:
    if name is None:
        return BrokerConfig(url, ca=ca)
    pki = ca.parent
    return BrokerConfig(url, ca=ca, cert=pki / f"client-{name}.crt", key=pki / f"client-{name}.key")


def test_tls_with_client_certificates(mosquitto_factory: Factory, tmp_path: Path) -> None:
    """Test that links with client certificates talk over TLS and one without is refused."""
    broker, ca = _tls_broker(mosquitto_factory, tmp_path, "a", "b")
    rec_a, rec_b, rec_x = Recorder(), Recorder(), Recorder()
    a = MqttLink(settings("a", _tls_config(broker.url, ca, "a")), on_event=rec_a)
    b = MqttLink(settings("b", _tls_config(broker.url, ca, "b")), on_event=rec_b)
    anonymous = MqttLink(
        settings("x", _tls_config(broker.url, ca, None), connect_timeout_s=2.0), on_event=rec_x
    )

    async def scenario() -> None:
        async with running(a, b, anonymous):
            await rec_a.state("up")
            await rec_b.state("up")
            await a.publish("msg", b"over tls")
            await rec_b.inbound("msg", b"over tls")
            failed = await rec_x.wait_for(lambda e: isinstance(e, ConnectFailed))
            assert isinstance(failed, ConnectFailed)
            assert anonymous.state == "down"
            assert not [e for e in rec_x.events if getattr(e, "state", "") == "up"]
        await broker.await_log("certificate")

    run(scenario)


def test_acl_denies_publishing_to_another_nodes_topic(
    mosquitto_factory: Factory, tmp_path: Path
) -> None:
    """Test that a client holding a's certificate cannot publish under b's topics (PUBACK 135)
    nor take over b's session by claiming b's client id."""
    broker, ca = _tls_broker(mosquitto_factory, tmp_path, "a", "b")
    rec_b, rec_imp = Recorder(), Recorder()
    b = MqttLink(settings("b", _tls_config(broker.url, ca, "b")), on_event=rec_b)
    impostor = MqttLink(settings("b", _tls_config(broker.url, ca, "a")), on_event=rec_imp)

    async def scenario() -> None:
        async with running(b):
            await rec_b.state("up")
            async with running(impostor):
                await rec_imp.state("up")
                with pytest.raises(PublishRejected) as refused:
                    await impostor.publish("msg", b"forged")
                assert refused.value.reason_code == 135
                await b.publish("msg", b"genuine")
                # The other client gets it (b itself not: No Local), long after any forgery.
                await rec_imp.inbound("msg", b"genuine")
            assert not [e for e in rec_b.of_type(Inbound) if e.payload == b"forged"]
            # use_username_as_clientid: the impostor's client id became "a"; b was never cut.
            assert not [e for e in rec_b.events if getattr(e, "state", "") == "down"]
        log = await broker.await_log("Denied PUBLISH from a")
        assert "crisis/b/msg" in log and "rc135" in log

    run(scenario)


def test_oversized_inbound_is_rejected_before_decoding(mosquitto: Mosquitto) -> None:
    """Test that a payload over max_inbound_bytes is rejected and one at the limit is delivered."""
    rec = Recorder()
    link = MqttLink(settings("a", mosquitto.url, max_inbound_bytes=100), on_event=rec)

    async def scenario() -> None:
        async with running(link):
            await rec.state("up")
            await asyncio.to_thread(raw_publish, mosquitto.port, "crisis/z/msg", b"\xff" * 101)
            await asyncio.to_thread(raw_publish, mosquitto.port, "crisis/z/msg", b"\xfe" * 100)
            await rec.inbound("msg", b"\xfe" * 100)
            rejected = rec.of_type(InboundRejected)
            assert [(r.reason, r.topic, r.size) for r in rejected] == [
                ("oversized", "crisis/z/msg", 101)
            ]
            assert not [e for e in rec.of_type(Inbound) if e.payload == b"\xff" * 101]

    run(scenario)


def test_wrong_topic_is_rejected(mosquitto: Mosquitto) -> None:
    """Test that a message on a topic outside the layout is rejected with "wrong-topic"."""
    rec = Recorder()
    link = MqttLink(settings("a", mosquitto.url), on_event=rec)

    async def scenario() -> None:
        async with running(link):
            await rec.state("up")
            await asyncio.to_thread(raw_publish, mosquitto.port, "crisis/no de!/msg", b"x")
            got = await rec.wait_for(lambda e: isinstance(e, InboundRejected))
            assert got == InboundRejected("wrong-topic", "crisis/no de!/msg", 1, mosquitto.url)

    run(scenario)


def test_bridge_carries_messages_between_brokers(mosquitto_factory: Factory) -> None:
    """Test that a harness bridge (v3.1.1, cleansession false) carries a link's message across."""
    remote = mosquitto_factory()
    local = mosquitto_factory(bridge=BridgeConfig(name="bridge-ab", port=remote.port))
    rec_a, rec_b = Recorder(), Recorder()
    a = MqttLink(settings("a", local.url), on_event=rec_a)
    b = MqttLink(settings("b", remote.url), on_event=rec_b)

    async def scenario() -> None:
        await remote.await_log("bridge-ab")  # the bridge has connected
        async with running(a, b):
            await rec_a.state("up")
            await rec_b.state("up")
            await a.publish("msg", b"across the bridge")
            got = await rec_b.inbound("msg", b"across the bridge")
            assert got.sender_node == "a" and got.broker_url == remote.url

    run(scenario)


def test_a_failing_event_handler_ends_run_with_that_error(mosquitto: Mosquitto) -> None:
    """Test that an exception in the event handler ends run() with that error, not a cancel."""
    rec = Recorder()

    def handler(event: LinkEvent) -> None:
        rec(event)
        if isinstance(event, InboundRejected):
            raise ValueError("handler bug")

    link = MqttLink(settings("a", mosquitto.url), on_event=handler)

    async def scenario() -> None:
        task = asyncio.create_task(link.run())
        await rec.state("up")
        await asyncio.to_thread(raw_publish, mosquitto.port, "crisis/no de!/msg", b"x")
        with pytest.raises(ExceptionGroup) as caught:
            await asyncio.wait_for(task, 10)
        assert caught.group_contains(ValueError, match="handler bug")
        assert rec.of_type(LinkStateChanged)[-1].state == "down"

    run(scenario)
