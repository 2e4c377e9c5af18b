"""Retained statuses coalesced until the engine takes them: pure (no asyncio, no aiomqtt).

Every node's status is retained on the broker (relay.engine.status), so a connect hands us one
per node at once: 2,000 at national scale, and a heartbeat from each of them every 5 s after
that. A status is only looked at, and only the newest of a sender counts: so the MQTT driver
keeps, per sender topic, the newest raw status not yet taken, and the daemon takes them when
no decision, receipt or sync message is waiting (docs/mqtt.md, "Retained statuses at scale").
A newer status from a sender still waiting replaces the older one in its place (it has waited
longest, so a chatty sender neither jumps the line nor holds the others back): counted as
``coalesced``. Which of the two is newer is for the engine to say (it checks issued-at per
state): the mailbox keeps the one that arrived last, as the broker's retained copy does.

The mailbox holds at most ``limit`` senders (``[mqtt] status_backlog``, at least the number of
nodes on the roster). A status from a new sender when it is full is dropped and counted
(``dropped_full``): its next heartbeat comes within seconds, and the roster bounds the real
senders, so only topics of nodes that do not exist can fill it.
"""

from __future__ import annotations

from typing import Final

__all__ = ["STATUS_BACKLOG", "StatusMailbox"]

# The default limit: above the 2,000-3,000 nodes of a national deployment (docs/scale.md). At
# the 4 KiB inbound limit that is at most 16 MiB held; a signed status is about 150 bytes.
STATUS_BACKLOG: Final = 4096


class StatusMailbox:
    """The newest raw status per sender, in the order the senders first arrived."""

    __slots__ = ("_pending", "counters", "limit")

    def __init__(self, limit: int = STATUS_BACKLOG) -> None:
        if limit <= 0:
            raise ValueError("a status mailbox needs room for at least one sender")
        self.limit = limit
        self._pending: dict[str, bytes] = {}
        self.counters = {"in": 0, "coalesced": 0, "dropped_full": 0, "taken": 0}

    def __len__(self) -> int:
        return len(self._pending)

    def put(self, sender: str, raw: bytes) -> bool:
        """Keep ``raw`` as ``sender``'s newest status. True if the mailbox was empty before (the
        consumer has to be told there is work); False otherwise, also when it was dropped."""
        self.counters["in"] += 1
        pending = self._pending
        if sender in pending:
            self.counters["coalesced"] += 1  # the older one is superseded before it was taken
            pending[sender] = raw  # keeps its place in the order
            return False
        if len(pending) >= self.limit:
            self.counters["dropped_full"] += 1
            return False
        pending[sender] = raw
        return len(pending) == 1

    def take(self, n: int) -> list[tuple[str, bytes]]:
        """Up to ``n`` (sender, raw status), the longest waiting first; fewer means now empty."""
        pending = self._pending
        taken: list[tuple[str, bytes]] = []
        for sender in pending:
            if len(taken) >= n:
                break
            taken.append((sender, pending[sender]))
        for sender, _ in taken:
            del pending[sender]
        self.counters["taken"] += len(taken)
        return taken

    def statistics(self) -> dict[str, int]:
        """``status_*`` counters for ``relay status --json`` (under the link's ``mqtt``)."""
        c = self.counters
        return {
            "statuses_in": c["in"],
            "statuses_coalesced": c["coalesced"],
            "statuses_dropped_full": c["dropped_full"],
            "statuses_taken": c["taken"],
            "statuses_pending": len(self._pending),
            "status_backlog": self.limit,
        }
