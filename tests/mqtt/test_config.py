"""Pure parts of the MQTT link: topic layout and settings validation (no broker)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from relay import config
from relay.links.mqtt import BrokerConfig, MqttSettings, parse_topic, topic_for
from relay.links.mqtt_core import reconnect_delay


def test_topic_for_and_parse_topic_agree() -> None:
    """Test that every channel topic we build parses back to its node and channel."""
    for channel in ("msg", "rcpt", "sync", "status"):
        topic = topic_for("crisis", "vr-utrecht.1", channel)
        assert parse_topic("crisis", "me", topic) == ("vr-utrecht.1", channel)
    assert parse_topic("nl/crisis", "me", "nl/crisis/me/probe") == ("me", "probe")


@pytest.mark.parametrize(
    "topic",
    [
        "crisis/a/other",  # unknown channel
        "crisis/a/msg/extra",  # extra level
        "crisis/msg",  # missing level
        "crisis//msg",  # empty node
        "crisis/no de/msg",  # node outside the name pattern
        "crisis/other/probe",  # someone else's probe
        "elsewhere/a/msg",  # another prefix
        "crisisx/a/msg",  # prefix must end at a level boundary
    ],
)
def test_parse_topic_rejects_topics_outside_the_layout(topic: str) -> None:
    """Test that topics outside the layout do not parse."""
    assert parse_topic("crisis", "me", topic) is None


def test_broker_config_parses_urls() -> None:
    """Test that broker urls give host, port and TLS, with the MQTT default ports."""
    assert (BrokerConfig("mqtt://127.0.0.1").port, BrokerConfig("mqtts://127.0.0.1").port) == (
        1883,
        8883,
    )
    tls = BrokerConfig("mqtts://127.0.0.1:8884", ca=Path("ca.crt"))
    assert (tls.host, tls.port, tls.tls) == ("127.0.0.1", 8884, True)
    assert "secret" not in repr(BrokerConfig("mqtt://127.0.0.1", password="secret"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "http://127.0.0.1:1883"},
        {"url": "mqtt://127.0.0.1:1883/path"},
        {"url": "mqtt://127.0.0.1:99999"},
        {"url": "mqtt://127.0.0.1", "ca": Path("ca.crt")},
        {"url": "mqtts://127.0.0.1", "cert": Path("c.crt")},
    ],
)
def test_broker_config_rejects_bad_input(kwargs: dict[str, object]) -> None:
    """Test that malformed broker configurations raise ValueError."""
    with pytest.raises(ValueError):
        BrokerConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "overrides",
    [
        {"node": "a/b"},
        {"node": "a+"},
        {"node": ""},
        {"brokers": ()},
        {"topic_prefix": "crisis/#"},
        {"topic_prefix": "crisis/"},
        {"probe_interval_s": 3.0, "probe_timeout_s": 3.0},
        {"reconnect_min_s": 5.0, "reconnect_max_s": 1.0},
        {"publish_timeout_s": 0},
        {"max_inbound_bytes": 0},
    ],
)
def test_settings_reject_bad_values(overrides: dict[str, object]) -> None:
    """Test that settings that would break the topic layout or the timers raise ValueError."""
    values: dict[str, object] = {"node": "a", "brokers": (BrokerConfig("mqtt://127.0.0.1"),)}
    values.update(overrides)
    with pytest.raises(ValueError):
        MqttSettings(**values)  # type: ignore[arg-type]


def test_backoff_counts_from_the_start_of_the_failed_attempt() -> None:
    """Test that reconnect backoff grows with jitter to its cap and deducts the attempt's wait."""
    rng = random.Random(5)
    s = MqttSettings("a", (BrokerConfig("mqtt://127.0.0.1"),), reconnect_max_s=2.0)
    for attempt, cap in ((0, 0.5), (1, 1.0), (2, 2.0), (5, 2.0)):
        delays = [reconnect_delay(attempt, s, rng) for _ in range(200)]
        assert cap / 2 <= min(delays) and max(delays) <= cap
    # A refused connect (no wait) waits the whole delay; a hung one has waited already.
    assert reconnect_delay(3, s, random.Random(1), waited=0.5) == pytest.approx(
        reconnect_delay(3, s, random.Random(1)) - 0.5
    )
    assert reconnect_delay(3, s, rng, waited=3.0) == 0.0


_TOML = """
[node]
name = "vr07-utrecht"
key = "node.key"
max_inbound_bytes = 2048
[trust]
root = "root.pub"
roster = "roster.cbor"
[mqtt]
probe_timeout = 4.5
inbound_queue = 50
[[mqtt.broker]]
url = "mqtt://127.0.0.1:1884"
[[mqtt.broker]]
url = "mqtts://broker.example:8884"
ca = "ca.crt"
"""


def test_relay_toml_gives_the_settings_the_link_runs_with(tmp_path: Path) -> None:
    """Test that [mqtt] in relay.toml loads as the link's own MqttSettings, with the node's
    policy filled in (connect timeout from the probe timeout, 0.5-2 s reconnect backoff)."""
    path = tmp_path / "relay.toml"
    path.write_text(_TOML)
    settings = config.load(path, environ={}).mqtt
    assert isinstance(settings, MqttSettings)
    assert settings == MqttSettings(
        node="vr07-utrecht",
        brokers=(
            BrokerConfig("mqtt://127.0.0.1:1884"),
            BrokerConfig("mqtts://broker.example:8884", ca=tmp_path / "ca.crt"),
        ),
        probe_timeout_s=4.5,
        connect_timeout_s=4.5,
        max_inbound_bytes=2048,
        inbound_queue=50,
    )
    assert (settings.reconnect_min_s, settings.reconnect_max_s) == (0.5, 2.0)
    assert (settings.brokers[1].host, settings.brokers[1].port, settings.brokers[1].tls) == (
        "broker.example",
        8884,
        True,
    )


def test_relay_toml_rejects_a_node_name_that_cannot_be_a_client_id(tmp_path: Path) -> None:
    """Test that a node name outside the MQTT client id pattern is a ConfigError naming mqtt."""
    path = tmp_path / "relay.toml"
    path.write_text(_TOML.replace('"vr07-utrecht"', '"-vr07"'))
    with pytest.raises(config.ConfigError, match=r"relay\.toml:\d+: mqtt: node name must match"):
        config.load(path, environ={})
