"""Console sessions and login throttling: who is logged in, and who is locked out for a while."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from aiohttp import web

from relay.console.accounts import NAME, User

LOGIN_FAILURES = 5  # this many failures for one name within LOGIN_WINDOW_S ...
ADDRESS_FAILURES = 20  # (or this many from one address, over any names: password spraying)
LOGIN_WINDOW_S = 15 * 60.0
LOGIN_LOCK_S = 5 * 60.0  # ... lock the name (and the address) for this long


def see_other(location: str) -> web.Response:
    """A 303 redirect that can carry cookies (a raised HTTPSeeOther cannot, in aiohttp 4)."""
    return web.Response(status=303, headers={"Location": location})


@dataclass
class Session:
    user: User
    csrf: str
    created: float
    seen: float


SESSION = web.RequestKey("session", Session)


@dataclass
class Throttle:
    """Failed logins per key ("user:NAME", "addr:IP"): a name is locked after LOGIN_FAILURES,
    an address (all users of one crisis room may share it) only after ADDRESS_FAILURES."""

    failures: dict[str, deque[float]] = field(default_factory=dict)

    @staticmethod
    def limit(key: str) -> int:
        return ADDRESS_FAILURES if key.startswith("addr:") else LOGIN_FAILURES

    def locked_for(self, key: str, now: float) -> float:
        times = self.failures.get(key)
        if not times or len(times) < self.limit(key) or times[0] < now - LOGIN_WINDOW_S:
            return 0.0
        return max(0.0, times[-1] + LOGIN_LOCK_S - now)

    def failed(self, key: str, now: float) -> None:
        times = self.failures.setdefault(key, deque(maxlen=self.limit(key)))
        while times and times[0] < now - LOGIN_WINDOW_S:
            times.popleft()
        times.append(now)
        if len(self.failures) > 10_000:  # bounded: forget the oldest keys
            self.failures.pop(next(iter(self.failures)))

    def succeeded(self, key: str) -> None:
        self.failures.pop(key, None)


def views_safe(name: str) -> bool:
    """Whether a login name may be written to the audit log as it was typed."""
    return bool(NAME.match(name))
