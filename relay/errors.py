"""Errors shared across layers that are not a peer's fault and not our bug."""

from __future__ import annotations


class CannotStart(Exception):
    """The node cannot start; the message is one line that names the file, what is wrong and what
    to do. ``relay run`` prints it (``relay: the node cannot start: …``) and exits with ``status``,
    without a traceback.
    """

    def __init__(self, message: str, *, status: int = 1) -> None:
        super().__init__(message)
        self.status = status
