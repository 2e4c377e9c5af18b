"""MqttCore on virtual time: liveness, degraded/down hysteresis, failback and reconnect timing."""

from __future__ import annotations

import functools
import heapq
import random
from collections.abc import Callable

import pytest

from relay.links.mqtt_config import BrokerConfig, MqttSettings
from relay.links.mqtt_core import (
    Action,
    BadProbe,
    EndSession,
    MqttCore,
    SendProbe,
    StateChanged,
    TryFailback,
    connect_plan,
)
from relay.vocab import LinkState

TOKEN = b"0123456789abcdef"


def _settings(brokers: int = 1, **overrides: float) -> MqttSettings:
    urls = tuple(BrokerConfig(f"mqtt://127.0.0.1:{1883 + i}") for i in range(brokers))
    return MqttSettings("a", urls, **overrides)  # type: ignore[arg-type]


class Broker:
    """A virtual broker path for one session: echoes each probe after ``rtt`` seconds, sends
    other messages when told, and can be blackholed (nothing comes back)."""

    def __init__(self, core: MqttCore, *, rtt: float = 0.005) -> None:
        self.core = core
        self.rtt = rtt
        self.blackholed = False
        self.now = 0.0
        self.log: list[tuple[float, Action]] = []
        self._arrivals: list[tuple[float, int, Callable[[float], None]]] = []
        self._n = 0

    def deliver_at(self, at: float, feed: Callable[[float], None]) -> None:
        heapq.heappush(self._arrivals, (at, self._n, feed))
        self._n += 1

    def _drain(self) -> None:
        for action in self.core.actions():
            self.log.append((self.now, action))
            if isinstance(action, SendProbe) and not self.blackholed:
                echo = functools.partial(self.core.probe_echo, action.payload)
                self.deliver_at(self.now + self.rtt, echo)

    def run_until(self, end: float) -> None:
        """Advance virtual time to ``end``, firing timers and arrivals in order."""
        self._drain()
        while True:
            timer = self.core.get_timer()
            arrival = self._arrivals[0][0] if self._arrivals else None
            nxt = min(t for t in (timer, arrival, end) if t is not None)
            if nxt >= end and (arrival is None or arrival > end) and (timer is None or timer > end):
                self.now = end
                return
            self.now = nxt
            if arrival is not None and arrival <= nxt:
                _, _, feed = heapq.heappop(self._arrivals)
                feed(self.now)
            else:
                self.core.handle_timer(self.now)
            self._drain()

    def states(self) -> list[tuple[float, str]]:
        return [(t, a.state) for t, a in self.log if isinstance(a, StateChanged)]

    def first(self, kind: type, since: float = 0.0) -> tuple[float, Action]:
        return next((t, a) for t, a in self.log if isinstance(a, kind) and t >= since)


def _state(core: MqttCore) -> str:
    return core.state  # a call, so that mypy does not narrow the property across inputs


def _started(settings: MqttSettings, *, broker: int = 0, rtt: float = 0.005) -> Broker:
    core = MqttCore(settings, rng=random.Random(1))
    sim = Broker(core, rtt=rtt)
    core.session_started(broker, token=TOKEN, session_present=False, now=0.0)
    return sim


@pytest.mark.parametrize("phase", [0.0, 0.13, 0.5, 0.87, 0.999])
def test_blackhole_is_detected_within_probe_timeout_plus_one_interval(phase: float) -> None:
    """Test that a blackhole starting at any point of the probe cycle is reported down between
    probe_timeout_s and probe_timeout_s + probe_interval_s after it starts, and the session
    is ended then (not before)."""
    s = _settings()
    sim = _started(s)
    sim.run_until(10.0 + phase)
    assert sim.states() == [(0.0, "up")]
    began = sim.now
    sim.blackholed = True
    sim.run_until(began + 10.0)
    down_at = next(t for t, state in sim.states() if state == "down")
    assert s.probe_timeout_s <= down_at - began <= s.probe_timeout_s + s.probe_interval_s
    assert sim.first(EndSession, since=began)[0] == down_at
    # Degraded first, once a probe has been outstanding for degraded_rtt_s.
    assert [st for _, st in sim.states()] == ["up", "degraded", "down"]
    assert sim.core.get_timer() is None  # no more probes on a session declared down


