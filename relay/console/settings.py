"""The ``[console]`` table of relay.toml and the listening address rules.

[console]
users = "var/console-users.json"   # default: beside the store
tls_cert = "console.crt"           # required to listen on anything but loopback
tls_key = "console.key"
session_minutes = 30               # idle time after which a session ends (5..720)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from relay.config import Config, ConfigError

DEFAULT_LISTEN = "127.0.0.1:8080"
SESSION_MAX_S = 12 * 3600  # a session ends after 12 hours however active it is


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    users: Path
    tls_cert: Path | None
    tls_key: Path | None
    session_idle_s: int


def console_settings(cfg: Config) -> ConsoleSettings:
    t = cfg.extra.get("console") or {}
    unknown = set(t) - {"users", "tls_cert", "tls_key", "session_minutes"}
    if unknown:
        raise ConfigError(f"console: unknown key(s) {', '.join(sorted(unknown))}")
    base = cfg.path.resolve().parent

    def path(key: str) -> Path | None:
        value = t.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(f"console.{key}: must be a non-empty path")
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    cert, key = path("tls_cert"), path("tls_key")
    if (cert is None) != (key is None):
        raise ConfigError("console: tls_cert and tls_key go together")
    minutes = t.get("session_minutes", 30)
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 5 <= minutes <= 720:
        raise ConfigError(f"console.session_minutes: must be 5..720, got {minutes!r}")
    return ConsoleSettings(
        users=path("users") or cfg.store.parent / "console-users.json",
        tls_cert=cert,
        tls_key=key,
        session_idle_s=minutes * 60,
    )


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); raises ValueError with the reason."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere
