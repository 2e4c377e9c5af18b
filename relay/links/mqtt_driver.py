"""Adapts relay.links.mqtt.MqttLink to the daemon: events in, transmissions out."""

from __future__ import annotations

from typing import Any

from relay.config import Config
from relay.engine.ops import Transmit
from relay.envelope import Reason
from relay.links import LinkHost
from relay.links import mqtt as mqtt_link
from relay.links.status_mailbox import StatusMailbox


class MqttDriver:
    kind = "mqtt"

    def __init__(self, host: LinkHost, config: Config, name: str = "mqtt") -> None:
        assert config.mqtt is not None
        self.name = name
        self._host = host
        self._node = config.node
        # Statuses wait here, the newest per sender, until the daemon takes them (it does when
        # no decision, receipt or sync is waiting): a retained burst at connect neither crowds
        # those out nor queues thousands of superseded statuses (relay.links.status_mailbox).
        self.statuses = StatusMailbox(config.mqtt.status_backlog)
        # Our status, its Last Will and the goodbye are signed with the node key.
        self.link = mqtt_link.MqttLink(
            config.mqtt,  # relay.links.mqtt_config.MqttSettings, built from relay.toml as it is
            on_event=self._on_event,
            sign_offline=lambda: host.sign_status({"state": "offline"}),
        )

    def _on_event(self, event: mqtt_link.LinkEvent) -> None:
        match event:
            case mqtt_link.LinkStateChanged():
                self._host.link_state(self.name, event.state, f"{event.broker_url} {event.reason}")
            case mqtt_link.Inbound(channel="status"):
                event.ack()  # nothing to store: a status is only looked at (and it is QoS 0)
                # Verified by the engine (relay.engine.status): signed by that node, or rejected.
                if self.statuses.put(event.sender_node, event.payload):
                    self._host.statuses_waiting(self.name, self.statuses.take)
            case mqtt_link.Inbound():
                if event.sender_node == self._node:
                    event.ack()
                    return  # our own publication echoed by the broker (v3.1.1: no No Local)
                # Acknowledged by the daemon once the store has committed what it led to.
                self._host.link_received(
                    self.name,
                    event.payload,
                    channel=event.channel,
                    peer=event.sender_node,
                    ack=event.ack,
                )
            case mqtt_link.InboundRejected():
                self._host.link_rejected(
                    self.name, Reason(event.reason), f"{event.topic}: {event.size} bytes"
                )

    async def run(self) -> None:
        await self.link.run()

    async def send(self, t: Transmit) -> None:
        """Publish and wait for the PUBACK; raises ``LinkUnavailable`` (broken) or
        ``LinkRefused`` (``PublishRejected``: the broker refused it, e.g. an ACL)."""
        await self.link.publish(t.channel, t.raw)

    async def publish_status(self, status: dict[str, Any]) -> None:
        """Set our retained status, signed with the node key; raises like ``send``. When it
        fails the daemon tries again later; the Last Will covers a dead node."""
        await self.link.set_status(self._host.sign_status(status))

    def describe(self) -> dict[str, Any]:
        return {"mqtt": {**self.link.statistics(), **self.statuses.statistics()}}
