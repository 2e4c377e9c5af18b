"""systemd's service notification protocol (sd_notify(3)): the few lines of it the daemon needs.

systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket) to a Type=notify
service; the service sends datagrams such as ``READY=1`` or ``WATCHDOG=1`` to it. With
``WatchdogSec=`` systemd also sets ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``) and restarts the service
when no ``WATCHDOG=1`` arrives in time. Without these variables (tests, drills, a shell) every
call is a no-op, so the daemon runs the same with or without systemd.

Sending never blocks and never raises: a notification that cannot be delivered is counted in
``failures`` (systemd then notices on its own: a missed READY times out, a missed WATCHDOG
restarts the node).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if addr.startswith("@"):
            self.address = "\0" + addr[1:]  # an abstract socket
        elif addr.startswith("/"):
            self.address = addr
        self.watchdog_s: float | None = None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self.failures = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, state: str) -> bool:
        """Send ``state`` (newline-separated ``KEY=VALUE`` lines); False when it did not go."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(state.encode(), self.address)
        except OSError:
            self.failures += 1
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")
