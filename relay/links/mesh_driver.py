"""Adapts one Meshtastic radio to the daemon: ``RadioBridge`` (I/O) + ``MeshCore`` (protocol).

The driver is the thin asyncio pump of the sans-I/O core (aioquic style): feed bridge events and
the clock in, hand frames out to the bridge, turn core events into ``LinkHost`` calls, re-arm one
timer. One pump task and the bridge's supervisor run under the driver's TaskGroup.

``send(t)`` returns when the core reports the Transmit done (every frame on the air and ACKed,
implicitly for broadcasts: a neighbour rebroadcast it). It raises ``LinkUnavailable`` (broken) when
the radio is not connected, a frame is NAKed or never ACKed, or the transmission waits too long;
``LinkRefused`` when the radio or the core refuses it as it is (NAK TOO_LARGE or NO_CHANNEL, too
big for the mesh's frames).

``publish_status`` is deliberately a no-op: the daemon calls it every 5 s, and even a 40-byte
beacon costs about 0.6 s of LONG_FAST airtime, i.e. 430 s per hour -- more than the whole EU868
duty cycle. Mesh peers are known from the traffic they send; MQTT carries the status heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import structlog

from relay.config import RadioEntry
from relay.engine.ops import Rejected, Transmit
from relay.links import LinkHost, LinkRefused, LinkUnavailable
from relay.links.meshtastic_bridge import (
    PRIORITY_HIGH,
    PRIORITY_RELIABLE,
    BridgeSettings,
    RadioBridge,
    RadioError,
)
from relay.links.radio_events import Connected, Disconnected, Endpoint, PacketIn, RadioLora, Routed
from relay.mesh import Precedence
from relay.mesh.core import MeshCore
from relay.mesh.events import CoreSettings, Done, Received

log = structlog.get_logger("relay.links.mesh_driver")

EXPECTED_REGION = "EU_868"  # the duty-cycle budget (relay.mesh.ledger) is EU868's 10 %
MAX_IDLE_S = 1.0  # the pump wakes at least this often (link state follows the airtime budget)


class MeshDriver:
    """The ``LinkDriver`` for one ``[[mesh.radio]]``."""

    kind = "mesh"

    def __init__(
        self,
        host: LinkHost,
        radio: RadioEntry,
        *,
        preset: str | None = None,
        settings: CoreSettings | None = None,
        bridge_settings: BridgeSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = radio.name
        self._host = host
        self._clock = clock
        # The preset of [[mesh.radio]] unless the caller overrides it; given settings keep their
        # timers, the defaults scale with the preset (CoreSettings.for_preset).
        self.preset = preset or radio.preset
        self.core = MeshCore(
            CoreSettings.for_preset(self.preset)
            if settings is None
            else dataclasses.replace(settings, preset=self.preset),
            link=self.name,
        )
        self._wake = asyncio.Event()
        # Set whenever the pump handled something (frame out, radio event in): for observers
        # such as tests and status pages that wait for progress instead of polling.
        self.activity = asyncio.Event()
        self.bridge = RadioBridge(
            Endpoint(tcp=radio.tcp, serial=radio.serial),
            name=radio.name,
            settings=bridge_settings,
            notify=self._wake.set,
        )
        s = self.core.settings
        self.send_timeout_s = s.max_queue_s + s.ack_timeout_s + 30.0
        self._futures: dict[int, asyncio.Future[Done]] = {}
        self._state: tuple[str, str] = ("down", "not connected yet")
        self._connected = False
        self._down_detail = "not connected yet"
        # What the radio reported at the last connect (``_check_radio``); None before.
        self.radio_config: dict[str, Any] | None = None
        self.log = log.bind(link=radio.name)

    # -- LinkDriver -------------------------------------------------------------------------

    async def run(self) -> None:
        self._host.link_state(self.name, *self._state)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.bridge.run(), name=f"mesh-{self.name}-bridge")
            tg.create_task(self._pump(), name=f"mesh-{self.name}-pump")

    async def send(self, t: Transmit) -> None:
        if not self._connected:
            raise LinkUnavailable(f"{self.name}: radio not connected")
        ticket = self.core.submit(t, self._clock())
        fut: asyncio.Future[Done] = asyncio.get_running_loop().create_future()
        self._futures[ticket] = fut
        self._wake.set()
        try:
            done = await asyncio.wait_for(fut, self.send_timeout_s)
        except TimeoutError as exc:
            raise LinkUnavailable(f"{self.name}: transmission not done in time") from exc
        finally:
            self._futures.pop(ticket, None)
        if done.refused:
            raise LinkRefused(
                f"{self.name}: {done.detail}", reason=done.refused, target=f"radio {self.name}"
            )
        if not done.ok:
            raise LinkUnavailable(f"{self.name}: {done.detail}")

    async def publish_status(self, status: dict[str, Any]) -> None:
        """No beacon: it would not fit the duty cycle at the daemon's 5 s rate (module doc)."""

    def describe(self) -> dict[str, Any]:
        stats = self.core.statistics(self._clock())
        return {
            "mesh": {
                "state": self._state[0],
                "radio_config": self.radio_config,
                "radio": self.bridge.statistics(),
                "queue_depth": stats["queue"]["items"],  # type: ignore[index]
                **stats,
            }
        }

    # -- the pump ---------------------------------------------------------------------------

    async def _pump(self) -> None:
        core = self.core
        while True:
            self._drain_bridge()
            core.handle_timer(self._clock())
            while self._connected and (out := core.poll_transmit(self._clock())) is not None:
                priority = (
                    PRIORITY_HIGH if out.precedence is Precedence.FLASH else PRIORITY_RELIABLE
                )
                try:
                    await self.bridge.send(
                        out.payload,
                        ref=out.ref,
                        to=out.to,
                        want_ack=out.want_ack,
                        priority=priority,
                    )
                except RadioError as exc:
                    core.frame_failed(out.ref, str(exc), self._clock())
                else:
                    core.frame_sent(out.ref, self._clock())
                self.activity.set()
                self._drain_bridge()
            self._dispatch()
            now = self._clock()
            self._report_state(now)
            timer = core.get_timer()
            timeout = MAX_IDLE_S if timer is None else min(max(timer - now, 0.0), MAX_IDLE_S)
            self._wake.clear()
            if self.bridge.events.empty():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)

    def _drain_bridge(self) -> None:
        core = self.core
        while not self.bridge.events.empty():
            self.activity.set()
            event = self.bridge.events.get_nowait()
            now = self._clock()
            match event:
                case Connected(node_num=num, lora=lora):
                    self._connected = True
                    self.log.info("mesh_link_connected", node_num=f"!{num:08x}")
                    self._check_radio(lora)
                case Disconnected(detail=detail):
                    if self._connected:
                        core.link_lost(now)
                    self._connected = False
                    self._down_detail = detail
                case PacketIn(payload=payload, sender=sender):
                    core.frame_received(payload, sender, now)
                case Routed(ref=ref, error=error, implicit=implicit):
                    core.frame_routed(ref, error, implicit=implicit, now=now)

    def _check_radio(self, lora: RadioLora | None) -> None:
        """Compare the radio's own preset and region with what this node assumes: the airtime
        ledger, fragment timers and gateway slots follow ``[[mesh.radio]] preset``, and the duty
        cycle budget is EU868's. A mismatch is logged as a warning and shown in status."""
        warnings: list[str] = []
        if lora is None:
            warnings.append("radio-config-unknown")
        else:
            if lora.preset != self.preset:
                warnings.append("preset-mismatch")
            if lora.region != EXPECTED_REGION:
                warnings.append("region-not-eu868")
            if lora.override_duty_cycle:
                warnings.append("duty-cycle-overridden")
            if lora.channel_key in ("default", "none"):
                # Signatures keep decisions authentic either way; a public key lets anyone on
                # the band read the mesh traffic and inject noise (firmware_configs/README.md).
                warnings.append("public-channel-key")
        self.radio_config = {
            "preset": None if lora is None else lora.preset,
            "region": None if lora is None else lora.region,
            "channel_key": None if lora is None else lora.channel_key,
            "configured_preset": self.preset,
            "warnings": warnings,
        }
        if warnings:
            self.log.warning(
                "mesh_radio_config_mismatch",
                warnings=warnings,
                radio_preset=self.radio_config["preset"],
                radio_region=self.radio_config["region"],
                configured_preset=self.preset,
                expected_region=EXPECTED_REGION,
            )

    def _dispatch(self) -> None:
        for event in self.core.events():
            match event:
                case Received(raw=raw, channel=channel):
                    # Node numbers are not roster names: no peer attribution on the mesh.
                    self._host.link_received(self.name, raw, channel=channel, peer="")
                case Rejected(reason=reason, detail=detail):
                    self._host.link_rejected(self.name, reason, detail)
                case Done(ticket=ticket):
                    fut = self._futures.get(ticket)
                    if fut is not None and not fut.done():
                        fut.set_result(event)

    def _report_state(self, now: float) -> None:
        if not self._connected:
            state = ("down", self._down_detail)
        elif self.core.budget_ok(now):
            state = ("up", "")
        else:
            state = ("degraded", "airtime budget spent: FLASH only")
        if state != self._state:
            self._state = state
            self._host.link_state(self.name, *state)
