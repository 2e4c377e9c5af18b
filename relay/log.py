"""structlog set-up: JSON lines on stdout for journald (daemon), readable text for the CLI.

Under systemd (``JOURNAL_STREAM`` is set when stdout goes to the journal) each line starts with
the sd-daemon(3) priority prefix (``<4>`` for a warning, ``<3>`` for an error, …): journald strips
it and stores it as PRIORITY, so ``journalctl -u relay -p warning`` shows warnings and worse.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}  # fmt: skip


# sd-daemon(3): SD_ERR 3, SD_WARNING 4, SD_INFO 6, SD_DEBUG 7 (syslog priorities).
PRIORITIES = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}


def journal_prefixed(renderer: Any) -> Any:
    """Wrap a renderer so each line starts with ``<PRIORITY>`` from the event's level."""

    def render(logger: Any, name: str, event_dict: Any) -> str:
        prio = PRIORITIES.get(str(event_dict.get("level", name)), 6)
        return f"<{prio}>{renderer(logger, name, event_dict)}"

    return render


def configure(
    level: str = "info", fmt: str = "json", *, environ: Mapping[str, str] | None = None
) -> None:
    env = os.environ if environ is None else environ
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    if env.get("JOURNAL_STREAM"):
        renderer = journal_prefixed(renderer)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    # Libraries (paho, meshtastic) log through the standard library: keep them quiet but visible.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
