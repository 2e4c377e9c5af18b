"""Many simulated nodes, each with a retained signed status on the broker (national scale).

Their keys exist only in memory: the roster entries join a test cluster's roster
(``Cluster.create(..., extra=...)``), so every status verifies as a real node's would and costs
the node under test a full Ed25519 verification. (Publishing them is the caller's: only the
MQTT link's modules import aiomqtt.) Used by tests/node/test_status_burst.py and
bench/retained_status.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.engine.status import seal_status
from relay.envelope import key_id
from relay.keys import raw_public
from relay.trust import DEFAULT_KINDS, Role, RosterEntry, Scope

__all__ = ["SimNode", "signed_statuses", "sim_nodes"]


@dataclass(frozen=True, slots=True)
class SimNode:
    name: str
    key: Ed25519PrivateKey
    entry: RosterEntry  # for the roster
    kid: bytes


def sim_nodes(n: int, *, prefix: str = "sim", region: str = "VR07") -> list[SimNode]:
    """``n`` node identities ``<prefix>-00001`` ... with fresh keys, in ``region``."""
    nodes = []
    for i in range(1, n + 1):
        key = Ed25519PrivateKey.generate()
        public = raw_public(key.public_key())
        name = f"{prefix}-{i:05d}"
        entry = RosterEntry(
            public, name, Role.NODE, Scope.parse([f"region:{region}"]), DEFAULT_KINDS[Role.NODE]
        )
        nodes.append(SimNode(name, key, entry, key_id(public)))
    return nodes


def signed_statuses(nodes: Sequence[SimNode], now: float) -> list[tuple[str, bytes]]:
    """(name, signed "online" status issued at ``now``) for each node."""
    return [(node.name, seal_status({"time": now}, node.key, now, kid=node.kid)) for node in nodes]
