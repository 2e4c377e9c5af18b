"""The MQTT link: the only module in the project that imports aiomqtt (and paho under it).

``MqttLink.run()`` is a supervisor the daemon runs in its TaskGroup until it cancels it. It keeps
one connection to the most preferred broker that works, with a persistent session, and reports
what happens as events on the ``on_event`` callback (called on the event loop thread; keep it
non-blocking: hand work to a queue). Broker and network faults never leave ``run()``: they become
``LinkStateChanged`` events, backoff and reconnects. Our own bugs (including an exception raised
by ``on_event``) propagate out of ``run()``.

Topic layout, liveness, sessions and the failure semantics of ``publish()`` are described in
``docs/mqtt.md``. In short:

* ``publish()`` sends QoS 1 and returns only after the broker's PUBACK with a success code. It
  raises ``LinkUnavailable`` when the link is down, goes down while waiting, or no PUBACK comes
  within ``publish_timeout_s``; ``PublishRejected`` when the PUBACK carries a failure reason code
  (MQTT v5, e.g. 135 "not authorised" from an ACL). After ``LinkUnavailable`` the message may or
  may not have reached the broker: the durable outbox retries and receivers dedupe by message id.
* Liveness is measured by the link: a QoS 0 probe to its own probe topic every
  ``probe_interval_s``. An echo older than ``degraded_rtt_s`` (or a probe outstanding that long)
  means "degraded"; no echo within ``probe_timeout_s`` means "down": the connection is torn down
  at once (no DISCONNECT, so the broker publishes our Last Will) and the supervisor reconnects.

* Inbound QoS 1 messages are acknowledged to the broker only when the consumer calls the
  ``ack`` of their ``Inbound`` event (the daemon does after the store commit): paho's manual
  acknowledgement, switched on in ``_Client.__init__``. With MQTT v5 the CONNECT carries
  ``ReceiveMaximum = inbound_queue``, so the broker never has more unacknowledged messages on
  their way to us than we can hold; it keeps the rest.

aiomqtt 2.5 internals this module relies on (checked against 2.5.1; see ``_Client``): the paho
client in ``Client._client``, the ``_on_connect``/``_on_disconnect``/``_on_publish``/
``_on_message`` callbacks, and the ``_connected``/``_disconnected``/``_queue`` attributes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import re
import secrets
import socket
import ssl
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import aiomqtt
import paho.mqtt.client as paho
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from relay.links import LinkError, LinkRefused, LinkUnavailable
from relay.vocab import OUTBOUND_CHANNELS, Channel, LinkState, OutboundChannelName

__all__ = [
    "BrokerConfig",
    "Channel",
    "ConnectFailed",
    "Inbound",
    "InboundRejected",
    "LinkEvent",
    "LinkState",
    "LinkStateChanged",
    "LinkUnavailable",
    "MqttLink",
    "MqttLinkError",
    "MqttSettings",
    "PublishRejected",
    "backoff_delay",
    "parse_topic",
    "topic_for",
]

InboundChannel = Channel  # msg, rcpt, sync, status (relay.vocab)
RejectReason = Literal["oversized", "wrong-topic", "queue-full", "bad-probe"]

_CHANNELS: Final = OUTBOUND_CHANNELS
_INBOUND_CHANNELS: Final = frozenset(Channel)
_NODE_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_OFFLINE: Final = b'{"state":"offline"}'
_LEAVE_TIMEOUT_S: Final = 2.0  # bound on the goodbye (offline status + DISCONNECT)
_QUEUE_HEADROOM: Final = 4  # client-side inbound queue = this x the Receive Maximum
_OVERFLOW_KEEP: Final = 100  # queue-full drops remembered until the reader reports them
# Channels subscribed with MQTT v5 No Local: our own publications there are not sent back to us
# (the engine would only drop them as duplicates). Status and probe keep their echo: the probe
# echo is the liveness measure, and our own retained status shows what the broker holds for us.
_NO_LOCAL: Final = frozenset({"msg", "rcpt", "sync"})


def _no_ack() -> None:
    """The ``ack`` of an event that needs none (QoS 0, or acknowledged by the link itself)."""


# -- configuration -------------------------------------------------------------------------------


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
    degraded_rtt_s: float = 1.0
    max_inbound_bytes: int = 4096
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    connect_timeout_s: float = 10.0
    failback_interval_s: float = 60.0
    publish_timeout_s: float = 10.0
    inbound_queue: int = 1000

    def __post_init__(self) -> None:
        if not _NODE_RE.fullmatch(self.node):
            raise ValueError(f"node name must match {_NODE_RE.pattern}: {self.node!r}")
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
        if self.max_inbound_bytes <= 0 or self.inbound_queue <= 0:
            raise ValueError("max_inbound_bytes and inbound_queue must be positive")
        if self.keepalive_s <= 0 or self.session_expiry_s <= 0:
            raise ValueError("keepalive_s and session_expiry_s must be positive")


# -- events and errors ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkStateChanged:
    """The link's state or broker changed. ``session_present`` is the CONNACK flag on "up"."""

    state: LinkState
    broker_url: str | None
    reason: str
    session_present: bool = False


