"""The MQTT link: with ``mqtt_client``, the only modules that import aiomqtt (and paho under it).

``MqttLink.run()`` is a supervisor the daemon runs in its TaskGroup until it cancels it. It keeps
one connection to the most preferred broker that works, with a persistent session, and reports
what happens as events on the ``on_event`` callback (called on the event loop thread; keep it
non-blocking: hand work to a queue). Broker and network faults never leave ``run()``: they become
``LinkStateChanged`` events, backoff and reconnects. Our own bugs (including an exception raised
by ``on_event``) propagate out of ``run()``.

This module is the pump: every decision (liveness, degraded/down, broker order, failback,
reconnect waits, what a resumed session skips) is made by ``relay.links.mqtt_core.MqttCore``
on virtual time; here its inputs are fed from sockets and its actions carried out. Topic layout,
liveness, sessions and the failure semantics of ``publish()`` are described in ``docs/mqtt.md``.
In short:

* ``publish()`` sends QoS 1 and returns only after the broker's PUBACK with a success code. It
  raises ``LinkUnavailable`` when the link is down, goes down while waiting, or no PUBACK comes
  within ``publish_timeout_s``; ``PublishRejected`` when the PUBACK carries a failure reason code
  (MQTT v5, e.g. 135 "not authorised" from an ACL). After ``LinkUnavailable`` the message may or
  may not have reached the broker: the durable outbox retries and receivers dedupe by message id.
* Inbound QoS 1 messages are acknowledged to the broker only when the consumer calls the
  ``ack`` of their ``Inbound`` event (the daemon does after the store commit): paho's manual
  acknowledgement (``relay.links.mqtt_client``). With MQTT v5 the CONNECT carries
  ``ReceiveMaximum = inbound_queue``, so the broker never has more unacknowledged messages on
  their way to us than we can hold; it keeps the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import secrets
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiomqtt
import structlog
from paho.mqtt.reasoncodes import ReasonCode

from relay.links import LinkUnavailable
from relay.links.mqtt_client import (
    LEAVE_TIMEOUT_S,
    Client,
    ConnectAttemptFailed,
    connect,
    make_tls_context,
    open_client,
)
from relay.links.mqtt_config import BrokerConfig, MqttSettings, parse_topic, topic_for
from relay.links.mqtt_core import (
    BadProbe,
    EndSession,
    MqttCore,
    SendProbe,
    StateChanged,
    TryFailback,
)
from relay.links.mqtt_events import (
    ConnectFailed,
    Inbound,
    InboundRejected,
    LinkEvent,
    LinkStateChanged,
    MqttLinkError,
    PublishRejected,
    RejectReason,
)
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
    "RejectReason",
    "parse_topic",
    "topic_for",
]

_CHANNELS: Final = OUTBOUND_CHANNELS
_OFFLINE: Final = b'{"state":"offline"}'
_COUNTERS: Final = (
    "connects", "connect_failures", "sessions_resumed", "sessions_new", "disconnects",
    "failbacks", "published", "publish_unavailable", "publish_rejected", "inbound", "acked",
    "acks_dropped", "rejected_oversized", "rejected_wrong_topic", "rejected_queue_full",
    "rejected_bad_probe", "read_pauses",
)  # fmt: skip


# -- the link ------------------------------------------------------------------------------------


class _ConnectFailed(Exception):
    """One connection attempt failed (a broker or network fault, handled by the supervisor)."""


@dataclass(slots=True, eq=False)
class _Session:
    index: int
    broker: BrokerConfig
    client: Client
    log: Any
    ended: asyncio.Future[str]
    token: bytes = field(default_factory=lambda: secrets.token_hex(8).encode())
    pending: set[asyncio.Future[Any]] = field(default_factory=set)
    handover: tuple[int, Client] | None = None
    resend_wanted: bool = False  # the inbound queue overflowed: reconnect once drained
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # the core's timer moved

    def end(self, reason: str) -> None:
        if not self.ended.done():
            self.ended.set_result(reason)


class _InboundAck:
    """The ``ack`` of one inbound message: sends its PUBACK once, however often it is called."""

    __slots__ = ("_link", "_mid", "_qos", "_session")

    def __init__(self, link: MqttLink, session: _Session, mid: int, qos: int) -> None:
        self._link, self._session, self._mid, self._qos = link, session, mid, qos
        session.client.handed_on(qos)

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
        self._core = MqttCore(settings, rng=secrets.SystemRandom())
        self._session: _Session | None = None
        self._running = False
        self._tls: dict[int, ssl.SSLContext] = {}
        self._status: bytes | None = None if sign_offline else b'{"state":"online"}'
        self._stats: dict[str, int] = dict.fromkeys(_COUNTERS, 0)

    # -- public ----------------------------------------------------------------------------------

    @property
    def state(self) -> LinkState:
        return self._core.state

    @property
    def broker_url(self) -> str | None:
        return self._url(self._core.broker)

    def statistics(self) -> dict[str, object]:
        return {
            "state": self.state,
            "broker": self.broker_url,
            "probe_rtt_s": self._core.last_rtt,
            **self._stats,
            **self._core.counters,
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
            self._core.stopped()
            self._carry_out(None, None)

    # -- the pump: the core's actions ------------------------------------------------------------

    def _url(self, index: int | None) -> str | None:
        return None if index is None else self._settings.brokers[index].url

    def _carry_out(self, session: _Session | None, tg: asyncio.TaskGroup | None) -> None:
        """Do what the core asks, until it asks nothing more."""
        while actions := self._core.actions():
            for action in actions:
                match action:
                    case StateChanged(state, broker, reason, session_present):
                        url = self._url(broker)
                        self._log.info("mqtt link state", state=state, broker=url, reason=reason)
                        self._on_event(LinkStateChanged(state, url, reason, session_present))
                    case SendProbe(payload) if session is not None:
                        try:
                            session.client.publish_nowait(self.topic("probe"), payload)
                        except aiomqtt.MqttError as exc:
                            self._core.probe_failed(str(exc))
                    case EndSession(reason) if session is not None:
                        if reason.startswith("no probe echo"):
                            session.log.warning("mqtt link down", reason=reason)
                        session.end(reason)
                    case BadProbe(size) if session is not None:
                        self._reject(session, "bad-probe", self.topic("probe"), size)
                    case TryFailback(brokers) if session is not None and tg is not None:
                        name = f"mqtt-{self._settings.node}-{session.index}-failback"
                        tg.create_task(self._failback(session, brokers), name=name)
                    case _:
                        raise AssertionError(f"{action!r} without a session to act on")

    async def _timer(self, session: _Session, tg: asyncio.TaskGroup) -> None:
        """Run the core's timer (probes, degraded, down, failback) for one session."""
        loop = asyncio.get_running_loop()
        while not session.ended.done():
            client = session.client
            now = loop.time()
            # While we do not read (``Client.pace``), no echo can come: the node, not the broker,
            # is behind. Only an inbound that stops moving (no PUBACK sent for a keepalive
            # period) ends the connection then, so that the broker re-sends what is stuck.
            if client.paused and now - client.last_progress >= self._settings.keepalive_s:
                reason = f"inbound stalled: no PUBACK for {now - client.last_progress:.0f} s"
                session.log.warning("mqtt inbound stalled", reason=reason)
                session.end(reason)
                return
            self._core.message_read(now if client.paused else client.inbound.last_read)
            self._core.handle_timer(now)
            self._carry_out(session, tg)
            wake = self._core.get_timer()
            if wake is None:
                return  # declared down: the session is ending
            session.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake - loop.time())):
                    await session.wake.wait()  # timer by design: the next probe or deadline

    # -- supervisor ------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        brokers = self._settings.brokers
        handover: tuple[int, Client] | None = None
        while True:
            if handover is not None:
                index, client = handover
            else:
                began = loop.time()
                found = await self._connect_round()
                if found is None:
                    await self._backoff(self._core.round_failed(loop.time(), began=began))
                    continue
                index, client = found
            session = _Session(
                index=index,
                broker=brokers[index],
                client=client,
                log=self._log.bind(broker=brokers[index].url),
                ended=loop.create_future(),
            )
            delay = await self._serve(session)
            handover = session.handover
            if delay:
                await self._backoff(delay)

    async def _backoff(self, delay: float) -> None:
        self._log.debug("mqtt backoff", delay_s=round(delay, 3))
        await asyncio.sleep(delay)

    async def _connect_round(self) -> tuple[int, Client] | None:
        for index in self._core.connect_order():
            try:
                return index, await self._connect(index)
            except _ConnectFailed as exc:
                url = self._settings.brokers[index].url
                self._log.warning("mqtt connect failed", broker=url, error=str(exc))
                self._on_event(ConnectFailed(url, str(exc)))
        return None

    async def _connect(self, index: int) -> Client:
        """Connect, subscribe and publish our status, or raise ``_ConnectFailed``."""
        s = self._settings
        broker = s.brokers[index]
        tls_context = await self._tls_context(index) if broker.tls else None
        client = open_client(s, index, will=self._offline(), tls_context=tls_context)
        client.on_status = functools.partial(self._status_heard, broker.url)
        try:
            await connect(client, s, index, status=self._status, on_status=self._status_acked)
        except ConnectAttemptFailed as exc:
            self._stats["connect_failures"] += 1
            raise _ConnectFailed(str(exc)) from exc
        self._stats["connects"] += 1
        self._stats["sessions_resumed" if client.session_present else "sessions_new"] += 1
        return client

    def _status_acked(self, url: str, code: ReasonCode) -> None:
        if code.is_failure:
            # Not fatal: the link still works for reading; say so loudly.
            self._log.warning("mqtt status rejected", broker=url, code=str(code))

    async def _tls_context(self, index: int) -> ssl.SSLContext:
        context = self._tls.get(index)
        if context is None:
            context = await asyncio.to_thread(make_tls_context, self._settings.brokers[index])
            self._tls[index] = context
        return context

    # -- one connected session -------------------------------------------------------------------

    async def _serve(self, session: _Session) -> float:
        """Serve one connection until it ends; returns the wait before the next round."""
        loop = asyncio.get_running_loop()
        log = session.log
        present = session.client.session_present
        self._session = session
        self._core.session_started(
            session.index, token=session.token, session_present=present, now=loop.time()
        )
        self._carry_out(session, None)
        log.info("mqtt connected", session_present=present)
        session.client.on_probe = functools.partial(self._probe_echo, session)
        session.client.on_pause = functools.partial(self._paused, session)
        session.client.serve(self._settings.inbound_queue, self._settings.read_ahead)
        graceful = stopping = False
        try:
            async with asyncio.TaskGroup() as tg:
                name = f"mqtt-{self._settings.node}-{session.index}"
                tasks = [
                    tg.create_task(self._reader(session), name=f"{name}-reader"),
                    tg.create_task(self._timer(session, tg), name=f"{name}-timer"),
                ]
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
            ended = session.ended
            why = ended.result() if ended.done() and not ended.cancelled() else "link error"
            delay = self._core.session_ended(
                loop.time(),
                reason=why,
                handover=session.handover is not None,
                resend_wanted=session.resend_wanted,
                stopping=stopping,
            )
            self._carry_out(None, None)
        return delay

    async def _leave(self, session: _Session) -> None:
        """Graceful goodbye: let pending PUBACKs arrive, mark us offline, DISCONNECT."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LEAVE_TIMEOUT_S):
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
        client = session.client
        inbound = client.inbound
        try:
            async for message in client.messages:
                if message.qos and not client.room.is_set():
                    # Our Receive Maximum towards the engine, where the broker oversteps it:
                    # the rest waits here, read but not handed on, until PUBACKs make room.
                    await client.room.wait()
                self._handle(session, message)
                if inbound.overflow:
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
            case (_, "probe"):  # only if the client's probe callback missed it
                ack()
                self._probe_echo(session, payload)
            case (node, ("msg" | "rcpt" | "sync" | "status") as channel):
                self._stats["inbound"] += 1
                self._on_event(Inbound(Channel(channel), node, payload, url, message.retain, ack))
            case _:
                raise AssertionError(f"parse_topic returned {parsed!r}")

    def _status_heard(self, url: str, topic: str, payload: bytes, retained: bool) -> None:
        """A status, handed on as it is read off the socket, never through the bounded queue
        (``relay.links.mqtt_client``): the driver keeps the newest per sender."""
        size = len(payload)
        parsed = parse_topic(self._settings.topic_prefix, self._settings.node, topic)
        reason: RejectReason | None = None
        if size > self._settings.max_inbound_bytes:
            reason = "oversized"
        elif parsed is None or parsed[1] != "status":
            reason = "wrong-topic"
        if reason is not None or parsed is None:
            reason = reason or "wrong-topic"
            self._stats["rejected_" + reason.replace("-", "_")] += 1
            self._log.info("mqtt inbound rejected", reason=reason, topic=topic, size=size)
            self._on_event(InboundRejected(reason, topic, size, url))
            return
        self._stats["inbound"] += 1
        self._on_event(Inbound(Channel.STATUS, parsed[0], payload, url, retained))

    def _probe_echo(self, session: _Session, payload: bytes) -> None:
        if session is not self._session:
            return  # a connection we are leaving (a failback candidate has none yet)
        self._core.probe_echo(payload, asyncio.get_running_loop().time())
        self._carry_out(session, None)
        session.wake.set()

    def _ack(self, session: _Session, mid: int, qos: int) -> None:
        """Send the PUBACK of one inbound message, if the connection it came on is still ours."""
        if session is not self._session or session.ended.done():
            session.client.unacked -= 1
            self._stats["acks_dropped"] += 1  # the broker re-sends it on the new connection
            return
        session.client.ack(mid, qos)
        session.client.let_go(acked=True)
        self._stats["acked"] += 1
        self._resend_if_drained(session)

    def _paused(self, session: _Session, paused: bool, held: int) -> None:
        if paused:
            self._stats["read_pauses"] += 1
        session.log.debug(
            "mqtt inbound reading paused" if paused else "mqtt inbound reading resumed",
            held=held,
            window=self._settings.inbound_queue,
        )

    def _resend_if_drained(self, session: _Session) -> None:
        if session.resend_wanted and session.client.unacked == 0:
            session.end("inbound queue overflowed: reconnecting for the broker's re-send")

    def _reject(self, session: _Session, reason: RejectReason, topic: str, size: int) -> None:
        self._stats["rejected_" + reason.replace("-", "_")] += 1
        session.log.info("mqtt inbound rejected", reason=reason, topic=topic, size=size)
        self._on_event(InboundRejected(reason, topic, size, session.broker.url))

    def _report_overflow(self, session: _Session) -> None:
        overflow = session.client.inbound.overflow
        while overflow:
            topic, size = overflow.popleft()
            self._reject(session, "queue-full", topic, size)

    # -- failback --------------------------------------------------------------------------------

    async def _failback(self, session: _Session, brokers: tuple[int, ...]) -> None:
        """Try the more preferred brokers the core names; hand over to the first that works."""
        for index in brokers:
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
        self._core.failback_failed(asyncio.get_running_loop().time())
        session.wake.set()

    # -- publishing ------------------------------------------------------------------------------

    def _usable_session(self) -> _Session | None:
        session = self._session
        if session is None or self._core.state == LinkState.DOWN or session.ended.done():
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
