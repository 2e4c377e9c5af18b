"""The MQTT link's configuration and topic layout: pure, no aiomqtt.

One set of frozen dataclasses, built by ``relay.config`` from relay.toml (``[mqtt]`` and
``[[mqtt.broker]]``, docs/config.md) and used as they are by the link (``relay.links.mqtt``) and
its core (``relay.links.mqtt_core``). The defaults are the node's policy; the constants below say
why each timer has the value it has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit

from relay.links.status_mailbox import STATUS_BACKLOG

__all__ = [
    "CONNECT_TIMEOUT_MIN_S",
    "DEGRADED_RTT_S",
    "FAILBACK_INTERVAL_S",
    "PUBLISH_TIMEOUT_S",
    "RECONNECT_MAX_S",
    "RECONNECT_MIN_S",
    "STABLE_SESSION_MIN_S",
    "BrokerConfig",
    "MqttSettings",
    "connect_timeout_for",
    "parse_topic",
    "topic_for",
]

NODE_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
INBOUND_CHANNELS: Final = frozenset({"msg", "rcpt", "sync", "status"})

# -- policy: what the node runs with, and why ---------------------------------------------------

# Reconnect backoff ("equal jitter", relay.backoff): 0.5 s doubling to 2 s, so 1-2 s between
# rounds once it has grown. Failback within 5 s (docs/failover.md, bench/failover.py) needs the
# first attempt after a path returns to start soon; a few hundred nodes retrying every 1-2 s are
# no load for a broker, and a refused connect costs one round trip.
RECONNECT_MIN_S: Final = 0.5
RECONNECT_MAX_S: Final = 2.0
# A session that stayed up this long (or reconnect_max_s, if longer) was stable: the backoff
# starts afresh after it ends.
STABLE_SESSION_MIN_S: Final = 10.0
# A connect attempt (TCP, TLS, CONNACK, SUBACK, status PUBACK) is bounded by the probe timeout:
# a broker that has not answered CONNECT within it is down by our own measure, and behind a
# blackhole the next attempt only starts after this one has timed out. Never under this floor.
CONNECT_TIMEOUT_MIN_S: Final = 1.0
DEGRADED_RTT_S: Final = 1.0  # a probe echo this late (or a probe outstanding this long)
FAILBACK_INTERVAL_S: Final = 60.0  # on a less preferred broker, try the better ones this often
PUBLISH_TIMEOUT_S: Final = 10.0  # no PUBACK within this: LinkUnavailable (the outbox retries)


def connect_timeout_for(probe_timeout_s: float) -> float:
    """The connect timeout that goes with a probe timeout (see ``CONNECT_TIMEOUT_MIN_S``)."""
    return max(probe_timeout_s, CONNECT_TIMEOUT_MIN_S)


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """One broker: ``mqtt://host:port`` or ``mqtts://host:port`` (TLS, client cert optional)."""

    url: str
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(
                f"broker url must be mqtt://host:port or mqtts://host:port: {self.url}"
            )
        if parts.path not in ("", "/") or parts.query or parts.username:
            raise ValueError(f"broker url takes no path, query or credentials: {self.url}")
        _ = parts.port  # raises ValueError for a bad port
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate needs both cert and key")
        if parts.scheme == "mqtt" and any(p is not None for p in (self.ca, self.cert)):
            raise ValueError(f"ca/cert/key given for a plain mqtt:// url: {self.url}")

    @property
    def host(self) -> str:
        host = urlsplit(self.url).hostname
        assert host is not None  # checked in __post_init__
        return host

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        return port if port is not None else (8883 if self.tls else 1883)

    @property
    def tls(self) -> bool:
        return self.url.startswith("mqtts:")


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """Everything the link needs; the brokers are in order of preference."""

    node: str
    brokers: tuple[BrokerConfig, ...]
    topic_prefix: str = "crisis"
    protocol: Literal["v5", "v311"] = "v5"
    session_expiry_s: int = 86400
    keepalive_s: int = 30
    probe_interval_s: float = 1.0
    probe_timeout_s: float = 3.0
    degraded_rtt_s: float = DEGRADED_RTT_S
    max_inbound_bytes: int = 4096
    reconnect_min_s: float = RECONNECT_MIN_S
    reconnect_max_s: float = RECONNECT_MAX_S
    connect_timeout_s: float = connect_timeout_for(3.0)  # of the default probe_timeout_s
    failback_interval_s: float = FAILBACK_INTERVAL_S
    publish_timeout_s: float = PUBLISH_TIMEOUT_S
    inbound_queue: int = 1000  # also the MQTT v5 Receive Maximum
    # Messages read from the broker ahead of the engine (held in memory, ~0.6 KB each) before
    # the link stops reading: above a kit broker's max_queued_messages, so only a broker that
    # holds more than that for us is ever slowed by TCP flow control (docs/mqtt.md).
    read_ahead: int = 20_000
    # Senders whose newest status waits for the engine (relay.links.status_mailbox).
    status_backlog: int = STATUS_BACKLOG

    def __post_init__(self) -> None:
        if not NODE_RE.fullmatch(self.node):
            raise ValueError(f"node name must match {NODE_RE.pattern}: {self.node!r}")
        if not self.brokers:
            raise ValueError("at least one broker is needed")
        levels = self.topic_prefix.split("/")
        if not all(levels) or any(c in self.topic_prefix for c in "+#\0"):
            raise ValueError(f"bad topic prefix {self.topic_prefix!r}")
        if not 0 < self.probe_interval_s < self.probe_timeout_s:
            raise ValueError("need 0 < probe_interval_s < probe_timeout_s")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError("need 0 < reconnect_min_s <= reconnect_max_s")
        for name in ("connect_timeout_s", "publish_timeout_s", "failback_interval_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("max_inbound_bytes", "inbound_queue", "read_ahead", "status_backlog"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.keepalive_s <= 0 or self.session_expiry_s <= 0:
            raise ValueError("keepalive_s and session_expiry_s must be positive")


# -- topics --------------------------------------------------------------------------------------


def topic_for(prefix: str, node: str, channel: str) -> str:
    """``<prefix>/<node>/<channel>``."""
    return f"{prefix}/{node}/{channel}"


def parse_topic(prefix: str, own_node: str, topic: str) -> tuple[str, str] | None:
    """Return ``(node, channel)`` for a topic in our layout, else ``None``.

    Channels: msg, rcpt, sync, status for any node; probe only for ``own_node``.
    """
    head = prefix + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head) :].split("/")
    if len(parts) != 2:
        return None
    node, channel = parts
    if not NODE_RE.fullmatch(node):
        return None
    if channel in INBOUND_CHANNELS or (channel == "probe" and node == own_node):
        return node, channel
    return None