def test_healthy_link_sends_one_probe_per_interval_and_stays_up() -> None:
    """Test that with prompt echoes the link probes every interval and never changes state."""
    s = _settings()
    sim = _started(s)
    sim.run_until(30.0)
    sent = [t for t, a in sim.log if isinstance(a, SendProbe)]
    assert len(sent) == 31 and sent[:3] == [0.0, 1.0, 2.0]
    assert sim.states() == [(0.0, "up")]
    assert sim.core.counters == {"probes_sent": 31, "probes_answered": 30, "probe_timeouts": 0}
    assert sim.core.last_rtt == pytest.approx(0.005)


def test_a_late_echo_means_down_only_if_nothing_else_arrived() -> None:
    """Test that while other messages keep arriving (a backlog ahead of the echo) a long overdue
    probe leaves the link degraded, not down; down follows probe_timeout_s after they stop."""
    s = _settings()
    sim = _started(s)
    sim.run_until(5.0)
    sim.blackholed = True  # echoes stuck behind a backlog...
    for i in range(1, 200):  # ...while the backlog itself arrives, 50 messages per second
        sim.deliver_at(5.0 + i / 50, sim.core.message_read)
    sim.run_until(9.0)  # 4 s without an echo: past probe_timeout_s
    assert [st for _, st in sim.states()] == ["up", "degraded"]
    sim.run_until(20.0)
    last_read = 5.0 + 199 / 50
    down_at, _ = sim.first(EndSession)
    assert last_read + s.probe_timeout_s <= down_at <= last_read + s.probe_timeout_s + 0.001
    assert [st for _, st in sim.states()] == ["up", "degraded", "down"]


def test_degraded_hysteresis_only_a_fast_echo_makes_the_link_up_again() -> None:
    """Test that a probe outstanding for degraded_rtt_s makes the link degraded once, that
    slow echoes (and time passing) leave it degraded, and that only an echo faster than the
    threshold makes it up again."""
    s = _settings(probe_timeout_s=5.0)
    core = MqttCore(s, rng=random.Random(1))
    core.session_started(0, token=TOKEN, session_present=False, now=0.0)
    core.handle_timer(0.0)  # probe 1 at 0.0
    core.handle_timer(1.0)  # probe 2 at 1.0; probe 1 overdue
    core.handle_timer(2.0)  # probe 3 at 2.0
    core.actions()
    assert _state(core) == "degraded"
    core.probe_echo(TOKEN + b":1", 2.5)  # rtt 2.5 s
    core.probe_echo(TOKEN + b":2", 2.6)  # rtt 1.6 s
    core.handle_timer(2.7)
    assert _state(core) == "degraded"
    assert [a for a in core.actions() if isinstance(a, StateChanged)] == []  # no flapping
    core.probe_echo(TOKEN + b":3", 2.75)  # rtt 0.75 s: under the threshold
    assert _state(core) == "up"
    assert [a.state for a in core.actions() if isinstance(a, StateChanged)] == ["up"]
    core.handle_timer(3.0)  # probe 4
    core.probe_echo(TOKEN + b":4", 4.2)  # slow again: degraded at once, not at the next timer
    assert [a.state for a in core.actions() if isinstance(a, StateChanged)] == ["degraded"]


def test_echoes_of_an_earlier_connection_and_bad_probes() -> None:
    """Test that an echo carrying another session's token is ignored and bytes that are not a
    probe at all are reported as BadProbe."""
    core = MqttCore(_settings(), rng=random.Random(1))
    core.session_started(0, token=TOKEN, session_present=False, now=0.0)
    core.handle_timer(0.0)
    core.actions()
    core.probe_echo(b"fedcba9876543210:1", 0.01)
    assert core.counters["probes_answered"] == 0 and core.actions() == []
    core.probe_echo(b"hello", 0.02)
    core.probe_echo(TOKEN + b":x", 0.03)
    assert core.actions() == [BadProbe(5), BadProbe(len(TOKEN) + 2)]
    core.probe_echo(TOKEN + b":1", 0.04)
    assert core.counters["probes_answered"] == 1


