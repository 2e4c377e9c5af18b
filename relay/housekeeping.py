"""The daemon's housekeeping task: our signed status heartbeat on every link (peers use it to
tell who is reachable, gateways to take turns bridging; it carries our audit chain's head, a
checkpoint peers keep), signed audit checkpoints, and pruning of the audit log."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from relay.api_node import LinkView
from relay.backoff import exponential
from relay.engine.inputs import EngineInput, Refused
from relay.links import LinkDriver, LinkRefused, LinkUnavailable
from relay.store import ChainBroken, StoreFull

STATUS_INTERVAL_S = 5.0  # status heartbeat: peers count us cut off after 15 s of silence
PRUNE_INTERVAL_S = 300.0
CHECKPOINT_INTERVAL_S = 60.0  # a signed audit checkpoint when the chain moved (docs/store.md)
STATUS_REFUSED_MIN_S = 60.0  # after a broker refused our status: pause it, doubling up to 15 min
STATUS_REFUSED_MAX_S = 900.0


class Housekeeping:
    def __init__(
        self,
        *,
        regions: frozenset[str] | set[str],
        links: Mapping[str, LinkDriver],
        views: Mapping[str, LinkView],
        clock: Callable[[], float],
        log: Any,  # structlog's bound logger
        clock_warning: Callable[[], bool],
        prune: Callable[[], Awaitable[object]],
        report: Callable[[EngineInput], None],
        audit_head: Callable[[], dict[str, Any]],
        checkpoint: Callable[[], Awaitable[object]],
    ) -> None:
        self.regions = regions
        self.links = links
        self.views = views
        self.clock = clock
        self.log = log
        self._clock_warning = clock_warning
        self._prune = prune
        self._report = report
        self._audit_head = audit_head
        self._checkpoint = checkpoint
        # Per link: (refusals in a row, time before which we do not publish our status again).
        self._status_refused: dict[str, tuple[int, float]] = {}

    async def run(self) -> None:
        """Publish our status every ``STATUS_INTERVAL_S`` and prune the audit log."""
        last_prune = last_checkpoint = self.clock()
        while True:
            views = self.views.values()
            status = {
                "state": "online",
                "time": self.clock(),
                "regions": sorted(self.regions),
                "links": {n: v.state for n, v in self.views.items()},
                # A gateway: MQTT and a usable mesh link. Other gateways use this to take turns
                # bridging into the mesh (EngineConfig.bridge_slot_s).
                "gateway": "mqtt" in {v.kind for v in views}
                and any(v.kind == "mesh" and v.state != "down" for v in views),
                "clock_warning": self._clock_warning(),
                # Committed rows only: the signed status is a checkpoint peers keep of us.
                "audit": self._audit_head(),
            }
            for name, driver in self.links.items():
                await self.publish_status(name, driver, status)
            if self.clock() - last_checkpoint > CHECKPOINT_INTERVAL_S:
                last_checkpoint = self.clock()
                await self._checkpoint()
            if self.clock() - last_prune > PRUNE_INTERVAL_S:
                last_prune = self.clock()
                try:
                    await self._prune()
                except ChainBroken as exc:  # the rows stay: they are evidence
                    self.log.error("audit_chain_broken", error=str(exc),
                                   hint="run relay audit verify")  # fmt: skip
                except StoreFull as exc:
                    self.log.error("audit_prune_failed", error=str(exc))
            await asyncio.sleep(STATUS_INTERVAL_S)

    async def publish_status(self, name: str, driver: LinkDriver, status: dict[str, Any]) -> None:
        """Publish our status on one link. Broken: the next heartbeat tries again. Refused (an
        ACL that does not let us write our status topic): audit, count, warn, and pause the
        status on that link with a doubling backoff; the link carries everything else."""
        now = self.clock()
        refused, until = self._status_refused.get(name, (0, 0.0))
        if now < until:
            return
        try:
            await driver.publish_status(status)
        except LinkUnavailable as exc:
            self.log.debug("status_publish_failed", link=name, error=str(exc))
            return
        except LinkRefused as exc:
            refused += 1
            pause = exponential(refused - 1, base=STATUS_REFUSED_MIN_S, cap=STATUS_REFUSED_MAX_S)
            self._status_refused[name] = (refused, self.clock() + pause)
            self.log.warning(
                "status_refused",
                link=name,
                target=exc.target,
                reason=exc.reason,
                retry_in_s=pause,
                error=str(exc),
            )
            self._report(Refused(name, b"", exc.target, exc.reason))
            return
        self._status_refused.pop(name, None)
