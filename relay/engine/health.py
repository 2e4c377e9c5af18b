"""Link health with hysteresis. Pure: the link reports what it measures, time is passed in.

A link reports ``up``, ``degraded`` or ``down`` from its own liveness measurement (for MQTT: probe
echoes every second, down after 3 s without one). Routing must not flap with it, so:

* **down is believed at once**: a message waiting for a link that just died should fail over now;
* **up is believed after a hold-down**: the link must stay up for ``hold_s`` before traffic moves
  back to it (default 2 s);
* **a flapping link is held down longer**: every down transition within ``flap_window_s`` of the
  previous one doubles the hold-down, up to ``max_hold_s`` (route-flap damping, as BGP does);
  a link that stays up for a whole window is forgiven.

``degraded`` counts as usable (it still carries traffic) but ranks below an ``up`` link of the
same kind.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.vocab import LinkState, LinkStateName

UP, DEGRADED, DOWN = LinkState.UP, LinkState.DEGRADED, LinkState.DOWN


@dataclass(slots=True)
class LinkHealth:
    hold_s: float = 2.0
    max_hold_s: float = 60.0
    flap_window_s: float = 60.0
    reported: LinkState = DOWN
    reported_at: float = 0.0
    usable_since: float | None = None  # when the current hold-down ends (None: link is down)
    last_down_at: float | None = None
    current_hold_s: float = 2.0
    changed_at: float = 0.0  # last change of the *effective* state
    _effective: LinkState = DOWN

    def report(self, measured: LinkState | LinkStateName, now: float) -> bool:
        """Record a measurement; returns True when the effective state changed."""
        if measured not in (UP, DEGRADED, DOWN):
            raise ValueError(f"unknown link state {measured!r}")
        state = LinkState(measured)
        if self.reported_at == 0.0 and self.changed_at == 0.0:
            self.changed_at = now  # the first report: "down since start", not since 1970
        if state == DOWN:
            if self.reported != DOWN:
                if self.last_down_at is not None and now - self.last_down_at < self.flap_window_s:
                    self.current_hold_s = min(self.current_hold_s * 2, self.max_hold_s)
                elif self.last_down_at is not None:
                    self.current_hold_s = self.hold_s
                self.last_down_at = now
            self.usable_since = None
        elif self.reported == DOWN:
            # The first connection is believed at once; a recovery after an outage is held.
            hold = self.current_hold_s if self.last_down_at is not None else 0.0
            self.usable_since = now + hold
        self.reported, self.reported_at = state, now
        return self._settle(now)

    def effective(self, now: float) -> LinkState:
        if self.reported == DOWN or self.usable_since is None or now < self.usable_since:
            return DOWN
        return self.reported

    def usable(self, now: float) -> bool:
        return self.effective(now) != DOWN

    def tick(self, now: float) -> bool:
        """Let time pass; returns True when a hold-down just ended."""
        return self._settle(now)

    def next_change_at(self) -> float | None:
        if self.reported != DOWN and self.usable_since is not None:
            return self.usable_since if self._effective == DOWN else None
        return None

    def _settle(self, now: float) -> bool:
        after = self.effective(now)
        if after == self._effective:
            return False
        self._effective = after
        self.changed_at = now
        return True
