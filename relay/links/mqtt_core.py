"""The MQTT link's decisions, sans-I/O: liveness, broker preference and reconnect timing.

Time is always a parameter (``now``, monotonic seconds); nothing here sleeps, reads a clock,
touches a socket or imports asyncio or aiomqtt (relay.links.mesh_core's shape, after aioquic).
``relay.links.mqtt`` is the pump: it connects where ``connect_order()`` says, feeds what happens
in, carries out the actions it drains with ``actions()`` and sleeps until ``get_timer()``::

    session_started / session_ended / round_failed   the connection's life
    message_read(now)                                anything at all read from the broker
    probe_echo(payload, now)                         our probe came back through the broker
    handle_timer(now) at get_timer()                 probe due, degraded, down, failback due
      ──▶ SendProbe, StateChanged, EndSession, TryFailback, BadProbe

Decisions:

* Liveness is measured, not assumed: a QoS 0 probe ``<token>:<seq>`` to our own probe topic
  every ``probe_interval_s``. A probe outstanding for ``degraded_rtt_s``, or an echo that slow,
  is "degraded"; an echo under the threshold with no other probe overdue is "up" again
  (hysteresis: one fast echo does not hide an overdue probe).
* "Down" needs both: no echo for ``probe_timeout_s`` *and* nothing else read for that long.
  Behind a backlog (after an overload) the echo waits behind messages the broker has already
  written to us; while those keep coming the broker is alive, and reconnecting would only make
  it send the backlog again (a flood once made a healthy link reconnect 115 times in 7 min).
  So a blackhole is reported between ``probe_timeout_s`` and ``probe_timeout_s +
  probe_interval_s`` after it starts.
* Brokers are in order of preference. A round tries each once, starting after the broker that
  just failed; on a less preferred broker the more preferred ones are tried every
  ``failback_interval_s``, and the link hands over (no "down" in between) when one accepts.
* Between rounds, and after a session ends, the wait is ``relay.backoff.equal_jitter``
  (``reconnect_min_s`` doubling to ``reconnect_max_s``) counted from the start of the attempt
  that failed; it starts afresh after a stable session. A session ended to have the broker
  re-send what our full inbound queue dropped reconnects at once, to the same broker.
* A resumed session (CONNACK session present) is not subscribed again and does not wait for
  its status PUBACK: the session kept the subscriptions, and the broker first sends what it kept
  for us; after an overload a SUBACK behind 20,000 messages made every reconnect time out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final

from relay.backoff import equal_jitter
from relay.links.mqtt_config import STABLE_SESSION_MIN_S, MqttSettings
from relay.vocab import LinkState

__all__ = [
    "Action",
    "BadProbe",
    "ConnectPlan",
    "EndSession",
    "LinkState",
    "MqttCore",
    "SendProbe",
    "StateChanged",
    "TryFailback",
    "connect_plan",
    "reconnect_delay",
]

TOKEN_LEN: Final = 16  # hex characters of a session's probe token


# ------------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class SendProbe:
    """Publish ``payload`` with QoS 0 on our own probe topic now."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The link's state or broker changed (``broker`` indexes the settings' brokers)."""

    state: LinkState
    broker: int | None
    reason: str
    session_present: bool = False


@dataclass(frozen=True, slots=True)
class EndSession:
    """Abort the current connection (no DISCONNECT: the broker publishes our Will)."""

    reason: str


@dataclass(frozen=True, slots=True)
class TryFailback:
    """Try to connect to these more preferred brokers, in order; report ``failback_failed``
    when none accepts, or end the session with ``handover`` when one does."""

    brokers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BadProbe:
    """Bytes on our probe topic that are not a probe of ours: reject them as ``bad-probe``."""

    size: int


Action = SendProbe | StateChanged | EndSession | TryFailback | BadProbe


# ------------------------------------------------------------------------------- pure rules


@dataclass(frozen=True, slots=True)
class ConnectPlan:
    """What a fresh connection still has to do once CONNACK has come."""

    subscribe: bool
    await_status_ack: bool
    subscribe_qos0: bool = False  # only the QoS 0 channels (status, probe) again


