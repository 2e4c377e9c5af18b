"""Live progress of a drill: what happened (one line each) and a status line (phase, time,
decisions delivered so far, link states).

On a terminal the status line is redrawn in place; otherwise (a log, CI) it is printed as a line of
its own every ``every_s`` seconds, so the output stays readable.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from typing import TextIO

STATE_MARK = {"up": "up", "degraded": "deg", "down": "DOWN"}


def link_summary(links: Mapping[str, Mapping[str, str] | None]) -> str:
    """``vr07-a mqtt:up mesh:DOWN | vr07-b (not running)`` for each node."""
    parts = []
    for node, states in links.items():
        if states is None:
            parts.append(f"{node} (not running)")
        else:
            marks = " ".join(f"{name}:{STATE_MARK.get(s, s)}" for name, s in states.items())
            parts.append(f"{node} {marks}")
    return " | ".join(parts)


def status_line(
    elapsed: float,
    phase: str,
    delivered: int,
    expected: int,
    links: Mapping[str, Mapping[str, str] | None],
) -> str:
    return f"[{elapsed:6.1f} s] {phase} | delivered {delivered}/{expected} | " + link_summary(links)


class Progress:
    def __init__(self, out: TextIO, *, tty: bool | None = None, every_s: float = 5.0) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.every_s = every_s
        self._last_status = float("-inf")
        self._shown = ""

    def line(self, elapsed: float, text: str) -> None:
        """Something happened: print it on a line of its own."""
        self._clear()
        self.out.write(f"[{elapsed:6.1f} s] {text}\n")
        if self.tty and self._shown:
            self.out.write(self._shown)
        self.out.flush()

    def status(
        self,
        elapsed: float,
        phase: str,
        delivered: int,
        expected: int,
        links: Mapping[str, Mapping[str, str] | None],
    ) -> None:
        text = status_line(elapsed, phase, delivered, expected, links)
        if self.tty:
            width = shutil.get_terminal_size((120, 24)).columns
            self._clear()
            self._shown = text[: max(20, width - 1)]
            self.out.write(self._shown)
            self.out.flush()
        elif elapsed - self._last_status >= self.every_s:
            self._last_status = elapsed
            self.out.write(text + "\n")
            self.out.flush()

    def done(self) -> None:
        self._clear()
        self._shown = ""
        self.out.flush()

    def _clear(self) -> None:
        if self.tty and self._shown:
            self.out.write("\r\x1b[K")
