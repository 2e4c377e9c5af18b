"""aiomqtt's client with the few additions the MQTT link needs: the ONE place that relies on
aiomqtt's internals (checked against aiomqtt 2.5.1 on paho-mqtt 2.2).

It also builds the client (``open_client``: persistent session, Will, the CONNECT limits) and
runs one connection attempt (``connect``: CONNACK, subscriptions, status). Public APIs first,
where they exist:

* TCP_NODELAY: aiomqtt's ``socket_options``. (paho leaves Nagle's algorithm on; a small publish,
  a receipt, written while our previous small write, a PUBACK, is unacknowledged then waits for
  the broker's delayed ACK, about 40 ms on Linux, on every hop.)
* Manual acknowledgement: paho's ``manual_ack_set(True)``. aiomqtt 2.5 builds its paho client
  without it, so paho would send the PUBACK as soon as aiomqtt has queued a message, before we
  have stored it; every QoS 1 message is acknowledged by the link's ``ack`` only.
* The probe echo: paho's ``message_callback_add`` for our probe topic, so it is handled as it is
  read off the socket, not in the queue behind a backlog of inbound messages (a flood would
  otherwise make a healthy link look dead). Statuses take the same path (``on_status``): they
  are QoS 0, coalesced per sender by the driver (relay.links.status_mailbox), and a retained
  burst of thousands at connect would otherwise fill the bounded queue, where an overflowed
  QoS 0 message is lost for good and a resumed session never gets the retained ones again.
* Counted drops and the time of the last read: aiomqtt's ``queue_type`` builds our
  ``InboundQueue``, whose ``put_nowait`` (what aiomqtt calls per message) notes the time and,
  when full, keeps the topic and size for a ``queue-full`` rejection instead of only logging.

Private, because aiomqtt 2.5 has no public way (each override calls aiomqtt's own first or
after, and ``tests/mqtt/test_ack.py`` fails when aiomqtt stops routing paho's callbacks to them):

* ``_on_connect``: the CONNACK's session-present flag (aiomqtt does not keep it).
* ``_on_disconnect``: fail ``__aenter__`` at once when the socket dies before CONNACK (a TLS 1.3
  server rejecting a missing client certificate does that after the handshake); aiomqtt waits
  for its timeout.
* ``_on_publish``: the PUBACK's reason code (aiomqtt ignores it: a v5 "not authorised" looks
  like success to ``Client.publish()``).
* ``Client._client`` (the paho client) for the above, ``_connected``/``_disconnected`` to fail
  or finish the connection, and ``__aexit__`` under a bound in ``close`` (aiomqtt never closes
  the socket when CONNACK times out, and has no abortive close).
* Flow control where the broker oversteps our Receive Maximum (``Client.pace``): the reader
  callback aiomqtt registers on the socket (``Client._on_socket_open``) is removed while we
  hold too much, and ``_read_socket`` (the same few lines as aiomqtt's) is registered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, Final, cast

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from relay.links.mqtt_config import BrokerConfig, MqttSettings, topic_for
from relay.links.mqtt_core import connect_plan

LEAVE_TIMEOUT_S: Final = 2.0  # bound on the goodbye (offline status + DISCONNECT)
OVERFLOW_KEEP: Final = 100  # queue-full drops remembered until the reader reports them
_NODELAY: Final = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
QUEUE_HEADROOM: Final = 4  # client-side inbound queue = this x the Receive Maximum
# Channels subscribed with MQTT v5 No Local: our own publications there are not sent back to us
# (the engine would only drop them as duplicates). Status and probe keep their echo: the probe
# echo is the liveness measure, and our own retained status shows what the broker holds for us.
NO_LOCAL: Final = frozenset({"msg", "rcpt", "sync"})


class InboundQueue(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's inbound queue, bounded, that notes when it was last fed and counts (instead of
    only logging) what it has no room for. Not acknowledged, a dropped message stays with the
    broker, which re-sends it after the reconnect the link starts when it reports the drop."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.loop_time = asyncio.get_running_loop().time
        self.on_put: Callable[[], None] | None = None  # after each message queued
        self.last_read = float("-inf")  # loop time of the last message put in (or dropped)
        self.overflow: deque[tuple[str, int]] = deque(maxlen=OVERFLOW_KEEP)
        self.overflow_count = 0

    def put_nowait(self, item: aiomqtt.Message) -> None:
        self.last_read = self.loop_time()
        if self.full():
            payload = item.payload
            self.overflow_count += 1
            self.overflow.append(
                (item.topic.value, len(payload) if isinstance(payload, bytes) else 0)
            )
            return
        # Nothing reads an inbound message's v5 properties, and paho's Properties object is
        # most of a queued message (about 6 KB of 6.5): without it read-ahead costs ~0.6 KB.
        item.properties = None
        super().put_nowait(item)
        if self.on_put is not None:
            self.on_put()


class Client(aiomqtt.Client):
    """aiomqtt's client plus PUBACK reason codes, the CONNACK session flag, fast failure before
    CONNACK, an abortive close, manual acknowledgement, a probe fast path and counted drops."""

    def __init__(
        self,
        *args: Any,
        connect_timeout: float,
        probe_topic: str,
        max_queued_incoming_messages: int,
        status_filter: str | None = None,
        **kwargs: Any,
    ) -> None:
        def make_queue(maxsize: int) -> InboundQueue:
            self.inbound = InboundQueue(maxsize)
            return self.inbound

        super().__init__(
            *args,
            # aiomqtt calls queue_type(maxsize=...): a factory is all it needs.
            queue_type=cast("type[asyncio.Queue[aiomqtt.Message]]", make_queue),
            max_queued_incoming_messages=max_queued_incoming_messages,
            socket_options=(_NODELAY,),
            **kwargs,
        )
        self._client.connect_timeout = connect_timeout  # TCP connect and TLS handshake
        self._client.manual_ack_set(True)
        self._client.message_callback_add(probe_topic, self._on_probe)
        if status_filter is not None:
            self._client.message_callback_add(status_filter, self._on_status)
        # Set by the link once it serves this connection: gets each probe echo's payload.
        self.on_probe: Callable[[bytes], None] | None = None
        # Set by the link before it connects: gets (topic, payload, retained) of each status.
        self.on_status: Callable[[str, bytes, bool], None] | None = None
        self.session_present = False
        self._acks: dict[int, asyncio.Future[ReasonCode]] = {}
        # Flow control where the broker oversteps our Receive Maximum (docs/mqtt.md): the link
        # hands on at most ``window`` unacknowledged messages (``room`` is set while it may
        # hand on more), and the socket is read ahead of it up to ``read_limit`` held messages
        # (``pace``). Both 0 (off) until the link serves the connection (``serve``): before
        # that nobody drains the queue, and connecting may read a SUBACK behind statuses.
        self.window = 0
        self.read_limit = 0
        self.room = asyncio.Event()
        self.unacked = 0  # QoS 1 messages handed on and not yet acknowledged
        # Messages queued and not yet let go (QoS 1: acknowledged; QoS 0: handled). A count,
        # not queue length + unacked: aiomqtt's iterator holds one in transit between the two.
        self.held = 0
        self.paused = False  # reading the socket stopped by ``pace``
        self.last_progress = 0.0  # loop time of the last PUBACK we sent (or of the pause)
        # Called with True when reading pauses, False when it resumes (the link counts them).
        self.on_pause: Callable[[bool, int], None] | None = None
        self.inbound.on_put = self._queued

    def _on_probe(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if message.qos:  # not one of our probes (QoS 0); refused below, acknowledged here
            client.ack(message.mid, message.qos)
        if self.on_probe is not None:
            self.on_probe(bytes(message.payload))

    def _on_status(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if message.qos:  # subscribed with QoS 0: nothing to store, so nothing to wait for
            client.ack(message.mid, message.qos)
        self.inbound.last_read = self.inbound.loop_time()
        if self.on_status is not None:
            self.on_status(message.topic, bytes(message.payload), bool(message.retain))

    # -- the three private overrides (see the module docstring) ---------------------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        self.session_present = bool(flags.session_present)
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

    # -- additions -------------------------------------------------------------------------------

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
        self.last_progress = self._loop.time()

    # -- flow control where the broker oversteps our Receive Maximum ------------------------------

    def serve(self, window: int, read_ahead: int) -> None:
        """Flow control on: the link's reader drains the queue from now on."""
        self.window = window
        self.read_limit = max(read_ahead, window * 2)
        if self.unacked < window:
            self.room.set()
        self.pace()

    def handed_on(self, qos: int) -> None:
        """The reader gave one message to the consumer (a QoS 1 one is held until its ack)."""
        if qos:
            self.unacked += 1
            if self.unacked >= self.window:
                self.room.clear()
        else:
            self.let_go(acked=False)

    def let_go(self, *, acked: bool) -> None:
        """One held message is done with: acknowledged (QoS 1) or handled (QoS 0)."""
        self.held -= 1
        if acked:
            self.unacked -= 1
            if self.unacked < self.window:
                self.room.set()
        self.pace()

    def _queued(self) -> None:
        self.held += 1
        self.pace()

    def pace(self) -> None:
        """Stop reading the socket while we hold more than ``read_limit`` messages; read again
        once we hold half of that. mosquitto 2.0.11 oversteps the Receive Maximum (each PUBACK
        lets it send up to a window more, docs/mqtt.md): the read-ahead keeps PUBACKs for our
        own publishes and the probe echoes flowing, and past it TCP flow control makes the
        broker hold the rest, with nothing dropped and nothing to re-send."""
        if self.read_limit <= 0:
            return
        held = self.held
        if not self.paused and held > self.read_limit:
            sock = self._client.socket()
            if sock is None:
                return
            self._loop.remove_reader(sock.fileno())
            self.paused = True
            self.last_progress = self._loop.time()
            if self.on_pause is not None:
                self.on_pause(True, held)
        elif self.paused and held <= self.read_limit // 2:
            self.paused = False
            self.inbound.last_read = self._loop.time()  # the probe deadline starts again
            sock = self._client.socket()
            if sock is not None:
                self._loop.add_reader(sock.fileno(), self._read_socket)
                self._loop.call_soon(self._read_socket)  # TLS: bytes may wait decrypted
            if self.on_pause is not None:
                self.on_pause(False, held)

    def _read_socket(self) -> None:
        """aiomqtt's own reader callback (``Client._on_socket_open``), registered again after a
        pause: read until paho has nothing more, including bytes TLS has already decrypted."""
        client = self._client
        try:
            while not self.paused:
                client.loop_read()
                sock = client.socket()
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending() > 0):
                    break
        except Exception as exc:  # noqa: BLE001  (as aiomqtt: a failed read = a broken connection)
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)

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
            async with asyncio.timeout(LEAVE_TIMEOUT_S):
                await self.__aexit__(None, None, None)
        except (aiomqtt.MqttError, TimeoutError, OSError):
            self.abort()  # the goodbye failed; make sure the socket goes
        if self._disconnected.done() and not self._disconnected.cancelled():
            self._disconnected.exception()  # retrieved: we know it went away