@dataclass(frozen=True, slots=True)
class Inbound:
    """Bytes published by ``sender_node`` (our own node included), not decoded in any way.

    ``ack()`` sends the PUBACK: call it once the message is durably stored or finally refused.
    Until then the broker counts it against our Receive Maximum and re-sends it after a
    reconnect. An ack after the connection it came on has gone is dropped (the broker re-sends).
    """

    channel: InboundChannel
    sender_node: str
    payload: bytes
    broker_url: str
    retained: bool = False
    ack: Callable[[], None] = field(default=_no_ack, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class InboundRejected:
    """An inbound message we refused; ``size`` is its payload length (or count of drops)."""

    reason: RejectReason
    topic: str
    size: int
    broker_url: str


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """One connection attempt failed (refused, TLS handshake, timeout, ...); state unchanged."""

    broker_url: str
    error: str


LinkEvent = LinkStateChanged | Inbound | InboundRejected | ConnectFailed


# The link's errors are the shared tree of relay.links (broken vs refused); the names below are
# kept so callers of this module need not know where they live.
MqttLinkError = LinkError


class PublishRejected(LinkRefused):
    """The broker answered with a failure reason code (MQTT v5 PUBACK, e.g. 135)."""

    def __init__(self, message: str, *, reason_code: int, reason: str, topic: str) -> None:
        super().__init__(message, reason=reason, target=topic, code=reason_code)
        self.reason_code = reason_code


# -- topics (pure) -------------------------------------------------------------------------------


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
    if not _NODE_RE.fullmatch(node):
        return None
    if channel in _INBOUND_CHANNELS or (channel == "probe" and node == own_node):
        return node, channel
    return None


def backoff_delay(
    attempt: int, low: float, high: float, rng: random.Random, waited: float = 0.0
) -> float:
    """Seconds to wait before connect attempt ``attempt + 1``: "equal jitter" exponential
    backoff from ``low`` up to ``high``, counted from the start of the attempt that failed
    (``waited`` seconds ago). An attempt that hung until its timeout behind a blackhole has
    waited already; one that was refused at once waits the whole delay."""
    cap = min(high, low * 2.0**attempt)
    delay = cap / 2 + rng.uniform(0, cap / 2)
    return max(0.0, delay - waited)


# -- aiomqtt client with the few additions we need ----------------------------------------------


class _Client(aiomqtt.Client):
    """aiomqtt's client plus: PUBACK reason codes, CONNACK session flag, fast failure before
    CONNACK, an abortive close, and counted (not silent) drops when the inbound queue is full.

    aiomqtt 2.5 ignores the PUBACK reason code (a v5 "not authorised" looks like success), does
    not fail ``__aenter__`` when the socket dies before CONNACK (it waits for its timeout), and
    only logs when its bounded queue overflows.
    """

    def __init__(self, *args: Any, connect_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client.connect_timeout = connect_timeout  # TCP connect and TLS handshake
        # aiomqtt 2.5 builds its paho client without manual_ack, so paho sends the PUBACK as soon
        # as aiomqtt has queued the message, before we have stored it. paho's public switch turns
        # that off: every QoS 1 message is then acknowledged by ``MqttLink._ack`` only (tested in
        # tests/mqtt/test_ack.py, which fails if aiomqtt starts acknowledging on its own).
        self._client.manual_ack_set(True)
        self.session_present = False
        self.overflow: deque[tuple[str, int]] = deque(maxlen=_OVERFLOW_KEEP)
        self.overflow_count = 0
        self._acks: dict[int, asyncio.Future[ReasonCode]] = {}
        # (topic, handler) for our liveness probe's echo, set by the link once it serves: the
        # echo is handled as it is read off the socket, not behind a backlog of inbound
        # messages in the queue (a flood would otherwise make a healthy link look dead).
        self.probe: tuple[str, Callable[[bytes], None]] | None = None
        self.last_read = 0.0  # loop time of the last PUBLISH read from the broker

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        self.session_present = bool(flags.session_present)
        # paho leaves Nagle's algorithm on. A small publish (a receipt) written while our
        # previous small write (a PUBACK) is unacknowledged then waits for the broker's delayed
        # ACK, about 40 ms on Linux, on every hop. Each MQTT packet is a complete message here.
        sock = client.socket()
        if isinstance(sock, socket.socket):  # ssl.SSLSocket is one too
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        if not self._connected.done():
            self._connected.set_exception(
                aiomqtt.MqttCodeError(reason_code, "Connection lost before CONNACK")
            )
            self._connected.exception()  # retrieved: __aenter__ may have given up already
        super()._on_disconnect(client, userdata, flags, reason_code, properties)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        ack = self._acks.pop(mid, None)
        if ack is not None and not ack.done():
            ack.set_result(reason_code)
        super()._on_publish(client, userdata, mid, reason_code, properties)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self.last_read = self._loop.time()
        if self.probe is not None and message.topic == self.probe[0] and message.qos == 0:
            self.probe[1](bytes(message.payload))
            return
        if self._queue.full():
            # Not acknowledged: the broker keeps it and re-sends it after the reconnect that the
            # reader starts when it reports this. A broker that keeps our Receive Maximum never
            # gets here (v5); with v3.1.1 its own in-flight bound must stay below inbound_queue.
            self.overflow_count += 1
            self.overflow.append((message.topic, len(message.payload)))
            return
        super()._on_message(client, userdata, message)

    def publish_acked(self, topic: str, payload: bytes, *, retain: bool) -> asyncio.Future[Any]:
        """Queue a QoS 1 PUBLISH; the future gets the PUBACK's reason code."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        ack: asyncio.Future[ReasonCode] = self._loop.create_future()
        self._acks[info.mid] = ack

        def forget(done: asyncio.Future[ReasonCode]) -> None:
            if self._acks.get(info.mid) is done:
                del self._acks[info.mid]

        ack.add_done_callback(forget)
        return ack

    def ack(self, mid: int, qos: int) -> None:
        """Send the PUBACK for an inbound QoS 1 message (manual acknowledgement)."""
        self._client.ack(mid, qos)

    def publish_nowait(self, topic: str, payload: bytes) -> None:
        """Queue a QoS 0 PUBLISH (no acknowledgement exists)."""
        info = self._client.publish(topic, payload, qos=0)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")

    def abort(self) -> None:
        """Shut the socket down without a DISCONNECT: paho sees EOF, the broker our Will."""
        sock = self._client.socket()
        if isinstance(sock, socket.socket):  # ssl.SSLSocket included
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    async def close(self, *, graceful: bool) -> None:
        """Leave: DISCONNECT (graceful) or abort, then release aiomqtt's state, bounded."""
        if not graceful:
            self.abort()
        try:
            async with asyncio.timeout(_LEAVE_TIMEOUT_S):
                await self.__aexit__(None, None, None)
        except (aiomqtt.MqttError, TimeoutError, OSError):
            self.abort()  # the goodbye failed; make sure the socket goes
        if self._disconnected.done() and not self._disconnected.cancelled():
            self._disconnected.exception()  # retrieved: we know it went away


# -- the link ------------------------------------------------------------------------------------


class _ConnectFailed(Exception):
    """One connection attempt failed (a broker or network fault, handled by the supervisor)."""


@dataclass(slots=True, eq=False)
class _Session:
    index: int
    broker: BrokerConfig
    client: _Client
    log: Any
    ended: asyncio.Future[str]
    token: bytes = field(default_factory=lambda: secrets.token_hex(8).encode())
    seq: int = 0
    outstanding: dict[int, float] = field(default_factory=dict)
    pending: set[asyncio.Future[Any]] = field(default_factory=set)
    handover: tuple[int, _Client] | None = None
    unacked: int = 0  # QoS 1 messages handed on and not yet acknowledged
    resend_wanted: bool = False  # the inbound queue overflowed: reconnect once drained

    def end(self, reason: str) -> None:
        if not self.ended.done():
            self.ended.set_result(reason)


class _InboundAck:
    """The ``ack`` of one inbound message: sends its PUBACK once, however often it is called."""

    __slots__ = ("_link", "_mid", "_qos", "_session")

    def __init__(self, link: MqttLink, session: _Session, mid: int, qos: int) -> None:
        self._link, self._session, self._mid, self._qos = link, session, mid, qos
        if qos:
            session.unacked += 1

    def __call__(self) -> None:
        if self._qos:
            self._qos, qos = 0, self._qos
            self._link._ack(self._session, self._mid, qos)


class MqttLink:
    """An MQTT link with persistent sessions, measured liveness and broker failover."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        on_event: Callable[[LinkEvent], None],
        sign_offline: Callable[[], bytes] | None = None,
    ) -> None:
        self._settings = settings
        # With ``sign_offline`` the status is signed by the node (relay.engine.status): the Will
        # and the goodbye come from it, and no status is published before ``set_status``.
        self._sign_offline = sign_offline
        self._on_event = on_event
        self._log = structlog.get_logger("relay.links.mqtt").bind(link="mqtt", node=settings.node)
        self._state: LinkState = LinkState.DOWN
        self._broker_url: str | None = None
        self._session: _Session | None = None
        self._running = False
        self._rng = secrets.SystemRandom()
        self._tls: dict[int, ssl.SSLContext] = {}
        self._status: bytes | None = None if sign_offline else b'{"state":"online"}'
        self._stats: dict[str, int] = dict.fromkeys(
            (
                "connects",
                "connect_failures",
                "sessions_resumed",
                "sessions_new",
                "disconnects",
                "failbacks",
                "probes_sent",
                "probes_answered",
                "probe_timeouts",
                "published",
                "publish_unavailable",
                "publish_rejected",
                "inbound",
                "acked",
                "acks_dropped",
                "rejected_oversized",
                "rejected_wrong_topic",
                "rejected_queue_full",
                "rejected_bad_probe",
            ),
            0,
        )
        self._last_rtt: float | None = None

    # -- public ----------------------------------------------------------------------------------

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def broker_url(self) -> str | None:
        return self._broker_url

    def statistics(self) -> dict[str, object]:
        return {
            "state": self._state,
            "broker": self._broker_url,
            "probe_rtt_s": self._last_rtt,
            **self._stats,
        }

    def topic(self, channel: str) -> str:
        return topic_for(self._settings.topic_prefix, self._settings.node, channel)

    async def publish(self, channel: Channel | OutboundChannelName, payload: bytes) -> None:
        """Publish ``payload`` on our ``channel`` topic with QoS 1 and wait for the PUBACK."""
        if channel not in _CHANNELS:
            raise ValueError(f"unknown channel {channel!r}")
        await self._publish_acked(self.topic(channel), payload, retain=False)

    async def set_status(self, status: Mapping[str, object] | bytes) -> None:
        """Set our retained status: exact bytes (a signed status), or a mapping sent as JSON
        (``state`` defaults to "online").

        The status is kept and republished on every connect (the Will may have replaced it).
        While the link is down this only stores it; while up it waits for the PUBACK and raises
        like ``publish()``.
        """
        if isinstance(status, bytes):
            self._status = status
        else:
            self._status = json.dumps(
                {"state": "online", **status}, separators=(",", ":"), sort_keys=True
            ).encode()
        if self._usable_session() is not None:
            await self._publish_acked(self.topic("status"), self._status, retain=True)

    async def run(self) -> None:
        """Supervise connections until cancelled."""
        if self._running:
            raise RuntimeError("MqttLink.run() is already running")
        self._running = True
        try:
            await self._supervise()
        finally:
            self._running = False
            self._set_state(LinkState.DOWN, None, "stopped")

    # -- supervisor ------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        brokers = self._settings.brokers
        attempt = 0
        start = 0
        handover: tuple[int, _Client] | None = None
        while True:
            if handover is not None:
                index, client = handover
                handover = None
            else:
                round_began = loop.time()
                found = await self._connect_round(start)
                if found is None:
                    await self._backoff(attempt, waited=loop.time() - round_began)
                    attempt += 1
                    start = 0
                    continue
                index, client = found
            began = loop.time()
            session = _Session(
                index=index,
                broker=brokers[index],
                client=client,
                log=self._log.bind(broker=brokers[index].url),
                ended=loop.create_future(),
            )
            await self._serve(session)
            handover = session.handover
            if handover is not None:
                continue
            if session.resend_wanted:
                attempt = 0  # not a fault: reconnect at once for the broker's re-send
                start = index
                continue
            if loop.time() - began >= max(10.0, self._settings.reconnect_max_s):
                attempt = 0  # it was a stable session: start backoff afresh
            await self._backoff(attempt)
            attempt += 1
            start = (index + 1) % len(brokers)

    async def _backoff(self, attempt: int, waited: float = 0.0) -> None:
        s = self._settings
        delay = backoff_delay(attempt, s.reconnect_min_s, s.reconnect_max_s, self._rng, waited)
        self._log.debug("mqtt backoff", delay_s=round(delay, 3), attempt=attempt)
        await asyncio.sleep(delay)

    async def _connect_round(self, start: int) -> tuple[int, _Client] | None:
        count = len(self._settings.brokers)
        for index in ((start + i) % count for i in range(count)):
            try:
                return index, await self._connect(index)
            except _ConnectFailed as exc:
                url = self._settings.brokers[index].url
                self._log.warning("mqtt connect failed", broker=url, error=str(exc))
                self._on_event(ConnectFailed(url, str(exc)))
        return None

    async def _connect(self, index: int) -> _Client:
        """Connect, subscribe and publish our status, or raise ``_ConnectFailed``."""
        s = self._settings
        broker = s.brokers[index]
        v5 = s.protocol == "v5"
        properties: Properties | None = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = s.session_expiry_s
            # The broker drops what we would refuse anyway, so a hostile publisher cannot make
            # us buffer megabytes; between max_inbound_bytes and this limit we count rejections.
            properties.MaximumPacketSize = s.max_inbound_bytes * 4 + 1024
            # At most this many unacknowledged QoS 1 messages on their way to us: what our
            # inbound queue holds. We acknowledge only after the store commit, so overload
            # makes the broker hold the excess instead of us dropping it.
            properties.ReceiveMaximum = min(s.inbound_queue, 65535)
        tls_context = await self._tls_context(index) if broker.tls else None
        client = _Client(
            broker.host,
            broker.port,
            identifier=s.node,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else False,
            # v5: every connect must resume the session (the FACTS.md trap); paho refuses any
            # clean_start but its default for v3.1.1, where clean_session=False does the job.
            clean_start=False if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
            will=aiomqtt.Will(self.topic("status"), self._offline(), qos=1, retain=True),
            keepalive=s.keepalive_s,
            timeout=s.connect_timeout_s,
            username=broker.username,
            password=broker.password,
            tls_context=tls_context,
            # Room above the Receive Maximum for brokers that overstep it: mosquitto 2.0.11 keeps
            # it for the first window only, then each PUBACK releases up to a window more.
            max_queued_incoming_messages=s.inbound_queue * _QUEUE_HEADROOM,
            connect_timeout=s.connect_timeout_s,
        )
        entered = False
        try:
            async with asyncio.timeout(s.connect_timeout_s):
                await client.__aenter__()
                entered = True
                resumed = client.session_present
                # A resumed session keeps its subscriptions. And the broker sends what it kept
                # for us first: after an overload that is thousands of messages, and a SUBACK or
                # PUBACK behind them would make every reconnect time out (seen with 20,000).
                if not resumed:
                    await self._subscribe(client)
                elif not v5:
                    # RabbitMQ 3.10 keeps QoS 0 subscriptions in transient queues that die with
                    # the connection (or with the cluster member that held them), though the
                    # session resumes: without this, probes and statuses stop after any
                    # reconnect (docs/scale.md, "A clustered broker"). The cost on mosquitto:
                    # the retained statuses come again, once per reconnect.
                    await self._subscribe(client, qos0_only=True)
                if self._status is not None:
                    ack = client.publish_acked(self.topic("status"), self._status, retain=True)
                    if resumed:
                        ack.add_done_callback(functools.partial(self._status_acked, broker.url))
                    else:
                        self._status_acked(broker.url, ack, await ack)
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            self._stats["connect_failures"] += 1
            if entered:
                await client.close(graceful=False)
            else:
                client.abort()
            raise _ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            client.abort()  # cancelled mid-connect: leave nothing open behind us
            raise
        self._stats["connects"] += 1
        self._stats["sessions_resumed" if client.session_present else "sessions_new"] += 1
        return client

    def _status_acked(
        self, url: str, ack: asyncio.Future[ReasonCode], code: ReasonCode | None = None
    ) -> None:
        if code is None:
            if ack.cancelled() or ack.exception() is not None:
                return  # the connection went; the next one publishes the status again
            code = ack.result()
        if code.is_failure:
            # Not fatal: the link still works for reading; say so loudly.
            self._log.warning("mqtt status rejected", broker=url, code=str(code))

    async def _subscribe(self, client: _Client, *, qos0_only: bool = False) -> None:
        p = self._settings.topic_prefix
        # Status with QoS 0: the broker then queues no heartbeats for us while we are away (they
        # would crowd decisions out of max_queued_messages); the retained one comes on subscribe.
        channels = [(f"{p}/+/{c}", c, 1) for c in ("msg", "rcpt", "sync")]
        channels.append((f"{p}/+/status", "status", 0))
        channels.append((self.topic("probe"), "probe", 0))
        if qos0_only:
            channels = [c for c in channels if c[2] == 0]
        wanted: list[tuple[str, SubscribeOptions]] | list[tuple[str, int]]
        if self._settings.protocol == "v5":
            wanted = [
                (topic, SubscribeOptions(qos=qos, noLocal=c in _NO_LOCAL))
                for topic, c, qos in channels
            ]
        else:  # v3.1.1 has no No Local: our own echoes come back, and the driver drops them
            wanted = [(topic, qos) for topic, _, qos in channels]
        granted = await client.subscribe(wanted, timeout=self._settings.connect_timeout_s)
        codes = [c.value if isinstance(c, ReasonCode) else int(c) for c in granted]
        for (topic, _, _), code in zip(channels, codes, strict=True):
            if code >= 0x80:  # SUBACK failure codes (v5 reason codes, v3.1.1 0x80)
                raise aiomqtt.MqttCodeError(code, f"subscription to {topic} refused")

    async def _tls_context(self, index: int) -> ssl.SSLContext:
        context = self._tls.get(index)
        if context is None:
            context = await asyncio.to_thread(_make_tls_context, self._settings.brokers[index])
            self._tls[index] = context
        return context

    # -- one connected session -------------------------------------------------------------------

    async def _serve(self, session: _Session) -> None:
        s = self._settings
        log = session.log
        self._session = session
        self._set_state(
            LinkState.UP,
            session.broker.url,
            "connected" if not session.client.session_present else "connected, session resumed",
            session_present=session.client.session_present,
        )
        log.info("mqtt connected", session_present=session.client.session_present)
        probe_topic = self.topic("probe")
        session.client.probe = (
            probe_topic,
            lambda payload: self._probe_echo(session, probe_topic, payload),
        )
        graceful = stopping = False
        try:
            async with asyncio.TaskGroup() as tg:
                name = f"mqtt-{s.node}-{session.index}"
                tasks = [
                    tg.create_task(self._reader(session), name=f"{name}-reader"),
                    tg.create_task(self._prober(session), name=f"{name}-prober"),
                ]
                if session.index > 0:
                    tasks.append(tg.create_task(self._failback(session), name=f"{name}-failback"))
                # Shielded: if a task of the group fails, the group cancels this wait, and a
                # cancelled ``ended`` would hide that failure behind a CancelledError.
                reason = await asyncio.shield(session.ended)
                for task in tasks:
                    task.cancel()
            graceful = session.handover is not None
            log.info("mqtt session ended", reason=reason)
        except asyncio.CancelledError:
            # We are being stopped: say goodbye properly, unless the connection is already
            # known dead (then a goodbye would only wait for its timeout).
            stopping = True
            graceful = not session.ended.done() or session.handover is not None
            raise
        finally:
            self._stats["disconnects"] += 1
            if graceful:
                await self._leave(session)
            else:
                session.end("connection lost")  # wakes publishers waiting for a PUBACK
                self._session = None
                await session.client.close(graceful=False)
            if session.handover is None and not stopping:
                ended = session.ended
                why = ended.result() if ended.done() and not ended.cancelled() else "link error"
                self._set_state(LinkState.DOWN, session.broker.url, why)

    async def _leave(self, session: _Session) -> None:
        """Graceful goodbye: let pending PUBACKs arrive, mark us offline, DISCONNECT."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_LEAVE_TIMEOUT_S):
                if session.pending:
                    await asyncio.wait(session.pending)
                ack = session.client.publish_acked(
                    self.topic("status"), self._offline(), retain=True
                )
                await ack
        session.end("left")
        self._session = None
        await session.client.close(graceful=True)

    async def _reader(self, session: _Session) -> None:
        try:
            async for message in session.client.messages:
                self._handle(session, message)
                if session.client.overflow:
                    self._report_overflow(session)
                    # The dropped ones were not acknowledged: the broker re-sends them on the
                    # next connection (never within this one). Reconnect once everything taken
                    # in has been acknowledged: reconnecting at once would have the broker
                    # re-send all of it again, into the same full queue (a livelock), while
                    # draining first stores at least a queue's worth per connection.
                    session.resend_wanted = True
                    self._resend_if_drained(session)
        except aiomqtt.MqttError as exc:
            session.end(f"connection lost: {exc}")

    def _handle(self, session: _Session, message: aiomqtt.Message) -> None:
        payload = message.payload
        assert isinstance(payload, bytes)  # paho always hands us bytes
        topic = message.topic.value
        size = len(payload)
        url = session.broker.url
        ack = _InboundAck(self, session, message.mid, message.qos)
        if size > self._settings.max_inbound_bytes:  # before anything looks inside
            ack()  # refused for good: a re-send would be refused again
            self._reject(session, "oversized", topic, size)
            return
        parsed = parse_topic(self._settings.topic_prefix, self._settings.node, topic)
        match parsed:
            case None:
                ack()
                self._reject(session, "wrong-topic", topic, size)
            case (_, "probe"):
                ack()
                self._probe_echo(session, topic, payload)
            case (node, ("msg" | "rcpt" | "sync" | "status") as channel):
                self._stats["inbound"] += 1
                self._on_event(Inbound(Channel(channel), node, payload, url, message.retain, ack))
            case _:
                raise AssertionError(f"parse_topic returned {parsed!r}")

    def _ack(self, session: _Session, mid: int, qos: int) -> None:
        """Send the PUBACK of one inbound message, if the connection it came on is still ours."""
        session.unacked -= 1
        if session is not self._session or session.ended.done():
            self._stats["acks_dropped"] += 1  # the broker re-sends it on the new connection
            return
        session.client.ack(mid, qos)
        self._stats["acked"] += 1
        self._resend_if_drained(session)

    def _resend_if_drained(self, session: _Session) -> None:
        if session.resend_wanted and session.unacked == 0:
            session.end("inbound queue overflowed: reconnecting for the broker's re-send")

    def _reject(self, session: _Session, reason: RejectReason, topic: str, size: int) -> None:
        self._stats["rejected_" + reason.replace("-", "_")] += 1
        session.log.info("mqtt inbound rejected", reason=reason, topic=topic, size=size)
        self._on_event(InboundRejected(reason, topic, size, session.broker.url))

    def _report_overflow(self, session: _Session) -> None:
        while session.client.overflow:
            topic, size = session.client.overflow.popleft()
            self._reject(session, "queue-full", topic, size)

    # -- liveness --------------------------------------------------------------------------------

    async def _prober(self, session: _Session) -> None:
        s = self._settings
        loop = asyncio.get_running_loop()
        topic = self.topic("probe")
        next_send = loop.time()
        while True:
            now = loop.time()
            if now >= next_send:
                session.seq += 1
                session.outstanding[session.seq] = now
                try:
                    session.client.publish_nowait(topic, b"%s:%d" % (session.token, session.seq))
                except aiomqtt.MqttError as exc:
                    session.end(f"probe publish failed: {exc}")
                    return
                self._stats["probes_sent"] += 1
                next_send = now + s.probe_interval_s
            oldest = min(session.outstanding.values(), default=None)
            wake = next_send
            if oldest is not None:
                age = now - oldest
                # Down when no echo came for probe_timeout_s AND nothing else either: while the
                # broker keeps sending, a late echo waits behind messages it has already written
                # to us (a backlog after an overload), and reconnecting would only make it send
                # the backlog again.
                deadline = max(oldest, session.client.last_read) + s.probe_timeout_s
                if now >= deadline:
                    self._stats["probe_timeouts"] += 1
                    reason = f"no probe echo for {age:.1f} s"
                    session.log.warning("mqtt link down", reason=reason)
                    self._set_state(LinkState.DOWN, session.broker.url, reason)
                    session.end(reason)
                    return
                if age >= s.degraded_rtt_s:
                    self._set_state(
                        LinkState.DEGRADED, session.broker.url, f"probe overdue {age:.1f} s"
                    )
                else:
                    wake = min(wake, oldest + s.degraded_rtt_s)
                wake = min(wake, deadline)
            await asyncio.sleep(max(0.0, wake - loop.time()))  # timer: the next send or deadline

    def _probe_echo(self, session: _Session, topic: str, payload: bytes) -> None:
        token, _, seq_text = payload.partition(b":")
        if not seq_text.isdigit() or len(token) != len(session.token):
            self._reject(session, "bad-probe", topic, len(payload))  # not a probe of ours
            return
        if token != session.token:
            return  # a probe from one of our earlier connections, arriving late
        seq = int(seq_text)
        sent = session.outstanding.get(seq)
        if sent is None:
            return  # already answered or given up
        now = asyncio.get_running_loop().time()
        for old in [k for k in session.outstanding if k <= seq]:
            del session.outstanding[old]
        rtt = now - sent
        self._last_rtt = rtt
        self._stats["probes_answered"] += 1
        overdue = any(
            now - t >= self._settings.degraded_rtt_s for t in session.outstanding.values()
        )
        if rtt >= self._settings.degraded_rtt_s:
            self._set_state(LinkState.DEGRADED, session.broker.url, f"probe rtt {rtt:.2f} s")
        elif not overdue:
            self._set_state(LinkState.UP, session.broker.url, f"probe rtt {rtt * 1000:.0f} ms")

    # -- failback --------------------------------------------------------------------------------

    async def _failback(self, session: _Session) -> None:
        """Every failback interval, try the more preferred brokers; hand over to one that works."""
        while True:
            await asyncio.sleep(self._settings.failback_interval_s)  # timer by design
            for index in range(session.index):
                url = self._settings.brokers[index].url
                try:
                    client = await self._connect(index)
                except _ConnectFailed as exc:
                    session.log.debug("mqtt failback attempt failed", target=url, error=str(exc))
                    continue
                session.log.info("mqtt failing back", target=url)
                self._stats["failbacks"] += 1
                session.handover = (index, client)
                session.end(f"failback to {url}")
                return

    # -- publishing ------------------------------------------------------------------------------

    def _usable_session(self) -> _Session | None:
        session = self._session
        if session is None or self._state == "down" or session.ended.done():
            return None
        return session

    async def _publish_acked(self, topic: str, payload: bytes, *, retain: bool) -> None:
        session = self._usable_session()
        if session is None:
            self._stats["publish_unavailable"] += 1
            raise LinkUnavailable("mqtt link is down")
        try:
            ack = session.client.publish_acked(topic, payload, retain=retain)
        except aiomqtt.MqttError as exc:
            self._stats["publish_unavailable"] += 1
            raise LinkUnavailable(f"publish refused by the client: {exc}") from exc
        session.pending.add(ack)
        try:
            await asyncio.wait(
                (ack, session.ended),
                timeout=self._settings.publish_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            session.pending.discard(ack)
            if not ack.done():
                ack.cancel()
        if ack.cancelled():
            self._stats["publish_unavailable"] += 1
            if session.ended.done():
                raise LinkUnavailable(f"link went down before PUBACK ({session.ended.result()})")
            raise LinkUnavailable(f"no PUBACK within {self._settings.publish_timeout_s} s")
        code: ReasonCode = ack.result()
        if code.is_failure:
            self._stats["publish_rejected"] += 1
            raise PublishRejected(
                f"broker refused publish to {topic}: {code}",
                reason_code=code.value,
                reason=f"{code.value} {code}",
                topic=topic,
            )
        self._stats["published"] += 1

    def _offline(self) -> bytes:
        return self._sign_offline() if self._sign_offline is not None else _OFFLINE

    # -- state -----------------------------------------------------------------------------------

    def _set_state(
        self, state: LinkState, url: str | None, reason: str, *, session_present: bool = False
    ) -> None:
        if state == self._state and url == self._broker_url:
            return
        self._state = state
        self._broker_url = url
        self._log.info("mqtt link state", state=state, broker=url, reason=reason)
        self._on_event(LinkStateChanged(state, url, reason, session_present))


def _make_tls_context(broker: BrokerConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(broker.ca) if broker.ca else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if broker.cert is not None and broker.key is not None:
        context.load_cert_chain(broker.cert, broker.key)
    return context