def connect_plan(*, session_present: bool, v311: bool = False) -> ConnectPlan:
    """A resumed session keeps its subscriptions, and its status PUBACK comes behind whatever
    the broker kept for us: neither subscribe nor wait. A new session does both.

    Except on MQTT 3.1.1: RabbitMQ 3.10 keeps QoS 0 subscriptions in transient queues that die
    with the connection (or with the cluster member that held them), though the session resumes;
    without subscribing them again, probes and statuses stop after any reconnect (docs/scale.md,
    "A clustered broker"). The cost on mosquitto: the retained statuses come again, once per
    reconnect."""
    return ConnectPlan(
        subscribe=not session_present,
        await_status_ack=not session_present,
        subscribe_qos0=session_present and v311,
    )


def reconnect_delay(
    attempt: int, settings: MqttSettings, rng: random.Random, *, waited: float = 0.0
) -> float:
    """Seconds to wait before connect round ``attempt + 1``, counted from the start of the
    attempt that failed ``waited`` seconds ago: an attempt that hung until its timeout behind a
    blackhole has waited already; one refused at once waits the whole delay."""
    delay = equal_jitter(
        attempt, base=settings.reconnect_min_s, cap=settings.reconnect_max_s, rng=rng
    )
    return max(0.0, delay - waited)


# ------------------------------------------------------------------------------- the core


@dataclass(slots=True)
class _Session:
    broker: int
    token: bytes
    began: float
    next_probe: float
    seq: int = 0
    outstanding: dict[int, float] = field(default_factory=dict)  # seq -> sent at
    last_read: float = float("-inf")
    next_failback: float | None = None  # None: on the first broker, or an attempt under way
    ending: bool = False  # declared down: no more probes or timers


