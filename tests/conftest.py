"""Shared fixtures. Keep each fixture small and documented; put helpers in their own modules."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from relay.sim.broker import Mosquitto


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A plain mosquitto (anonymous, no persistence) on a free loopback port, stopped after."""
    with Mosquitto() as broker:
        yield broker


@pytest.fixture
def mosquitto_factory() -> Iterator[Callable[..., Mosquitto]]:
    """Start mosquitto processes with `Mosquitto(**options)`; all are stopped after the test."""
    started: list[Mosquitto] = []

    def start(**options: Any) -> Mosquitto:
        broker = Mosquitto(**options)
        started.append(broker)
        broker.start()
        return broker

    yield start
    for broker in reversed(started):
        broker.close()
