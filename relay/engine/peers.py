"""The peer table: roster nodes heard lately, where, and what their statuses said. Pure.

Only nodes on the roster become peers (a topic name is no proof of anything), and the table
holds at most ``max_peers``: a new one evicts the least recently heard, from every table.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from relay.trust import Role, Roster


class PeerTable:
    def __init__(self, *, max_peers: int, counters: Counter[str]) -> None:
        self.max_peers = max_peers
        self.counters = counters
        self.heard: dict[str, float] = {}  # node -> last heard anywhere
        self.mqtt: dict[str, float] = {}  # node -> last heard on MQTT
        self.gateways: dict[str, float] = {}  # nodes whose status says they bridge to a mesh
        self.mesh: dict[str, float] = {}  # roster nodes last heard signing on a mesh link
        self.statuses: dict[str, dict[str, Any]] = {}  # accepted signed statuses, by node
        self.status_issued: dict[str, dict[str, int]] = {}  # node -> state -> last issued-at
        self.audit: dict[str, int] = {}  # node -> row of the audit checkpoint last kept
        self._quiet: set[str] = set()  # nodes not heard on MQTT for the peer timeout

    def admit(self, node: str, roster: Roster | None) -> bool:
        """May ``node`` be a peer? Makes room for it when the table is full."""
        entry = roster.by_name(node) if roster is not None else None
        if entry is None or entry.role != Role.NODE:
            self.counters["peers_not_on_roster"] += 1
            return False
        if node not in self.heard and len(self.heard) >= self.max_peers:
            oldest = min(self.heard, key=self.heard.__getitem__)
            self.forget(oldest)
            self.counters["peers_evicted"] += 1
        return True

    def forget(self, node: str) -> None:
        for table in (self.heard, self.mqtt, self.gateways, self.statuses, self.mesh):
            table.pop(node, None)
        self.status_issued.pop(node, None)
        self.audit.pop(node, None)
        self._quiet.discard(node)

    def heard_on_mqtt(self, node: str, now: float, *, gateway: bool | None) -> float:
        """Note ``node`` on MQTT (``gateway``: what its status says, None: not stated);
        returns when it was heard there before (-inf: never)."""
        before = self.mqtt.get(node, float("-inf"))
        self.mqtt[node] = now
        if gateway:
            self.gateways[node] = now
        elif gateway is not None:
            self.gateways.pop(node, None)
        return before

    def newly_quiet(self, now: float, timeout_s: float) -> set[str]:
        """Nodes that have gone quiet on MQTT since the last call."""
        cutoff = now - timeout_s
        quiet = {n for n, t in self.mqtt.items() if t < cutoff}
        newly, self._quiet = quiet - self._quiet, quiet
        return newly

    def all_quiet(self) -> None:
        """We have no MQTT ourselves: we hear nobody there, which says nothing about them."""
        self._quiet = set(self.mqtt)
