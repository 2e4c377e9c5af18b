"""Helpers for tests that run real relay nodes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from relay.envelope import Precedence
from relay.sim.broker import Mosquitto
from relay.sim.cluster import Cluster, IssuerSpec, NodeSpec

T = TypeVar("T")

ISSUERS = (
    IssuerSpec("national", ("all",)),
    IssuerSpec("vr07-rbt", ("region:VR07",)),
    IssuerSpec("vr05-rbt", ("region:VR05",)),
)
PRECEDENCES = list(Precedence)


def wait_until(check: Callable[[], T], timeout: float, what: str, step: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T = check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        time.sleep(step)
        last = check()
    return last


@contextmanager
def cluster_of(tmp: Path, nodes: list[NodeSpec]) -> Iterator[Cluster]:
    c = Cluster(tmp / "cluster")
    c.create(nodes, ISSUERS)
    try:
        for spec in nodes:
            c.start(spec.name)
        for spec in nodes:
            c.wait_ready(spec.name)
        yield c
    finally:
        c.stop_all()


def three_nodes(broker: Mosquitto | list[str]) -> list[NodeSpec]:
    urls = tuple(broker) if isinstance(broker, list) else (broker.url,)
    return [
        NodeSpec("hq", (), urls),
        NodeSpec("vr07-utrecht", ("VR07",), urls),
        NodeSpec("vr05-twente", ("VR05",), urls),
    ]


def inbox_ids(c: Cluster, node: str) -> list[str]:
    return [m["id"] for m in c.inbox(node)]
