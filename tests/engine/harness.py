"""Drive engines without I/O: a fake store that records ops, and a wire between nodes."""

from __future__ import annotations

from dataclasses import dataclass, field

from relay.engine.core import Engine, EngineConfig, LinkInfo
from relay.engine.model import Snapshot, StoredMessage
from relay.engine.ops import (
    Action,
    DeleteMessages,
    DeleteOutbox,
    Deliver,
    Persist,
    PutInbox,
    PutMessage,
    PutOutbox,
    PutReceipt,
    PutReplay,
    SetCounter,
    Transmit,
)
from relay.trust import Role
from tests.world import NOW, World


@dataclass
class MemStore:
    """The store's effect on a Snapshot, for restart tests. Not a mock: it keeps the data."""

    messages: dict[bytes, PutMessage] = field(default_factory=dict)
    inbox: dict[bytes, float] = field(default_factory=dict)
    outbox: dict[tuple[bytes, str], PutOutbox] = field(default_factory=dict)
    receipts: dict[tuple[bytes, str], bytes] = field(default_factory=dict)
    replay: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def apply(self, p: Persist) -> None:
        for op in p.ops:
            match op:
                case PutMessage():
                    self.messages.setdefault(op.id, op)
                case PutInbox():
                    self.inbox.setdefault(op.id, op.at)
                case PutOutbox():
                    self.outbox[(op.id, op.link)] = op
                case DeleteOutbox():
                    self.outbox.pop((op.id, op.link), None)
                case PutReceipt():
                    self.receipts.setdefault((op.msg_id, op.node), op.receipt_id)
                case PutReplay():
                    self.replay[op.kid] = (op.high, op.bits)
                case SetCounter():
                    self.counters[op.name] = op.value
                case DeleteMessages():
                    for i in op.ids:
                        self.messages.pop(i, None)
                        self.inbox.pop(i, None)

    def snapshot(self, node: str) -> Snapshot:
        return Snapshot(
            messages=[
                StoredMessage(m.raw, m.received_via, m.received_at, m.origin, m.signer)
                for m in self.messages.values()
            ],
            replay=dict(self.replay),
            outbox=list(self.outbox.values()),
            receipts=list(self.receipts),
            own_receipts={m: r for (m, n), r in self.receipts.items() if n == node},
            counters=dict(self.counters),
        )


@dataclass
class Node:
    name: str
    engine: Engine
    store: MemStore
    sent: list[Transmit] = field(default_factory=list)
    delivered: list[Deliver] = field(default_factory=list)
    other: list[Action] = field(default_factory=list)

    def run(self, actions: list[Action], now: float, *, persist: bool = True) -> list[Action]:
        """Carry out actions: persist at once (and feed back), collect the rest."""
        pending = list(actions)
        out: list[Action] = []
        while pending:
            a = pending.pop(0)
            out.append(a)
            match a:
                case Persist() if persist:
                    self.store.apply(a)
                    pending += self.engine.persisted(a.token, now)
                case Transmit():
                    self.sent.append(a)
                case Deliver():
                    self.delivered.append(a)
                case _:
                    self.other.append(a)
        return out


def make_node(
    w: World,
    name: str,
    regions: set[str],
    store: MemStore | None = None,
    links: tuple[LinkInfo, ...] = (LinkInfo("mqtt", "mqtt"),),
    **cfg: float,
) -> Node:
    store = store or MemStore()
    if w.roster.by_name(name) is None:
        w.add(name, Role.NODE, *[f"region:{r}" for r in regions])
    engine = Engine(
        EngineConfig(node=name, regions=frozenset(regions), **cfg),  # type: ignore[arg-type]
        w.trust(),
        w.keys[name],
        list(links),
        store.snapshot(name),
    )
    node = Node(name, engine, store)
    for link in links:
        node.run(engine.link_state(link.name, "up", NOW), NOW)
    return node