class MqttCore:
    """Liveness, broker preference and reconnect timing of one MQTT link (see the module)."""

    def __init__(self, settings: MqttSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._actions: list[Action] = []
        self._state: LinkState = LinkState.DOWN
        self._broker: int | None = None
        self._session: _Session | None = None
        self._attempt = 0  # backoff steps since the last stable session
        self._start = 0  # the broker the next round begins with
        self.last_rtt: float | None = None
        self.counters: dict[str, int] = dict.fromkeys(
            ("probes_sent", "probes_answered", "probe_timeouts"), 0
        )

    # -- reading ---------------------------------------------------------------------------------

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def broker(self) -> int | None:
        """Index of the broker of the current (or last) state."""
        return self._broker

    def actions(self) -> list[Action]:
        """Drain what the pump must do now, in order."""
        out, self._actions = self._actions, []
        return out

    def connect_order(self) -> tuple[int, ...]:
        """The brokers to try in the next round, in order."""
        count = len(self.settings.brokers)
        return tuple((self._start + i) % count for i in range(count))

    # -- the connection's life -------------------------------------------------------------------

    def round_failed(self, now: float, *, began: float) -> float:
        """No broker of the round accepted; returns the wait before the next round."""
        delay = reconnect_delay(self._attempt, self.settings, self._rng, waited=now - began)
        self._attempt += 1
        self._start = 0
        return delay

    def session_started(
        self, broker: int, *, token: bytes, session_present: bool, now: float
    ) -> None:
        """Connected to ``broker`` (CONNACK, and a new session subscribed). ``token`` is the
        session's random probe token (``TOKEN_LEN`` bytes)."""
        if len(token) != TOKEN_LEN:
            raise ValueError(f"probe token must be {TOKEN_LEN} bytes")
        self._session = _Session(broker, token, began=now, next_probe=now)
        if broker > 0:
            self._session.next_failback = now + self.settings.failback_interval_s
        reason = "connected, session resumed" if session_present else "connected"
        self._set_state(LinkState.UP, broker, reason, session_present=session_present)

    def session_ended(
        self,
        now: float,
        *,
        reason: str,
        handover: bool = False,
        resend_wanted: bool = False,
        stopping: bool = False,
    ) -> float:
        """The current session is over; returns the wait before the next round (0 after a
        handover, which goes on with ``session_started`` for the new broker at once)."""
        session, self._session = self._session, None
        if session is None:
            raise RuntimeError("session_ended without a session")
        if not handover and not stopping:
            self._set_state(LinkState.DOWN, session.broker, reason)
        if handover or stopping:
            return 0.0
        if resend_wanted:  # not a fault: at once, same broker, for the broker's re-send
            self._attempt = 0
            self._start = session.broker
            return 0.0
        if now - session.began >= max(STABLE_SESSION_MIN_S, self.settings.reconnect_max_s):
            self._attempt = 0  # it was a stable session: start backoff afresh
        delay = reconnect_delay(self._attempt, self.settings, self._rng)
        self._attempt += 1
        self._start = (session.broker + 1) % len(self.settings.brokers)
        return delay

    def stopped(self) -> None:
        """The link stopped for good (``run()`` ended)."""
        self._session = None
        self._set_state(LinkState.DOWN, None, "stopped")

    def failback_failed(self, now: float) -> None:
        """None of a ``TryFailback``'s brokers accepted: try again after the interval."""
        if self._session is not None and self._session.broker > 0:
            self._session.next_failback = now + self.settings.failback_interval_s

    # -- liveness --------------------------------------------------------------------------------

    def message_read(self, now: float) -> None:
        """Something (anything) was read from the broker: it is alive, if perhaps slow."""
        if self._session is not None:
            self._session.last_read = max(self._session.last_read, now)

    def probe_failed(self, reason: str) -> None:
        """The probe could not even be queued: the connection is gone."""
        self._actions.append(EndSession(f"probe publish failed: {reason}"))

    def probe_echo(self, payload: bytes, now: float) -> None:
        """Bytes arrived on our probe topic."""
        token, _, seq_text = payload.partition(b":")
        if not seq_text.isdigit() or len(token) != TOKEN_LEN:
            self._actions.append(BadProbe(len(payload)))  # not a probe of ours
            return
        session = self._session
        if session is None or session.ending:
            return
        session.last_read = now
        if token != session.token:
            return  # a probe from one of our earlier connections, arriving late
        seq = int(seq_text)
        sent = session.outstanding.get(seq)
        if sent is None:
            return  # already answered or given up
        for old in [k for k in session.outstanding if k <= seq]:
            del session.outstanding[old]
        rtt = now - sent
        self.last_rtt = rtt
        self.counters["probes_answered"] += 1
        if rtt >= self.settings.degraded_rtt_s:
            self._set_state(LinkState.DEGRADED, session.broker, f"probe rtt {rtt:.2f} s")
        else:  # the probes still outstanding are younger than this one: none is overdue
            self._set_state(LinkState.UP, session.broker, f"probe rtt {rtt * 1000:.0f} ms")

    # -- timers ----------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When ``handle_timer`` must run next; ``None`` without a live session."""
        session = self._session
        if session is None or session.ending:
            return None
        wake = session.next_probe
        if session.next_failback is not None:
            wake = min(wake, session.next_failback)
        oldest = min(session.outstanding.values(), default=None)
        if oldest is not None:
            wake = min(wake, self._deadline(session, oldest))
            if self._state == "up":
                wake = min(wake, oldest + self.settings.degraded_rtt_s)
        return wake

    def handle_timer(self, now: float) -> None:
        session = self._session
        if session is None or session.ending:
            return
        s = self.settings
        oldest = min(session.outstanding.values(), default=None)
        if oldest is not None:
            if now >= self._deadline(session, oldest):
                self.counters["probe_timeouts"] += 1
                reason = f"no probe echo for {now - oldest:.1f} s"
                self._set_state(LinkState.DOWN, session.broker, reason)
                self._actions.append(EndSession(reason))
                session.ending = True  # until the pump reports session_ended
                return
            if now - oldest >= s.degraded_rtt_s:
                self._set_state(
                    LinkState.DEGRADED, session.broker, f"probe overdue {now - oldest:.1f} s"
                )
        if now >= session.next_probe:
            session.seq += 1
            session.outstanding[session.seq] = now
            session.next_probe = now + s.probe_interval_s
            self.counters["probes_sent"] += 1
            self._actions.append(SendProbe(b"%s:%d" % (session.token, session.seq)))
        if session.next_failback is not None and now >= session.next_failback:
            session.next_failback = None  # until failback_failed (or the handover)
            self._actions.append(TryFailback(tuple(range(session.broker))))

    def _deadline(self, session: _Session, oldest: float) -> float:
        return max(oldest, session.last_read) + self.settings.probe_timeout_s

    # -- state -----------------------------------------------------------------------------------

    def _set_state(
        self, state: LinkState, broker: int | None, reason: str, *, session_present: bool = False
    ) -> None:
        if state == self._state and broker == self._broker:
            return
        self._state, self._broker = state, broker
        self._actions.append(StateChanged(state, broker, reason, session_present))