def test_failback_is_tried_every_interval_and_a_handover_is_not_down() -> None:
    """Test that on a less preferred broker the core asks to try the better ones after
    failback_interval_s and again that long after a failed try, and that handing over to one
    reports the new broker up without a down in between."""
    s = _settings(brokers=3, failback_interval_s=60.0)
    sim = _started(s, broker=2)
    sim.run_until(59.0)
    assert not [a for _, a in sim.log if isinstance(a, TryFailback)]
    sim.run_until(61.0)
    at, tried = sim.first(TryFailback)
    assert at == 60.0 and tried == TryFailback((0, 1))
    sim.run_until(100.0)  # the attempt is under way: no second one
    assert len([a for _, a in sim.log if isinstance(a, TryFailback)]) == 1
    sim.core.failback_failed(100.0)
    sim.run_until(161.0)
    assert sim.first(TryFailback, since=101.0)[0] == 160.0
    assert sim.core.session_ended(161.0, reason="failback", handover=True) == 0.0
    sim.core.session_started(0, token=TOKEN, session_present=True, now=161.0)
    changes = [a for a in sim.core.actions() if isinstance(a, StateChanged)]
    assert changes == [StateChanged(LinkState.UP, 0, "connected, session resumed", True)]
    sim.run_until(400.0)  # on the most preferred broker: never a failback
    assert not [a for t, a in sim.log if isinstance(a, TryFailback) and t > 161.0]


def test_reconnect_order_and_backoff() -> None:
    """Test that after a session ends the next round starts with the next broker after one
    backoff step, the backoff grows to reconnect_max_s, starts afresh after a stable session,
    and that a session ended for the broker's re-send reconnects at once to the same broker."""
    s = _settings(brokers=3, reconnect_min_s=0.5, reconnect_max_s=2.0)
    core = MqttCore(s, rng=random.Random(4))
    assert core.connect_order() == (0, 1, 2)
    waits = [core.round_failed(float(i), began=float(i)) for i in range(5)]
    for wait, cap in zip(waits, (0.5, 1.0, 2.0, 2.0, 2.0), strict=True):
        assert cap / 2 <= wait <= cap
    assert core.round_failed(10.0, began=7.0) == 0.0  # an attempt that hung 3 s has waited
    core.session_started(1, token=TOKEN, session_present=False, now=20.0)
    wait = core.session_ended(21.0, reason="connection lost")
    assert 1.0 <= wait <= 2.0  # still backing off: that session lasted 1 s
    assert core.connect_order() == (2, 0, 1)
    assert core.state == "down"
    core.session_started(2, token=TOKEN, session_present=False, now=30.0)
    wait = core.session_ended(45.0, reason="connection lost")  # stable for 15 s
    assert 0.25 <= wait <= 0.5
    core.session_started(0, token=TOKEN, session_present=False, now=50.0)
    core.actions()
    assert core.session_ended(50.5, reason="re-send", resend_wanted=True) == 0.0
    assert core.connect_order()[0] == 0
    changes = [a for a in core.actions() if isinstance(a, StateChanged)]
    assert changes == [StateChanged(LinkState.DOWN, 0, "re-send")]


def test_stopping_reports_down_once_without_a_broker() -> None:
    """Test that a stop ends the session without a down of its own and then reports down
    with no broker, once."""
    core = MqttCore(_settings(), rng=random.Random(1))
    core.session_started(0, token=TOKEN, session_present=False, now=0.0)
    core.actions()
    assert core.session_ended(1.0, reason="left", stopping=True) == 0.0
    core.stopped()
    core.stopped()
    assert core.actions() == [StateChanged(LinkState.DOWN, None, "stopped")]


def test_a_resumed_session_is_not_subscribed_again() -> None:
    """Test that a resumed session neither subscribes nor waits for its status PUBACK, and a
    new one does both."""
    resumed, new = connect_plan(session_present=True), connect_plan(session_present=False)
    assert (resumed.subscribe, resumed.await_status_ack) == (False, False)
    assert (new.subscribe, new.await_status_ack) == (True, True)
    assert not resumed.subscribe_qos0 and not new.subscribe_qos0


def test_a_resumed_v311_session_subscribes_its_qos0_channels_again() -> None:
    """Test that on MQTT 3.1.1 a resumed session subscribes the status and probe channels again
    (RabbitMQ loses QoS 0 subscriptions with the connection) and a new one subscribes all."""
    resumed = connect_plan(session_present=True, v311=True)
    new = connect_plan(session_present=False, v311=True)
    assert (resumed.subscribe, resumed.subscribe_qos0) == (False, True)
    assert (new.subscribe, new.subscribe_qos0) == (True, False)


def test_a_probe_that_cannot_be_queued_ends_the_session() -> None:
    """Test that a failed probe publish asks the pump to end the session."""
    core = MqttCore(_settings(), rng=random.Random(1))
    core.session_started(0, token=TOKEN, session_present=False, now=0.0)
    core.actions()
    core.probe_failed("not connected")
    assert core.actions() == [EndSession("probe publish failed: not connected")]
