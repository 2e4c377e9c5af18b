"""Loopback-only networking helpers shared by the simulation harness."""

from __future__ import annotations

import ipaddress
import secrets
import socket

__all__ = ["LOOPBACK", "free_port", "port_accepts", "require_loopback"]

LOOPBACK = "127.0.0.1"

# Ports are picked below Linux's ephemeral range (32768-60999 by default), so the kernel never
# hands one of them to an outgoing connection or to someone's bind(port=0) while a broker we
# stopped for a restart is briefly away from it.
_LOW, _HIGH = 20000, 32000


def require_loopback(host: str) -> str:
    """Return ``host`` if it is a literal loopback IPv4 address, else raise ``ValueError``."""
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError as exc:
        raise ValueError(f"{host!r} is not a literal IPv4 address") from exc
    if not address.is_loopback:
        raise ValueError(f"{host} is not a loopback address: the harness stays on 127.0.0.0/8")
    return host


def free_port(host: str = LOOPBACK, count: int = 1) -> int:
    """Return a TCP port on ``host`` such that it and the ``count - 1`` ports after it are free
    right now (racy by nature), e.g. for ``relay sim mesh --radios N --tcp-base PORT``."""
    require_loopback(host)
    rng = secrets.SystemRandom()
    for _ in range(200):
        base = rng.randrange(_LOW, _HIGH - count)
        if all(_free(host, port) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} free port(s) found on {host} in {_LOW}-{_HIGH}")


def _free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return not port_accepts(host, port)


def port_accepts(host: str, port: int, *, timeout: float = 0.2) -> bool:
    """Return whether something accepts TCP connections on ``host:port``."""
    require_loopback(host)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