def make_tls_context(broker: BrokerConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(broker.ca) if broker.ca else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if broker.cert is not None and broker.key is not None:
        context.load_cert_chain(broker.cert, broker.key)
    return context


def open_client(
    s: MqttSettings, index: int, *, will: bytes, tls_context: ssl.SSLContext | None
) -> Client:
    """A client for broker ``index``, not yet connected: persistent session, our Will, and the
    limits that protect us (Maximum Packet Size, Receive Maximum, a bounded queue)."""
    broker = s.brokers[index]
    status_topic = topic_for(s.topic_prefix, s.node, "status")
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
    return Client(
        broker.host,
        broker.port,
        identifier=s.node,
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        clean_session=None if v5 else False,
        # v5: every connect must resume the session (the FACTS.md trap); paho refuses any
        # clean_start but its default for v3.1.1, where clean_session=False does the job.
        clean_start=False if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
        properties=properties,
        will=aiomqtt.Will(status_topic, will, qos=1, retain=True),
        keepalive=s.keepalive_s,
        timeout=s.connect_timeout_s,
        username=broker.username,
        password=broker.password,
        tls_context=tls_context,
        # A broker that oversteps the Receive Maximum (mosquitto 2.0.11: each PUBACK releases
        # up to a window more) is read ahead of the engine up to read_ahead, then held off by
        # not reading (``Client.pace``); the room above takes what one read of the socket
        # brings after the pause. Dropping (queue-full) is the last resort.
        max_queued_incoming_messages=max(s.read_ahead, s.inbound_queue * 2)
        + s.inbound_queue * QUEUE_HEADROOM,
        connect_timeout=s.connect_timeout_s,
        probe_topic=topic_for(s.topic_prefix, s.node, "probe"),
        status_filter=topic_for(s.topic_prefix, "+", "status"),
    )


async def subscribe(client: Client, s: MqttSettings, *, qos0_only: bool = False) -> None:
    """Subscribe a new session to every node's channels and our probe (``qos0_only``: only the
    status and probe channels, see ``connect_plan``); raise on a refusal."""
    p = s.topic_prefix
    # Status with QoS 0: the broker then queues no heartbeats for us while we are away (they
    # would crowd decisions out of max_queued_messages); the retained one comes on subscribe.
    channels = [(f"{p}/+/{c}", c, 1) for c in ("msg", "rcpt", "sync")]
    channels.append((f"{p}/+/status", "status", 0))
    channels.append((topic_for(p, s.node, "probe"), "probe", 0))
    if qos0_only:
        channels = [c for c in channels if c[2] == 0]
    wanted: list[tuple[str, SubscribeOptions]] | list[tuple[str, int]]
    if s.protocol == "v5":
        wanted = [
            (topic, SubscribeOptions(qos=qos, noLocal=c in NO_LOCAL)) for topic, c, qos in channels
        ]
    else:  # v3.1.1 has no No Local: our own echoes come back, and the driver drops them
        wanted = [(topic, qos) for topic, _, qos in channels]
    granted = await client.subscribe(wanted, timeout=s.connect_timeout_s)
    codes = [c.value if isinstance(c, ReasonCode) else int(c) for c in granted]
    for (topic, _, _), code in zip(channels, codes, strict=True):
        if code >= 0x80:  # SUBACK failure codes (v5 reason codes, v3.1.1 0x80)
            raise aiomqtt.MqttCodeError(code, f"subscription to {topic} refused")


class ConnectAttemptFailed(Exception):
    """One connection attempt failed: a broker or network fault (the message says which)."""


async def connect(
    client: Client,
    s: MqttSettings,
    index: int,
    *,
    status: bytes | None,
    on_status: Callable[[str, ReasonCode], None],
) -> None:
    """Connect ``client`` (from ``open_client(s, index, ...)``), subscribe a new session and
    publish our retained ``status``, all within ``connect_timeout_s``; on a fault close what was
    opened and raise ``ConnectAttemptFailed``. ``on_status(url, code)`` gets the status
    PUBACK's reason code: at once for a new session, whenever it comes for a resumed one
    (``connect_plan``)."""
    url = s.brokers[index].url
    entered = False
    try:
        async with asyncio.timeout(s.connect_timeout_s):
            await client.__aenter__()
            entered = True
            plan = connect_plan(session_present=client.session_present, v311=s.protocol != "v5")
            # Our status before the subscriptions: their SUBACK is followed by every retained
            # status on the broker (thousands at national scale), and a status PUBACK read behind
            # them could time this attempt out after the subscription was made, leaving a session
            # that the next connect resumes without the retained statuses.
            if status is not None:
                topic = topic_for(s.topic_prefix, s.node, "status")
                ack = client.publish_acked(topic, status, retain=True)
                if plan.await_status_ack:
                    on_status(url, await ack)
                else:
                    ack.add_done_callback(functools.partial(_status_done, on_status, url))
            if plan.subscribe:
                await subscribe(client, s)
            elif plan.subscribe_qos0:
                await subscribe(client, s, qos0_only=True)
    except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
        if entered:
            await client.close(graceful=False)
        else:
            client.abort()
        raise ConnectAttemptFailed(f"{type(exc).__name__}: {exc}") from exc
    except BaseException:
        client.abort()  # cancelled mid-connect: leave nothing open behind us
        raise


def _status_done(
    on_status: Callable[[str, ReasonCode], None], url: str, ack: asyncio.Future[ReasonCode]
) -> None:
    if not ack.cancelled() and ack.exception() is None:
        on_status(url, ack.result())  # else the connection went; the next one publishes again
