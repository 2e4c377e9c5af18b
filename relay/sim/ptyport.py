"""A pseudo-terminal standing in for a radio's USB serial port.

The library opens the slave side with pyserial (``exclusive=True``, 115200 baud); we keep the slave
open ourselves too, so reads on the master never fail with EIO while no host has the port open.
Writes that the host does not read pile up in the kernel and then in a bounded buffer here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Final

MAX_PENDING: Final = 64 * 1024


class PtyPort:
    """One pty; ``on_data`` gets what the host writes, ``write`` sends to the host."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_data: Callable[[bytes], None],
        *,
        link: str | None = None,
    ) -> None:
        self._loop = loop
        self._on_data = on_data
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.device = os.ttyname(self._slave)
        self.link = link
        if link is not None:
            path = Path(link)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            path.symlink_to(self.device)
        self._pending = bytearray()
        self.is_open = True
        loop.add_reader(self._master, self._readable)

    @property
    def path(self) -> str:
        """The path a host opens: the stable symlink if one was asked for, else the device."""
        return self.link or self.device

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO: no reader on the slave side right now
        if data:
            self._on_data(data)

    def write(self, data: bytes) -> bool:
        """Queue ``data`` for the host; False if the host has stopped reading (data dropped)."""
        if not self.is_open:
            return False
        if len(self._pending) + len(data) > MAX_PENDING:
            self._pending.clear()
            return False
        was_idle = not self._pending
        self._pending += data
        if was_idle:
            self._flush()
        return True

    def _flush(self) -> None:
        while self._pending:
            try:
                n = os.write(self._master, self._pending)
            except BlockingIOError:
                self._loop.add_writer(self._master, self._flush)
                return
            except OSError:
                self._pending.clear()
                break
            del self._pending[:n]
        self._loop.remove_writer(self._master)

    def close(self) -> None:
        if not self.is_open:
            return
        self.is_open = False
        self._loop.remove_reader(self._master)
        self._loop.remove_writer(self._master)
        os.close(self._master)
        os.close(self._slave)
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                Path(self.link).unlink()
